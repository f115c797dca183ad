//! The persistent task store through the library: tasks run with a store
//! come back after the toolset is gone (finished ones unchanged, in-flight
//! ones interrupted, stops still stopped), pruning reaches the store, a
//! foreign or locked file is refused clearly, and a crash harness kills a
//! process running tasks at random points and checks what the store kept.

use bgagents::{Reach, Store, TaskStatus, TaskView, Team, Toolset, render};
use bgagents_testkit::{Scratch, eventually, finished, plugin_dir, start, status};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const TEAM: &str = r#"
agents:
  worker:
    component: probe.wasm
limits: {max_running: 2, max_retained: 500}
"#;

fn team(yaml: &str) -> Team {
    Team::parse(yaml, Path::new("test-team.yaml"), plugin_dir())
        .unwrap_or_else(|error| panic!("team does not parse:\n{error}"))
}

fn load(yaml: &str, state: &Path) -> Toolset {
    let store = Store::open(state).unwrap_or_else(|error| panic!("{error}"));
    Toolset::load_with_store(team(yaml), store, |_| {}).unwrap_or_else(|error| panic!("{error}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What must survive a restart of a finished task's view (its runtime is
/// recomputed from stored times, so it is left out).
fn kept(view: &TaskView) -> impl PartialEq + std::fmt::Debug {
    (
        view.info.id.clone(),
        view.info.agent.clone(),
        view.info.status,
        view.info.parent.clone(),
        view.task.clone(),
        view.output.text.clone(),
        view.output.truncated,
        view.result.clone(),
        view.error.clone(),
    )
}

#[test]
fn finished_tasks_come_back_unchanged_and_in_flight_ones_interrupted() {
    let scratch = Scratch::new();
    let state = scratch.dir.join("state");
    // The first process: tasks that complete, fail, are stopped, and two
    // left in flight (one running, one queued behind the running cap) when
    // it ends without shutting down (its runtime is dropped, then the
    // session, whose tasks are gone by then).
    let first = runtime();
    let (before, in_flight, session) = first.block_on(async {
        let toolset = load(TEAM, &state);
        let session = toolset.open_session(None).unwrap();
        let caller = session.caller();
        let completed = start(&toolset, caller, "worker", "print 3 line && echo done");
        let failed = start(&toolset, caller, "worker", "fail boom");
        let mut views = Vec::new();
        for id in [&completed, &failed] {
            views.push(finished(&toolset, caller, id).await);
        }
        let stopped = start(&toolset, caller, "worker", "spin");
        eventually("the spinner runs", || {
            status(&toolset, caller, &stopped) == TaskStatus::Running
        })
        .await;
        toolset
            .stop_background_agent(caller, &stopped)
            .await
            .unwrap();
        views.push(finished(&toolset, caller, &stopped).await);
        let running = start(&toolset, caller, "worker", "print 2 kept && spin");
        let _blocker = start(&toolset, caller, "worker", "spin");
        let queued = start(&toolset, caller, "worker", "echo never");
        eventually("the first spinner runs", || {
            status(&toolset, caller, &running) == TaskStatus::Running
        })
        .await;
        assert_eq!(status(&toolset, caller, &queued), TaskStatus::Queued);
        // Running tasks' output is written in batches.
        tokio::time::sleep(bgagents::STORE_OUTPUT_FLUSH * 3).await;
        (views, [running, queued], session)
    });
    drop(first);
    drop(session);
    assert_eq!(before[0].result.as_deref(), Some("done"));
    assert_eq!(before[0].output.text, "line\nline\nline\n");
    assert_eq!(before[1].error.as_deref(), Some("boom"));
    assert_eq!(before[2].info.status, TaskStatus::Stopped);

    // The next process finds them all.
    runtime().block_on(async {
        let toolset = load(TEAM, &state);
        // A session that starts from nothing sees none of them.
        let fresh = toolset.open_session(None).unwrap();
        assert!(toolset.list_background_agents(fresh.caller()).is_empty());
        // The operator of restored tasks sees them all.
        let session = toolset.open_operator_session(Reach::OwnAndRestored);
        let caller = session.caller();
        let listed = toolset.list_background_agents(caller);
        assert_eq!(listed.len(), 6, "{listed:?}");
        for view in &before {
            let after = toolset
                .view_background_agent(caller, view.info.id.as_str())
                .unwrap();
            assert_eq!(kept(&after), kept(view));
            // Accepted when it was, to the millisecond the store keeps.
            let drift = (after.info.created.duration_since(view.info.created))
                .or_else(|_| view.info.created.duration_since(after.info.created))
                .unwrap();
            assert!(drift < std::time::Duration::from_millis(50), "{drift:?}");
        }
        for id in &in_flight {
            let view = toolset.view_background_agent(caller, id).unwrap();
            assert_eq!(view.info.status, TaskStatus::Interrupted);
            let error = view.error.as_deref().unwrap();
            assert!(error.starts_with("interrupted: "), "{error}");
            assert!(render::view(&view).contains("<task was interrupted>"));
        }
        let view = toolset
            .view_background_agent(caller, &in_flight[0])
            .unwrap();
        assert_eq!(
            view.output.text, "kept\nkept\n",
            "output written while it ran"
        );
        // A restored task is final: it cannot be stopped again, and new
        // tasks run beside the restored ones.
        let stop = toolset.stop_background_agent(caller, &in_flight[0]).await;
        assert!(stop.is_err());
        let view = bgagents_testkit::run_to_end(&toolset, "worker", "echo again").await;
        assert_eq!(view.result.as_deref(), Some("again"));
        // Another session (an agent's, say) sees none of the old tasks.
        let agent_session = toolset.open_session(Some("worker")).unwrap();
        assert!(
            toolset
                .list_background_agents(agent_session.caller())
                .is_empty()
        );
    });
    // And a third opening changes nothing: interrupted stays interrupted.
    let store = Store::open(&state).unwrap();
    let records = store.records().unwrap();
    assert_eq!(records.len(), 7);
    let interrupted: Vec<_> = records
        .iter()
        .filter(|(record, _)| record.status() == Some(TaskStatus::Interrupted))
        .collect();
    assert_eq!(interrupted.len(), 3, "two spinners and the queued task");
    for (record, _) in interrupted {
        let statuses: Vec<&str> = record
            .transitions
            .iter()
            .map(|t| t.status.as_str())
            .collect();
        assert_eq!(statuses.last(), Some(&"interrupted"), "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == "interrupted").count(), 1);
    }
}

#[test]
fn a_model_backed_tasks_calls_and_tokens_come_back_with_it() {
    use bgagents_testkit::model_server::{ModelServer, Script, Turn};
    let scratch = Scratch::new();
    let state = scratch.dir.join("state");
    let first = runtime();
    let (yaml, before) = first.block_on(async {
        let server = ModelServer::start(Script::new([
            Turn::tool_calls([("think", r#"{"thought":"plan"}"#.to_string())]).usage(80, 30),
            Turn::text("answered").usage(120, 15),
        ]))
        .await;
        let yaml = format!(
            "agents:\n  root:\n    model: m\n    instruction: Answer.\n    \
             toolsets: [{{type: think}}]\nmodels:\n  m:\n    provider: ollama\n    \
             model: m\n    base_url: {}\n",
            server.base_url()
        );
        let toolset = load(&yaml, &state);
        let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
        toolset.settled().await.unwrap();
        (yaml, view)
    });
    drop(first);
    assert_eq!(before.result.as_deref(), Some("answered"));
    let used = before.info.model.expect("model use while it ran");
    assert_eq!(
        (used.calls, used.input_tokens, used.output_tokens),
        (2, 200, 45)
    );
    runtime().block_on(async {
        let toolset = load(&yaml, &state);
        let session = toolset.open_operator_session(Reach::OwnAndRestored);
        let after = toolset
            .view_background_agent(session.caller(), before.info.id.as_str())
            .unwrap();
        assert_eq!(after.info.model, Some(used));
        assert!(
            render::view(&after).contains("Model:   2 calls, 245 tokens (200 in, 45 out)"),
            "{}",
            render::view(&after)
        );
    });
}

#[test]
fn pruning_reaches_the_store() {
    let scratch = Scratch::new();
    let state = scratch.dir.join("state");
    let yaml = "agents:\n  worker:\n    component: probe.wasm\nlimits: {max_retained: 3}\n";
    let ids: Vec<String> = runtime().block_on(async {
        let toolset = load(yaml, &state);
        let mut ids = Vec::new();
        for n in 0..5 {
            let view = bgagents_testkit::run_to_end(&toolset, "worker", &format!("echo {n}")).await;
            ids.push(view.info.id.to_string());
        }
        ids
    });
    let stored_ids = || -> Vec<String> {
        let records = Store::open(&state).unwrap().records().unwrap();
        records.into_iter().map(|(record, _)| record.id).collect()
    };
    assert_eq!(stored_ids(), ids[2..]);
    // A smaller max_retained on the next load prunes what was kept.
    let smaller = yaml.replace("max_retained: 3", "max_retained: 2");
    drop(load(&smaller, &state));
    assert_eq!(stored_ids(), ids[3..]);
}

#[test]
fn a_foreign_file_is_refused_and_left_unchanged() {
    let scratch = Scratch::new();
    let path = scratch.write("state/tasks.redb", "{\"not\": \"a database\"}\n");
    let error = Store::open(scratch.dir.join("state"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("not a bgagents task store"), "{error}");
    assert!(error.contains("left unchanged"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"not\": \"a database\"}\n"
    );
    // Through the toolset too: the team does not load.
    let store = Store::open(scratch.dir.join("other")).unwrap();
    // Only its owner may read a store: it holds every task's text.
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    drop(store);
    std::fs::write(
        scratch.dir.join("other/tasks.redb"),
        b"redb\x1a\n\xa9\r\nand then junk",
    )
    .unwrap();
    let error = Store::open(scratch.dir.join("other"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("other/tasks.redb"), "{error}");
    assert!(error.contains("is damaged"), "{error}");
    assert!(error.contains("move it away"), "{error}");
    assert!(
        std::fs::read(scratch.dir.join("other/tasks.redb")).unwrap()
            == b"redb\x1a\n\xa9\r\nand then junk",
        "a damaged file is not rewritten"
    );
}

#[test]
fn another_programs_redb_file_is_refused_without_a_byte_changed() {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tasks.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("settings");
            let mut table = txn.open_table(table).unwrap();
            table.insert("theme", "dark").unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let error = Store::open(&dir).err().unwrap().to_string();
    assert!(
        error.contains("another program (tables settings)"),
        "{error}"
    );
    assert!(error.contains("left unchanged"), "{error}");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the file was changed"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn a_store_in_use_is_refused() {
    let scratch = Scratch::new();
    let first = Store::open(&scratch.dir).unwrap();
    let error = Store::open(&scratch.dir).err().unwrap().to_string();
    assert!(
        error.contains("in use by another bgagents process"),
        "{error}"
    );
    assert!(
        error.contains(&first.path().display().to_string()),
        "{error}"
    );
    drop(first);
    Store::open(&scratch.dir).unwrap();
}

#[test]
fn a_state_directory_that_cannot_be_made_is_named() {
    let scratch = Scratch::new();
    let file = scratch.write("plain-file", "x");
    let error = Store::open(file.join("state")).err().unwrap().to_string();
    assert!(error.contains("cannot use the state directory"), "{error}");
    assert!(error.contains("--state"), "{error}");
}

// The crash harness. The parent test re-runs this test binary as a child
// that runs `crash_workload` (a stream of tasks that complete, fail, sleep,
// print and are stopped, with a journal of what it saw on stdout), kills it
// with SIGKILL at a random point, reopens the store and checks it against
// the journal.

const CRASH_ENV: &str = "BGAGENTS_STORE_CRASH_DIR";
const CRASH_TEAM: &str = r#"
agents:
  worker:
    component: probe.wasm
limits: {max_running: 4, max_retained: 1000}
"#;

/// The child's side: runs until killed. Does nothing in a normal test run.
#[test]
#[ignore = "run by store::crash_harness in a child process"]
fn crash_workload() {
    let Some(state) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("BGAGENTS_STORE_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(1);
    runtime().block_on(async move {
        let toolset = load(CRASH_TEAM, Path::new(&state));
        let session = toolset.open_session(None).unwrap();
        journal(serde_json::json!({"event": "ready"}));
        let mut random = Random(seed);
        let mut spinners = Vec::new();
        for n in 0u64.. {
            let task = match random.below(6) {
                0 => format!("echo r{n}"),
                1 => format!("fail e{n}"),
                2 => format!("sleep {} && echo s{n}", random.below(30)),
                3 => format!("print {} o{n} && echo p{n}", random.below(5)),
                _ => "spin".to_string(),
            };
            let caller = session.caller().clone();
            let id = start(&toolset, &caller, "worker", &task);
            // As a front-end does: nothing is told before it is on disk.
            toolset.settled().await.unwrap();
            journal(serde_json::json!({"event": "started", "id": id}));
            if task == "spin" {
                spinners.push(id.clone());
            }
            let waiter = toolset.clone();
            tokio::spawn(async move {
                let view = finished(&waiter, &caller, &id).await;
                waiter.settled().await.unwrap();
                journal(serde_json::json!({
                    "event": "final",
                    "id": id,
                    "status": view.info.status.as_str(),
                    "result": view.result,
                    "error": view.error,
                    "output": view.output.text,
                }));
            });
            if spinners.len() > 2 || (random.below(3) == 0 && !spinners.is_empty()) {
                let id = spinners.remove(random.below(spinners.len() as u64) as usize);
                if toolset
                    .stop_background_agent(session.caller(), &id)
                    .await
                    .is_ok()
                {
                    toolset.settled().await.unwrap();
                    journal(serde_json::json!({"event": "stopped", "id": id}));
                }
            }
            tokio::time::sleep(Duration::from_millis(random.below(15))).await;
        }
    });
}

fn journal(entry: serde_json::Value) {
    println!("JOURNAL {entry}");
}

/// xorshift64*: enough to spread kill points and workloads.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

/// What the store must hold of a task the child saw finish.
#[derive(Debug, Clone, PartialEq)]
struct Final {
    status: String,
    result: Option<String>,
    error: Option<String>,
    output: String,
}

#[test]
fn crash_harness() {
    // A failure prints its seed; setting it again replays the same runs.
    let seed = std::env::var("BGAGENTS_CRASH_HARNESS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash harness seed {seed} (BGAGENTS_CRASH_HARNESS_SEED replays it)");
    let mut random = Random(seed);
    // This very binary, even if a rebuild has replaced its file meanwhile.
    let test_binary = match Path::new("/proc/self/exe").exists() {
        true => std::path::PathBuf::from("/proc/self/exe"),
        false => std::env::current_exe().unwrap(),
    };
    let scratch = Scratch::new();
    let budget = Duration::from_secs(25);
    let begun = Instant::now();
    let (mut iterations, mut checked_tasks, mut interrupted_total) = (0, 0, 0);
    let mut generation = 0;
    // What earlier iterations left in the store: must come back unchanged.
    let mut known: HashMap<String, (bgagents::TaskRecord, String)> = HashMap::new();
    while begun.elapsed() < budget || iterations < 5 {
        // A fresh store now and then keeps each one small.
        if iterations % 10 == 0 {
            generation += 1;
            known.clear();
        }
        let state = scratch.dir.join(format!("state-{generation}"));
        let child_seed = random.below(u64::MAX - 1) + 1;
        let mut child = std::process::Command::new(&test_binary)
            .args([
                "store::crash_workload",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CRASH_ENV, &state)
            .env("BGAGENTS_STORE_CRASH_SEED", child_seed.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        // Most kills land while tasks run; some while the store is opened
        // and restored.
        let kill_at = match random.below(5) {
            0 => Duration::from_millis(random.below(300)),
            _ => {
                let ready_by = Instant::now() + Duration::from_secs(60);
                loop {
                    let line = lines_rx
                        .recv_timeout(ready_by.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(|_| panic!("the child never got ready: {lines:?}"));
                    let ready = line.contains("\"ready\"");
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Duration::from_millis(random.below(600))
            }
        };
        std::thread::sleep(kill_at);
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(lines_rx.try_iter());

        let mut started = Vec::new();
        let mut finals: BTreeMap<String, Final> = BTreeMap::new();
        let mut stopped = Vec::new();
        for line in &lines {
            let Some(entry) = line.strip_prefix("JOURNAL ") else {
                continue;
            };
            let entry: serde_json::Value = serde_json::from_str(entry).unwrap();
            let id = entry["id"].as_str().unwrap_or_default().to_string();
            match entry["event"].as_str().unwrap() {
                "started" => started.push(id),
                "stopped" => stopped.push(id),
                "final" => {
                    let text = |key: &str| entry[key].as_str().map(str::to_string);
                    finals.insert(
                        id,
                        Final {
                            status: text("status").unwrap(),
                            result: text("result"),
                            error: text("error"),
                            output: text("output").unwrap_or_default(),
                        },
                    );
                }
                _ => {}
            }
        }

        let store = Store::open(&state).unwrap_or_else(|error| panic!("after a kill: {error}"));
        let records = store.records().unwrap();
        drop(store);
        let by_id: HashMap<String, (bgagents::TaskRecord, String)> = records
            .iter()
            .map(|(record, output)| (record.id.clone(), (record.clone(), output.clone())))
            .collect();
        let context =
            format!("iteration {iterations} (harness seed {seed}, child seed {child_seed})");
        assert_eq!(
            by_id.len(),
            records.len(),
            "{context}: a task is stored twice"
        );
        let mut orders: Vec<u64> = records.iter().map(|(record, _)| record.order).collect();
        orders.dedup();
        assert_eq!(
            orders.len(),
            records.len(),
            "{context}: two tasks share an order"
        );
        for (id, before) in &known {
            assert_eq!(
                by_id.get(id),
                Some(before),
                "{context}: task {id} changed or was lost"
            );
        }
        for id in &started {
            assert!(
                by_id.contains_key(id),
                "{context}: started task {id} was lost"
            );
        }
        let fresh = by_id.keys().filter(|id| !known.contains_key(*id)).count();
        assert!(
            fresh <= started.len() + 1,
            "{context}: {fresh} new tasks stored, {} started",
            started.len()
        );
        for (id, seen) in &finals {
            let (record, output) = &by_id[id];
            let stored = Final {
                status: record.status.clone(),
                result: record.result.clone(),
                error: record.error.clone(),
                output: output.clone(),
            };
            assert_eq!(&stored, seen, "{context}: finished task {id} changed");
        }
        for id in &stopped {
            assert_eq!(
                by_id[id].0.status, "stopped",
                "{context}: stop of {id} lost"
            );
        }
        for (record, _) in &records {
            let status = record.status().unwrap();
            assert!(status.is_final(), "{context}: {} left {status}", record.id);
            if status == TaskStatus::Interrupted {
                interrupted_total += usize::from(!known.contains_key(&record.id));
                assert!(
                    record
                        .error
                        .as_deref()
                        .unwrap()
                        .starts_with("interrupted: "),
                    "{context}: {record:?}"
                );
            }
        }
        checked_tasks += finals.len();
        known = by_id;
        iterations += 1;
    }
    eprintln!(
        "crash harness: {iterations} kills, {checked_tasks} finished tasks checked, \
         {interrupted_total} interrupted ones seen"
    );
    assert!(iterations >= 5);
}

/// The child's side of [`a_full_disk_loses_nothing_and_refuses_new_tasks_until_it_has_room`]:
/// runs with its state directory on a small tmpfs of its own.
#[test]
#[ignore = "run by store::a_full_disk_... in a child process on a small filesystem"]
fn full_disk_workload() {
    let Some(dir) = std::env::var_os(FULL_DISK_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    runtime().block_on(async move {
        let toolset = load(TEAM, &dir.join("state"));
        let session = toolset.open_session(None).unwrap();
        let caller = session.caller();
        let first = start(&toolset, caller, "worker", "echo before");
        finished(&toolset, caller, &first).await;
        toolset.settled().await.unwrap();
        // Fill what is left of the filesystem.
        let filler = dir.join("filler");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&filler).unwrap();
            let block = vec![7u8; 64 * 1024];
            while file.write_all(&block).is_ok() {}
            let _ = file.write_all(&[7u8]);
            let _ = file.sync_all();
        }
        // A task started now cannot be written: whoever waits for the disk
        // is told why, and no further task is admitted.
        let mut unsaved = Vec::new();
        let error = loop {
            let task = format!("print 200 {} && echo unsaved", "x".repeat(2000));
            let id = match toolset.run_background_agent(caller, "worker", &task, None) {
                Ok(accepted) => accepted.id.to_string(),
                Err(error) => break error.to_string(),
            };
            finished(&toolset, caller, &id).await;
            unsaved.push(id);
            let settled = toolset.settled().await;
            assert!(unsaved.len() < 50, "the store never filled: {settled:?}");
        };
        assert!(!unsaved.is_empty());
        assert!(error.contains("task store cannot be written"), "{error}");
        assert!(error.contains("free space"), "{error}");
        assert!(
            toolset.settled().await.is_err(),
            "a waiter is told the store fails"
        );
        // Room again: the writer's retry saves what it held.
        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + bgagents_testkit::HANG;
        while let Err(error) = toolset.settled().await {
            assert!(Instant::now() < deadline, "never written again: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = start(&toolset, caller, "worker", "echo after");
        finished(&toolset, caller, &after).await;
        toolset.settled().await.unwrap();
        drop(session);
        drop(toolset);
        let store = Store::open(dir.join("state")).unwrap();
        let records: HashMap<String, String> = (store.records().unwrap().into_iter())
            .map(|(record, _)| (record.id.clone(), record.status.clone()))
            .collect();
        for id in [&first, &after].into_iter().chain(&unsaved) {
            assert_eq!(
                records.get(id).map(String::as_str),
                Some("completed"),
                "{id}: {records:?}"
            );
        }
        println!("FULL DISK OK {}", unsaved.len());
    });
}

const FULL_DISK_ENV: &str = "BGAGENTS_STORE_FULL_DISK_DIR";

#[test]
fn a_full_disk_loses_nothing_and_refuses_new_tasks_until_it_has_room() {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("small");
    std::fs::create_dir_all(&dir).unwrap();
    let test_binary = std::env::current_exe().unwrap();
    // A 4 MiB filesystem of the child's own, in a mount namespace.
    let output = std::process::Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--size", "4194304", "--tmpfs"])
        .arg(&dir)
        .arg("--")
        .arg(&test_binary)
        .args([
            "store::full_disk_workload",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(FULL_DISK_ENV, &dir)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            eprintln!("skipped: bwrap cannot run here ({error})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("bwrap:") {
        eprintln!("skipped: bwrap cannot make a filesystem here: {stderr}");
        return;
    }
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("FULL DISK OK"), "{stdout}\n{stderr}");
}
