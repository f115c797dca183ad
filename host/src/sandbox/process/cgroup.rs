//! The process and memory caps of sandboxed processes (shell commands,
//! harness agents' CLIs): each command (and each background job, each
//! harness run) runs in cgroups of its own, made for it under the host's
//! cgroups and removed after it — a `pids` cgroup capping how many
//! processes it has at once, and a `memory` cgroup capping the memory of all
//! its processes together, which includes the files they write to the
//! sandbox's tmpfs `/tmp` and `/dev/shm` (RAM, charged to the writer's
//! cgroup). Each controller is looked for in its cgroup v1 hierarchy when
//! mounted, else in cgroup v2 where the host's cgroup can delegate it.
//! Root is not bound by `RLIMIT_NPROC`, so without a writable `pids`
//! cgroup a command's process count is bounded only by its timeout.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Names of the cgroups made here start with this, then the host's pid.
const PREFIX: &str = "bgagents-sandbox-";

/// A cgroup controller a command's limit is enforced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

/// Where commands' cgroups are made, per controller, or why they cannot be.
#[derive(Debug)]
pub(crate) struct Cgroups {
    pub(crate) pids: Result<Hierarchy, String>,
    pub(crate) memory: Result<Hierarchy, String>,
    made: AtomicU64,
}

impl Cgroups {
    /// Looks for a writable hierarchy for each controller, trying each out.
    pub(crate) fn find() -> Cgroups {
        let read = |file: &str| {
            std::fs::read_to_string(file).map_err(|error| format!("cannot read {file}: {error}"))
        };
        let found = read("/proc/self/mountinfo").and_then(|mountinfo| {
            read("/proc/self/cgroup").map(|membership| (mountinfo, membership))
        });
        let (pids, memory) = match &found {
            Ok((mountinfo, membership)) => (
                Hierarchy::find(Controller::Pids, mountinfo, membership),
                Hierarchy::find(Controller::Memory, mountinfo, membership),
            ),
            Err(why) => (Err(why.clone()), Err(why.clone())),
        };
        Cgroups {
            pids,
            memory,
            made: AtomicU64::new(0),
        }
    }

    /// No cgroups, for `why`.
    pub(crate) fn none(why: &str) -> Cgroups {
        Cgroups {
            pids: Err(why.to_string()),
            memory: Err(why.to_string()),
            made: AtomicU64::new(0),
        }
    }

    /// The cgroups for one command: at most `max_processes` processes at
    /// once and `max_memory` bytes of memory (no swap), each where its
    /// controller is usable; `None` where neither is.
    pub(crate) fn create(
        &self,
        max_processes: u32,
        max_memory: u64,
    ) -> std::io::Result<Option<CommandCgroups>> {
        if self.pids.is_err() && self.memory.is_err() {
            return Ok(None);
        }
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{number}", std::process::id());
        // Dropped, and so removed, if a limit cannot be set.
        let mut cgroups = CommandCgroups::default();
        if let Ok(hierarchy) = &self.pids {
            let dir = cgroups.join(hierarchy, &name)?;
            hierarchy.limit(&dir, Controller::Pids, max_processes.into())?;
            cgroups.pids = Some(dir);
        }
        if let Ok(hierarchy) = &self.memory {
            let dir = cgroups.join(hierarchy, &name)?;
            hierarchy.limit(&dir, Controller::Memory, max_memory)?;
            cgroups.memory = Some((dir, hierarchy.version));
        }
        Ok(Some(cgroups))
    }
}

/// A writable place to make cgroups of one controller.
#[derive(Debug)]
pub(crate) struct Hierarchy {
    /// The host's own cgroup in the hierarchy; commands' cgroups go under it.
    base: PathBuf,
    version: u8,
    controller: Controller,
}

