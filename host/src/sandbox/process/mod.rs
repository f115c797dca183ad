//! The bubblewrap sandbox a host process runs in — a shell command of the
//! `shell` toolset, or a harness agent's CLI — and starting it.
//!
//! Every process gets fresh namespaces (user, mount, PID, IPC, UTS, cgroup,
//! and network unless its [`Network`] says otherwise), no capabilities, no
//! nested user namespaces, and a read-only root that holds only: the
//! system's programs and libraries (`/usr`, `/bin`, `/lib*`, `/sbin`,
//! read-only), the few `/etc` files programs need (never `/etc` as a whole:
//! `/etc/shadow` and private keys stay out), a private `/proc` and `/dev`,
//! size-capped `/tmp` (with `HOME` in it) and `/dev/shm`, the program
//! directories a sandbox names (read-only), and the agent's granted
//! directories at their guest paths. The environment is cleared; the
//! process gets a few basics and the granted variables. The options go to
//! bubblewrap through a memfd (`--args`) so granted values do not show in
//! the host's process list.
//!
//! Killing: bubblewrap is its own process group, the sandbox's PID 1 dies
//! with it (`--die-with-parent`), and when a PID namespace's first process
//! dies the kernel kills every other process in it, so killing the group
//! ends everything the process started, however it forked or detached.
//!
//! Limits: processes and memory through the process's cgroups (see
//! [`cgroup`]), or each process's address space (`RLIMIT_AS`) where no
//! memory cgroup is usable; file size through `RLIMIT_FSIZE`.
//!
//! Telling bubblewrap's failures from the program's: both exit with a
//! status, but bubblewrap reports the program's exit code on its
//! `--json-status-fd` only once the program was executed, so a status
//! without that report is bubblewrap's own.

pub(crate) mod cgroup;
pub(crate) mod output;

use crate::config::{DirGrant, Grants, ShellSettings};
use crate::sandbox::egress;
use cgroup::{Cgroups, CommandCgroups};
use output::Output;
use std::ffi::{OsStr, OsString};
use std::io::{PipeReader, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;

/// Where commands start when no directory is granted.
pub(crate) const SCRATCH: &str = "/tmp";
/// `HOME` inside the sandbox, in the private `/tmp`.
const HOME: &str = "/tmp/home";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Processes of bubblewrap's own besides the command's: itself outside the
/// sandbox and the sandbox's PID 1.
const BWRAP_PROCESSES: u32 = 2;

/// `/etc` entries programs need to run, bound read-only when present.
/// Certificate stores are bound by their public parts only (Debian's
/// `/etc/ssl/private` holds keys, and the sandbox's root is the host's).
const ETC_ALWAYS: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "pki/tls/certs",
    "pki/ca-trust",
    "crypto-policies",
];
/// `/etc` entries for name lookups, bound only when commands have network.
const ETC_NETWORK: &[&str] = &[
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "gai.conf",
    "host.conf",
    "services",
    "protocols",
];

/// The bubblewrap found on this host and what it supports.
#[derive(Debug)]
pub(crate) struct Bubblewrap {
    path: PathBuf,
    version: String,
    /// `--size` (0.7+): caps the private `/tmp`.
    tmpfs_size: bool,
    /// `--disable-userns` (0.8+): no nested user namespaces.
    disable_userns: bool,
    /// `--json-status-fd` (0.3.3+): tells whether the command was started.
    json_status: bool,
    /// Where each command's process and memory caps are enforced, or why
    /// they cannot be.
    pub(crate) cgroups: Cgroups,
    /// Whether `RLIMIT_AS` stands in for a memory cgroup.
    address_space: AddressSpaceCap,
}

/// Whether each process of a command gets the memory cap as its address
/// space limit (`RLIMIT_AS`), which is only a fallback: it bounds neither
/// a command's processes together nor its tmpfs files.
#[derive(Debug)]
enum AddressSpaceCap {
    /// A memory cgroup caps commands.
    NotNeeded,
    /// No memory cgroup is usable; every process gets `RLIMIT_AS`.
    Used,
    /// No memory cgroup is usable, and bubblewrap fails under `RLIMIT_AS`:
    /// what it said.
    Unusable(String),
}

/// The host's bubblewrap, checked once by running a command in a sandbox
/// exactly as commands are run; the error says what is wrong and how to
/// fix it.
pub(crate) fn bubblewrap() -> Result<&'static Bubblewrap, String> {
    static PROBED: OnceLock<Result<Bubblewrap, String>> = OnceLock::new();
    let probed = PROBED.get_or_init(|| {
        let probed = probe();
        if let Err(problem) = &probed {
            tracing::warn!(%problem, "shell commands cannot be sandboxed, so none will run");
        }
        probed
    });
    probed.as_ref().map_err(Clone::clone)
}

