//! LLM sub-agents end to end: docker-agent's own team files run by the real
//! `bgagents` binary, each agent in its sandbox, against a scripted model
//! server on 127.0.0.1 speaking the OpenAI and Anthropic wire protocols.
//! What the server received shows what the agents were told (prompts, tool
//! definitions, tool results) and that the keys went only to it.

use crate::text;
use bgagents_testkit::model_server::{ModelServer, Received, Script, Turn};
use bgagents_testkit::{HANG, Scratch};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

pub(crate) const OPENAI_CANARY: &str = "sk-canary-openai-5f1d2c";
pub(crate) const ANTHROPIC_CANARY: &str = "sk-ant-canary-9e8d7c";

/// A docker-agent example from tests/fixtures, with `base_url: URL` added
/// under each `model: NAME` line that `urls` names.
pub(crate) fn fixture(name: &str, urls: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/docker-agent");
    let mut yaml = std::fs::read_to_string(path.join(name)).unwrap();
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    for (model, url) in urls {
        let line = format!("    model: {model}\n");
        assert!(yaml.contains(&line), "{name} has no `{line}`");
        yaml = yaml.replace(&line, &format!("{line}    base_url: {url}\n"));
    }
    yaml
}

/// `bgagents run TEAM TASK` with canary keys in its environment, while the
/// test's runtime keeps serving the scripted model.
pub(crate) async fn run_team(team: &Path, task: &str) -> Output {
    run_team_with(team, task, &[]).await
}

/// [`run_team`] with more environment variables (`PATH` with stand-ins for
/// the programs a team starts).
pub(crate) async fn run_team_with(team: &Path, task: &str, env: &[(&str, &str)]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(team)
        .arg(task)
        .envs(env.iter().copied())
        .env("OPENAI_API_KEY", OPENAI_CANARY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_CANARY)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(HANG, child)
        .await
        .expect("bgagents run hung")
        .unwrap()
}

/// Every text a request carried (system, messages, tool results), joined.
pub(crate) fn all_text(request: &Received) -> String {
    request.body.to_string()
}

