//! The cache's MAC key and the directory that holds it: created private to
//! this user (0700 directory, 0600 key), used only if no one else can
//! reach them, and made atomically so concurrent processes agree on one
//! key.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The key file, beside the entries.
const KEY_FILE: &str = "key";
pub(super) const KEY_LEN: usize = 32;

/// The key every entry and record of a cache directory is authenticated
/// with.
pub(super) type Key = [u8; KEY_LEN];

/// Creates `dir` (0700) if needed, checks that only this user can reach it,
/// and returns the MAC key, creating it on first use.
pub(super) fn trusted_key(dir: &Path) -> Result<Key, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(foreign_owner(dir, meta.uid(), me));
        }
        if meta.mode() & 0o077 != 0 {
            // Ours, but others may have written to it: close it. Entries
            // someone else planted meanwhile fail authentication.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make {} private (chmod 700): {e}", dir.display()))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(KEY_FILE);
    match read_key_settled(&path) {
        Ok(key) => Ok(key),
        Err(KeyProblem::Missing) => create_key(&path),
        Err(KeyProblem::WrongLength(len)) => replace_key(&path, len),
        Err(KeyProblem::Other(error)) => Err(format!("cache key {}: {error}", path.display())),
    }
}

/// Why the key file could not be used.
#[derive(Debug)]
enum KeyProblem {
    Missing,
    /// Not `KEY_LEN` bytes long: damaged, safe to replace.
    WrongLength(u64),
    Other(std::io::Error),
}

/// Why a cache directory owned by someone else is not used.
pub(super) fn foreign_owner(dir: &Path, owner: u32, me: u32) -> String {
    format!(
        "the cache directory {} belongs to user {owner}, not to this user ({me}); \
         choose another with engine.cache_dir or BGAGENTS_CACHE_DIR",
        dir.display()
    )
}

fn read_key(path: &Path) -> Result<Key, KeyProblem> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => KeyProblem::Missing,
        _ => KeyProblem::Other(error),
    })?;
    let meta = file.metadata().map_err(KeyProblem::Other)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 != 0 {
            return Err(KeyProblem::Other(std::io::Error::other(
                "not owned by this user or readable by others; delete it to make a new one",
            )));
        }
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyProblem::WrongLength(meta.len()));
    }
    let mut key = [0; KEY_LEN];
    file.read_exact(&mut key).map_err(KeyProblem::Other)?;
    Ok(key)
}

/// [`read_key`], but a key file of the wrong length is read again a few
/// times over about 100 ms first: an older bgagents created the file and
/// then wrote it, so another process may see it empty for a moment.
fn read_key_settled(path: &Path) -> Result<Key, KeyProblem> {
    let mut attempts = 0;
    loop {
        match read_key(path) {
            Err(KeyProblem::WrongLength(_)) if attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// A file beside `path`, private to this user, holding `key` on disk.
fn write_temp_key(path: &Path, key: &Key) -> Result<PathBuf, String> {
    use std::io::Write;
    static KEYS: AtomicU64 = AtomicU64::new(0);
    let unique = KEYS.fetch_add(1, Ordering::Relaxed);
    let temp = path.with_extension(format!("new-{}-{unique}", std::process::id()));
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&temp)
        .and_then(|mut file| file.write_all(key).and_then(|()| file.sync_all()))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot write the cache key {}: {e}", temp.display())
        })?;
    Ok(temp)
}

fn random_key() -> Result<Key, String> {
    use std::io::Read;
    let mut key = [0; KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("cannot read /dev/urandom for the cache key: {e}"))?;
    Ok(key)
}

/// Makes a fresh random key (0600) appear whole or not at all, without
/// replacing one another process created meanwhile: it is written to a
/// temporary file and hard-linked into place, which fails if the key exists.
fn create_key(path: &Path) -> Result<Key, String> {
    let key = random_key()?;
    let temp = write_temp_key(path, &key)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            match read_key_settled(path) {
                Ok(key) => Ok(key),
                Err(KeyProblem::WrongLength(len)) => replace_key(path, len),
                Err(KeyProblem::Missing) => Err(format!(
                    "cache key {}: removed while being created; try again",
                    path.display()
                )),
                Err(KeyProblem::Other(error)) => {
                    Err(format!("cache key {}: {error}", path.display()))
                }
            }
        }
        Err(error) => Err(format!(
            "cannot create the cache key {}: {error}",
            path.display()
        )),
    }
}

/// Replaces a damaged key file (`len` bytes, not [`KEY_LEN`]) with a fresh
/// key, atomically. Entries made under the old key, if any, then fail
/// authentication and are recompiled. If another process replaced it too,
/// the last rename wins, and whichever key loses only costs recompiles.
fn replace_key(path: &Path, len: u64) -> Result<Key, String> {
    let key = random_key()?;
    let temp = write_temp_key(path, &key)?;
    std::fs::rename(&temp, path).map_err(|error| {
        let _ = std::fs::remove_file(&temp);
        format!(
            "cannot replace the damaged cache key {} ({len} bytes, not {KEY_LEN}): {error}",
            path.display()
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bgagents-cache-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_foreign_owner_message_reads_as_one_sentence() {
        let message = foreign_owner(Path::new("/c"), 0, 1000);
        assert_eq!(
            message,
            "the cache directory /c belongs to user 0, not to this user (1000); choose \
             another with engine.cache_dir or BGAGENTS_CACHE_DIR"
        );
    }

    #[test]
    fn processes_creating_the_key_at_once_all_get_the_same_whole_key() {
        for round in 0..20 {
            let dir = scratch(&format!("race-{round}"));
            let barrier = std::sync::Barrier::new(8);
            let keys: Vec<Result<[u8; KEY_LEN], String>> = std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            trusted_key(&dir)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let on_disk = std::fs::read(dir.join(KEY_FILE)).unwrap();
            assert_eq!(on_disk.len(), KEY_LEN);
            for key in keys {
                assert_eq!(key.as_ref().map(|key| &key[..]), Ok(&on_disk[..]));
            }
            let leftovers: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .filter(|name| name != KEY_FILE)
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_key_of_the_wrong_length_is_replaced_not_a_reason_to_stop_caching() {
        for damaged in [&b""[..], b"short", &[7; KEY_LEN + 1]] {
            let dir = scratch("damaged");
            trusted_key(&dir).unwrap();
            let path = dir.join(KEY_FILE);
            std::fs::write(&path, damaged).unwrap();
            let key = trusted_key(&dir).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), key);
            assert_eq!(trusted_key(&dir).unwrap(), key);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
