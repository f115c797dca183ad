//! Model-backed agents in the team file: `model:` as a `models:` name or
//! `provider/model`, `providers:`, the model-only agent keys and toolsets,
//! the model limits, and every mistake named with its key and fix.

use crate::config::{problem, problems};
use bgagents::{ModelApi, ModelBinding, Team, TodoSettings};
use bgagents_testkit::{Scratch, plugin_dir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn parse(yaml: &str) -> Result<Team, String> {
    Team::parse(yaml, Path::new("team.yaml"), plugin_dir()).map_err(|error| error.to_string())
}

fn binding(yaml: &str, agent: &str) -> ModelBinding {
    let team = parse(yaml).unwrap();
    team.agent(agent).unwrap().model.clone().unwrap()
}

#[test]
fn inline_provider_model_without_a_key_resolves_to_the_default_endpoint() {
    let model = binding("agents:\n  root:\n    model: ollama/qwen3:8b\n", "root");
    assert_eq!(
        model,
        ModelBinding {
            reference: "ollama/qwen3:8b".into(),
            provider: "ollama".into(),
            model: "qwen3:8b".into(),
            api: ModelApi::OpenAiChat,
            base_url: "http://localhost:11434/v1".into(),
            key_var: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            parallel_tool_calls: None,
        }
    );
    // Split at the first `/` only.
    let model = binding("agents:\n  root:\n    model: dmr/ai/qwen3\n", "root");
    assert_eq!(
        (model.provider.as_str(), model.model.as_str()),
        ("dmr", "ai/qwen3")
    );
    assert!(model.key_var.is_none());
    assert!(
        model.base_url.ends_with("/engines/v1"),
        "{}",
        model.base_url
    );
}

#[test]
fn a_named_model_carries_its_settings_and_its_own_key_variable() {
    let yaml = "models:\n  \
        smart:\n    provider: anthropic\n    model: claude-sonnet-4-0\n    max_tokens: 4000\n    \
          temperature: 0.2\n    top_p: 0.9\n    parallel_tool_calls: false\n    token_key: PATH\n    \
          thinking_budget: 1024\n    track_usage: true\n    provider_opts: {x: 1}\n    \
          frequency_penalty: 0.1\n    presence_penalty: 0.1\n    routing: []\n\
        agents:\n  root:\n    model: smart\n    add_date: true\n    max_iterations: 12\n    \
          toolsets: [{type: think}, {type: todo, shared: true}, {type: background_agents}]\n    \
          sub_agents: [helper]\n    limits: {tokens: 5_000, model_calls: 7, model_timeout: 1m}\n  \
        helper:\n    model: smart\n    toolsets: [{type: todo}]\n";
    let team = parse(yaml).unwrap();
    let root = team.agent("root").unwrap();
    assert_eq!(
        root.model,
        Some(ModelBinding {
            reference: "smart".into(),
            provider: "anthropic".into(),
            model: "claude-sonnet-4-0".into(),
            api: ModelApi::AnthropicMessages,
            base_url: "https://api.anthropic.com".into(),
            key_var: Some("PATH".into()),
            max_tokens: Some(4000),
            temperature: Some(0.2),
            top_p: Some(0.9),
            parallel_tool_calls: Some(false),
        })
    );
    assert!(root.component.is_none());
    assert!(root.add_date && root.think && root.background_agents);
    assert_eq!(root.max_iterations, 12);
    assert_eq!(root.todo, Some(TodoSettings { shared: true }));
    assert_eq!(root.limits.tokens, 5_000);
    assert_eq!(root.limits.model_calls, 7);
    assert_eq!(root.limits.model_timeout, Duration::from_secs(60));
    let helper = team.agent("helper").unwrap();
    assert_eq!(helper.todo, Some(TodoSettings { shared: false }));
    assert!(!helper.think && !helper.add_date);
    assert_eq!(helper.max_iterations, 0);
    assert_eq!(helper.limits.tokens, 2_000_000);
    assert_eq!(helper.limits.model_calls, 200);
    assert_eq!(helper.limits.model_timeout, Duration::from_secs(300));
}

#[test]
fn custom_providers_give_the_endpoint_protocol_and_key() {
    let yaml = "providers:\n  \
        gateway:\n    api_type: openai_chatcompletions\n    base_url: https://llm.example.com/v1/\n    \
          token_key: PATH\n  \
        claude_proxy:\n    api_type: anthropic\n    base_url: http://127.0.0.1:8080\n\
        models:\n  fast: {provider: gateway, model: small}\n\
        agents:\n  root: {model: fast}\n  other: {model: claude_proxy/claude-x}\n  \
          local: {model: gateway/big}\n";
    let team = parse(yaml).unwrap();
    let root = team.agent("root").unwrap().model.clone().unwrap();
    assert_eq!(root.provider, "gateway");
    assert_eq!(root.base_url, "https://llm.example.com/v1", "no trailing /");
    assert_eq!(root.key_var.as_deref(), Some("PATH"));
    assert_eq!(root.endpoint_host(), "llm.example.com");
    let other = team.agent("other").unwrap().model.clone().unwrap();
    assert_eq!(other.api, ModelApi::AnthropicMessages);
    assert_eq!(other.key_var, None);
    assert_eq!(other.endpoint_host(), "127.0.0.1:8080");
    assert_eq!(
        team.agent("local").unwrap().model.as_ref().unwrap().model,
        "big"
    );
}

#[test]
fn model_reference_mistakes_name_the_key_and_the_fix() {
    assert_eq!(
        problem("agents:\n  root:\n    model: gpt4\n"),
        "team.yaml: agents.root.model: `gpt4` is not a name under `models:` (there is no \
         `models:` section); name a `models:` entry or write `provider/model` such as \
         openai/gpt-4o"
    );
    assert_eq!(
        problem("models: {a: {provider: ollama, model: x}}\nagents:\n  root:\n    model: b\n"),
        "team.yaml: agents.root.model: `b` is not a name under `models:` (defined: a); name a \
         `models:` entry or write `provider/model` such as openai/gpt-4o"
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: ollama/\n"),
        "team.yaml: agents.root.model: `ollama/` is not `provider/model`; write both parts, \
         such as openai/gpt-4o or dmr/ai/qwen3"
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: acme/big\n"),
        "team.yaml: agents.root.model: unknown provider `acme`; use one of openai, anthropic, \
         dmr, ollama, mistral, xai, nebius, requesty, minimax, or define it under `providers:` \
         with a `base_url`"
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: google/gemini-2.5-pro\n"),
        "team.yaml: agents.root.model: provider `google` is not supported yet; use an \
         OpenAI-compatible endpoint via `base_url` under a `providers:` entry (`api_type: \
         openai_chatcompletions`)"
    );
    assert!(
        problem("agents:\n  root:\n    model: amazon-bedrock/x\n")
            .contains("provider `amazon-bedrock` is not supported yet")
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: [openai, gpt-4o]\n"),
        "team.yaml: line 3: agents.root.model: invalid type: sequence, expected a string"
    );
}

#[test]
fn a_missing_key_variable_is_named_with_the_export_to_run() {
    assert_eq!(
        problem(
            "models:\n  m: {provider: openai, model: gpt-4o, token_key: BGAGENTS_TEST_NEVER_SET}\n\
             agents:\n  root:\n    model: m\n"
        ),
        "team.yaml: agents.root.model: `m` needs an API key in the environment variable \
         BGAGENTS_TEST_NEVER_SET, which is not set; `export BGAGENTS_TEST_NEVER_SET=…` before \
         running bgagents (or name another variable with `token_key:` in a `models:` entry)"
    );
    // A key written where the variable's name belongs is not echoed.
    let text = problem(
        "models:\n  m: {provider: openai, model: gpt-4o, token_key: 'sk-live canary-123'}\n\
         agents:\n  root:\n    model: m\n",
    );
    assert!(!text.contains("canary-123"), "{text}");
    assert!(
        text.starts_with("team.yaml: models.m.token_key: not an environment variable name"),
        "{text}"
    );
}

#[test]
fn models_and_providers_entries_are_checked() {
    let all = problems(
        "providers:\n  \
           resp: {api_type: openai_responses, base_url: 'https://x.example/v1'}\n  \
           nourl: {api_type: openai_chatcompletions}\n  \
           odd: {api_type: grpc, base_url: 'ftp://x'}\n\
         models:\n  \
           a: {model: x}\n  \
           b: {provider: openai}\n  \
           c: {provider: ollama, model: x, temperature: 3, top_p: -1, max_tokens: 0}\n  \
           d: {provider: ollama, model: x, base_url: 'https://user:pw@h.example/v1'}\n  \
           e: {provider: ollama, model: x, seed: 4}\n\
         agents:\n  root: {model: ollama/x}\n",
    );
    let expect = [
        "team.yaml: line 10: models.e: unknown field `seed`, expected one of `provider`, \
         `model`, `base_url`, `token_key`, `max_tokens`, `temperature`, `top_p`, \
         `parallel_tool_calls`, `frequency_penalty`, `presence_penalty`, `provider_opts`, \
         `track_usage`, `thinking_budget`, `routing`",
        "team.yaml: providers.nourl: missing `base_url`; give the endpoint, such as \
         `base_url: https://llm.example.com/v1`",
        "team.yaml: providers.odd.api_type: unknown API type `grpc`; use \
         openai_chatcompletions or anthropic",
        "team.yaml: providers.odd.base_url: `ftp://x` is not an http(s) URL such as \
         https://llm.example.com/v1 (no credentials, query or fragment; put the key in an \
         environment variable named by `token_key:`)",
        "team.yaml: providers.resp.api_type: `openai_responses` is not supported; use \
         `api_type: openai_chatcompletions` (the endpoint must offer /chat/completions)",
        "team.yaml: models.a: missing `provider`; add one such as `provider: openai` (known: \
         openai, anthropic, dmr, ollama, mistral, xai, nebius, requesty, minimax)",
        "team.yaml: models.b: missing `model`; add the provider's model name, such as \
         `model: gpt-4o`",
        "team.yaml: models.c.max_tokens: must be at least 1",
        "team.yaml: models.c.temperature: 3 is outside 0 to 2",
        "team.yaml: models.c.top_p: -1 is outside 0 to 1",
        "team.yaml: models.d.base_url: the URL carries credentials (not shown); put the key in \
         an environment variable named by `token_key:` and give the URL without them",
    ];
    assert_eq!(all, expect);
    assert!(!all.concat().contains("user:pw"), "credentials echoed");
    assert_eq!(
        problem(
            "models: {a: {provider: ollama, model: x, max_tokens: lots}}\nagents:\n  r: {model: a}\n"
        ),
        "team.yaml: line 1: models.a.max_tokens: invalid type: string \"lots\", expected u64"
    );
}

#[test]
fn model_only_keys_need_a_model_and_toolsets_are_checked() {
    let all = problems(
        "agents:\n  root:\n    component: probe.wasm\n    add_date: true\n    \
         max_iterations: 3\n    toolsets: [{type: think}, {type: todo}]\n",
    );
    assert_eq!(
        all,
        [
            "team.yaml: agents.root: `think` is for model-backed agents, and this agent has no \
             `model:`; remove it, or give the agent a `model:`",
            "team.yaml: agents.root: `todo` is for model-backed agents, and this agent has no \
             `model:`; remove it, or give the agent a `model:`",
            "team.yaml: agents.root: `add_date` is for model-backed agents, and this agent has \
             no `model:`; remove it, or give the agent a `model:`",
            "team.yaml: agents.root: `max_iterations` is for model-backed agents, and this \
             agent has no `model:`; remove it, or give the agent a `model:`",
        ]
    );
    assert_eq!(
        problem(
            "agents:\n  root:\n    model: ollama/x\n    toolsets: [{type: think}, {type: think}]\n"
        ),
        "team.yaml: agents.root.toolsets: think is listed more than once"
    );
    assert_eq!(
        problem(
            "agents:\n  root:\n    model: ollama/x\n    toolsets: [{type: todo, shared: maybe}]\n"
        ),
        "team.yaml: line 4: agents.root.toolsets[0].shared: invalid type: string \"maybe\", \
         expected a boolean"
    );
    assert_eq!(
        problem(
            "agents:\n  root:\n    model: ollama/x\n    toolsets: [{type: think, deep: true}]\n"
        ),
        "team.yaml: line 4: agents.root.toolsets[0]: unknown field `deep`, expected one of \
         `type`, `tools`"
    );
    assert_eq!(
        problem(
            "agents:\n  root:\n    model: ollama/x\n    toolsets: [{type: fetch, timeout: 0}]\n"
        ),
        "team.yaml: agents.root.toolsets[0].timeout: must be at least 1 (seconds)"
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: ollama/x\n    max_iterations: -1\n"),
        "team.yaml: line 4: agents.root.max_iterations: invalid value: integer `-1`, expected u32"
    );
}

#[test]
fn model_limits_have_floors_and_ceilings() {
    let all = problems(
        "agents:\n  \
           a: {model: ollama/x, limits: {tokens: 0, model_calls: 0, model_timeout: 0s}}\n  \
           b: {model: ollama/x, limits: {tokens: 2_000_000_000, model_calls: 1_000_000, model_timeout: 25h}}\n",
    );
    assert_eq!(
        all,
        [
            "team.yaml: agents.a.limits.tokens: must be at least 1",
            "team.yaml: agents.a.limits.model_calls: must be at least 1",
            "team.yaml: agents.a.limits.model_timeout: must be longer than zero",
            "team.yaml: agents.b.limits.tokens: 2000000000 is above the ceiling of 1000000000",
            "team.yaml: agents.b.limits.model_calls: 1000000 is above the ceiling of 100000",
            "team.yaml: agents.b.limits.model_timeout: must be at most 24h",
        ]
    );
    assert!(
        problem("agents:\n  a: {model: ollama/x, limits: {model_timeout: soon}}\n")
            .contains("agents.a.limits.model_timeout: `soon` is not a duration")
    );
}

#[test]
fn sub_agents_may_be_model_backed_but_not_empty() {
    parse(
        "agents:\n  root:\n    component: probe.wasm\n    sub_agents: [llm]\n    \
         toolsets: [{type: background_agents}]\n  llm: {model: ollama/x}\n",
    )
    .unwrap();
    assert_eq!(
        problem(
            "agents:\n  root:\n    component: probe.wasm\n    sub_agents: [idle]\n  \
             idle: {description: nothing}\n"
        ),
        "team.yaml: agents.root.sub_agents: `idle` has no `component:` or `model:`, so it \
         could never run; give agents.idle a component or a model"
    );
}

fn check(team: &Path, env: &[(&str, &str)], remove: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bgagents"));
    command.arg("check").arg(team);
    for (name, value) in env {
        command.env(name, value);
    }
    for name in remove {
        command.env_remove(name);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn check_shows_the_binding_and_limits_but_never_the_key() {
    let canary = "sk-canary-check-5d1e";
    let scratch = Scratch::new();
    let team = scratch.team(
        "agents:\n  root:\n    model: openai/gpt-4o\n    add_date: true\n    \
         toolsets: [{type: think}, {type: todo, shared: true}]\n    \
         limits: {tokens: 10_000, model_calls: 5, model_timeout: 90s}\n",
    );
    let (code, stdout, stderr) = check(&team, &[("OPENAI_API_KEY", canary)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "  model:       openai/gpt-4o at api.openai.com (OpenAI chat completions), key from \
             $OPENAI_API_KEY\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  settings:    add_date\n"), "{stdout}");
    assert!(
        stdout.contains("  toolsets:    think, todo (shared)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  model use:   10000 tokens, 5 calls per task, 1m30s per call\n"),
        "{stdout}"
    );
    assert!(!stdout.contains(canary) && !stderr.contains(canary));
    let (code, stdout, stderr) = check(&team, &[], &["OPENAI_API_KEY"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains(
            "agents.root.model: `openai/gpt-4o` needs an API key in the environment variable \
             OPENAI_API_KEY, which is not set; `export OPENAI_API_KEY=…`"
        ),
        "{stderr}"
    );
}
