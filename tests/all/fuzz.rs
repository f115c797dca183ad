//! Property tests: arbitrary team files and arbitrary tool arguments never
//! panic the host, and every refusal is an error with a message. Runs
//! briefly by default; run longer by hand with, e.g.,
//! `PROPTEST_CASES=20000 cargo test --test all fuzz::`.

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
    "providers",
    "provider",
    "base_url",
    "token_key",
    "api_type",
    "openai_responses",
    "ollama/x",
    "add_date",
    "max_iterations",
    "todo",
    "shared",
    "tokens",
    "model_calls",
    "model_timeout",
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

/// Mistakes that do not depend on each other, with a piece of what each is
/// reported as. The last needs the component's file, which is only looked
/// at next to other problems (alone, loading the component reports it).
const MISTAKES: &[(&str, &str)] = &[
    ("descripton: typo", "unknown field `descripton`"),
    (
        "toolsets: [{type: script}]",
        "toolset type `script` is not supported yet — remove it",
    ),
    (
        "toolsets: [{type: memory}]",
        "the memory toolset needs `path:`",
    ),
    ("limits: {memory: lots}", "`lots` is not a size"),
    (
        "limits: {timeout: 0s}",
        "limits.timeout: must be longer than zero",
    ),
    (
        "sub_agents: [ghost]",
        "`ghost` is not defined under `agents:`",
    ),
    ("limits: {fuel: 0}", "limits.fuel: must be at least 1"),
    (
        "grants: {env: ['bad-name']}",
        "`bad-name` is not `NAME` or `NAME=value`",
    ),
    ("sub_agents: worker", "expected a sequence"),
    (
        "grants: {files: [{guest: /x, mode: everything}]}",
        "unknown variant `everything`",
    ),
    ("component: missing.wasm", "missing.wasm does not exist"),
];

/// A team with one agent per chosen mistake (in the chosen order).
fn team_with_mistakes(chosen: &[usize]) -> String {
    let mut yaml = String::from("agents:\n");
    for (agent, &mistake) in chosen.iter().enumerate() {
        let (text, _) = MISTAKES[mistake];
        yaml.push_str(&format!("  a{agent}:\n    {text}\n"));
        if !text.starts_with("component:") {
            yaml.push_str("    component: probe.wasm\n");
        }
    }
    yaml
}

proptest! {
    #[test]
    fn every_mistake_is_reported_whatever_else_is_wrong(
        chosen in proptest::sample::subsequence((0..MISTAKES.len()).collect::<Vec<_>>(), 1..=MISTAKES.len())
            .prop_shuffle()
    ) {
        let yaml = team_with_mistakes(&chosen);
        let result = Team::parse(&yaml, Path::new("fuzz.yaml"), plugin_dir());
        if chosen == [MISTAKES.len() - 1] {
            prop_assert!(result.is_ok(), "{yaml}");
            return Ok(());
        }
        let error = result.expect_err("every chosen mistake is an error").to_string();
        for (agent, &mistake) in chosen.iter().enumerate() {
            let (_, reported) = MISTAKES[mistake];
            prop_assert!(
                error.lines().any(|line| line.contains(&format!("agents.a{agent}")) && line.contains(reported)),
                "{reported:?} for a{agent} missing from:\n{error}\nin:\n{yaml}"
            );
        }
    }

    #[test]
    fn nesting_within_the_bound_is_never_refused_as_deep(value in yaml_value()) {
        let text = serde_yaml::to_string(&value).unwrap();
        if let Err(error) = Team::parse(&text, Path::new("fuzz.yaml"), plugin_dir()) {
            prop_assert!(!error.to_string().contains("levels deep"), "{error}\n{text}");
        }
    }

    #[test]
    fn any_nesting_is_bounded_quickly(open in "[\\[{(-]{1,8}", depth in 60usize..5000) {
        // `- ` compact sequences, `[`/`{` flow collections and mixtures.
        let prefix: String = open.chars().map(|c| if c == '-' || c == '(' { "- ".to_string() } else { c.to_string() }).collect();
        let text = format!("agents:\n  root:\n    sub_agents:\n      {}x\n", prefix.repeat(depth / prefix.len().max(1) + 1));
        let started = std::time::Instant::now();
        parse(&text);
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

proptest! {
    #[test]
    fn a_stray_quote_in_plain_text_does_not_hide_nesting(
        plain in "[a-z]{1,5}[-:?]?['\"][a-z ]{0,5}",
        layout in 0usize..3,
        depth in 64usize..3000,
    ) {
        // A plain scalar with a quote in it, then flow nesting too deep.
        let stray = match layout {
            0 => format!("a: {plain}\n"),
            1 => format!("a: b\n  {plain}\n"),
            _ => format!("- x {plain}\n").replacen("- ", "a:\n  - ", 1),
        };
        let text = format!("{stray}k: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let error = Team::parse(&text, Path::new("fuzz.yaml"), plugin_dir())
            .expect_err("nesting past the bound is refused");
        prop_assert!(error.to_string().contains("levels deep"), "{error}\n{text}");
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