/// A line for `bgagents check`, with a `warning:` line per weakened limit.
pub(crate) fn describe(bwrap: &Bubblewrap) -> String {
    let mut lines = vec![format!(
        "commands run in bubblewrap {} ({})",
        bwrap.version,
        bwrap.path.display()
    )];
    match &bwrap.cgroups.pids {
        Ok(hierarchy) => lines[0].push_str(&format!(
            "; process count capped by the {}",
            hierarchy.describe()
        )),
        Err(why) => lines.push(format!(
            "warning: no pids cgroup to cap a command's processes ({why}); \
             a fork bomb is stopped only by the command's timeout. \
             Run the host where it can create cgroups (as root with /sys/fs/cgroup writable, \
             or in a systemd unit with Delegate=pids memory)"
        )),
    }
    let run_with_cgroups = "Run the host where it can create cgroups (as root with \
                            /sys/fs/cgroup writable, or in a systemd unit with Delegate=pids memory)";
    match (&bwrap.cgroups.memory, &bwrap.address_space) {
        (Ok(hierarchy), _) => {
            lines[0].push_str(&format!("; memory capped by the {}", hierarchy.describe()))
        }
        (Err(why), AddressSpaceCap::Unusable(said)) => lines.push(format!(
            "warning: no memory cgroup to cap a command's memory ({why}), and bubblewrap \
             cannot run under RLIMIT_AS ({said}): a command's memory, and its files in /tmp \
             and /dev/shm, are bounded only by the host's. {run_with_cgroups}"
        )),
        (Err(why), _) => lines.push(format!(
            "warning: no memory cgroup to cap a command's memory ({why}); each of its \
             processes is held to the cap by RLIMIT_AS instead, which bounds neither its \
             processes together nor its files in /tmp and /dev/shm. {run_with_cgroups}"
        )),
    }
    if !bwrap.tmpfs_size {
        lines.push(format!(
            "warning: bubblewrap {} has no --size: the sandbox's /tmp and /dev/shm \
             are not capped in total (each file still is); install bubblewrap 0.7 or newer",
            bwrap.version
        ));
    }
    if !bwrap.disable_userns {
        lines.push(format!(
            "warning: bubblewrap {} has no --disable-userns: commands may create \
             nested user namespaces; install bubblewrap 0.8 or newer",
            bwrap.version
        ));
    }
    lines.join("\n")
}

fn probe() -> Result<Bubblewrap, String> {
    let not_installed = "bubblewrap (bwrap) is not installed, and shell commands never run \
                         outside it: install it (apt-get install bubblewrap, \
                         dnf install bubblewrap, apk add bubblewrap)";
    let path = find_program("bwrap").ok_or_else(|| not_installed.to_string())?;
    let run = |arg: &str| {
        std::process::Command::new(&path)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
    };
    let version = run("--version").map_err(|error| {
        format!(
            "bubblewrap at {} cannot run ({error}); reinstall it",
            path.display()
        )
    })?;
    let version = String::from_utf8_lossy(&version.stdout)
        .trim()
        .trim_start_matches("bubblewrap ")
        .to_string();
    let help = run("--help").map(|out| out.stdout).unwrap_or_default();
    let help = String::from_utf8_lossy(&help);
    let mut bwrap = Bubblewrap {
        path,
        version,
        tmpfs_size: help.contains("--size"),
        disable_userns: help.contains("--disable-userns"),
        json_status: help.contains("--json-status-fd"),
        cgroups: Cgroups::none("not looked for"),
        address_space: AddressSpaceCap::NotNeeded,
    };
    if let Err(said) = try_sandbox(&bwrap)? {
        return Err(format!(
            "bubblewrap {} cannot create a sandbox here ({}), and shell commands never run \
             outside one: allow unprivileged user namespaces \
             (sysctl -w kernel.unprivileged_userns_clone=1, sysctl -w user.max_user_namespaces=15000, \
             and on Ubuntu sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor \
             profile for bwrap), or run the host outside a container that forbids them",
            bwrap.version, said
        ));
    }
    bwrap.cgroups = Cgroups::find();
    if bwrap.cgroups.memory.is_err() {
        // Tried at the default cap; bubblewrap itself needs a few MiB.
        bwrap.address_space = AddressSpaceCap::Used;
        if let Ok(Err(said)) | Err(said) = try_sandbox(&bwrap) {
            bwrap.address_space = AddressSpaceCap::Unusable(said);
        }
    }
    tracing::debug!(?bwrap, "shell sandbox probed");
    Ok(bwrap)
}