impl Hierarchy {
    /// Finds a hierarchy where this process can make cgroups of
    /// `controller`, trying one out; the error says why none is usable.
    fn find(
        controller: Controller,
        mountinfo: &str,
        membership: &str,
    ) -> Result<Hierarchy, String> {
        let mut why = Vec::new();
        for version in [1, 2] {
            let Some(base) = own_cgroup(mountinfo, membership, version, controller.name()) else {
                continue;
            };
            let hierarchy = Hierarchy {
                base,
                version,
                controller,
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
            true => Err(format!(
                "no cgroup v1 {} hierarchy or cgroup v2 is mounted",
                controller.name()
            )),
            false => Err(why.join("; ")),
        }
    }

    /// For `bgagents check`: which hierarchy, where.
    pub(crate) fn describe(&self) -> String {
        format!(
            "cgroup v{} {} controller under {}",
            self.version,
            self.controller.name(),
            self.base.display()
        )
    }

    /// Caps `controller` in the cgroup at `dir` to `max` (processes or
    /// bytes).
    fn limit(&self, dir: &Path, controller: Controller, max: u64) -> std::io::Result<()> {
        let max = max.to_string();
        match (controller, self.version) {
            (Controller::Pids, _) => std::fs::write(dir.join("pids.max"), max),
            (Controller::Memory, 1) => {
                std::fs::write(dir.join("memory.limit_in_bytes"), &max)?;
                // Memory plus swap, where swap is accounted: no swap either.
                // It may not be below the memory limit, so it comes second.
                let with_swap = dir.join("memory.memsw.limit_in_bytes");
                match with_swap.exists() {
                    true => std::fs::write(with_swap, max),
                    false => Ok(()),
                }
            }
            (Controller::Memory, _) => {
                std::fs::write(dir.join("memory.max"), max)?;
                let swap = dir.join("memory.swap.max");
                match swap.exists() {
                    true => std::fs::write(swap, "0"),
                    false => Ok(()),
                }
            }
        }
    }

    /// Makes, limits and removes one cgroup; on cgroup v2 first delegates
    /// the controller to the host's cgroup's children if needed (which the
    /// kernel allows only where no process would be left in an inner
    /// cgroup, e.g. at a container's root).
    fn try_out(&self) -> Result<(), String> {
        let at = self.base.display();
        let name = self.controller.name();
        if self.version == 2 {
            let available =
                std::fs::read_to_string(self.base.join("cgroup.controllers")).unwrap_or_default();
            if !available.split_whitespace().any(|offered| offered == name) {
                return Err(format!(
                    "cgroup v2 at {at} does not offer the {name} controller"
                ));
            }
            let control = self.base.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|on| on == name) {
                std::fs::write(&control, format!("+{name}")).map_err(|error| {
                    format!("cannot enable the {name} controller in {at}: {error}")
                })?;
            }
        }
        let mut trial = CommandCgroups::default();
        let made = format!("{PREFIX}{}-trial-{name}", std::process::id());
        let max = match self.controller {
            Controller::Pids => 1,
            Controller::Memory => 1 << 30,
        };
        let tried = trial
            .join(self, &made)
            .and_then(|dir| self.limit(&dir, self.controller, max));
        drop(trial);
        tried.map_err(|error| format!("cannot make a {name} cgroup under {at}: {error}"))
    }

    /// Removes the cgroups a host that exited left behind, killing what
    /// still runs in them first (the children of an unconfined harness
    /// CLI whose host was killed with SIGKILL).
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
                kill_members(&entry.path());
                if std::fs::remove_dir(entry.path()).is_err() {
                    // The kill takes a moment to empty it.
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }
}

/// One command's cgroups, one per hierarchy (a single one on cgroup v2);
/// removed (their processes killed first) when dropped.
#[derive(Debug, Default)]
pub(crate) struct CommandCgroups {
    /// Every cgroup the command joins.
    joined: Vec<PathBuf>,
    /// The one capping processes, if any.
    pids: Option<PathBuf>,
    /// The one capping memory, if any, and its cgroup version.
    memory: Option<(PathBuf, u8)>,
}

impl CommandCgroups {
    /// Makes the cgroup `name` in `hierarchy`, unless the command already
    /// has it (cgroup v2 holds every controller in one), and returns it.
    fn join(&mut self, hierarchy: &Hierarchy, name: &str) -> std::io::Result<PathBuf> {
        let dir = hierarchy.base.join(name);
        if !self.joined.contains(&dir) {
            std::fs::create_dir(&dir)?;
            self.joined.push(dir.clone());
        }
        Ok(dir)
    }

