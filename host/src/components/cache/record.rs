//! The small authenticated records that let a cached load skip reading
//! what it already checked: beside each entry, its content MAC and the
//! fingerprint of the entry file when that MAC was last checked; and per
//! component path, the content hash of the file with its fingerprint.
//!
//! A fingerprint is a file's device, inode, size, modification time and
//! status-change time. Rewriting a file changes its change time, which no
//! program can set (only the clock moves it), and replacing it changes its
//! inode; so a file whose fingerprint matches holds what was checked. A
//! fingerprint taken within [`SETTLE`] of the file's last change is not
//! relied on — the kernel's file times are coarser than its clock, so a
//! change right after it could leave every field equal — and the file is
//! read and checked again, its fingerprint then recorded settled.
//!
//! Every record is authenticated with the cache's key, like the entries:
//! without the key no one can make a record that is believed.

use super::key::Key;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A record's layout version.
const MAGIC: &[u8; 8] = b"bgagr003";
const HASH_LEN: usize = 32;
const FINGERPRINT_LEN: usize = 7 * 8;
const RECORD_LEN: usize = MAGIC.len() + HASH_LEN + FINGERPRINT_LEN + 8 + HASH_LEN;

/// How long after a file's last change its fingerprint is relied on.
const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Fingerprint {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        Fingerprint {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Opens `path` and fingerprints the open file, noting the moment just
    /// before. Opening first makes a network filesystem look at the file
    /// anew rather than answer from its cache.
    pub(super) fn of_open(path: &Path) -> Option<(std::fs::File, Fingerprint, Observed)> {
        let file = std::fs::File::open(path).ok()?;
        let observed = Observed::now();
        let meta = file.metadata().ok()?;
        Some((file, Fingerprint::of(&meta), observed))
    }

    /// Whether the file had last changed at least [`SETTLE`] before `at`.
    fn settled_by(&self, at: u64) -> bool {
        let latest = self.modified.max(self.changed);
        let changed_ns = (latest.0 as i128) * 1_000_000_000 + latest.1 as i128;
        changed_ns + (SETTLE.as_nanos() as i128) <= at as i128
    }

    fn bytes(&self) -> [u8; FINGERPRINT_LEN] {
        let fields = [
            self.device,
            self.inode,
            self.size,
            self.modified.0 as u64,
            self.modified.1 as u64,
            self.changed.0 as u64,
            self.changed.1 as u64,
        ];
        let mut bytes = [0; FINGERPRINT_LEN];
        for (chunk, field) in bytes.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Fingerprint {
        let field = |index: usize| {
            u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
        };
        Fingerprint {
            device: field(0),
            inode: field(1),
            size: field(2),
            modified: (field(3) as i64, field(4) as i64),
            changed: (field(5) as i64, field(6) as i64),
        }
    }
}

/// A moment taken just before a file's fingerprint was: the file is known
/// to have been as fingerprinted from its last change until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Observed(u64);

impl Observed {
    /// A moment no file had settled by: a record of it vouches for nothing
    /// (the content MAC it carries is checked by reading).
    pub(super) fn never() -> Observed {
        Observed(0)
    }

    pub(super) fn now() -> Observed {
        let since = SystemTime::now().duration_since(UNIX_EPOCH);
        Observed(since.map_or(0, |since| since.as_nanos() as u64))
    }
}

/// A hash a record vouches for, with the fingerprint of the file it is
/// the hash of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) hash: [u8; HASH_LEN],
    fingerprint: Fingerprint,
    /// When the fingerprint was taken (nanoseconds since the epoch, just
    /// before the stat), not when the record was written: a file rewritten
    /// between the stat and the record must not count as settled.
    observed: u64,
}

/// Why a stored record is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not a record of this layout (wrong size or marker): damaged.
    Damaged,
    /// Well-formed, but its MAC does not pass under this key.
    Unauthentic,
}

/// What a MAC is over: no two uses share an input.
#[derive(Debug, Clone, Copy)]
pub(super) enum Use {
    /// A compiled entry's content.
    Entry,
    /// A record (of an entry, or of a component path).
    Record,
}

impl Record {
    /// A record of `fingerprint`, taken just after `observed`.
    pub(super) fn new(
        hash: [u8; HASH_LEN],
        fingerprint: Fingerprint,
        observed: Observed,
    ) -> Record {
        Record {
            hash,
            fingerprint,
            observed: observed.0,
        }
    }

    /// Whether `current`, the file's fingerprint now, shows it unchanged
    /// since the record's fingerprint was taken, and settled by then.
    pub(super) fn vouches_for(&self, current: &Fingerprint) -> bool {
        self.fingerprint == *current && self.fingerprint.settled_by(self.observed)
    }

