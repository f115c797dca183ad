//! The hostile-plugin suite: guests that try to read and write outside their
//! grants, read the environment, open sockets, resolve names, start
//! sub-agents as fast as they can, flood output, loop, allocate, recurse,
//! trap and panic. Each is contained with a reason a person understands,
//! siblings finish correctly, no record is lost, and host memory returns to
//! its baseline.

use bgagents::{TaskStatus, Toolset};
use bgagents_testkit::{Scratch, finished, plugin_dir, run_to_end, start};
use std::net::TcpListener;
use std::path::Path;

/// A scratch directory holding `data/hello.txt`, symlinks that point out of
/// `data/`, and a writable `out/`.
fn files() -> Scratch {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("data")).unwrap();
    std::fs::create_dir_all(scratch.dir.join("out")).unwrap();
    scratch.write("data/hello.txt", "hello from the host");
    scratch.write("secret.txt", "do not read me");
    std::os::unix::fs::symlink("/etc", scratch.dir.join("data/etc")).unwrap();
    std::os::unix::fs::symlink(
        scratch.dir.join("secret.txt"),
        scratch.dir.join("data/secret"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../secret.txt", scratch.dir.join("data/relative-secret")).unwrap();
    scratch
}

fn team(scratch: &Scratch, extra: &str) -> Toolset {
    let yaml = format!(
        r#"
agents:
  boxed:
    component: probe.wasm
  reader:
    component: probe.wasm
    grants:
      files:
        - {{host: "{dir}/data", guest: /data}}
        - {{host: "{dir}/out", guest: /out, mode: read-write}}
      env: [HOME, MODE=fast]
  helper:
    component: probe.wasm
    limits: {{fuel: 1_000_000_000_000_000}}
{extra}"#,
        dir = scratch.dir.display()
    );
    let team = bgagents::Team::parse(&yaml, Path::new("hostile.yaml"), plugin_dir())
        .unwrap_or_else(|error| panic!("{error}"));
    Toolset::load(team).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `task` on `agent`; returns the result or the failure reason.
async fn outcome(toolset: &Toolset, agent: &str, task: &str) -> Result<String, String> {
    let view = run_to_end(toolset, agent, task).await;
    match view.info.status {
        TaskStatus::Completed => Ok(view.result.unwrap()),
        _ => Err(view.error.unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_grants_cannot_be_read_or_written() {
    let scratch = files();
    let toolset = team(&scratch, "");
    assert_eq!(
        outcome(&toolset, "reader", "read /data/hello.txt").await,
        Ok("hello from the host".to_string())
    );
    for escape in [
        "read /etc/passwd",
        "read /data/../secret.txt",
        "read /data/../../../../etc/passwd",
        "read /data/etc/passwd",
        "read /data/secret",
        "read /data/relative-secret",
        "read secret.txt",
        "read ../secret.txt",
    ] {
        let result = outcome(&toolset, "reader", escape).await;
        let error = result.expect_err(escape);
        assert!(
            error.starts_with(&format!("{escape}: ")),
            "{escape}: {error}"
        );
        assert!(
            !error.contains("root:") && !error.contains("do not read me"),
            "{error}"
        );
    }
    // Read-only grants refuse writes; read-write grants allow them.
    let refused = outcome(&toolset, "reader", "write /data/new.txt sneaky").await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!scratch.dir.join("data/new.txt").exists());
    assert_eq!(
        outcome(&toolset, "reader", "write /out/result.txt made by a guest").await,
        Ok("wrote /out/result.txt".to_string())
    );
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("out/result.txt")).unwrap(),
        "made by a guest"
    );
    let escaped_write = outcome(&toolset, "reader", "write /out/../secret.txt overwritten").await;
    assert!(escaped_write.is_err());
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("secret.txt")).unwrap(),
        "do not read me"
    );
    // Without grants nothing at all is visible.
    assert!(
        outcome(&toolset, "boxed", "read /data/hello.txt")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_granted_environment_variables_are_visible_and_stdin_is_empty() {
    let scratch = files();
    let toolset = team(&scratch, "");
    assert_eq!(
        outcome(&toolset, "boxed", "env").await,
        Ok("[]".to_string())
    );
    assert_eq!(
        outcome(&toolset, "boxed", "stdin").await,
        Ok("stdin: \"\"".to_string())
    );
    let home = std::env::var("HOME").expect("HOME is set for the tests");
    assert_eq!(
        outcome(&toolset, "reader", "env").await,
        Ok(format!("[(\"HOME\", {home:?}), (\"MODE\", \"fast\")]"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_access_is_off_unless_granted_per_endpoint() {
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (granted_port, other_port) = (
        granted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let scratch = files();
    let toolset = team(
        &scratch,
        &format!(
            "  caller:\n    component: probe.wasm\n    grants:\n      network:\n        \
             connect: [\"127.0.0.1:{granted_port}\"]\n        dns: true\n"
        ),
    );
    assert_eq!(
        outcome(
            &toolset,
            "caller",
            &format!("connect 127.0.0.1:{granted_port}")
        )
        .await,
        Ok(format!("connected to 127.0.0.1:{granted_port}"))
    );
    for (agent, port) in [("caller", other_port), ("boxed", granted_port)] {
        let task = format!("connect 127.0.0.1:{port}");
        let error = outcome(&toolset, agent, &task).await.unwrap_err();
        assert!(error.starts_with(&format!("{task}: ")), "{agent}: {error}");
    }
    // Even a guest granted one endpoint may not listen or use UDP.
    for task in [
        "listen 127.0.0.1:0".to_string(),
        format!("udp 127.0.0.1:{granted_port}"),
    ] {
        let error = outcome(&toolset, "caller", &task).await.unwrap_err();
        let verb = task.split(' ').next().unwrap();
        assert!(error.starts_with(&format!("{verb} ")), "{task}: {error}");
    }
    let lookup = outcome(&toolset, "boxed", "resolve localhost")
        .await
        .unwrap_err();
    assert!(lookup.starts_with("resolve localhost: "), "{lookup}");
    assert!(
        outcome(&toolset, "caller", "resolve localhost")
            .await
            .is_ok(),
        "granted name lookups fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_bombs_hit_the_spawn_limits() {
    let scratch = files();
    let toolset = team(
        &scratch,
        "  bomber:\n    component: probe.wasm\n    sub_agents: [helper]\n    \
         toolsets: [{type: background_agents}]\n    limits: {spawns: 100, concurrent_spawns: 5}\n  \
         counter:\n    component: probe.wasm\n    sub_agents: [helper]\n    \
         toolsets: [{type: background_agents}]\n    limits: {spawns: 10, concurrent_spawns: 10}\n",
    );
    assert_eq!(
        outcome(&toolset, "bomber", "bomb helper sleep 60000").await,
        Ok(
            "started 5; then: spawn limit reached: a task of agent \"bomber\" may have at most 5 \
            tasks queued or running at once (limits.concurrent_spawns); wait for some to finish"
                .to_string()
        )
    );
    assert_eq!(
        outcome(&toolset, "counter", "bomb helper echo x").await,
        Ok(
            "started 10; then: spawn limit reached: a task of agent \"counter\" may start at \
            most 10 tasks (limits.spawns) and this one has started them all"
                .to_string()
        )
    );
    toolset.shutdown().await;
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const HOSTILE: &[(&str, &str)] = &[
    ("helper", "spin"),
    ("small", "alloc 512"),
    ("helper", "recurse"),
    ("helper", "flood 50000000"),
    ("bomber", "bomb helper spin"),
    ("reader", "read /data/etc/passwd"),
    ("boxed", "read /etc/passwd"),
    ("boxed", "connect 127.0.0.1:9"),
    ("boxed", "resolve example.com"),
    ("helper", "trap"),
    ("helper", "panic hostile panic"),
    ("frugal", "spin"),
    ("hasty", "sleep 60000"),
];

const HOSTILE_AGENTS: &str = "  small:\n    component: probe.wasm\n    limits: {memory: 32MiB}\n  \
    frugal:\n    component: probe.wasm\n    limits: {fuel: 5_000_000}\n  \
    hasty:\n    component: probe.wasm\n    limits: {timeout: 2s}\n  \
    bomber:\n    component: probe.wasm\n    sub_agents: [helper]\n    \
    toolsets: [{type: background_agents}]\n    limits: {spawns: 50, concurrent_spawns: 10}\n";

/// Starts every hostile guest beside well-behaved ones, stops the ones that
/// would run forever, and checks every outcome. Returns the tasks seen.
async fn hostile_round(toolset: &Toolset) -> usize {
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let mut hostile = Vec::new();
    let mut good = Vec::new();
    for (index, &(agent, task)) in HOSTILE.iter().enumerate() {
        hostile.push((agent, task, start(toolset, caller, agent, task)));
        good.push((
            index,
            start(toolset, caller, "helper", &format!("echo calm {index}")),
        ));
    }
    for (index, id) in &good {
        let view = finished(toolset, caller, id).await;
        assert_eq!(
            view.result,
            Some(format!("calm {index}")),
            "a sibling was harmed"
        );
    }
    // Stop what would otherwise run forever, then everything has an end.
    for (agent, task, id) in &hostile {
        if *task == "spin" && *agent == "helper" {
            let _ = toolset.stop_background_agent(caller, id).await;
        }
    }
    for &(agent, task, ref id) in &hostile {
        let view = finished(toolset, caller, id).await;
        let reason = view.error.clone().unwrap_or_default();
        let expected = match task {
            "spin" if agent == "frugal" => "fuel budget of 5000000 exhausted",
            "spin" | "bomb helper spin" => "",
            "alloc 512" => "memory limit of 32 MiB reached",
            "recurse" => "stack overflow",
            "trap" => "guest trapped: wasm trap: wasm `unreachable`",
            "panic hostile panic" => "guest panicked: hostile panic",
            "sleep 60000" => "timed out after 2s",
            "flood 50000000" => "",
            _ => task.split(' ').next().unwrap(),
        };
        match task {
            "spin" if agent != "frugal" => assert_eq!(view.info.status, TaskStatus::Stopped),
            "bomb helper spin" => {
                let result = view.result.clone().unwrap_or_default();
                assert!(
                    result.starts_with("started 10; then: spawn limit reached"),
                    "{result}"
                );
            }
            "flood 50000000" => {
                assert_eq!(view.info.status, TaskStatus::Completed);
                assert!(view.output.truncated && view.output.text.len() == 10 << 20);
            }
            _ => {
                assert_eq!(view.info.status, TaskStatus::Failed, "{agent} {task}");
                assert!(reason.starts_with(expected), "{agent} {task}: {reason}");
            }
        }
    }
    let seen = toolset.list_background_agents(caller).len();
    session.close().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_hostile_suite_at_once_beside_well_behaved_tasks() {
    let scratch = files();
    let toolset = team(&scratch, HOSTILE_AGENTS);
    let seen = hostile_round(&toolset).await;
    // Every hostile and calm task, plus the bomber's children: none lost.
    assert!(seen >= HOSTILE.len() * 2 + 10, "records lost: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_returns_to_baseline_after_hostile_rounds() {
    let scratch = files();
    let toolset = team(&scratch, HOSTILE_AGENTS);
    // A first round warms up allocator pools and compiled code.
    hostile_round(&toolset).await;
    let baseline = rss_kib();
    for _ in 0..3 {
        hostile_round(&toolset).await;
    }
    let after = rss_kib();
    let grown_mib = after.saturating_sub(baseline) / 1024;
    eprintln!("RSS: {baseline} KiB after a warm-up round, {after} KiB after three more");
    // Each round holds up to 10 MiB of flood output plus retained records;
    // a leak of guest memory (512 MiB attempts, 50 MB floods) would show.
    assert!(
        grown_mib < 100,
        "RSS grew by {grown_mib} MiB ({baseline} → {after} KiB)"
    );
}