/// Runs `exit 0` in a sandbox exactly as commands are run: `Ok(Err)` with
/// what bubblewrap said if it failed, `Err` if it could not be run at all.
fn try_sandbox(bwrap: &Bubblewrap) -> Result<Result<(), String>, String> {
    let sandbox = Sandbox::new(&ShellSettings::default(), &Grants::default());
    let prepared = sandbox
        .prepare(bwrap, "exit 0", SCRATCH, None, None)
        .map_err(|error| format!("cannot prepare a shell sandbox: {error}"))?;
    let mut command = prepared.command;
    let tried = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|error| {
            format!(
                "bubblewrap at {} cannot run ({error})",
                bwrap.path.display()
            )
        })?;
    match tried.status.success() {
        true => Ok(Ok(())),
        false => Ok(Err(String::from_utf8_lossy(&tried.stderr)
            .trim()
            .to_string())),
    }
}

/// The shell the sandbox's user logs in with (and shell commands run in).
fn login_shell() -> &'static str {
    match Path::new("/usr/bin/bash").is_file() || Path::new("/bin/bash").is_file() {
        true => "/bin/bash",
        false => "/bin/sh",
    }
}

/// `1 GiB`, `64 MiB` or `512 KiB` when exact, else `1000000 bytes`.
pub(crate) fn size_text(bytes: u64) -> String {
    let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match units
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{} {name}", bytes / unit),
        None => format!("{bytes} bytes"),
    }
}

/// `name` in the host's `PATH` (or `/usr/bin`), as an absolute path.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What network a sandboxed process gets: decided in one place per kind
/// of process (the shell toolset from `grants.network.shell`, a harness
/// agent in `crate::harness`), applied here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    /// A network namespace of its own with only a loopback device: no
    /// host, local or remote, is reachable.
    None,
    /// The host's network namespace: every host the host can reach.
    Host,
    /// A network namespace of its own, and the egress gate
    /// ([`egress::Gate`], started per process): only the hosts and ports
    /// the agent's `grants.http` and `grants.network.connect` name, through
    /// the proxy variables the gate's relay sets.
    Gated,
}

impl Network {
    /// The shell toolset's: the whole network with `grants.network.shell`,
    /// else the gate when the agent is granted hosts, else none.
    pub(crate) fn for_shell(grants: &Grants) -> Network {
        match (grants.shell_network, egress::wanted(grants)) {
            (true, _) => Network::Host,
            (false, true) => Network::Gated,
            (false, false) => Network::None,
        }
    }
}

/// A program run in a sandbox rather than a shell command: what it may
/// see and what caps it. See [`Sandbox::for_program`].
pub(crate) struct ProgramSandbox<'a> {
    /// The directories granted to the agent (at their guest paths).
    pub grants: &'a Grants,
    /// Host directories the program needs to run (its own, its
    /// interpreter's), bound read-only at the same paths.
    pub program_dirs: Vec<PathBuf>,
    /// Its whole environment (nothing of the host's is added).
    pub env: Vec<(String, String)>,
    pub network: Network,
    pub max_file_size: u64,
    pub max_processes: u32,
    pub max_memory: u64,
}

/// One task's sandbox: the parts of the command line that its grants and
/// settings fix.
pub(crate) struct Sandbox {
    /// Granted directories, parents before the directories inside them.
    dirs: Vec<DirGrant>,
    /// Directories of the program's own, bound read-only.
    program_dirs: Vec<PathBuf>,
    network: Network,
    /// What a [`Network::Gated`] process may reach.
    gate_grants: Grants,
    env: Vec<(String, String)>,
    /// The shell commands run in.
    shell: &'static str,
    /// Where commands start without a `cwd`: the first granted directory,
    /// else /tmp.
    default_cwd: String,
    max_file_size: u64,
    max_processes: u32,
    max_memory: u64,
}

/// A sandboxed command ready to spawn, the descriptors it inherits (open
/// until it is spawned), and the read end of its `--json-status-fd`.
pub(crate) struct Prepared {
    pub(crate) command: std::process::Command,
    fds: Vec<OwnedFd>,
    status: Option<PipeReader>,
}

