//! Warm instances (`engine.warm_instances`): instances made ahead of an
//! agent's tasks, each bound to one task and never reused. Checked through
//! the toolset with the real probe component: a task run in a warm instance
//! sees nothing of any earlier task (a guest global counts the tasks an
//! instance ran), gets its own agent's grants, writes its output to its own
//! task, and is bounded by fuel, timeout and stop like any other.

use bgagents::{TaskStatus, TaskView, Toolset, WarmStats};
use bgagents_testkit::{Scratch, eventually, finished, run_to_end, start, toolset};

/// Waits until `agent` has `count` warm instances ready.
async fn warmed(toolset: &Toolset, agent: &str, count: usize) {
    eventually(&format!("{count} warm instances of {agent}"), || {
        toolset.warm_stats(agent).ready == count
    })
    .await;
}

/// Runs `task` on `agent` in a warm instance (waiting until one is ready).
async fn run_warm(toolset: &Toolset, agent: &str, task: &str) -> TaskView {
    warmed(toolset, agent, 2).await;
    let used = toolset.warm_stats(agent).used;
    let view = run_to_end(toolset, agent, task).await;
    assert_eq!(
        toolset.warm_stats(agent).used,
        used + 1,
        "the task did not take a warm instance"
    );
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_runs_one_task_and_is_never_reused() {
    let toolset = toolset("agents:\n  probe: {component: probe.wasm}\n");
    assert_eq!(
        toolset.warm_stats("probe").ready,
        0,
        "none before the first task"
    );
    // The first task instantiates on demand and starts the refill.
    let first = run_to_end(&toolset, "probe", "count").await;
    assert_eq!(first.result.as_deref(), Some("1"), "{:?}", first.error);
    for round in 0..10 {
        let view = run_warm(&toolset, "probe", "count").await;
        assert_eq!(
            view.result.as_deref(),
            Some("1"),
            "round {round}: an instance ran more than one task ({:?})",
            view.error
        );
    }
    // A burst past the warm set: every task still gets an instance of its own.
    let session = toolset.open_session(None).unwrap();
    let ids: Vec<String> = (0..8)
        .map(|_| start(&toolset, session.caller(), "probe", "count"))
        .collect();
    for id in ids {
        let view = finished(&toolset, session.caller(), &id).await;
        assert_eq!(view.result.as_deref(), Some("1"), "{:?}", view.error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_are_per_agent_with_each_agents_grants() {
    // One component under two agents with different grants: a task of one
    // never runs in an instance made for the other.
    let scratch = Scratch::new();
    for colour in ["red", "blue"] {
        scratch.write(&format!("{colour}/colour"), colour);
    }
    let root = scratch.dir.display();
    let toolset = toolset(&format!(
        "agents:\n  \
         red: {{component: probe.wasm, grants: {{files: [{{host: '{root}/red', guest: /data}}]}}}}\n  \
         blue: {{component: probe.wasm, grants: {{files: [{{host: '{root}/blue', guest: /data}}]}}}}\n",
    ));
    run_to_end(&toolset, "red", "echo start").await;
    run_to_end(&toolset, "blue", "echo start").await;
    for _ in 0..4 {
        for colour in ["red", "blue"] {
            let view = run_warm(&toolset, colour, "read /data/colour").await;
            assert_eq!(view.result.as_deref(), Some(colour), "{:?}", view.error);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instances_output_goes_to_its_own_task() {
    let toolset = toolset("agents:\n  probe: {component: probe.wasm}\n");
    run_to_end(&toolset, "probe", "echo start").await;
    for round in 0..3 {
        let text = format!("round-{round}");
        let view = run_warm(
            &toolset,
            "probe",
            &format!("stdio {text} && print 2 {text}"),
        )
        .await;
        assert_eq!(view.result.as_deref(), Some("printed"), "{:?}", view.error);
        let output = view.output.text;
        assert_eq!(
            output,
            format!("stdout: {text}\nstderr: {text}\n{text}\n{text}\n"),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_keep_the_fuel_budget_timeout_and_stop() {
    let toolset = toolset(
        "agents:\n  \
         small: {component: probe.wasm, limits: {fuel: 5000000}}\n  \
         brief: {component: probe.wasm, limits: {fuel: 1000000000000, timeout: 1s}}\n",
    );
    run_to_end(&toolset, "small", "echo start").await;
    run_to_end(&toolset, "brief", "echo start").await;

    let view = run_warm(&toolset, "small", "spin").await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    let error = view.error.unwrap_or_default();
    assert!(error.contains("fuel"), "{error}");

    // Made well before its task, the instance's timeout still counts from
    // the task's start.
    warmed(&toolset, "brief", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let view = run_warm(&toolset, "brief", "sleep 100 && count").await;
    assert_eq!(view.result.as_deref(), Some("1"), "{:?}", view.error);
    let view = run_warm(&toolset, "brief", "spin").await;
    let error = view.error.unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");

    warmed(&toolset, "brief", 2).await;
    let session = toolset.open_session(None).unwrap();
    let id = start(&toolset, session.caller(), "brief", "spin");
    eventually("the spinner runs", || {
        bgagents_testkit::status(&toolset, session.caller(), &id) == TaskStatus::Running
    })
    .await;
    toolset
        .stop_background_agent(session.caller(), &id)
        .await
        .unwrap();
    let view = finished(&toolset, session.caller(), &id).await;
    assert_eq!(view.info.status, TaskStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_can_be_turned_off() {
    let toolset =
        toolset("engine: {warm_instances: 0}\nagents:\n  probe: {component: probe.wasm}\n");
    for _ in 0..3 {
        let view = run_to_end(&toolset, "probe", "count").await;
        assert_eq!(view.result.as_deref(), Some("1"), "{:?}", view.error);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(toolset.warm_stats("probe"), WarmStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_give_their_pool_slots_back_to_tasks() {
    // A pool of 4 instance slots: two agents' warm instances hold half of
    // it, and four tasks of a third agent still all get an instance.
    let toolset = toolset(
        "engine: {pool_size: 4}\nagents:\n  a: {component: probe.wasm}\n  \
         b: {component: probe.wasm}\n  c: {component: probe.wasm}\n",
    );
    run_to_end(&toolset, "a", "echo start").await;
    run_to_end(&toolset, "b", "echo start").await;
    eventually("warm instances holding half the pool", || {
        toolset.warm_stats("a").ready + toolset.warm_stats("b").ready == 2
    })
    .await;
    let session = toolset.open_session(None).unwrap();
    let ids: Vec<String> = (0..4)
        .map(|_| start(&toolset, session.caller(), "c", "sleep 1500 && echo done"))
        .collect();
    for id in ids {
        let view = finished(&toolset, session.caller(), &id).await;
        assert_eq!(view.result.as_deref(), Some("done"), "{:?}", view.error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_sees_its_granted_directory_as_it_is_at_start() {
    let scratch = Scratch::new();
    scratch.write("work/note", "old");
    let work = scratch.dir.join("work");
    let toolset = toolset(&format!(
        "agents:\n  probe: {{component: probe.wasm, grants: {{files: [{{host: '{}', guest: /work}}]}}}}\n",
        work.display()
    ));
    let first = run_to_end(&toolset, "probe", "read /work/note").await;
    assert_eq!(first.result.as_deref(), Some("old"), "{:?}", first.error);
    warmed(&toolset, "probe", 2).await;
    // Replaced after the warm instances were made, as a checkout would.
    std::fs::rename(&work, scratch.dir.join("work.old")).unwrap();
    scratch.write("work/note", "new");
    let view = run_warm(&toolset, "probe", "read /work/note").await;
    assert_eq!(view.result.as_deref(), Some("new"), "{:?}", view.error);

    // Gone for a moment: the task that starts then fails as one made on
    // demand would, and the warm instances come back once it is there.
    std::fs::rename(&work, scratch.dir.join("work.gone")).unwrap();
    let view = run_to_end(&toolset, "probe", "read /work/note").await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    std::fs::rename(scratch.dir.join("work.gone"), &work).unwrap();
    let view = run_to_end(&toolset, "probe", "read /work/note").await;
    assert_eq!(view.result.as_deref(), Some("new"), "{:?}", view.error);
    warmed(&toolset, "probe", 2).await;
}
