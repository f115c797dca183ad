//! Property tests: arbitrary team files and arbitrary tool arguments never
//! panic the host, and every refusal is an error with a message. Runs
//! briefly by default; run longer by hand with, e.g.,
//! `PROPTEST_CASES=20000 cargo test --test fuzz`.

use bgagents::{Team, Toolset};
use bgagents_testkit::{plugin_dir, toolset};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::sync::OnceLock;

/// Keys the team file knows, so generated files reach deep into the schema.
const KEYS: &[&str] = &[
    "agents",
    "limits",
    "version",
    "metadata",
    "models",
    "description",
    "instruction",
    "sub_agents",
    "toolsets",
    "component",
    "grants",
    "model",
    "harness",
    "type",
    "background_agents",
    "think",
    "fuel",
    "memory",
    "timeout",
    "output",
    "spawns",
    "concurrent_spawns",
    "max_running",
    "max_retained",
    "max_output",
    "max_depth",
    "files",
    "host",
    "guest",
    "mode",
    "read-write",
    "env",
    "network",
    "connect",
    "dns",
    "probe.wasm",
    "root",
    "worker",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        proptest::sample::select(KEYS).prop_map(|key| Value::String(key.to_string())),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(Value::String("64MiB".into())),
        Just(Value::String("1m30s".into())),
    ]
}

fn yaml_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            proptest::collection::vec(
                (
                    proptest::sample::select(KEYS).prop_map(str::to_string),
                    inner
                ),
                0..6
            )
            .prop_map(|entries| {
                let mut map = Mapping::new();
                for (key, value) in entries {
                    map.insert(Value::String(key), value);
                }
                Value::Mapping(map)
            }),
        ]
    })
}

fn parse(text: &str) {
    if let Err(error) = Team::parse(text, Path::new("fuzz.yaml"), plugin_dir()) {
        assert!(!error.problems.is_empty());
        assert!(
            error
                .problems
                .iter()
                .all(|problem| !problem.trim().is_empty())
        );
    }
}

proptest! {
    #[test]
    fn structured_team_files_never_panic(value in yaml_value()) {
        let text = serde_yaml::to_string(&value).unwrap();
        parse(&text);
        parse(&format!("agents:\n  root:\n{}", indent(&text)));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        parse(&text);
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

fn fuzz_toolset() -> &'static (tokio::runtime::Runtime, Toolset) {
    static SHARED: OnceLock<(tokio::runtime::Runtime, Toolset)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let toolset = runtime.block_on(async {
            toolset(
                "agents:\n  root:\n    component: probe.wasm\n    sub_agents: [helper]\n    \
                 toolsets: [{type: background_agents}]\n  helper:\n    component: probe.wasm\n    \
                 limits: {fuel: 50_000_000, timeout: 2s, memory: 16MiB, output: 64KiB}\n",
            )
        });
        (runtime, toolset)
    })
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("helper".to_string()),
        Just("root".to_string()),
        Just("agent_task_".to_string()),
        "\\PC{0,40}",
        "[ \\t\\n]{0,3}",
    ]
}

proptest! {
    // Each case runs real components, so fewer by default; PROPTEST_CASES wins.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48)
    ))]

    #[test]
    fn arbitrary_tool_arguments_never_panic(
        agent in word(),
        task in word(),
        expected in proptest::option::of(word()),
        ids in proptest::collection::vec(word(), 0..4),
        timeout in prop_oneof![Just(0u64), Just(1), 3599u64..3700],
        as_agent in proptest::option::of(word()),
    ) {
        let (runtime, toolset) = fuzz_toolset();
        runtime.block_on(async {
            let Ok(session) = toolset.open_session(as_agent.as_deref()) else { return };
            let caller = session.caller();
            let started = toolset.run_background_agent(caller, &agent, &task, expected.as_deref());
            match &started {
                Ok(info) => assert!(info.id.as_str().starts_with("agent_task_")),
                Err(error) => assert!(!error.to_string().is_empty()),
            }
            let _ = toolset.list_background_agents(caller);
            for id in &ids {
                let _ = toolset.view_background_agent(caller, id);
                let _ = toolset.stop_background_agent(caller, id).await;
            }
            let short = timeout.min(1);
            let _ = toolset.wait_background_agents(caller, &ids, short).await;
            if timeout > 3600 {
                assert!(toolset.wait_background_agents(caller, &ids, timeout).await.is_err());
            }
            session.close().await;
        });
    }
}