impl Sandbox {
    pub(crate) fn new(settings: &ShellSettings, grants: &Grants) -> Sandbox {
        let default_cwd = (grants.dirs.first().map(|dir| dir.guest.clone()))
            .unwrap_or_else(|| SCRATCH.to_string());
        // Mounted in this order, so a grant inside another stays visible.
        let mut dirs = grants.dirs.clone();
        dirs.sort_by_key(|dir| dir.guest.matches('/').count());
        let mut env = vec![
            ("PATH".to_string(), PATH.to_string()),
            ("HOME".to_string(), HOME.to_string()),
            ("TMPDIR".to_string(), SCRATCH.to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        env.extend(grants.env.iter().cloned());
        env.extend(settings.env.iter().cloned());
        Sandbox {
            default_cwd,
            dirs,
            program_dirs: Vec::new(),
            network: Network::for_shell(grants),
            gate_grants: gate_grants(grants),
            env,
            shell: login_shell(),
            max_file_size: settings.max_file_size,
            max_processes: settings.max_processes,
            max_memory: settings.max_memory,
        }
    }

    /// The sandbox of a program (a harness agent's CLI): the agent's
    /// granted directories, the program's own directories read-only, and
    /// exactly the environment `spec` gives.
    pub(crate) fn for_program(spec: ProgramSandbox) -> Sandbox {
        let default_cwd = (spec.grants.dirs.first().map(|dir| dir.guest.clone()))
            .unwrap_or_else(|| SCRATCH.to_string());
        let mut dirs = spec.grants.dirs.clone();
        dirs.sort_by_key(|dir| dir.guest.matches('/').count());
        Sandbox {
            default_cwd,
            dirs,
            program_dirs: spec.program_dirs,
            network: spec.network,
            gate_grants: gate_grants(spec.grants),
            env: spec.env,
            shell: login_shell(),
            max_file_size: spec.max_file_size,
            max_processes: spec.max_processes,
            max_memory: spec.max_memory,
        }
    }

    /// The granted directories, for descriptions: `/work (read-write)`.
    pub(crate) fn visible(&self) -> String {
        let dirs: Vec<String> = (self.dirs.iter())
            .map(|dir| match dir.writable {
                true => format!("{} (read-write)", dir.guest),
                false => format!("{} (read-only)", dir.guest),
            })
            .collect();
        match dirs.is_empty() {
            true => "none".to_string(),
            false => dirs.join(", "),
        }
    }

    /// The working directory a `cwd` argument names: a guest path, relative
    /// ones from the default directory.
    pub(crate) fn cwd(&self, requested: Option<&str>) -> String {
        let requested = requested.map(str::trim).unwrap_or_default();
        let joined = match requested {
            "" | "." => return self.default_cwd.clone(),
            absolute if absolute.starts_with('/') => absolute.to_string(),
            relative => format!("{}/{relative}", self.default_cwd),
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// Makes the cgroups capping the command's processes and memory, where
    /// the host has them.
    pub(crate) fn cgroups(&self, bwrap: &Bubblewrap) -> Result<Option<CommandCgroups>, String> {
        (bwrap.cgroups)
            .create(
                // The gate's relay is one more.
                (self.max_processes.saturating_add(BWRAP_PROCESSES))
                    .saturating_add(u32::from(self.network == Network::Gated)),
                self.max_memory,
            )
            .map_err(|error| {
                format!(
                    "cannot make the cgroups that cap the command's processes and memory: {error}"
                )
            })
    }

    /// The bubblewrap command running `script` with `cwd` as its working
    /// directory, joining `cgroups` before it starts. Stdio is the caller's
    /// to set.
    pub(crate) fn prepare(
        &self,
        bwrap: &Bubblewrap,
        script: &str,
        cwd: &str,
        cgroups: Option<&CommandCgroups>,
        gate: Option<&egress::Gate>,
    ) -> std::io::Result<Prepared> {
        let argv = [self.shell, "-c", script].map(OsString::from);
        self.prepare_argv(bwrap, &argv, cwd, cgroups, gate)
    }

    /// The bubblewrap command running `argv` (a program and its arguments)
    /// with `cwd` as its working directory, joining `cgroups` before it
    /// starts, through `gate`'s relay when given. Stdio is the caller's to
    /// set.
    pub(crate) fn prepare_argv(
        &self,
        bwrap: &Bubblewrap,
        argv: &[OsString],
        cwd: &str,
        cgroups: Option<&CommandCgroups>,
        gate: Option<&egress::Gate>,
    ) -> std::io::Result<Prepared> {
        let mut options = Options::default();
        options.arg("--unshare-all").arg("--unshare-user");
        let networked = match self.network {
            Network::None | Network::Gated => false,
            Network::Host => {
                options.arg("--share-net");
                true
            }
        };
        options
            .arg("--die-with-parent")
            .arg("--new-session")
            .arg("--cap-drop")
            .arg("ALL")
            .arg("--hostname")
            .arg("sandbox");
        options.arg("--ro-bind").arg("/usr").arg("/usr");
        // Merged-/usr systems have these as symlinks into /usr; others as
        // directories.
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = std::fs::read_link(&host)?;
                    options.arg("--symlink").arg(target).arg(&host);
                }
                Ok(meta) if meta.is_dir() => {
                    options.arg("--ro-bind").arg(&host).arg(&host);
                }
                _ => {}
            }
        }
        let etc = (ETC_ALWAYS.iter()).chain(if networked { ETC_NETWORK } else { &[] });
        for entry in etc {
            let host = Path::new("/etc").join(entry);
            if host.exists() {
                options.arg("--ro-bind").arg(&host).arg(&host);
            }
        }
        // A passwd and group naming only the sandbox's user, so programs
        // that look themselves up work without the host's accounts.
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let user = if uid == 0 { "root" } else { "user" };
        let group = if gid == 0 { "root" } else { "user" };
        let shell = self.shell;
        options.data(
            format!(
                "{user}:x:{uid}:{gid}:{user}:{HOME}:{shell}\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            "/etc/passwd",
        )?;
        options.data(
            format!("{group}:x:{gid}:\nnogroup:x:65534:\n"),
            "/etc/group",
        )?;
        if !networked {
            options.data("127.0.0.1 localhost\n::1 localhost\n".into(), "/etc/hosts")?;
        }
        options.arg("--proc").arg("/proc").arg("--dev").arg("/dev");
        // Writable scratch space is size-capped tmpfs only: /tmp (with HOME)
        // and /dev/shm. Each file is further capped by RLIMIT_FSIZE.
        for scratch in ["/dev/shm", SCRATCH] {
            if bwrap.tmpfs_size {
                options.arg("--size").arg(self.max_file_size.to_string());
            }
            options.arg("--tmpfs").arg(scratch);
        }
        options.arg("--dir").arg(HOME);
        // After /tmp: a program kept under the host's /tmp stays visible.
        for dir in &self.program_dirs {
            options.arg("--ro-bind").arg(dir).arg(dir);
        }
        for dir in &self.dirs {
            let how = if dir.writable { "--bind" } else { "--ro-bind" };
            options.arg(how).arg(&dir.host).arg(&dir.guest);
        }
        options.arg("--clearenv");
        for (name, value) in &self.env {
            options.arg("--setenv").arg(name).arg(value);
        }
        // After --clearenv: they set the relay's key (in the memfd, never
        // on bubblewrap's command line).
        for arg in gate.map(egress::Gate::bwrap_args).unwrap_or_default() {
            options.arg(arg);
        }
        // The root and /dev are tmpfs bubblewrap made, uncapped; read-only,
        // so nothing can be written outside the scratch space and the
        // granted directories (the device nodes are mounts of their own).
        options.arg("--remount-ro").arg("/dev");
        options.arg("--remount-ro").arg("/");
        if bwrap.disable_userns {
            options.arg("--disable-userns");
        }
        options.arg("--chdir").arg(cwd);
        // Read without blocking: bubblewrap has exited when it is read.
        let status = match bwrap.json_status {
            true => {
                let (reader, writer) = std::io::pipe()?;
                // SAFETY: fcntl on a descriptor we own.
                if unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                let writer = OwnedFd::from(writer);
                options
                    .arg("--json-status-fd")
                    .arg(writer.as_raw_fd().to_string());
                options.fds.push(writer);
                Some(reader)
            }
            false => None,
        };
        let Options { args, mut fds } = options;

        // NUL-separated, as `--args` reads them.
        let mut listed = Vec::new();
        for arg in &args {
            listed.extend_from_slice(arg.as_bytes());
            listed.push(0);
        }
        let args = memfd(&listed)?;
        let mut command = std::process::Command::new(&bwrap.path);
        command
            .arg("--args")
            .arg(args.as_raw_fd().to_string())
            .arg("--")
            .args(gate.map(egress::Gate::command_prefix).unwrap_or_default())
            .args(argv)
            .env_clear()
            .process_group(0);
        fds.push(args);
        let inherited: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let procs = cgroups.map(CommandCgroups::procs_files).unwrap_or_default();
        let max_file_size = self.max_file_size;
        let address_space =
            matches!(bwrap.address_space, AddressSpaceCap::Used).then(|| libc::rlimit {
                rlim_cur: self.max_memory,
                rlim_max: self.max_memory,
            });
        // SAFETY: between fork and exec only async-signal-safe calls
        // (fcntl, setrlimit, open, write, close) on data prepared before the
        // fork.
        unsafe {
            command.pre_exec(move || {
                // Descriptors the host inherited without close-on-exec (a
                // parent's pipes, sockets) must not reach the sandbox: only
                // stdio and bubblewrap's option memfds pass.
                let everything_from_3 = libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if everything_from_3 != 0 {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                    for fd in 3..limit.rlim_cur.min(1 << 16) as libc::c_int {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
                for &fd in &inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let size = libc::rlimit {
                    rlim_cur: max_file_size,
                    rlim_max: max_file_size,
                };
                // A core dump would go to the host's core handler.
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &size) != 0
                    || libc::setrlimit(libc::RLIMIT_CORE, &none) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(address_space) = &address_space
                    && libc::setrlimit(libc::RLIMIT_AS, address_space) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                join_cgroups(&procs)
            });
        }
        Ok(Prepared {
            command,
            fds,
            status,
        })
    }

    /// A gate for one process when its network is [`Network::Gated`].
    fn gate(&self) -> Result<Option<egress::Gate>, String> {
        match self.network {
            Network::Gated => egress::Gate::start("", &self.gate_grants)
                .map(Some)
                .map_err(|error| format!("cannot start the network gate: {error}")),
            Network::None | Network::Host => Ok(None),
        }
    }

    /// Starts `script` in the sandbox with its output captured (at most
    /// `max_output` bytes kept).
    pub(crate) fn spawn(
        &self,
        bwrap: &Bubblewrap,
        script: &str,
        cwd: &str,
        max_output: usize,
    ) -> Result<Running, String> {
        self.start(bwrap, Stdio::null, |cgroups, gate| {
            let prepared = self.prepare(bwrap, script, cwd, cgroups, gate)?;
            Ok((prepared, Captured::Merged(max_output)))
        })
    }

    /// Starts `argv` in the sandbox with its stdin and stdout piped (taken
    /// from [`Running::child`]) and its stderr captured into
    /// [`Running::output`], of which the last `stderr_tail` bytes are kept.
    pub(crate) fn spawn_program(
        &self,
        bwrap: &Bubblewrap,
        argv: &[OsString],
        cwd: &str,
        stderr_tail: usize,
    ) -> Result<Running, String> {
        self.start(bwrap, Stdio::piped, |cgroups, gate| {
            let prepared = self.prepare_argv(bwrap, argv, cwd, cgroups, gate)?;
            Ok((prepared, Captured::StderrTail(stderr_tail)))
        })
    }

    /// Starts what `prepare` makes in the sandbox's cgroups and gate, its
    /// stdin from `stdin` and its output captured as `prepare` says.
    fn start(
        &self,
        bwrap: &Bubblewrap,
        stdin: fn() -> Stdio,
        prepare: impl FnOnce(
            Option<&CommandCgroups>,
            Option<&egress::Gate>,
        ) -> std::io::Result<(Prepared, Captured)>,
    ) -> Result<Running, String> {
        let cgroups = self.cgroups(bwrap)?;
        let gate = self.gate()?;
        let start = || -> std::io::Result<(tokio::process::Child, Output, Option<PipeReader>)> {
            let (prepared, captured) = prepare(cgroups.as_ref(), gate.as_ref())?;
            let (reader, writer) = std::io::pipe()?;
            let mut command = tokio::process::Command::from(prepared.command);
            command.stdin(stdin()).kill_on_drop(true);
            match captured {
                Captured::Merged(_) => command.stdout(writer.try_clone()?).stderr(writer),
                Captured::StderrTail(_) => command.stdout(Stdio::piped()).stderr(writer),
            };
            let child = command.spawn()?;
            // The parent's copies of the pipe's write end go with the
            // command, so the output ends when the sandbox's processes do.
            drop(command);
            drop(prepared.fds);
            let output = match captured {
                Captured::Merged(cap) => Output::capture(reader, cap)?,
                Captured::StderrTail(cap) => Output::capture_tail(reader, cap)?,
            };
            Ok((child, output, prepared.status))
        };
        let (child, output, status) =
            start().map_err(|error| format!("cannot start the sandbox (bubblewrap): {error}"))?;
        Ok(Running {
            child,
            cgroups,
            output,
            status,
            max_processes: self.max_processes,
            max_memory: self.max_memory,
            max_file_size: self.max_file_size,
            address_space: matches!(bwrap.address_space, AddressSpaceCap::Used),
            sandboxed: true,
            gate,
        })
    }
}

/// Cgroups capping an unconfined process (a harness agent granted
/// `unconfined`) at `max_processes` and `max_memory`, made where the
/// sandbox's probe found them (none where bubblewrap or cgroups are
/// missing). The process joins them through their
/// [`CommandCgroups::procs_files`]; dropping them kills what is left.
pub(crate) fn unconfined_cgroups(
    max_processes: u32,
    max_memory: u64,
) -> Result<Option<CommandCgroups>, String> {
    let Ok(bwrap) = bubblewrap() else {
        return Ok(None);
    };
    (bwrap.cgroups)
        .create(max_processes, max_memory)
        .map_err(|error| format!("cannot make the cgroups that cap the process: {error}"))
}

/// The part of `grants` a gate applies: hosts and endpoints.
fn gate_grants(grants: &Grants) -> Grants {
    Grants {
        http: grants.http.clone(),
        connect: grants.connect.clone(),
        ..Grants::default()
    }
}

/// A command running in its sandbox. Dropping it kills the sandbox.
pub(crate) struct Running {
    pub(crate) child: tokio::process::Child,
    cgroups: Option<CommandCgroups>,
    pub(crate) output: Output,
    /// bubblewrap's `--json-status-fd`, where it has one.
    status: Option<PipeReader>,
    max_processes: u32,
    max_memory: u64,
    max_file_size: u64,
    /// Whether each process's address space was capped at `max_memory`.
    address_space: bool,
    /// Whether it runs in bubblewrap (see [`Running::unconfined`]).
    sandboxed: bool,
    /// Its egress gate ([`Network::Gated`]), stopped when it is dropped.
    gate: Option<egress::Gate>,
}

impl Running {
    /// Starts `command` as it is, without a sandbox (a harness agent
    /// granted `unconfined`), with its stdin and stdout piped and the last
    /// `stderr_tail` bytes of its stderr captured. The caller makes it a
    /// process group of its own, so that [`Running::kill`] ends its tree,
    /// and has it join `cgroups` (capped at `max_processes` and
    /// `max_memory`), which kill whatever left the group when dropped.
    pub(crate) fn unconfined(
        command: std::process::Command,
        stderr_tail: usize,
        cgroups: Option<CommandCgroups>,
        (max_processes, max_memory): (u32, u64),
    ) -> std::io::Result<Running> {
        let (reader, writer) = std::io::pipe()?;
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(writer)
            .kill_on_drop(true);
        let child = command.spawn()?;
        drop(command);
        Ok(Running {
            child,
            cgroups,
            output: Output::capture_tail(reader, stderr_tail)?,
            status: None,
            max_processes,
            max_memory,
            max_file_size: u64::MAX,
            address_space: false,
            sandboxed: false,
            gate: None,
        })
    }

    /// What bubblewrap said if it failed before the command started, once
    /// it has exited with `status` and printed `output`; `None` when the
    /// command ran (whatever it printed, even `bwrap: …`).
    pub(crate) fn sandbox_failure(&self, status: ExitStatus, output: &str) -> Option<String> {
        // bubblewrap's own failures exit 1.
        if !self.sandboxed || status.code() != Some(1) {
            return None;
        }
        let started = match &self.status {
            Some(pipe) => command_was_executed(pipe),
            // Without `--json-status-fd` (bubblewrap before 0.3.3), its
            // message is the best sign.
            None => !output.starts_with("bwrap: "),
        };
        if started {
            return None;
        }
        let said = (output.lines().rev()).find_map(|line| line.strip_prefix("bwrap: "));
        Some(said.unwrap_or(output).trim().to_string())
    }

    /// A note per limit the command ran into, for its result: it may have
    /// ended with `status` (`None`: killed at its timeout) and printed
    /// `output`.
    pub(crate) fn limit_notes(&self, status: Option<ExitStatus>, output: &str) -> Vec<String> {
        let mut notes = Vec::new();
        let cgroups = self.cgroups.as_ref();
        if cgroups.is_some_and(CommandCgroups::hit_process_limit) {
            notes.push(format!(
                "the command reached its limit of {} processes: further forks were refused",
                self.max_processes
            ));
        }
        let memory = size_text(self.max_memory);
        if cgroups.is_some_and(CommandCgroups::hit_memory_limit) {
            notes.push(format!(
                "stopped at the memory limit of {memory}: the kernel killed a process of the \
                 command to keep it under the limit, which counts all its processes and its \
                 files in /tmp and /dev/shm"
            ));
        } else if self.address_space
            && status.is_some_and(|status| !status.success())
            && allocation_failed(output)
        {
            notes.push(format!(
                "each process may use at most {memory} of memory: allocating more fails"
            ));
        }
        let too_big = status.is_some_and(|status| {
            status.code() == Some(128 + libc::SIGXFSZ) || status.signal() == Some(libc::SIGXFSZ)
        }) || output.contains("File size limit exceeded");
        if too_big {
            notes.push(format!(
                "a file reached the size limit of {} bytes: writing more was refused",
                self.max_file_size
            ));
        }
        for refused in self.gate.iter().flat_map(egress::Gate::take_refusals) {
            notes.push(format!("network: {refused}"));
        }
        notes
    }

    /// Kills bubblewrap's process group (itself and the sandbox's PID 1),
    /// which ends the PID namespace and so every process in it. Only
    /// before the child is reaped, so the group id cannot have been reused.
    pub(crate) fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain killpg(2) of a group led by our unreaped child.
            unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether bubblewrap's `--json-status-fd` reported the command's exit code,
/// which it does only once the command was executed. Read after bubblewrap
/// exited, so everything it wrote is in the pipe.
fn command_was_executed(mut pipe: &PipeReader) -> bool {
    let mut reported = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => reported.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // One JSON object a line: `{ "child-pid": …, … }`, then
    // `{ "exit-code": N }`.
    String::from_utf8_lossy(&reported).lines().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|report| report.get("exit-code").is_some())
    })
}

/// Whether `output` shows a program failing to allocate memory.
fn allocation_failed(output: &str) -> bool {
    let output = output.to_lowercase();
    [
        "cannot allocate memory",
        "memory exhausted",
        "memoryerror",
        "out of memory",
        "bad_alloc",
    ]
    .iter()
    .any(|sign| output.contains(sign))
}

/// bubblewrap's options, and the memfds holding data files they name.
#[derive(Default)]
struct Options {
    args: Vec<OsString>,
    fds: Vec<OwnedFd>,
}

impl Options {
    fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Options {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// A read-only file at `at` in the sandbox holding `content`.
    fn data(&mut self, content: String, at: &str) -> std::io::Result<()> {
        let fd = memfd(content.as_bytes())?;
        self.arg("--ro-bind-data")
            .arg(fd.as_raw_fd().to_string())
            .arg(at);
        self.fds.push(fd);
        Ok(())
    }
}

/// A memfd holding `content`, read from its start.
fn memfd(content: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create returns a new descriptor we own, or -1.
    let fd = unsafe { libc::memfd_create(c"bgagents-sandbox".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open and owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(content)?;
    file.rewind()?;
    Ok(file.into())
}

/// What of a sandboxed command's output is kept.
enum Captured {
    /// Its stdout and stderr together, the first so many bytes.
    Merged(usize),
    /// Its stderr only, the last so many bytes (stdout is piped to the caller).
    StderrTail(usize),
}

/// Moves the calling process into each cgroup whose `cgroup.procs` file is
/// in `procs`. Called between fork and exec, so it makes only
/// async-signal-safe calls (open, write, close) on data prepared before.
pub(crate) fn join_cgroups(procs: &[std::ffi::CString]) -> std::io::Result<()> {
    for procs in procs {
        // SAFETY: `procs` is a NUL-terminated path; the buffer written is a
        // static byte; `fd` is closed once, by this function.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bubblewrap_without_cgroups(version: &str, address_space: AddressSpaceCap) -> Bubblewrap {
        Bubblewrap {
            path: PathBuf::from("/usr/bin/bwrap"),
            version: version.to_string(),
            tmpfs_size: false,
            disable_userns: false,
            json_status: true,
            cgroups: Cgroups::none("no cgroup v1 hierarchy or cgroup v2 is mounted"),
            address_space,
        }
    }

    #[test]
    fn check_warns_of_each_weakened_limit() {
        let old = bubblewrap_without_cgroups(
            "0.6.1",
            AddressSpaceCap::Unusable("bwrap: out of memory".into()),
        );
        let lines: Vec<String> = describe(&old).lines().map(str::to_string).collect();
        assert_eq!(
            lines[0],
            "commands run in bubblewrap 0.6.1 (/usr/bin/bwrap)"
        );
        assert!(lines[1].starts_with("warning: no pids cgroup"), "{lines:?}");
        assert!(lines[1].contains("no cgroup v1 hierarchy"), "{lines:?}");
        assert!(
            lines[2].starts_with("warning: no memory cgroup") && lines[2].contains("RLIMIT_AS"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("bwrap: out of memory")
                && lines[2].contains("bounded only by the host's"),
            "{lines:?}"
        );
        assert!(lines[3].contains("has no --size"), "{lines:?}");
        assert!(lines[4].contains("has no --disable-userns"), "{lines:?}");
        assert_eq!(lines.len(), 5);

        let fallback = bubblewrap_without_cgroups("0.8.0", AddressSpaceCap::Used);
        let fallback = describe(&fallback);
        assert!(
            fallback.contains("each of its processes is held to the cap by RLIMIT_AS instead"),
            "{fallback}"
        );
    }

    /// Runs `script` to its end in `sandbox`: its status, output and the
    /// notes on limits it ran into.
    async fn run(
        sandbox: &Sandbox,
        bwrap: &Bubblewrap,
        script: &str,
    ) -> (ExitStatus, String, Vec<String>) {
        let mut running = sandbox.spawn(bwrap, script, SCRATCH, 4096).unwrap();
        let status = running.child.wait().await.unwrap();
        running.output.finish(Duration::from_secs(5)).await;
        let output = running.output.text();
        let notes = running.limit_notes(Some(status), &output);
        (status, output, notes)
    }

    #[tokio::test]
    async fn without_a_memory_cgroup_each_process_is_held_to_the_cap_by_rlimit_as() {
        let probed = match bubblewrap() {
            Ok(probed) => probed,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let bwrap = Bubblewrap {
            path: probed.path.clone(),
            version: probed.version.clone(),
            tmpfs_size: probed.tmpfs_size,
            disable_userns: probed.disable_userns,
            json_status: probed.json_status,
            cgroups: Cgroups::none("none in this test"),
            address_space: AddressSpaceCap::Used,
        };
        let settings = ShellSettings {
            max_memory: 64 << 20,
            ..ShellSettings::default()
        };
        let sandbox = Sandbox::new(&settings, &Grants::default());
        // bubblewrap itself runs under the cap.
        let (status, output, notes) = run(&sandbox, &bwrap, "ulimit -v; echo fine").await;
        assert!(status.success(), "{status:?}: {output}");
        assert_eq!(output, "65536\nfine\n");
        assert!(notes.is_empty(), "{notes:?}");

        // `tail` keeps a line until its end: here 1 GiB without one.
        let (status, output, notes) = run(&sandbox, &bwrap, "head -c 1G /dev/zero | tail").await;
        assert!(!status.success(), "{output}");
        assert!(output.contains("memory exhausted"), "{output}");
        assert_eq!(
            notes,
            ["each process may use at most 64 MiB of memory: allocating more fails"]
        );
    }
}
