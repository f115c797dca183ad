//! Per-task budgets and failures: fuel, memory, wall-clock timeout, traps,
//! panics and stack overflow each end the task `failed` with a reason a
//! person understands, without harming the host or sibling tasks;
//! epoch-driven yields make CPU-bound guests, and guests flooding host calls
//! with huge arguments, preemptible; results and errors are capped.

use bgagents::{TaskStatus, Toolset};
use bgagents_testkit::{eventually, finished, run_to_end, start, status, toolset};

const TEAM: &str = r#"
agents:
  probe:
    component: probe.wasm
    limits: {fuel: 1_000_000_000_000_000}
  frugal:
    component: probe.wasm
    limits: {fuel: 1_000_000}
  small:
    component: probe.wasm
    limits: {memory: 16MiB}
  hasty:
    component: probe.wasm
    limits: {timeout: 1s}
  spinner:
    component: spinner.wasm
    limits: {fuel: 1_000_000_000_000_000}
  terse:
    component: probe.wasm
    limits: {result: 1KiB}
"#;

/// Runs `task` on `agent` to the end and returns (status, error).
async fn outcome(toolset: &Toolset, agent: &str, task: &str) -> (TaskStatus, String) {
    let view = run_to_end(toolset, agent, task).await;
    (view.info.status, view.error.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_exhaustion_fails_the_task_naming_the_budget() {
    let toolset = toolset(TEAM);
    let (status, reason) = outcome(&toolset, "frugal", "spin").await;
    assert_eq!(status, TaskStatus::Failed);
    // Which of the probe's functions is named depends on inlining; that it
    // is the probe's own, and the key to raise, do not.
    assert!(
        reason.starts_with("fuel budget of 1000000 exhausted in `probe.wasm!")
            && reason.contains("probe::")
            && reason.ends_with("`; raise agents.frugal.limits.fuel in test-team.yaml"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_fails_the_task_naming_the_limit() {
    let toolset = toolset(TEAM);
    assert_eq!(
        outcome(&toolset, "small", "alloc 64").await,
        (
            TaskStatus::Failed,
            "memory limit of 16 MiB reached".to_string()
        )
    );
    // Under the limit the same guest is fine.
    let (status, error) = outcome(&toolset, "small", "alloc 4").await;
    assert_eq!(status, TaskStatus::Completed, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_ends_a_spinning_guest_and_one_blocked_in_a_host_call() {
    let toolset = toolset(TEAM);
    let expected = (TaskStatus::Failed, "timed out after 1s".to_string());
    assert_eq!(outcome(&toolset, "hasty", "spin").await, expected);
    assert_eq!(outcome(&toolset, "hasty", "sleep 60000").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_panics_fail_the_task_with_their_message() {
    let toolset = toolset(TEAM);
    let (status, error) = outcome(&toolset, "probe", "trap").await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        error.starts_with("guest trapped: wasm trap: wasm `unreachable` instruction executed"),
        "{error}"
    );
    assert!(
        error.contains("\nwasm backtrace (innermost first):\n  probe.wasm!"),
        "{error}"
    );
    assert!(
        error.contains("probe.wasm!<probe::Probe as Guest>::run"),
        "function names are shown: {error}"
    );

    let (status, error) = outcome(&toolset, "probe", "panic the sky is falling").await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        error.starts_with("guest panicked: the sky is falling (at "),
        "{error}"
    );

    let (status, error) = outcome(&toolset, "probe", "recurse").await;
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(
        error,
        "stack overflow: `probe.wasm!probe::recurse` recursed until the guest's stack ran out \
         (out-of-bounds memory access); make the recursion shallower or iterative, or give a \
         Rust guest a bigger stack when linking it \
         (RUSTFLAGS=\"-C link-arg=-zstack-size=BYTES\"; the default is 1 MiB)"
    );

    assert_eq!(
        outcome(&toolset, "probe", "fail the agent said no").await,
        (TaskStatus::Failed, "the agent said no".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_guest_does_not_harm_its_siblings() {
    let toolset = toolset(TEAM);
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let tasks = [
        ("probe", "trap"),
        ("small", "alloc 64"),
        ("frugal", "spin"),
        ("probe", "echo fine"),
        ("spinner", "100000"),
        ("probe", "panic oops"),
    ];
    let ids: Vec<String> = tasks
        .iter()
        .map(|(agent, task)| start(&toolset, caller, agent, task))
        .collect();
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(finished(&toolset, caller, id).await);
    }
    assert_eq!(statuses[3].result.as_deref(), Some("fine"));
    assert!(
        statuses[4]
            .result
            .as_deref()
            .unwrap()
            .starts_with("100000 rounds")
    );
    for index in [0, 1, 2, 5] {
        assert_eq!(statuses[index].info.status, TaskStatus::Failed);
    }
    assert_eq!(
        toolset.list_background_agents(caller).len(),
        tasks.len(),
        "lost a record"
    );
}

/// On a single-threaded runtime a guest that never calls the host would
/// starve everything else without fuel-driven yields.
#[tokio::test(flavor = "current_thread")]
async fn cpu_bound_guests_share_one_thread_and_stop_preemptively() {
    let toolset = toolset(TEAM);
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let forever = toolset
        .run_background_agent(caller, "probe", "print 1 spinning && spin", None)
        .unwrap();
    // Its output proves it is inside its endless loop from here on.
    eventually("the endless loop to start", || {
        output(&toolset, caller, forever.id.as_str()) == "spinning\n"
    })
    .await;
    let bounded = toolset
        .run_background_agent(caller, "spinner", "2000000 rounds", None)
        .unwrap();
    let view = finished(&toolset, caller, bounded.id.as_str()).await;
    assert!(view.result.unwrap().starts_with("2000000 rounds"));
    assert_eq!(
        status(&toolset, caller, forever.id.as_str()),
        TaskStatus::Running
    );

    let stopped = tokio::time::timeout(
        bgagents_testkit::HANG,
        toolset.stop_background_agent(caller, forever.id.as_str()),
    )
    .await
    .expect("stop of a guest that never calls the host hung")
    .unwrap();
    assert_eq!(stopped.status, TaskStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cpu_bound_guests_run_at_the_same_time() {
    let toolset = toolset(TEAM);
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let first = toolset
        .run_background_agent(caller, "probe", "print 1 first && spin", None)
        .unwrap();
    eventually("the first loop to start", || {
        output(&toolset, caller, first.id.as_str()) == "first\n"
    })
    .await;
    // The second gets going while the first never stops spinning, and then
    // both are in their loops at once.
    let second = toolset
        .run_background_agent(caller, "probe", "print 1 second && spin", None)
        .unwrap();
    eventually("the second loop to start", || {
        output(&toolset, caller, second.id.as_str()) == "second\n"
    })
    .await;
    for id in [&first.id, &second.id] {
        assert_eq!(status(&toolset, caller, id.as_str()), TaskStatus::Running);
    }
    session.close().await;
}

/// The live output of task `id`.
fn output(toolset: &Toolset, caller: &bgagents::Caller, id: &str) -> String {
    toolset
        .view_background_agent(caller, id)
        .unwrap()
        .output
        .text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_call_floods_cannot_outlast_the_timeout() {
    let toolset = toolset(TEAM);
    let expected = (TaskStatus::Failed, "timed out after 1s".to_string());
    // Under the per-call cap: each call is accepted, and the epoch still
    // preempts the loop.
    for flood in ["write-flood 4", "task-flood probe 3"] {
        let started = std::time::Instant::now();
        assert_eq!(outcome(&toolset, "hasty", flood).await, expected, "{flood}");
        // Generous: only a guest that outlasts its timeout many times over fails.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{flood} ran {:?} past a 1s timeout",
            started.elapsed()
        );
    }
    // Over the per-call cap: refused before anything is copied, at once.
    for flood in ["write-flood 16", "write-flood 64", "task-flood probe 32"] {
        let (status, error) = outcome(&toolset, "probe", flood).await;
        assert_eq!(status, TaskStatus::Failed);
        assert_eq!(
            error,
            "the guest passed more than 4 MiB to the host in one call (or returned a result \
             that large); a call may carry at most that: pass data in smaller pieces",
            "{flood}"
        );
    }
    let (status, error) = outcome(&toolset, "probe", "big-result 5").await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        error.starts_with("the guest passed more than 4 MiB"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_host_call_flood() {
    let toolset = toolset(TEAM);
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    for flood in ["write-flood 4", "task-flood probe 3"] {
        let id = start(
            &toolset,
            caller,
            "probe",
            &format!("print 1 flooding && {flood}"),
        );
        eventually("the flood to start", || {
            output(&toolset, caller, &id).starts_with("flooding\n")
        })
        .await;
        // Generous for a loaded machine, yet well below what a flood held a
        // stop off for when only fuel yields preempted it.
        let stopped = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            toolset.stop_background_agent(caller, &id),
        )
        .await
        .unwrap_or_else(|_| panic!("stop of `{flood}` hung"))
        .unwrap();
        assert_eq!(stopped.status, TaskStatus::Stopped);
    }
}

/// Two flooding guests on a two-worker runtime must not take both workers:
/// a calm sibling still starts, runs and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_guests_do_not_freeze_a_calm_sibling() {
    let toolset = toolset(TEAM);
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let floods: Vec<String> = ["write-flood 4", "task-flood probe 3"]
        .iter()
        .map(|flood| {
            start(
                &toolset,
                caller,
                "probe",
                &format!("print 1 flooding && {flood}"),
            )
        })
        .collect();
    for id in &floods {
        eventually("the floods to start", || {
            output(&toolset, caller, id).starts_with("flooding\n")
        })
        .await;
    }
    let calm = start(&toolset, caller, "spinner", "2000000 rounds");
    let view = finished(&toolset, caller, &calm).await;
    assert!(view.result.unwrap().starts_with("2000000 rounds"));
    assert_eq!(
        run_to_end(&toolset, "probe", "echo fine")
            .await
            .result
            .as_deref(),
        Some("fine")
    );
    for id in &floods {
        assert_eq!(status(&toolset, caller, id), TaskStatus::Running);
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_errors_are_cut_to_the_agents_limit_and_say_so() {
    let toolset = toolset(TEAM);
    let view = run_to_end(&toolset, "terse", "big-result 2").await;
    assert_eq!(view.info.status, TaskStatus::Completed);
    let result = view.result.unwrap();
    assert_eq!(
        result,
        format!(
            "{}\n[truncated: 2097152 bytes, limits.result keeps 1024]",
            "r".repeat(1024)
        )
    );
    let (status, error) = outcome(&toolset, "terse", "big-error 2").await;
    assert_eq!(status, TaskStatus::Failed);
    assert!(
        error.starts_with(&"e".repeat(1024))
            && error.ends_with("\n[truncated: 2097152 bytes, limits.result keeps 1024]"),
        "{}",
        error.get(1000..).unwrap_or_default()
    );
    // The default keeps 1 MiB.
    let view = run_to_end(&toolset, "probe", "big-result 3").await;
    let result = view.result.unwrap();
    assert!(result.len() < (1 << 20) + 100, "{}", result.len());
    assert!(result.ends_with("limits.result keeps 1048576]"));
}
