//! The five toolset operations through the library, with real components:
//! results, live output, every error text, stop, wait, queueing, pruning,
//! nesting, scoping and shutdown.

use bgagents::render;
use bgagents::{TaskStatus, ToolError, Toolset};
use bgagents_testkit::{eventually, finished, start, status, toolset};

const TEAM: &str = r#"
agents:
  root:
    component: probe.wasm
    sub_agents: [worker, helper]
    toolsets: [{type: background_agents}]
  worker:
    component: probe.wasm
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: probe.wasm
    limits: {fuel: 1_000_000_000_000_000}
  loner:
    component: probe.wasm
    sub_agents: [helper]
  solo:
    component: probe.wasm
    toolsets: [{type: background_agents}]
  shortlived:
    component: probe.wasm
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
    limits: {timeout: 1s}
  frontdesk:
    sub_agents: [worker]
    toolsets: [{type: background_agents}]
"#;

fn team() -> Toolset {
    toolset(TEAM)
}

/// What a text front-end shows for `view` of task `id`.
fn rendered(toolset: &Toolset, caller: &bgagents::Caller, id: &str) -> String {
    render::view(&toolset.view_background_agent(caller, id).unwrap())
}

fn is_task_id(id: &str) -> bool {
    let Some(uuid) = id.strip_prefix("agent_task_") else {
        return false;
    };
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_a_task_whose_result_view_shows() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let info = toolset
        .run_background_agent(caller, "helper", "echo hello", None)
        .unwrap();
    assert!(is_task_id(info.id.as_str()), "{}", info.id);
    assert_eq!(info.agent, "helper");
    assert_eq!(info.status, TaskStatus::Queued);
    assert_eq!(
        render::started(&info, "echo hello"),
        format!(
            "Background agent task started with ID: {}\nAgent: helper\nTask: echo hello",
            info.id
        )
    );

    let view = finished(&toolset, caller, info.id.as_str()).await;
    assert_eq!(view.info.status, TaskStatus::Completed);
    assert_eq!(view.result.as_deref(), Some("hello"));
    assert_eq!(view.task, "echo hello");
    let text = render::view(&view);
    assert!(
        text.starts_with(&format!(
            "Task ID: {}\nAgent:   helper\nStatus:  completed\nRuntime: ",
            info.id
        )),
        "{text}"
    );
    assert!(text.ends_with("\n\n--- Output ---\nhello"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_shows_live_output_while_running_and_the_stopped_notice_after() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let quiet = toolset
        .run_background_agent(caller, "helper", "sleep 60000", None)
        .unwrap();
    eventually("quiet task to run", || {
        status(&toolset, caller, quiet.id.as_str()) == TaskStatus::Running
    })
    .await;
    let text = rendered(&toolset, caller, quiet.id.as_str());
    assert!(
        text.ends_with("--- Output ---\n<no output yet — still running>"),
        "{text}"
    );

    let chatty = toolset
        .run_background_agent(caller, "helper", "print 2 line && sleep 60000", None)
        .unwrap();
    eventually("live output", || {
        let view = toolset
            .view_background_agent(caller, chatty.id.as_str())
            .unwrap();
        view.output.text == "line\nline\n" && view.info.status == TaskStatus::Running
    })
    .await;
    let text = rendered(&toolset, caller, chatty.id.as_str());
    assert!(
        text.ends_with("--- Output ---\nline\nline\n\n\n[still running...]"),
        "{text}"
    );

    toolset
        .stop_background_agent(caller, chatty.id.as_str())
        .await
        .unwrap();
    let text = rendered(&toolset, caller, chatty.id.as_str());
    assert!(
        text.ends_with("--- Output ---\n<task was stopped>"),
        "{text}"
    );
    toolset
        .stop_background_agent(caller, quiet.id.as_str())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stdout_and_stderr_are_captured_into_the_task_output() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let info = toolset
        .run_background_agent(session.caller(), "helper", "stdio hi", None)
        .unwrap();
    let view = finished(&toolset, session.caller(), info.id.as_str()).await;
    assert!(
        view.output.text.contains("stdout: hi\n"),
        "{:?}",
        view.output
    );
    assert!(
        view.output.text.contains("stderr: hi\n"),
        "{:?}",
        view.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_view_names_the_error() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let info = toolset
        .run_background_agent(session.caller(), "helper", "fail no luck", None)
        .unwrap();
    let view = finished(&toolset, session.caller(), info.id.as_str()).await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    assert_eq!(view.error.as_deref(), Some("no luck"));
    let text = render::view(&view);
    assert!(
        text.ends_with("--- Output ---\n<task failed>\nError: no luck"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_callers_tasks_oldest_first() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    assert_eq!(
        render::list(&toolset.list_background_agents(caller)),
        "No background agent tasks found.\n"
    );
    let mut ids = Vec::new();
    for word in ["one", "two", "three"] {
        let info = toolset
            .run_background_agent(caller, "helper", &format!("echo {word}"), None)
            .unwrap();
        ids.push(info.id.to_string());
    }
    for id in &ids {
        finished(&toolset, caller, id).await;
    }
    let listed = toolset.list_background_agents(caller);
    let listed_ids: Vec<String> = listed.iter().map(|info| info.id.to_string()).collect();
    assert_eq!(listed_ids, ids);
    let text = render::list(&listed);
    assert!(text.starts_with("Background Agent Tasks:\n\n"), "{text}");
    assert!(
        text.contains(&format!(
            "ID: {}\n  Agent:   helper\n  Status:  completed\n  Runtime: 0s\n\n",
            ids[0]
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_bad_arguments_with_the_documented_texts() {
    let toolset = team();
    let as_root = toolset.open_session(Some("root")).unwrap();
    let root = as_root.caller();
    let error = |result: Result<bgagents::TaskInfo, ToolError>| result.unwrap_err().to_string();

    assert_eq!(
        error(toolset.run_background_agent(root, "", "x", None)),
        "agent name must not be empty"
    );
    assert_eq!(
        error(toolset.run_background_agent(root, "helper", "  \n", None)),
        "task must not be empty"
    );
    assert_eq!(
        error(toolset.run_background_agent(root, "nobody", "x", None)),
        "agent \"nobody\" is not in the sub-agents list. Available: worker, helper"
    );
    let as_solo = toolset.open_session(Some("solo")).unwrap();
    assert_eq!(
        error(toolset.run_background_agent(as_solo.caller(), "helper", "x", None)),
        "agent \"helper\" is not in the sub-agents list. This agent has no sub-agents configured."
    );
    let as_loner = toolset.open_session(Some("loner")).unwrap();
    assert!(
        error(toolset.run_background_agent(as_loner.caller(), "helper", "x", None))
            .starts_with("agent \"loner\" does not have the background_agents toolset"),
    );
    let operator = toolset.open_session(None).unwrap();
    assert!(
        error(toolset.run_background_agent(operator.caller(), "ghost", "x", None))
            .starts_with("agent \"ghost\" is not defined in the team. Available: helper, loner"),
    );
    assert!(
        error(toolset.run_background_agent(operator.caller(), "frontdesk", "x", None))
            .starts_with("agent \"frontdesk\" has no component to run"),
    );
    let huge = "x".repeat(bgagents::MAX_TASK_BYTES + 1);
    assert!(
        error(toolset.run_background_agent(root, "helper", &huge, None))
            .starts_with("task is longer than")
    );
    assert!(toolset.open_session(Some("ghost")).is_err());
    assert!(
        toolset.list_background_agents(root).is_empty(),
        "refused runs left tasks behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_acting_as_an_agent_may_start_only_its_sub_agents() {
    let toolset = team();
    let session = toolset.open_session(Some("frontdesk")).unwrap();
    let caller = session.caller();
    let info = toolset
        .run_background_agent(
            caller,
            "worker",
            "echo from the front desk",
            Some("a greeting"),
        )
        .unwrap();
    let view = finished(&toolset, caller, info.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("from the front desk"));
    assert!(
        toolset
            .run_background_agent(caller, "helper", "x", None)
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_preemptive_and_final_and_refuses_finished_or_unknown_tasks() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let spinning = toolset
        .run_background_agent(caller, "helper", "spin", None)
        .unwrap();
    let id = spinning.id.as_str();
    eventually("spinner to run", || {
        status(&toolset, caller, id) == TaskStatus::Running
    })
    .await;

    let stopped = tokio::time::timeout(
        bgagents_testkit::HANG,
        toolset.stop_background_agent(caller, id),
    )
    .await
    .expect("stop of a never-yielding loop hung")
    .unwrap();
    assert_eq!(stopped.status, TaskStatus::Stopped);
    assert_eq!(
        render::stopped(&stopped),
        format!("Background agent task {id} stopped.")
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        status(&toolset, caller, id),
        TaskStatus::Stopped,
        "stopped must be final"
    );

    assert_eq!(
        toolset
            .stop_background_agent(caller, id)
            .await
            .unwrap_err()
            .to_string(),
        format!("task {id} is not running (status: stopped)")
    );
    let done = toolset
        .run_background_agent(caller, "helper", "echo done", None)
        .unwrap();
    finished(&toolset, caller, done.id.as_str()).await;
    assert_eq!(
        toolset
            .stop_background_agent(caller, done.id.as_str())
            .await
            .unwrap_err()
            .to_string(),
        format!("task {} is not running (status: completed)", done.id)
    );
    assert_eq!(
        toolset
            .stop_background_agent(caller, "agent_task_nope")
            .await
            .unwrap_err()
            .to_string(),
        "task not found: agent_task_nope"
    );
    assert_eq!(
        toolset
            .view_background_agent(caller, "agent_task_nope")
            .unwrap_err()
            .to_string(),
        "task not found: agent_task_nope"
    );
}

/// The id a probe printed as the first line of its output.
async fn child_id(toolset: &Toolset, caller: &bgagents::Caller, parent: &str) -> String {
    let mut id = String::new();
    eventually("the parent to report its child", || {
        let output = toolset
            .view_background_agent(caller, parent)
            .unwrap()
            .output
            .text;
        id = output.lines().next().unwrap_or("").to_string();
        !id.is_empty()
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cascades_to_descendants_blocked_or_spinning() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    // The worker blocks in a host call (wait) on a helper that spins.
    let parent = toolset
        .run_background_agent(caller, "worker", "spawn-then-wait helper spin", None)
        .unwrap();
    let child = child_id(&toolset, caller, parent.id.as_str()).await;
    eventually("child to run", || {
        status(&toolset, caller, &child) == TaskStatus::Running
    })
    .await;

    toolset
        .stop_background_agent(caller, parent.id.as_str())
        .await
        .unwrap();
    assert_eq!(
        status(&toolset, caller, parent.id.as_str()),
        TaskStatus::Stopped
    );
    assert_eq!(status(&toolset, caller, &child), TaskStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_stops_its_descendants() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let parent = toolset
        .run_background_agent(caller, "shortlived", "spawn-then-wait helper spin", None)
        .unwrap();
    let child = child_id(&toolset, caller, parent.id.as_str()).await;
    let view = finished(&toolset, caller, parent.id.as_str()).await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    assert_eq!(view.error.as_deref(), Some("timed out after 1s"));
    let child = finished(&toolset, caller, &child).await;
    assert_eq!(child.info.status, TaskStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_agents_outlive_a_parent_that_completed() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let parent = toolset
        .run_background_agent(caller, "worker", "spawn helper sleep 60000", None)
        .unwrap();
    let view = finished(&toolset, caller, parent.id.as_str()).await;
    let child = view.result.expect("the worker returns its child's id");
    eventually("the child to run", || {
        status(&toolset, caller, &child) == TaskStatus::Running
    })
    .await;
    let child_info = toolset.view_background_agent(caller, &child).unwrap().info;
    assert_eq!(
        child_info.parent.as_ref().map(|id| id.as_str()),
        Some(parent.id.as_str())
    );
    toolset.stop_background_agent(caller, &child).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_every_task_in_request_order() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let first = toolset
        .run_background_agent(caller, "helper", "echo one", None)
        .unwrap();
    let second = toolset
        .run_background_agent(caller, "helper", "fail two", None)
        .unwrap();
    let ids = vec![
        second.id.to_string(),
        "agent_task_missing".to_string(),
        first.id.to_string(),
    ];
    let report = toolset
        .wait_background_agents(caller, &ids, 60)
        .await
        .unwrap();
    assert!(report.all_done && !report.timed_out, "{report:?}");
    let json: serde_json::Value = serde_json::from_str(&render::wait(&report)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "all_done": true,
            "tasks": [
                {"task_id": second.id.to_string(), "status": "failed", "done": true, "error": "two"},
                {"task_id": "agent_task_missing", "status": "not_found", "done": true,
                 "error": "Task not found; it may have been pruned."},
                {"task_id": first.id.to_string(), "status": "completed", "done": true, "output": "one"},
            ]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_without_cancelling_and_caps_output() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let busy = toolset
        .run_background_agent(caller, "helper", "print 1000 0123456789 && spin", None)
        .unwrap();
    let ids = vec![busy.id.to_string()];
    eventually("output", || {
        toolset
            .view_background_agent(caller, &ids[0])
            .unwrap()
            .output
            .text
            .len()
            > 5000
    })
    .await;
    let report = toolset
        .wait_background_agents(caller, &ids, 1)
        .await
        .unwrap();
    assert!(report.timed_out && !report.all_done, "{report:?}");
    let entry = &report.tasks[0];
    assert_eq!(entry.status, Some(TaskStatus::Running));
    assert!(entry.truncated);
    assert_eq!(
        entry.output.as_ref().unwrap().len(),
        bgagents::WAIT_OUTPUT_CAP
    );
    let json: serde_json::Value = serde_json::from_str(&render::wait(&report)).unwrap();
    assert_eq!(json["timed_out"], true);
    assert_eq!(json["tasks"][0]["done"], false);
    assert_eq!(json["tasks"][0]["truncated"], true);
    assert_eq!(
        status(&toolset, caller, &ids[0]),
        TaskStatus::Running,
        "wait must not cancel"
    );
    toolset
        .stop_background_agent(caller, &ids[0])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_validates_its_arguments() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let error = |result: Result<bgagents::WaitReport, ToolError>| result.unwrap_err().to_string();
    assert_eq!(
        error(toolset.wait_background_agents(caller, &[], 0).await),
        "task_ids must contain 1 to 100 distinct task IDs"
    );
    let many: Vec<String> = (0..101).map(|n| format!("agent_task_{n}")).collect();
    assert_eq!(
        error(toolset.wait_background_agents(caller, &many, 0).await),
        "task_ids must contain 1 to 100 distinct task IDs"
    );
    let twice = vec!["agent_task_a".to_string(), "agent_task_a".to_string()];
    assert_eq!(
        error(toolset.wait_background_agents(caller, &twice, 0).await),
        "duplicate task ID: agent_task_a"
    );
    assert_eq!(
        error(
            toolset
                .wait_background_agents(caller, &many[..1], 3601)
                .await
        ),
        "timeout must be between 0 and 3600 seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_running_cap_tasks_queue_and_start_when_a_slot_frees() {
    let toolset = toolset(&format!("limits: {{max_running: 2}}\n{TEAM}"));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let ids: Vec<String> = (0..3)
        .map(|_| start(&toolset, caller, "helper", "spin"))
        .collect();
    eventually("two to run", || {
        ids[..2]
            .iter()
            .all(|id| status(&toolset, caller, id) == TaskStatus::Running)
    })
    .await;
    assert_eq!(status(&toolset, caller, &ids[2]), TaskStatus::Queued);
    let text = rendered(&toolset, caller, &ids[2]);
    assert!(
        text.contains("Status:  queued") && text.contains("Runtime: 0s"),
        "{text}"
    );

    toolset
        .stop_background_agent(caller, &ids[0])
        .await
        .unwrap();
    eventually("the queued task to start", || {
        status(&toolset, caller, &ids[2]) == TaskStatus::Running
    })
    .await;
    // A queued task can be stopped before it ever runs.
    let queued = toolset
        .run_background_agent(caller, "helper", "spin", None)
        .unwrap();
    toolset
        .stop_background_agent(caller, queued.id.as_str())
        .await
        .unwrap();
    assert_eq!(
        status(&toolset, caller, queued.id.as_str()),
        TaskStatus::Stopped
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_waiting_on_sub_agents_lends_its_slot_instead_of_deadlocking() {
    let toolset = toolset(&format!("limits: {{max_running: 1}}\n{TEAM}"));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let info = toolset
        .run_background_agent(
            caller,
            "root",
            "dispatch worker dispatch helper echo deep",
            None,
        )
        .unwrap();
    let view = finished(&toolset, caller, info.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("deep"), "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_retained_cap_the_oldest_finished_task_is_pruned() {
    let toolset = toolset(&format!("limits: {{max_retained: 3}}\n{TEAM}"));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let mut ids = Vec::new();
    for n in 0..3 {
        let info = toolset
            .run_background_agent(caller, "helper", &format!("echo {n}"), None)
            .unwrap();
        finished(&toolset, caller, info.id.as_str()).await;
        ids.push(info.id.to_string());
    }
    let fourth = toolset
        .run_background_agent(caller, "helper", "spin", None)
        .unwrap();
    assert!(
        toolset.view_background_agent(caller, &ids[0]).is_err(),
        "oldest not pruned"
    );
    assert!(toolset.view_background_agent(caller, &ids[1]).is_ok());
    assert_eq!(toolset.retained(), 3);

    for _ in 0..2 {
        toolset
            .run_background_agent(caller, "helper", "spin", None)
            .unwrap();
    }
    assert_eq!(
        toolset
            .run_background_agent(caller, "helper", "spin", None)
            .unwrap_err()
            .to_string(),
        "maximum total background agent tasks (3) reached; every retained task is still \
         queued or running — stop some or wait for them to finish"
    );
    eventually("the fourth task to run", || {
        status(&toolset, caller, fourth.id.as_str()) == TaskStatus::Running
    })
    .await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_dispatch_returns_the_sub_agents_result() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let info = toolset
        .run_background_agent(
            caller,
            "root",
            "dispatch worker dispatch helper echo deep",
            None,
        )
        .unwrap();
    let view = finished(&toolset, caller, info.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("deep"));
    // The session sees the whole tree: root, worker and helper.
    let agents: Vec<String> = toolset
        .list_background_agents(caller)
        .into_iter()
        .map(|info| info.agent)
        .collect();
    assert_eq!(agents, ["root", "worker", "helper"]);
}

const CHAIN: &str = r#"
  a1: {component: probe.wasm, sub_agents: [a2], toolsets: [{type: background_agents}]}
  a2: {component: probe.wasm, sub_agents: [a3], toolsets: [{type: background_agents}]}
  a3: {component: probe.wasm, sub_agents: [a4], toolsets: [{type: background_agents}]}
  a4: {component: probe.wasm}
  x: {component: probe.wasm, sub_agents: [y], toolsets: [{type: background_agents}]}
  y: {component: probe.wasm, sub_agents: [x], toolsets: [{type: background_agents}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_depth_is_limited() {
    let shallow = toolset(&format!("limits: {{max_depth: 3}}\nagents:{CHAIN}"));
    let session = shallow.open_session(None).unwrap();
    let info = shallow
        .run_background_agent(session.caller(), "a1", "chain", None)
        .unwrap();
    let view = finished(&shallow, session.caller(), info.id.as_str()).await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    let error = view.error.unwrap();
    assert!(
        error.contains("delegation depth limit exceeded: a1 -> a2 -> a3 -> a4 (at most 3 levels)"),
        "{error}"
    );

    let deep = toolset(&format!("limits: {{max_depth: 4}}\nagents:{CHAIN}"));
    let session = deep.open_session(None).unwrap();
    let info = deep
        .run_background_agent(session.caller(), "a1", "chain", None)
        .unwrap();
    let view = finished(&deep, session.caller(), info.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("a1 > a2 > a3 > a4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_cycles_are_refused() {
    let toolset = toolset(&format!("agents:{CHAIN}"));
    let session = toolset.open_session(None).unwrap();
    let info = toolset
        .run_background_agent(
            session.caller(),
            "x",
            "dispatch y dispatch x echo loop",
            None,
        )
        .unwrap();
    let view = finished(&toolset, session.caller(), info.id.as_str()).await;
    let error = view.error.unwrap();
    assert!(
        error.contains("delegation cycle detected: x -> y -> x"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_see_only_their_own_tasks() {
    let toolset = team();
    let alice = toolset.open_session(None).unwrap();
    let bob = toolset.open_session(None).unwrap();
    let task = toolset
        .run_background_agent(alice.caller(), "helper", "spin", None)
        .unwrap();
    let id = task.id.to_string();
    eventually("the task to run", || {
        status(&toolset, alice.caller(), &id) == TaskStatus::Running
    })
    .await;
    assert!(toolset.list_background_agents(bob.caller()).is_empty());
    let not_found = format!("task not found: {id}");
    assert_eq!(
        toolset
            .view_background_agent(bob.caller(), &id)
            .unwrap_err()
            .to_string(),
        not_found
    );
    assert_eq!(
        toolset
            .stop_background_agent(bob.caller(), &id)
            .await
            .unwrap_err()
            .to_string(),
        not_found
    );
    let report = toolset
        .wait_background_agents(bob.caller(), std::slice::from_ref(&id), 1)
        .await
        .unwrap();
    assert_eq!(report.tasks[0].status, None);
    assert_eq!(toolset.list_background_agents(alice.caller()).len(), 1);
    assert_eq!(status(&toolset, alice.caller(), &id), TaskStatus::Running);

    // Closing bob's session leaves alice's task alone; closing alice's stops it.
    bob.close().await;
    assert_eq!(
        toolset
            .run_background_agent(bob.caller(), "helper", "echo late", None)
            .unwrap_err(),
        ToolError::SessionClosed
    );
    assert_eq!(status(&toolset, alice.caller(), &id), TaskStatus::Running);
    alice.close().await;
    assert_eq!(status(&toolset, alice.caller(), &id), TaskStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_agent_cannot_touch_a_siblings_tasks() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let first = toolset
        .run_background_agent(caller, "worker", "spawn helper sleep 60000", None)
        .unwrap();
    let grandchild = finished(&toolset, caller, first.id.as_str())
        .await
        .result
        .unwrap();

    for (command, expected) in [
        (
            format!("stop {grandchild}"),
            format!("task not found: {grandchild}"),
        ),
        (
            format!("view {grandchild}"),
            format!("task not found: {grandchild}"),
        ),
    ] {
        let sibling = toolset
            .run_background_agent(caller, "worker", &command, None)
            .unwrap();
        let view = finished(&toolset, caller, sibling.id.as_str()).await;
        assert_eq!(view.error.as_deref(), Some(expected.as_str()), "{command}");
    }
    let lister = toolset
        .run_background_agent(caller, "worker", "list", None)
        .unwrap();
    let view = finished(&toolset, caller, lister.id.as_str()).await;
    assert_eq!(
        view.result.as_deref(),
        Some(""),
        "a sibling's tasks were listed"
    );
    let waiter = toolset
        .run_background_agent(caller, "worker", &format!("wait {grandchild}"), None)
        .unwrap();
    let view = finished(&toolset, caller, waiter.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("None"));

    // The session that started the tree still sees and stops the grandchild.
    assert_eq!(status(&toolset, caller, &grandchild), TaskStatus::Running);
    toolset
        .stop_background_agent(caller, &grandchild)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_lists_views_waits_on_and_stops_its_own_sub_agents() {
    let toolset = team();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    for (task, expected) in [
        (
            "spawn helper sleep 60000 && view $prev",
            "TaskStatus::Queued|TaskStatus::Running",
        ),
        ("spawn helper spin && stop $prev", "TaskStatus::Stopped"),
        (
            "spawn helper echo hi && wait $prev",
            "Some(TaskStatus::Completed)",
        ),
        ("spawn helper echo hi && list", "helper agent_task_"),
    ] {
        let info = toolset
            .run_background_agent(caller, "worker", task, None)
            .unwrap();
        let view = finished(&toolset, caller, info.id.as_str()).await;
        let result = view
            .result
            .unwrap_or_else(|| panic!("{task}: {:?}", view.error));
        let matches = expected.split('|').any(|prefix| result.starts_with(prefix));
        assert!(matches, "{task}: {result}");
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_the_view_says_so() {
    let toolset = toolset(&format!("limits: {{max_output: 1KiB}}\n{TEAM}"));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let info = toolset
        .run_background_agent(caller, "helper", "flood 100000 && sleep 60000", None)
        .unwrap();
    eventually("output to hit the cap", || {
        toolset
            .view_background_agent(caller, info.id.as_str())
            .unwrap()
            .output
            .truncated
    })
    .await;
    let view = toolset
        .view_background_agent(caller, info.id.as_str())
        .unwrap();
    assert_eq!(view.output.text.len(), 1024);
    let text = render::view(&view);
    assert!(
        text.ends_with("\n\n[output truncated at 1KB limit — still running...]"),
        "{}",
        &text[text.len() - 80..]
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_task_and_refuses_new_ones() {
    let toolset = toolset(&format!("limits: {{max_running: 2}}\n{TEAM}"));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let ids: Vec<String> = ["spin", "sleep 60000", "spawn-then-wait helper spin", "spin"]
        .iter()
        .map(|task| {
            let agent = if task.starts_with("spawn") {
                "worker"
            } else {
                "helper"
            };
            start(&toolset, caller, agent, task)
        })
        .collect();
    eventually("two to run", || {
        ids.iter()
            .filter(|id| status(&toolset, caller, id) == TaskStatus::Running)
            .count()
            == 2
    })
    .await;
    tokio::time::timeout(bgagents_testkit::HANG, toolset.shutdown())
        .await
        .expect("shutdown hung");
    for info in toolset.list_background_agents(caller) {
        assert_eq!(info.status, TaskStatus::Stopped, "{info:?}");
    }
    assert_eq!(
        toolset
            .run_background_agent(caller, "helper", "echo late", None)
            .unwrap_err(),
        ToolError::ShuttingDown
    );
}