    /// The files a process writes `0` to in order to join the cgroups.
    pub(crate) fn procs_files(&self) -> Vec<CString> {
        (self.joined.iter())
            .map(|dir| {
                CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                    .expect("cgroup paths have no NUL")
            })
            .collect()
    }

    /// Whether a fork was refused because the process cap was reached.
    pub(crate) fn hit_process_limit(&self) -> bool {
        let Some(dir) = &self.pids else {
            return false;
        };
        let events = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        counted(&events, "max")
    }

    /// Whether the kernel killed a process for going past the memory cap.
    /// (Reaching the cap alone only makes the kernel reclaim caches.)
    pub(crate) fn hit_memory_limit(&self) -> bool {
        let Some((dir, version)) = &self.memory else {
            return false;
        };
        let events = match version {
            1 => "memory.oom_control",
            _ => "memory.events",
        };
        let events = std::fs::read_to_string(dir.join(events)).unwrap_or_default();
        counted(&events, "oom_kill")
    }
}

/// Whether the `key N` line of a cgroup's event counts has N above 0.
fn counted(events: &str, key: &str) -> bool {
    events.lines().any(|line| {
        (line.strip_prefix(key))
            .and_then(|count| count.strip_prefix(' '))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .is_some_and(|count| count > 0)
    })
}

impl Drop for CommandCgroups {
    /// The sandbox's PID namespace is torn down with the command, so the
    /// cgroups empty by themselves within moments; a thread waits for that,
    /// killing any straggler, so dropping never blocks a task.
    fn drop(&mut self) {
        let mut left: Vec<PathBuf> = std::mem::take(&mut self.joined);
        left.retain(|dir| std::fs::remove_dir(dir).is_err());
        if left.is_empty() {
            return;
        }
        let cleanup = move || {
            for attempt in 0..500 {
                left.retain(|dir| std::fs::remove_dir(dir).is_err() && dir.exists());
                if left.is_empty() {
                    return;
                }
                if attempt >= 5 {
                    left.iter().for_each(|dir| kill_members(dir));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::warn!(cgroups = ?left, "a sandboxed process's cgroups could not be removed");
        };
        if std::thread::Builder::new()
            .name("sandbox-cgroup".into())
            .spawn(cleanup)
            .is_err()
        {
            tracing::warn!("no thread to remove a sandboxed process's cgroups");
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
/// `controller` (v1) or the unified hierarchy (v2), as a path under its
/// mount point.
fn own_cgroup(mountinfo: &str, membership: &str, version: u8, controller: &str) -> Option<PathBuf> {
    let (mount_root, mount_point) = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let _source = after.next();
        let options = after.next().unwrap_or("");
        let matches = match version {
            1 => fstype == "cgroup" && options.split(',').any(|option| option == controller),
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
            1 => controllers.split(',').any(|name| name == controller),
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
            own_cgroup(mountinfo, membership, 1, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/inner"))
        );
        assert_eq!(own_cgroup(mountinfo, membership, 1, "memory"), None);
        assert_eq!(
            own_cgroup(mountinfo, membership, 2, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_the_v1_memory_cgroup_in_its_own_hierarchy() {
        // Controllers mounted one per hierarchy, this process in a memory
        // cgroup of its own but at the root of the others.
        let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
        let membership = "8:pids:/\n4:memory:/jobs/abc\n0::/\n";
        assert_eq!(
            own_cgroup(mountinfo, membership, 1, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/jobs/abc"))
        );
        assert_eq!(
            own_cgroup(mountinfo, membership, 1, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
    }

    #[test]
    fn finds_the_v2_cgroup() {
        let mountinfo = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let membership = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(own_cgroup(mountinfo, membership, 1, "memory"), None);
        assert_eq!(
            own_cgroup(mountinfo, membership, 2, "memory"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"
            ))
        );
    }

    #[test]
    fn reads_event_counts() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert!(counted(v1, "oom_kill"));
        assert!(!counted("oom_kill_disable 1\noom_kill 0\n", "oom_kill"));
        assert!(!counted(
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 0\n",
            "oom_kill"
        ));
        assert!(counted("max 3\n", "max"));
    }

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
