//! The process cap of shell commands: each command (and each background
//! job) runs in a `pids` cgroup of its own, made for it under the host's
//! cgroup and removed after it. The cgroup v1 `pids` hierarchy is used when
//! mounted, else cgroup v2 where the host's cgroup can delegate `pids`.
//! Root is not bound by `RLIMIT_NPROC`, so without a writable cgroup a
//! command's process count is bounded only by its timeout.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Names of the cgroups made here start with this, then the host's pid.
const PREFIX: &str = "bgagents-shell-";

/// A writable place to make `pids` cgroups.
#[derive(Debug)]
pub(super) struct PidsHierarchy {
    /// The host's own cgroup in the hierarchy; commands' cgroups go under it.
    base: PathBuf,
    version: u8,
    made: AtomicU64,
}

impl PidsHierarchy {
    /// Finds a hierarchy where this process can make `pids` cgroups, trying
    /// one out; the error says why none is usable.
    pub(super) fn find() -> Result<PidsHierarchy, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|error| format!("cannot read /proc/self/mountinfo: {error}"))?;
        let membership = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|error| format!("cannot read /proc/self/cgroup: {error}"))?;
        let mut why = Vec::new();
        for version in [1, 2] {
            let Some(base) = own_cgroup(&mountinfo, &membership, version) else {
                continue;
            };
            let hierarchy = PidsHierarchy {
                base,
                version,
                made: AtomicU64::new(0),
            };
            match hierarchy.try_out() {
                Ok(()) => {
                    hierarchy.remove_stale();
                    return Ok(hierarchy);
                }
                Err(problem) => why.push(problem),
            }
        }
        match why.is_empty() {
            true => Err("no cgroup v1 pids hierarchy or cgroup v2 is mounted".to_string()),
            false => Err(why.join("; ")),
        }
    }

    /// For `bgagents check`: which hierarchy, where.
    pub(super) fn describe(&self) -> String {
        format!(
            "cgroup v{} pids controller under {}",
            self.version,
            self.base.display()
        )
    }

    /// A new cgroup that lets at most `max` processes exist at once.
    pub(super) fn create(&self, max: u32) -> std::io::Result<PidsCgroup> {
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .base
            .join(format!("{PREFIX}{}-{number}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let cgroup = PidsCgroup { dir };
        std::fs::write(cgroup.dir.join("pids.max"), max.to_string())?;
        Ok(cgroup)
    }

    /// Makes, limits and removes one cgroup; on cgroup v2 first delegates
    /// the `pids` controller to the host's cgroup's children if needed
    /// (which the kernel allows only where no process would be left in an
    /// inner cgroup, e.g. at a container's root).
    fn try_out(&self) -> Result<(), String> {
        let at = self.base.display();
        if self.version == 2 {
            let available =
                std::fs::read_to_string(self.base.join("cgroup.controllers")).unwrap_or_default();
            if !available.split_whitespace().any(|name| name == "pids") {
                return Err(format!(
                    "cgroup v2 at {at} does not offer the pids controller"
                ));
            }
            let control = self.base.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|name| name == "pids") {
                std::fs::write(&control, "+pids").map_err(|error| {
                    format!("cannot enable the pids controller in {at}: {error}")
                })?;
            }
        }
        let cgroup = self
            .create(1)
            .map_err(|error| format!("cannot make a pids cgroup under {at}: {error}"))?;
        drop(cgroup);
        Ok(())
    }

    /// Removes the empty cgroups a host that exited left behind.
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = (name.to_str())
                .and_then(|name| name.strip_prefix(PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(owner, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            if !alive {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// One command's cgroup; removed (its processes killed first) when dropped.
#[derive(Debug)]
pub(super) struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// The file a process writes `0` to in order to join the cgroup.
    pub(super) fn procs_file(&self) -> CString {
        CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup paths have no NUL")
    }

    /// Whether a fork was refused because the cgroup was full.
    pub(super) fn hit_limit(&self) -> bool {
        let events = std::fs::read_to_string(self.dir.join("pids.events")).unwrap_or_default();
        events.lines().any(|line| {
            line.strip_prefix("max ")
                .and_then(|count| count.trim().parse::<u64>().ok())
                .is_some_and(|count| count > 0)
        })
    }
}

impl Drop for PidsCgroup {
    /// The sandbox's PID namespace is torn down with the command, so the
    /// cgroup empties by itself within moments; a thread waits for that,
    /// killing any straggler, so dropping never blocks a task.
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        if std::fs::remove_dir(&dir).is_ok() {
            return;
        }
        let cleanup = move || {
            for attempt in 0..500 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    return;
                }
                if attempt >= 5 {
                    kill_members(&dir);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::warn!(cgroup = %dir.display(), "a shell command's cgroup could not be removed");
        };
        if std::thread::Builder::new()
            .name("shell-cgroup".into())
            .spawn(cleanup)
            .is_err()
        {
            tracing::warn!("no thread to remove a shell command's cgroup");
        }
    }
}

/// Kills every process in the cgroup at `dir`.
fn kill_members(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
    {
        // SAFETY: plain kill(2); the pid is a member of a cgroup only this
        // host's commands join.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// This process's cgroup in the cgroup v`version` hierarchy that holds the
/// `pids` controller (v1) or the unified hierarchy (v2), as a path under
/// its mount point.
fn own_cgroup(mountinfo: &str, membership: &str, version: u8) -> Option<PathBuf> {
    let (mount_root, mount_point) = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let _source = after.next();
        let options = after.next().unwrap_or("");
        let matches = match version {
            1 => fstype == "cgroup" && options.split(',').any(|option| option == "pids"),
            _ => fstype == "cgroup2",
        };
        if !matches {
            return None;
        }
        Some((unescape(fields.get(3)?), unescape(fields.get(4)?)))
    })?;
    let path = membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match version {
            1 => controllers.split(',').any(|name| name == "pids"),
            _ => controllers.is_empty(),
        };
        matches.then(|| path.to_string())
    })?;
    // Without a cgroup namespace a container's mount shows only its own
    // subtree: the mount's root is a prefix of the path.
    let relative = match path.strip_prefix(&mount_root) {
        Some(rest) if mount_root != "/" => rest.to_string(),
        _ => path,
    };
    let relative = relative.trim_start_matches('/');
    match relative.is_empty() {
        true => Some(PathBuf::from(mount_point)),
        false => Some(Path::new(&mount_point).join(relative)),
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |sum, digit| sum * 8 + u32::from(digit - b'0'));
            out.push(value as u8);
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_pids_cgroup_inside_a_container_mount() {
        let mountinfo = "39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let membership = "8:pids:/docker/abc/inner\n0::/\n";
        assert_eq!(
            own_cgroup(mountinfo, membership, 1),
            Some(PathBuf::from("/sys/fs/cgroup/pids/inner"))
        );
        assert_eq!(
            own_cgroup(mountinfo, membership, 2),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_the_v2_cgroup() {
        let mountinfo = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let membership = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(own_cgroup(mountinfo, membership, 1), None);
        assert_eq!(
            own_cgroup(mountinfo, membership, 2),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"
            ))
        );
    }

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
