//! docker-agent's seven example teams that use `sub_agents`, as they ship
//! (tests/fixtures/docker-agent): each passes `bgagents check`, and each
//! runs end to end against the scripted model server with only `base_url`
//! added. writer, shared-todo and background_agents run in `llm`; the four
//! that need the filesystem, shell, memory and MCP toolsets run here.
//! Their MCP servers (`ref: docker:NAME`, `command: uvx`) are started
//! through stand-in `docker` and `uvx` programs first on PATH, which start
//! the small MCP server of tests/fixtures/mcp.

use crate::llm::{ANTHROPIC_CANARY, OPENAI_CANARY, all_text, fixture, run_team_with};
use crate::text;
use bgagents_testkit::Scratch;
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use serde_json::json;
use std::path::{Path, PathBuf};

const EXAMPLES: [&str; 7] = [
    "background_agents",
    "blog",
    "dev-team",
    "finance",
    "multi-code",
    "shared-todo",
    "writer",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A PATH whose `docker` and `uvx` start the fixture MCP server, ahead of
/// the real ones.
fn stand_in_path(scratch: &Scratch) -> String {
    let server = fixtures().join("mcp/server.py");
    for program in ["docker", "uvx"] {
        let script = scratch.write(
            &format!("bin/{program}"),
            format!("#!/bin/sh\nexec python3 {} \"$@\"\n", server.display()),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!(
        "{}:{}",
        scratch.dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether bubblewrap can run here; the shell toolset needs it. Prints why
/// a test is skipped when it cannot.
fn shell_can_run(check_stderr: &str) -> bool {
    let missing = check_stderr.contains("bubblewrap");
    if missing {
        eprintln!("skipped: the shell toolset cannot run on this machine: {check_stderr}");
    }
    !missing
}

fn check(team: &Path, path: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(team)
        .env("PATH", path)
        .env("OPENAI_API_KEY", OPENAI_CANARY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_CANARY)
        .output()
        .unwrap()
}

#[test]
fn every_example_team_passes_check_unchanged() {
    let scratch = Scratch::new();
    let path = stand_in_path(&scratch);
    for name in EXAMPLES {
        let file = format!("{name}.yaml");
        let source = fixtures().join("docker-agent").join(&file);
        let team = scratch.write(&file, std::fs::read(source).unwrap());
        let out = check(&team, &path);
        let stderr = text(&out.stderr);
        if (name == "dev-team" || name == "multi-code") && !shell_can_run(&stderr) {
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("OK — 3 agent(s)"), "{name}: {stdout}");
    }
}

/// A `transfer_task` call.
fn transfer(agent: &str, task: &str) -> Turn {
    let args = json!({"agent": agent, "task": task});
    Turn::tool_calls([("transfer_task", args.to_string())])
}

fn call(name: &str, args: serde_json::Value) -> Turn {
    Turn::tool_calls([(name, args.to_string())])
}

const FIXTURE_TOOLS: [&str; 8] = [
    "big", "cwd", "echo", "env", "exit", "fail", "headers", "hidden",
];

#[tokio::test(flavor = "multi_thread")]
async fn blog_team_searches_through_dockers_mcp_gateway_then_writes() {
    let server = ModelServer::start(Script::new([
        transfer("web_search_agent", "Find news on WASI"),
        call("echo", json!({"text": "WASI 0.3 is out"})),
        Turn::text("Found: WASI 0.3 is out (source: search)"),
        transfer("writer", "Write about WASI 0.3"),
        Turn::text("THE BLOG POST"),
        Turn::text("Here it is: THE BLOG POST"),
    ]))
    .await;
    let scratch = Scratch::new();
    let path = stand_in_path(&scratch);
    let team = scratch.write(
        "blog.yaml",
        fixture(
            "blog.yaml",
            &[("claude-sonnet-4-6", server.anthropic_base_url())],
        ),
    );

    let run = run_team_with(&team, "Blog about WASI", &[("PATH", path.as_str())]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("Here it is: THE BLOG POST"));
    let seen = server.requests();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    // The searcher was offered the gateway server's tools, and got its answer.
    let mut tools = FIXTURE_TOOLS.to_vec();
    tools.sort();
    assert_eq!(seen[1].tool_names(), tools);
    assert!(
        all_text(&seen[2]).contains("echo: WASI 0.3 is out"),
        "{:?}",
        seen[2]
    );
    assert!(all_text(&seen[3]).contains("Found: WASI 0.3 is out"));
    assert!(seen[4].tool_names().is_empty(), "the writer has no tools");
}

#[tokio::test(flavor = "multi_thread")]
async fn finance_team_reaches_a_uvx_server_and_the_gateway() {
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([("think", json!({"thought": "news first"}).to_string())]),
        transfer("web_search_agent", "Latest news on ACME"),
        call("echo", json!({"text": "ACME up 3%"})),
        Turn::text("NEWS: ACME up 3%"),
        transfer("finance_agent", "Analyse ACME"),
        call("echo", json!({"text": "ACME P/E 12"})),
        Turn::text("ANALYSIS: P/E 12"),
        Turn::text("| stock | news | P/E |\n| ACME | up 3% | 12 |"),
    ]))
    .await;
    let scratch = Scratch::new();
    let path = stand_in_path(&scratch);
    let team = scratch.write(
        "finance.yaml",
        fixture(
            "finance.yaml",
            &[("claude-sonnet-4-6", server.anthropic_base_url())],
        ),
    );

    let run = run_team_with(&team, "How is ACME doing?", &[("PATH", path.as_str())]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("| ACME | up 3% | 12 |"));
    let seen = server.requests();
    assert_eq!(seen.len(), 8, "{seen:#?}");
    assert!(all_text(&seen[3]).contains("echo: ACME up 3%"));
    assert!(all_text(&seen[6]).contains("echo: ACME P/E 12"));
    // add_date: the specialists were told today's date.
    let today = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .unwrap();
    let today = text(&today.stdout).trim().to_string();
    assert!(
        all_text(&seen[2]).contains(&today),
        "{today}: {:?}",
        seen[2]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_team_designs_with_memory_and_mcp_then_builds_in_the_shell() {
    let scratch = Scratch::new();
    let path = stand_in_path(&scratch);
    let server = ModelServer::start(Script::new([
        transfer("designer", "Design the login page"),
        Turn::tool_calls([
            ("list_directory", json!({"path": ".dev-team"}).to_string()),
            (
                "add_memory",
                json!({"memory": "Login uses email"}).to_string(),
            ),
            ("echo", json!({"text": "docs for forms"}).to_string()),
        ]),
        Turn::text("DESIGN: email + password"),
        transfer("awesome_engineer", "Build the login page"),
        Turn::tool_calls([
            ("search_memories", json!({"query": "login"}).to_string()),
            ("shell", json!({"cmd": "echo built-$((6*7))"}).to_string()),
        ]),
        Turn::text("BUILT"),
        Turn::text("Iteration 1 done"),
    ]))
    .await;
    let team = scratch.write(
        "dev-team.yaml",
        fixture(
            "dev-team.yaml",
            &[("claude-sonnet-4-0", server.anthropic_base_url())],
        ),
    );
    if !shell_can_run(&text(&check(&team, &path).stderr)) {
        return;
    }

    let run = run_team_with(&team, "Build a login page", &[("PATH", path.as_str())]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("Iteration 1 done"));
    let seen = server.requests();
    assert_eq!(seen.len(), 7, "{seen:#?}");
    let designed = all_text(&seen[2]);
    // No files are granted in the example, and the tools say so.
    assert!(
        designed.contains("this agent has no granted directories"),
        "{designed}"
    );
    assert!(designed.contains("memory added with ID"), "{designed}");
    assert!(designed.contains("echo: docs for forms"), "{designed}");
    let built = all_text(&seen[5]);
    assert!(
        built.contains("Login uses email"),
        "the store is shared: {built}"
    );
    assert!(built.contains("built-42"), "{built}");
    assert!(scratch.dir.join("dev_memory.db").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_code_team_delegates_across_providers_to_shell_agents() {
    let scratch = Scratch::new();
    let path = stand_in_path(&scratch);
    let server = ModelServer::start(Script::new([
        transfer("web", "Add a button"),
        Turn::tool_calls([
            ("create_todo", json!({"description": "lint"}).to_string()),
            ("shell", json!({"cmd": "echo lint-ok"}).to_string()),
        ]),
        Turn::text("WEB DONE"),
        transfer("golang", "Add an endpoint"),
        Turn::text("GO DONE"),
        Turn::text("Both parts are in"),
    ]))
    .await;
    let team = scratch.write(
        "multi-code.yaml",
        fixture(
            "multi-code.yaml",
            &[
                ("claude-opus-4-0", server.anthropic_base_url()),
                ("claude-sonnet-4-0", server.anthropic_base_url()),
                ("gpt-4o", server.base_url()),
            ],
        ),
    );
    if !shell_can_run(&text(&check(&team, &path).stderr)) {
        return;
    }

    let run = run_team_with(&team, "Add a feature", &[("PATH", path.as_str())]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("Both parts are in"));
    let seen = server.requests();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert_eq!(seen[1].model(), Some("gpt-4o"));
    assert!(all_text(&seen[2]).contains("lint-ok"), "{:?}", seen[2]);
}

#[test]
fn the_repo_helper_example_passes_check_and_shows_each_tools_reach() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir_all(root.join("target/repo-helper-scratch")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(root.join("examples/repo-helper.yaml"))
        .env("OPENAI_API_KEY", OPENAI_CANARY)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    if !shell_can_run(&stderr) {
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = text(&out.stdout);
    for line in [
        "filesystem tools: only read_file, read_multiple_files, list_directory, directory_tree, \
         search_files_content",
        "filesystem: /repo (ro)",
        "sees /repo (ro), /scratch (rw); no network",
        "fetch: only https://docs.rs:443",
        "target/repo-helper-memory.json",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