pub(crate) fn assert_no_canary(output: &Output) {
    for canary in [OPENAI_CANARY, ANTHROPIC_CANARY] {
        assert!(!text(&output.stdout).contains(canary), "key on stdout");
        assert!(!text(&output.stderr).contains(canary), "key on stderr");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_agents_writer_team_runs_with_transfer_task_and_think() {
    let call = |agent: &str, task: &str| {
        let args = json!({"agent": agent, "task": task, "expected_output": "one prompt"});
        Turn::tool_calls([("transfer_task", args.to_string())])
    };
    let server = ModelServer::start(Script::new([
        call("prompt_chooser", "Choose among: 1. The sea 2. A lighthouse"),
        Turn::text("Prompt 2: A lighthouse."),
        call("writer", "Write 750 words on: A lighthouse."),
        Turn::text("THE LIGHTHOUSE STORY"),
        Turn::text("Today's text: THE LIGHTHOUSE STORY"),
    ]))
    .await;
    let scratch = Scratch::new();
    let team = scratch.write(
        "writer.yaml",
        fixture("writer.yaml", &[("gpt-4o", server.base_url())]),
    );

    let run = run_team(&team, "Write today's text").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("Today's text: THE LIGHTHOUSE STORY"),
        "{}",
        text(&run.stdout)
    );
    assert_no_canary(&run);
    let seen = server.requests();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {OPENAI_CANARY}").as_str())
        );
        assert!(request.is_stream(), "the host streams");
    }
    // The root: its instruction, the user's task, transfer_task and think.
    assert_eq!(seen[0].tool_names(), ["think", "transfer_task"]);
    assert!(seen[0].contents("system")[0].contains("leader of a team of AI agents"));
    assert!(all_text(&seen[0]).contains("Write today's text"));
    // The prompt chooser got docker-agent's delegated-task prompt, no tools.
    let delegated = seen[1].contents("system").join("\n");
    assert!(delegated.contains("You are a member of a team of agents."));
    assert!(
        delegated.contains("<task>\nChoose among: 1. The sea 2. A lighthouse\n</task>"),
        "{delegated}"
    );
    assert!(delegated.contains("<expected_output>\none prompt\n</expected_output>"));
    assert!(seen[1].tool_names().is_empty());
    // Its answer came back to the root as transfer_task's result.
    assert!(
        seen[2]
            .contents("tool")
            .contains(&"Prompt 2: A lighthouse.".to_string())
    );
    assert!(
        seen[4]
            .contents("tool")
            .contains(&"THE LIGHTHOUSE STORY".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_agents_shared_todo_team_shares_one_list_between_agents() {
    let transfer = |agent: &str, task: &str| {
        let args = json!({"agent": agent, "task": task});
        Turn::tool_calls([("transfer_task", args.to_string())])
    };
    let server = ModelServer::start(Script::new([
        transfer("first", "create a todo"),
        Turn::tool_calls([(
            "create_todo",
            json!({"description": "Water the plants"}).to_string(),
        )]),
        Turn::text("Created one todo."),
        transfer("second", "what todos do you have?"),
        Turn::tool_calls([("list_todos", "{}".to_string())]),
        Turn::text("There is one todo: Water the plants."),
        Turn::text("Both agents are done."),
    ]))
    .await;
    let scratch = Scratch::new();
    let team = scratch.write(
        "shared-todo.yaml",
        fixture("shared-todo.yaml", &[("gpt-4o", server.base_url())]),
    );

    let run = run_team(&team, "Go").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("Both agents are done."));
    let seen = server.requests();
    assert_eq!(seen.len(), 7, "{seen:#?}");
    assert_eq!(
        seen[1].tool_names(),
        ["create_todo", "create_todos", "list_todos", "update_todos"]
    );
    // `second` lists what `first` created: the list is the team's.
    let listed = seen[5].contents("tool").join("\n");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["todos"][0]["description"], "Water the plants");
    assert_eq!(listed["todos"][0]["id"], "todo_1");
    assert_eq!(listed["todos"][0]["status"], "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_agents_background_team_fans_out_in_parallel_and_synthesises() {
    let server = ModelServer::start(Script::per_model([
        (
            "claude-sonnet-4-0",
            vec![
                Turn::tool_calls([
                    (
                        "run_background_agent",
                        json!({"agent": "web_researcher", "task": "What is WASI?"}).to_string(),
                    ),
                    (
                        "run_background_agent",
                        json!({"agent": "code_analyst", "task": "Where is the linker set up?"})
                            .to_string(),
                    ),
                ]),
                // Waits on the two task ids the previous turn's results name.
                Turn::from_request(|body| {
                    let ids: Vec<String> = body
                        .to_string()
                        .split("started with ID: ")
                        .skip(1)
                        .map(|rest| {
                            rest.chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                                .collect()
                        })
                        .collect();
                    Turn::tool_calls([(
                        "wait_background_agents",
                        json!({"task_ids": ids, "timeout": 60}).to_string(),
                    )])
                }),
                Turn::text("SYNTHESIS of both findings"),
            ],
        ),
        ("gpt-4o", vec![Turn::text("WEB FINDINGS: WASI is an API")]),
        (
            "claude-sonnet-4-0-analyst",
            vec![Turn::text("CODE FINDINGS: host/src/wit/mod.rs")],
        ),
    ]))
    .await;
    let scratch = Scratch::new();
    let team = scratch.write(
        "background_agents.yaml",
        fixture(
            "background_agents.yaml",
            &[
                ("claude-sonnet-4-0", server.anthropic_base_url()),
                ("gpt-4o", server.base_url()),
                ("claude-sonnet-4-0-analyst", server.anthropic_base_url()),
            ],
        ),
    );

    let run = run_team(&team, "How do WASI guests get their imports?").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("SYNTHESIS of both findings"));
    assert_no_canary(&run);
    let seen = server.requests();
    let root: Vec<&Received> = seen
        .iter()
        .filter(|r| r.model() == Some("claude-sonnet-4-0"))
        .collect();
    assert_eq!(root.len(), 3, "{seen:#?}");
    assert_eq!(
        root[0].tool_names(),
        [
            "list_background_agents",
            "run_background_agent",
            "stop_background_agent",
            "think",
            "transfer_task",
            "view_background_agent",
            "wait_background_agents",
        ]
    );
    for request in &seen {
        match request.model() {
            Some("gpt-4o") => assert_eq!(
                request.header("authorization"),
                Some(format!("Bearer {OPENAI_CANARY}").as_str())
            ),
            _ => assert_eq!(request.header("x-api-key"), Some(ANTHROPIC_CANARY)),
        }
    }
    // The wait's report, as the root's model read it, carries both results.
    let report = all_text(root[2]);
    assert!(report.contains("WEB FINDINGS: WASI is an API"), "{report}");
    assert!(
        report.contains("CODE FINDINGS: host/src/wit/mod.rs"),
        "{report}"
    );
    // The specialists had only think.
    for request in seen
        .iter()
        .filter(|r| r.model() != Some("claude-sonnet-4-0"))
    {
        assert_eq!(request.tool_names(), ["think"]);
    }
}

