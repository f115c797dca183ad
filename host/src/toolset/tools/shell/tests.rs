//! The shell toolset against the host's real bubblewrap: what a command can
//! and cannot reach, its limits, and that nothing it starts outlives it.
//! Each test is skipped (saying why) where bubblewrap cannot run.

use super::*;
use crate::config::DirGrant;
use bgagents_testkit::{holds_within, host_has_process};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The shell, or `None` (printed) where bubblewrap cannot sandbox.
fn shell(settings: ShellSettings, grants: Grants) -> Option<Shell> {
    match probe() {
        Ok(_) => Some(Shell::new(&settings, &grants)),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

async fn call(shell: &mut Shell, name: &str, args: Value) -> Result<String, String> {
    let args = Args::parse(&args.to_string()).unwrap();
    shell.call(name, &args).await.expect("a shell tool")
}

async fn sh(shell: &mut Shell, cmd: &str) -> String {
    call(shell, SHELL, json!({"cmd": cmd})).await.unwrap()
}

/// A fresh host directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("bgagents-shell-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn grant(&self, guest: &str, writable: bool) -> DirGrant {
        DirGrant {
            host: self.0.clone(),
            guest: guest.to_string(),
            writable,
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn grants(dirs: Vec<DirGrant>) -> Grants {
    Grants {
        dirs,
        ..Grants::default()
    }
}

async fn gone(cmdline: &[&str]) -> bool {
    holds_within(Duration::from_secs(10), || !host_has_process(cmdline)).await
}

#[tokio::test]
async fn a_read_write_grant_is_written_and_a_read_only_one_refused() {
    let (work, docs) = (TempDir::new("rw"), TempDir::new("ro"));
    std::fs::write(docs.0.join("readme"), "hello").unwrap();
    let Some(mut shell) = shell(
        ShellSettings::default(),
        grants(vec![work.grant("/work", true), docs.grant("/docs", false)]),
    ) else {
        return;
    };
    let wrote = sh(&mut shell, "echo made > out.txt && pwd && cat /docs/readme").await;
    assert_eq!(wrote, "/work\nhello");
    assert_eq!(
        std::fs::read_to_string(work.0.join("out.txt")).unwrap(),
        "made\n"
    );

    let refused = sh(&mut shell, "echo x > /docs/new").await;
    assert!(
        refused.starts_with("Error executing command: exit status 1"),
        "{refused}"
    );
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(!docs.0.join("new").exists());
}

#[tokio::test]
async fn the_hosts_secrets_and_other_files_are_not_there() {
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    let shadow = sh(&mut shell, "cat /etc/shadow").await;
    assert!(shadow.contains("No such file or directory"), "{shadow}");
    let listed = sh(&mut shell, "ls / /etc; echo $HOME; pwd").await;
    for absent in ["root", "home", "work", "var", "shadow", "ssh"] {
        assert!(
            !listed.lines().any(|line| line == absent),
            "{absent} in {listed}"
        );
    }
    assert!(listed.ends_with("/tmp/home\n/tmp"), "{listed}");
    let root = sh(
        &mut shell,
        "touch /new /dev/new; mkdir /usr/new; grep CapEff /proc/self/status",
    )
    .await;
    for path in ["/new", "/dev/new", "/usr/new"] {
        let refused = (root.lines())
            .any(|line| line.contains(path) && line.ends_with("Read-only file system"));
        assert!(refused, "{path}: {root}");
    }
    assert!(root.contains("CapEff:\t0000000000000000"), "{root}");
}

#[tokio::test]
async fn commands_get_only_the_granted_environment() {
    // The host's environment (cargo gives tests CARGO_* variables) stays out.
    assert!(std::env::vars().any(|(name, _)| name.starts_with("CARGO")));
    let settings = ShellSettings {
        env: vec![("FROM_SETTINGS".into(), "yes".into())],
        ..ShellSettings::default()
    };
    let grants = Grants {
        env: vec![("FROM_GRANTS".into(), "also".into())],
        ..Grants::default()
    };
    let Some(mut shell) = shell(settings, grants) else {
        return;
    };
    let env = sh(&mut shell, "env | sort").await;
    assert!(!env.contains("CARGO"), "{env}");
    assert!(env.contains("HOME=/tmp/home\n"), "{env}");
    assert!(
        env.contains("FROM_SETTINGS=yes") && env.contains("FROM_GRANTS=also"),
        "{env}"
    );
}

#[tokio::test]
async fn no_network_without_the_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected");
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    let refused = sh(&mut shell, &connect).await;
    assert!(refused.contains("Connection refused"), "{refused}");
    assert!(!refused.contains("connected"), "{refused}");

    let granted = Grants {
        shell_network: true,
        ..Grants::default()
    };
    let mut networked = Shell::new(&ShellSettings::default(), &granted);
    assert_eq!(sh(&mut networked, &connect).await, "connected");
}

#[tokio::test]
async fn a_fork_bomb_ends_at_the_timeout_and_the_host_carries_on() {
    let settings = ShellSettings {
        timeout: Duration::from_secs(3),
        max_processes: 64,
        ..ShellSettings::default()
    };
    let Some(mut shell) = shell(settings, Grants::default()) else {
        return;
    };
    if sandbox::bubblewrap().unwrap().cgroups.pids.is_err() {
        eprintln!("skipped: no pids cgroup here, so a fork bomb would be bounded only by time");
        return;
    }
    let started = Instant::now();
    let bomb = sh(&mut shell, "bomb() { bomb | bomb & }; bomb; sleep 1007").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(bomb.starts_with("Command timed out after 3s"), "{bomb}");
    assert!(bomb.contains("limit of 64 processes"), "{bomb}");
    assert!(gone(&["sleep", "1007"]).await);
    assert_eq!(sh(&mut shell, "echo still fine").await, "still fine");
}

#[tokio::test]
async fn a_big_write_stops_at_the_file_size_cap() {
    let work = TempDir::new("big");
    let settings = ShellSettings {
        max_file_size: 1 << 20,
        ..ShellSettings::default()
    };
    let Some(mut shell) = shell(settings, grants(vec![work.grant("/work", true)])) else {
        return;
    };
    let big = sh(
        &mut shell,
        "head -c 10G /dev/zero > big; echo in tmp; head -c 10G /dev/zero > /tmp/big",
    )
    .await;
    assert!(big.contains("size limit of 1048576 bytes"), "{big}");
    assert_eq!(
        std::fs::metadata(work.0.join("big")).unwrap().len(),
        1 << 20
    );
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_everything_it_started() {
    let work = TempDir::new("timeout");
    let settings = ShellSettings {
        timeout: Duration::from_secs(60),
        ..ShellSettings::default()
    };
    let Some(mut shell) = shell(settings, grants(vec![work.grant("/work", true)])) else {
        return;
    };
    let args = json!({"cmd": "(setsid sleep 1001 &); sleep 1002 & sleep 1000", "timeout": 2});
    let started = Instant::now();
    let answer = call(&mut shell, SHELL, args).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(answer.starts_with("Command timed out after 2s"), "{answer}");
    for sleep in ["1000", "1001", "1002"] {
        assert!(gone(&["sleep", sleep]).await, "sleep {sleep} survived");
    }
    // Longer than the toolset's timeout is refused.
    let long = call(&mut shell, SHELL, json!({"cmd": "true", "timeout": 61})).await;
    assert!(long.unwrap_err().contains("from 1 to 60"));
}

#[tokio::test]
async fn a_finished_command_leaves_nothing_running() {
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    // The shell exits once its backgrounded sleep is running.
    let started =
        "sleep 1003 & until grep -qs 1003 /proc/$!/cmdline; do sleep 0.01; done; echo started";
    assert_eq!(sh(&mut shell, started).await, "started");
    assert!(gone(&["sleep", "1003"]).await);
}

#[tokio::test]
async fn output_is_capped_with_a_note() {
    let settings = ShellSettings {
        max_output: 1000,
        ..ShellSettings::default()
    };
    let Some(mut shell) = shell(settings, Grants::default()) else {
        return;
    };
    let out = sh(&mut shell, "head -c 5000 /dev/zero | tr '\\0' x").await;
    assert!(out.starts_with(&"x".repeat(1000)), "{out}");
    assert!(
        out.ends_with("[output cut at 1000 bytes; the command wrote 5000 bytes]"),
        "{out}"
    );
    let failed = sh(&mut shell, "echo oops >&2; exit 3").await;
    assert_eq!(
        failed,
        "Error executing command: exit status 3\nOutput: oops"
    );
}

#[tokio::test]
async fn background_jobs_are_listed_viewed_stopped_and_killed_with_the_shell() {
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    let started = call(
        &mut shell,
        RUN_BACKGROUND_JOB,
        json!({"cmd": "echo ready; sleep 1004"}),
    )
    .await
    .unwrap();
    assert!(
        started.starts_with("Background job started with ID: job_1"),
        "{started}"
    );
    call(
        &mut shell,
        RUN_BACKGROUND_JOB,
        json!({"cmd": "sleep 1005 & sleep 1006"}),
    )
    .await
    .unwrap();
    call(&mut shell, RUN_BACKGROUND_JOB, json!({"cmd": "exit 4"}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(shell.jobs.view("job_1").unwrap().contains("ready")
        && shell.jobs.list().contains("failed"))
    {
        assert!(Instant::now() < deadline, "{}", shell.jobs.list());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = call(&mut shell, LIST_BACKGROUND_JOBS, json!({}))
        .await
        .unwrap();
    assert!(
        listed.contains("ID: job_1\n  Command: echo ready; sleep 1004\n  Status: running"),
        "{listed}"
    );
    assert!(
        listed.contains("ID: job_3\n  Command: exit 4\n  Status: failed"),
        "{listed}"
    );
    assert!(listed.contains("Exit: exit status 4"), "{listed}");
    let viewed = call(&mut shell, VIEW_BACKGROUND_JOB, json!({"job_id": "job_1"}))
        .await
        .unwrap();
    assert!(viewed.ends_with("--- Output ---\nready\n"), "{viewed}");

    let stopped = call(&mut shell, STOP_BACKGROUND_JOB, json!({"job_id": "job_1"})).await;
    assert!(stopped.unwrap().starts_with("Job job_1 stopped"));
    assert!(gone(&["sleep", "1004"]).await);
    let again = call(&mut shell, STOP_BACKGROUND_JOB, json!({"job_id": "job_1"})).await;
    assert!(again.unwrap_err().contains("not running (status: stopped)"));
    let unknown = call(&mut shell, VIEW_BACKGROUND_JOB, json!({"job_id": "job_9"})).await;
    assert!(
        unknown
            .unwrap_err()
            .contains("the jobs are job_1, job_2, job_3")
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while !(host_has_process(&["sleep", "1005"]) && host_has_process(&["sleep", "1006"])) {
        assert!(Instant::now() < deadline, "job_2's processes never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(shell);
    assert!(gone(&["sleep", "1005"]).await && gone(&["sleep", "1006"]).await);
}

#[test]
fn cwd_is_a_guest_path_from_the_first_grant() {
    let sandbox = Sandbox::new(
        &ShellSettings::default(),
        &grants(vec![DirGrant {
            host: Path::new("/srv/x").into(),
            guest: "/work".into(),
            writable: true,
        }]),
    );
    assert_eq!(sandbox.cwd(None), "/work");
    assert_eq!(sandbox.cwd(Some("src/../lib")), "/work/lib");
    assert_eq!(sandbox.cwd(Some("/tmp/")), "/tmp");
    assert_eq!(sandbox.cwd(Some("../../..")), "/");
    let bare = Sandbox::new(&ShellSettings::default(), &Grants::default());
    assert_eq!(bare.cwd(Some(".")), "/tmp");
}

#[tokio::test]
async fn commands_inherit_only_their_stdio_and_bad_cwds_are_explained() {
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    // `ls` opens 3 to read the directory.
    let fds = sh(&mut shell, "ls /proc/self/fd | tr '\\n' ' '").await;
    assert_eq!(
        fds, "0 1 2 3",
        "only stdin, stdout and stderr are inherited"
    );
    let args = json!({"cmd": "pwd", "cwd": "/nowhere"});
    let refused = call(&mut shell, SHELL, args).await.unwrap_err();
    assert!(refused.contains("the sandbox could not start"), "{refused}");
    assert!(refused.contains("/nowhere"), "{refused}");
}

/// Settings with a small memory cap, for the tests that go past it.
fn capped_memory() -> ShellSettings {
    ShellSettings {
        max_memory: 64 << 20,
        // So that /tmp and /dev/shm could hold more than the memory cap.
        max_file_size: 1 << 30,
        ..ShellSettings::default()
    }
}

/// The shell with a memory cgroup per command, or `None` (printed).
fn shell_with_memory_cgroup(settings: ShellSettings) -> Option<Shell> {
    let shell = shell(settings, Grants::default())?;
    match &sandbox::bubblewrap().unwrap().cgroups.memory {
        Ok(_) => Some(shell),
        Err(why) => {
            eprintln!("skipped: no memory cgroup here ({why})");
            None
        }
    }
}

#[tokio::test]
async fn memory_past_the_cap_is_stopped_with_a_note_and_the_next_command_runs() {
    let Some(mut shell) = shell_with_memory_cgroup(capped_memory()) else {
        return;
    };
    // `tail` keeps a line until its end: here 2 GiB without one.
    let hog = sh(&mut shell, "head -c 2G /dev/zero | tail; echo after").await;
    // `tail` was killed, and the shell went on.
    assert!(hog.contains("Killed"), "{hog}");
    assert!(
        hog.ends_with(
            "\nafter\n[stopped at the memory limit of 64 MiB: the kernel killed a process of the \
             command to keep it under the limit, which counts all its processes and its files \
             in /tmp and /dev/shm]"
        ),
        "{hog}"
    );
    let python = sh(
        &mut shell,
        "python3 -c 'b = bytearray(10**9)' || echo failed",
    )
    .await;
    if !python.contains("command not found") {
        assert!(python.contains("memory limit of 64 MiB"), "{python}");
    }
    assert_eq!(sh(&mut shell, "echo still fine").await, "still fine");
}

#[tokio::test]
async fn files_in_tmp_and_dev_shm_count_against_the_memory_cap() {
    let Some(mut shell) = shell_with_memory_cgroup(capped_memory()) else {
        return;
    };
    for scratch in ["/tmp", "/dev/shm"] {
        let fill = sh(
            &mut shell,
            &format!("head -c 512M /dev/zero > {scratch}/fill; ls -l {scratch}/fill"),
        )
        .await;
        assert!(fill.contains("memory limit of 64 MiB"), "{scratch}: {fill}");
        assert!(!fill.contains("536870912"), "{scratch}: {fill}");
    }
    assert_eq!(
        sh(&mut shell, "ls /tmp /dev/shm; echo fine").await,
        "/dev/shm:\n\n/tmp:\nhome\nfine"
    );
}

#[tokio::test]
async fn a_background_job_past_the_memory_cap_says_so() {
    let Some(mut shell) = shell_with_memory_cgroup(capped_memory()) else {
        return;
    };
    let args = json!({"cmd": "head -c 2G /dev/zero | tail"});
    call(&mut shell, RUN_BACKGROUND_JOB, args).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shell.jobs.list().contains("running") {
        assert!(Instant::now() < deadline, "{}", shell.jobs.list());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let viewed = call(&mut shell, VIEW_BACKGROUND_JOB, json!({"job_id": "job_1"}))
        .await
        .unwrap();
    assert!(viewed.contains("Status: failed"), "{viewed}");
    assert!(
        viewed.contains("Note: stopped at the memory limit of 64 MiB"),
        "{viewed}"
    );
}

#[tokio::test]
async fn a_command_printing_like_bubblewrap_fails_as_itself() {
    let Some(mut shell) = shell(ShellSettings::default(), Grants::default()) else {
        return;
    };
    let own = call(
        &mut shell,
        SHELL,
        json!({"cmd": "echo 'bwrap: x' >&2; exit 1"}),
    )
    .await;
    assert_eq!(
        own,
        Ok("Error executing command: exit status 1\nOutput: bwrap: x".to_string())
    );
    // bubblewrap's own failure, for a job too.
    let args = json!({"cmd": "true", "cwd": "/nowhere"});
    call(&mut shell, RUN_BACKGROUND_JOB, args).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while shell.jobs.list().contains("running") {
        assert!(Instant::now() < deadline, "{}", shell.jobs.list());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = shell.jobs.list();
    assert!(
        listed.contains("Exit: the sandbox could not start: Can't chdir to /nowhere"),
        "{listed}"
    );
}

#[test]
fn sizes_read_in_binary_units_when_exact() {
    assert_eq!(size_text(1 << 30), "1 GiB");
    assert_eq!(size_text(64 << 20), "64 MiB");
    assert_eq!(size_text(3 << 29), "1536 MiB");
    assert_eq!(size_text(1000), "1000 bytes");
}