    /// The record as stored: authenticated under `key` for `subject` (what
    /// it is about: an entry's name, a component's path).
    pub(super) fn encode(&self, key: &Key, subject: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(RECORD_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.fingerprint.bytes());
        bytes.extend_from_slice(&self.observed.to_le_bytes());
        let tag = mac(key, Use::Record, subject, &bytes);
        bytes.extend_from_slice(tag.as_bytes());
        bytes
    }

    /// A stored record about `subject`, if it is one this key made.
    pub(super) fn from_bytes(key: &Key, subject: &[u8], bytes: &[u8]) -> Result<Record, Refused> {
        if bytes.len() != RECORD_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Refused::Damaged);
        }
        let (body, tag) = bytes.split_at(RECORD_LEN - HASH_LEN);
        let tag: [u8; HASH_LEN] = tag.try_into().expect("split at the tag");
        // `Hash`'s equality is constant-time.
        if mac(key, Use::Record, subject, body) != blake3::Hash::from_bytes(tag) {
            return Err(Refused::Unauthentic);
        }
        let body = &body[MAGIC.len()..];
        let (hash, rest) = body.split_at(HASH_LEN);
        let (fingerprint, observed) = rest.split_at(FINGERPRINT_LEN);
        Ok(Record {
            hash: hash.try_into().expect("split at HASH_LEN"),
            fingerprint: Fingerprint::from_bytes(fingerprint),
            observed: u64::from_le_bytes(observed.try_into().expect("8 bytes")),
        })
    }

    /// Reads the record at `path` about `subject`; `Ok(None)` if there is
    /// none. At most a record's size is read, whatever the file holds.
    pub(super) fn read(
        key: &Key,
        subject: &[u8],
        path: &Path,
    ) -> std::io::Result<Option<Result<Record, Refused>>> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut bytes = Vec::with_capacity(RECORD_LEN + 1);
        file.take(RECORD_LEN as u64 + 1).read_to_end(&mut bytes)?;
        Ok(Some(Record::from_bytes(key, subject, &bytes)))
    }

    /// Writes the record atomically (a reader sees the old one or the new).
    pub(super) fn write(&self, key: &Key, subject: &[u8], path: &Path) -> Result<(), String> {
        super::write_atomically(path, &self.encode(key, subject))
    }
}

/// A keyed blake3 MAC for `what` over `subject` and `body`, each
/// length-prefixed so that no two (use, subject, body) share an input.
pub(super) fn mac(key: &Key, what: Use, subject: &[u8], body: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(match what {
        Use::Entry => b"entry\0",
        Use::Record => b"record",
    });
    hasher.update(&(subject.len() as u64).to_le_bytes());
    hasher.update(subject);
    hasher.update(&(body.len() as u64).to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(changed_secs: i64) -> Fingerprint {
        Fingerprint {
            device: 1,
            inode: 2,
            size: 3,
            modified: (changed_secs, 0),
            changed: (changed_secs, 5),
        }
    }

    #[test]
    fn a_record_is_believed_only_under_its_key_and_subject_and_whole() {
        let key = [7; 32];
        let record = Record::new([9; 32], fingerprint(1), Observed(7));
        let bytes = record.encode(&key, b"entry");
        assert_eq!(Record::from_bytes(&key, b"entry", &bytes), Ok(record));
        assert_eq!(
            Record::from_bytes(&[8; 32], b"entry", &bytes),
            Err(Refused::Unauthentic)
        );
        assert!(Record::from_bytes(&key, b"other", &bytes).is_err());
        for index in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[index] ^= 1;
            assert!(
                Record::from_bytes(&key, b"entry", &changed).is_err(),
                "{index}"
            );
        }
        assert_eq!(
            Record::from_bytes(&key, b"entry", &bytes[..bytes.len() - 1]),
            Err(Refused::Damaged)
        );
    }

    #[test]
    fn a_fingerprint_is_relied_on_only_once_settled_and_unchanged() {
        let changed = 1_000_000;
        let at = |seconds_after: u64| (changed as u64 + seconds_after) * 1_000_000_000;
        let record = |observed| Record {
            hash: [0; 32],
            fingerprint: fingerprint(changed),
            observed,
        };
        assert!(!record(at(0)).vouches_for(&fingerprint(changed)));
        assert!(!record(at(1)).vouches_for(&fingerprint(changed)));
        assert!(record(at(3)).vouches_for(&fingerprint(changed)));
        assert!(!record(at(3)).vouches_for(&fingerprint(changed + 1)));
        // A record written before its file vouches for nothing.
        let early = Record::new([0; 32], Fingerprint::default(), Observed::never());
        assert!(!early.vouches_for(&Fingerprint::default()));
    }
}