/// A team of one LLM agent `root` (plus `extra` YAML under `agents:` and
/// `root`'s `limits`), its model `m` served by `server` (no key needed).
fn llm_team(server: &ModelServer, root: &str, extra: &str) -> bgagents::Toolset {
    bgagents_testkit::toolset(&format!(
        "agents:\n  root:\n    model: m\n    instruction: Answer.\n{root}\n{extra}\n\
         models:\n  m:\n    provider: ollama\n    model: m\n    base_url: {}\n",
        server.base_url()
    ))
}

fn think(thought: &str) -> Turn {
    Turn::tool_calls([("think", json!({"thought": thought}).to_string())])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_budget_ends_the_task_naming_the_limit() {
    let server = ModelServer::start(Script::new([
        think("plan").usage(80, 30),
        Turn::text("never asked for"),
    ]))
    .await;
    let toolset = llm_team(
        &server,
        "    toolsets: [{type: think}]\n    limits: {tokens: 100}",
        "",
    );
    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
    assert_eq!(view.info.status, bgagents::TaskStatus::Failed);
    let error = view.error.clone().unwrap();
    assert!(
        error.contains("used 110 of its 100 tokens; raise agents.root.limits.tokens"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1);
    // The live output shows the tool the agent ran.
    assert!(
        view.output.text.contains("[tool: think]\n"),
        "{:?}",
        view.output.text
    );
    let model = view.info.model.expect("model use is in the view");
    assert_eq!(
        (model.calls, model.input_tokens, model.output_tokens),
        (1, 80, 30)
    );
    assert!(
        bgagents::render::view(&view).contains("Model:   1 call, 110 tokens (80 in, 30 out)"),
        "{}",
        bgagents::render::view(&view)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_call_budget_ends_the_task_naming_the_limit() {
    let server = ModelServer::start(Script::new([think("a"), think("b"), think("c")])).await;
    let toolset = llm_team(
        &server,
        "    toolsets: [{type: think}]\n    limits: {model_calls: 2}",
        "",
    );
    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
    let error = view.error.unwrap();
    assert!(
        error.contains("made its 2 model calls; raise agents.root.limits.model_calls"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_calls_tools_forever_is_ended_by_max_iterations() {
    let server = ModelServer::start(Script::new((0..10).map(|_| think("again")))).await;
    let toolset = llm_team(
        &server,
        "    toolsets: [{type: think}]\n    max_iterations: 3",
        "",
    );
    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
    assert_eq!(view.info.status, bgagents::TaskStatus::Failed);
    assert!(view.error.unwrap().contains("max_iterations"));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_in_the_middle_of_a_streamed_answer_ends_the_request_at_once() {
    let words: String = (0..200).map(|n| format!("word{n} ")).collect();
    let server = ModelServer::start(Script::new([
        Turn::text(words).chunk_delay(std::time::Duration::from_millis(100)),
        Turn::text("never asked for"),
    ]))
    .await;
    let toolset = llm_team(&server, "", "");
    let session = toolset.open_session(None).unwrap();
    let id = bgagents_testkit::start(&toolset, session.caller(), "root", "go");
    // The answer streams into the live output as it arrives.
    bgagents_testkit::eventually("the first words in the live output", || {
        let view = toolset
            .view_background_agent(session.caller(), &id)
            .unwrap();
        view.output.text.contains("word1 ")
    })
    .await;
    let stopped = tokio::time::timeout(HANG, toolset.stop_background_agent(session.caller(), &id))
        .await
        .expect("the stop hung")
        .unwrap();
    assert_eq!(stopped.status, bgagents::TaskStatus::Stopped);
    server.wait_for_aborted(1, HANG).await;
    assert_eq!(server.requests().len(), 1, "no request after the stop");
    let output = toolset
        .view_background_agent(session.caller(), &id)
        .unwrap()
        .output
        .text;
    assert!(
        !output.contains("word199"),
        "the whole answer arrived: {output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_model_answers_fail_their_task_and_spare_its_siblings() {
    let server = ModelServer::start(Script::per_model([
        ("garbage", vec![Turn::garbage("<html>not a model</html>")]),
        ("truncated", vec![Turn::truncated_stream("half an ans")]),
        (
            "unknown-tools",
            vec![
                Turn::tool_calls([
                    ("no_such_tool", "{}".to_string()),
                    ("think", "{not json".to_string()),
                    ("think", "[1, 2]".to_string()),
                ]),
                Turn::text("recovered"),
            ],
        ),
        ("fine", vec![Turn::text("all good")]),
    ]))
    .await;
    let agent = |name: &str, model: &str| {
        format!("  {name}:\n    model: {model}\n    toolsets: [{{type: think}}]\n")
    };
    let url = server.base_url();
    let model = |name: &str| {
        format!("  {name}:\n    provider: ollama\n    model: {name}\n    base_url: {url}\n")
    };
    let toolset = bgagents_testkit::toolset(&format!(
        "agents:\n{}{}{}{}models:\n{}{}{}{}",
        agent("a", "garbage"),
        agent("b", "truncated"),
        agent("c", "unknown-tools"),
        agent("d", "fine"),
        model("garbage"),
        model("truncated"),
        model("unknown-tools"),
        model("fine"),
    ));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let ids: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|agent| bgagents_testkit::start(&toolset, caller, agent, "go"))
        .collect();
    let mut views = Vec::new();
    for id in &ids {
        views.push(bgagents_testkit::finished(&toolset, caller, id).await);
    }
    let garbage = views[0].error.clone().unwrap_or_default();
    assert!(garbage.contains("model call 1 failed"), "{garbage}");
    assert!(garbage.to_lowercase().contains("ollama"), "{garbage}");
    let truncated = views[1].error.clone().unwrap_or_default();
    assert!(truncated.contains("model call 1 failed"), "{truncated}");
    // Tool calls the host cannot run go back to the model as errors.
    assert_eq!(views[2].result.as_deref(), Some("recovered"));
    let second = server
        .requests()
        .into_iter()
        .filter(|request| request.model() == Some("unknown-tools"))
        .nth(1)
        .unwrap();
    let answers = second.contents("tool");
    assert!(
        answers[0].contains("unknown tool \"no_such_tool\"; the tools are think"),
        "{answers:?}"
    );
    assert!(answers[1].contains("not valid JSON"), "{answers:?}");
    assert!(answers[2].contains("must be a JSON object"), "{answers:?}");
    assert_eq!(views[3].result.as_deref(), Some("all good"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_error_echoing_the_key_does_not_show_it() {
    let server = ModelServer::start(Script::new([Turn::api_error(
        401,
        format!("Incorrect API key provided: {OPENAI_CANARY}"),
    )]))
    .await;
    let scratch = Scratch::new();
    let team = scratch.write(
        "writer.yaml",
        fixture("writer.yaml", &[("gpt-4o", server.base_url())]),
    );
    let run = run_team(&team, "Write today's text").await;
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run.stderr).contains("OPENAI_API_KEY"),
        "{}",
        text(&run.stderr)
    );
    assert_no_canary(&run);
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_built_for_wit_0_1_0_still_run() {
    let toolset = bgagents_testkit::toolset("agents:\n  root:\n    component: legacy_v0_1.wasm\n");
    let view = bgagents_testkit::run_to_end(&toolset, "root", "hello").await;
    assert_eq!(view.result.as_deref(), Some("legacy: hello"), "{view:?}");
    assert!(view.output.text.contains(": hello"));
}

#[tokio::test]
async fn a_component_without_model_gets_a_clear_error_from_the_model_import() {
    // The bundled agent's component, run as a plain component: no `model:`.
    let toolset =
        bgagents_testkit::toolset("agents:\n  root:\n    component: bgagents_agent.wasm\n");
    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
    let error = view.error.unwrap_or_default();
    assert!(
        error.contains("agent \"root\" has no model: give it `model:` in the team file"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_todo_list_is_shared_within_a_session_not_across_sessions() {
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([("create_todo", json!({"description": "mine"}).to_string())]),
        Turn::text("created"),
        Turn::tool_calls([("list_todos", "{}".to_string())]),
        Turn::text("listed"),
    ]))
    .await;
    let toolset = llm_team(&server, "    toolsets: [{type: todo, shared: true}]", "");
    let first = bgagents_testkit::run_to_end(&toolset, "root", "create").await;
    assert_eq!(first.result.as_deref(), Some("created"));
    // `run_to_end` opens a session of its own: another client, another list.
    let second = bgagents_testkit::run_to_end(&toolset, "root", "list").await;
    assert_eq!(second.result.as_deref(), Some("listed"));
    let listed = server.requests()[3].contents("tool").join("\n");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["todos"], json!([]), "{listed}");
}
