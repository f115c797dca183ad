//! `type: mcp` toolsets end to end: the bundled LLM agent, driven by the
//! scripted model server, calls tools of real MCP servers — the stdio
//! fixture tests/fixtures/mcp/server.py (python3, standard library only),
//! the same fixture serving Streamable HTTP, and a fake `docker` on PATH
//! standing in for Docker's MCP gateway. What the model server received
//! shows the tools offered and the results the agent sent back.

use crate::llm::run_team_with;
use crate::text;
use bgagents_testkit::model_server::{ModelServer, Received, Script, Turn};
use bgagents_testkit::{HANG, Scratch};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The fixture server's path.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mcp/server.py")
}

/// The real python3 interpreter (not a version manager's shim, which would
/// add variables of its own to the server's environment).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("these tests need python3 on PATH");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    })
}

/// A `type: mcp` toolset line running the fixture over stdio, with
/// `extra` keys (e.g. `tools: [echo]`) and the fixture's `more` arguments.
fn stdio_toolset(more: &[&str], extra: &str) -> String {
    let mut args = vec![fixture().display().to_string()];
    args.extend(more.iter().map(|arg| arg.to_string()));
    format!(
        "      - {{type: mcp, command: {}, args: {}{extra}}}\n",
        json!(python()),
        json!(args)
    )
}

/// [`stdio_toolset`] whose server appends its pid to `starts` each time it
/// starts.
fn counted_toolset(starts: &Path, more: &[&str], extra: &str) -> String {
    let mut args = vec!["--starts", starts.to_str().unwrap()];
    args.extend_from_slice(more);
    stdio_toolset(&args, extra)
}

/// A team of LLM agents named in `agents` (name, toolsets lines), each
/// with its own model `NAME-model` served by `server`.
fn team_yaml(server: &ModelServer, agents: &[(&str, String)]) -> String {
    let mut yaml = "agents:\n".to_string();
    for (name, toolsets) in agents {
        yaml += &format!(
            "  {name}:\n    model: {name}-model\n    instruction: Use your tools.\n    \
             toolsets:\n{toolsets}"
        );
    }
    yaml += "models:\n";
    for (name, _) in agents {
        yaml += &format!(
            "  {name}-model:\n    provider: ollama\n    model: {name}-model\n    base_url: {}\n",
            server.base_url()
        );
    }
    yaml
}

fn call(tool: &str, args: Value) -> Turn {
    Turn::tool_calls([(tool, args.to_string())])
}

/// The last tool result of the request.
fn last_result(request: &Received) -> String {
    request.tool_results().pop().unwrap_or_default()
}

/// Lines of a file the fixture appends to (`--starts`).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether process `pid` is still running (a zombie counts as ended).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_servers_tools_are_offered_and_their_results_reach_the_model() {
    let server = ModelServer::start(Script::new([
        call("echo", json!({"text": "hello from the model"})),
        Turn::tool_calls([("fail", "{}".to_string()), ("big", "{}".to_string())]),
        Turn::text("done"),
    ]))
    .await;
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", stdio_toolset(&[], ""))]));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    // Every tool, from all three pages of the server's list.
    assert_eq!(
        seen[0].tool_names(),
        [
            "big", "cwd", "echo", "env", "exit", "fail", "headers", "hidden"
        ]
    );
    // Descriptions and schemas as the server gave them; a server's empty
    // schema becomes an object schema.
    let tools = seen[0].body["tools"].as_array().unwrap();
    let tool = |name: &str| {
        tools
            .iter()
            .find(|tool| tool["function"]["name"] == name)
            .unwrap()["function"]
            .clone()
    };
    assert_eq!(tool("echo")["description"], "Echoes the text back.");
    assert_eq!(
        tool("echo")["parameters"]["properties"]["text"]["type"],
        "string"
    );
    assert_eq!(
        tool("cwd")["parameters"],
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(last_result(&seen[1]), "echo: hello from the model");
    // An isError result is the tool's error; a huge one is cut, saying so.
    let results = seen[2].tool_results();
    assert!(
        results
            .iter()
            .any(|result| result.contains("it went wrong on purpose")),
        "{results:?}"
    );
    let big = results
        .iter()
        .find(|result| result.contains("xxxx"))
        .unwrap();
    assert!(big.len() < (1 << 20) + 1000, "{} bytes", big.len());
    assert!(
        big.contains("[cut: the result was 2097152 bytes; only the first 1024 KiB are shown]"),
        "{}",
        &big[big.len() - 200..]
    );
    // The server's stderr went to the log, not to the task's output.
    assert!(!view.output.text.contains("fixture MCP server starting"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tools_filter_hides_the_others_and_unknown_tools_are_refused() {
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([
            ("hidden", "{}".to_string()),
            ("no_such_tool", "{}".to_string()),
        ]),
        call("echo", json!({"text": "still here"})),
        Turn::text("done"),
    ]))
    .await;
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[("a", stdio_toolset(&[], ", tools: [echo]"))],
    ));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    let seen = server.requests();
    assert_eq!(seen[0].tool_names(), ["echo"]);
    let refusals = seen[1].tool_results();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals[0].contains(r#"unknown tool "hidden"; the tools are echo"#),
        "{refusals:?}"
    );
    assert!(
        refusals[1].contains(r#"unknown tool "no_such_tool"; the tools are echo"#),
        "{refusals:?}"
    );
    assert!(
        !refusals
            .iter()
            .any(|r| r.contains("you should not see this"))
    );
    assert_eq!(last_result(&seen[2]), "echo: still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tools_filter_naming_a_tool_the_server_lacks_says_what_it_has() {
    let server = ModelServer::start(Script::new([Turn::text("done")])).await;
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[("a", stdio_toolset(&[], ", tools: [echo, serch]"))],
    ));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    assert!(server.requests()[0].tool_names().is_empty());
    assert!(
        view.output.text.contains(
            "`tools:` names \"serch\" that the server does not have (it has echo, env, cwd, \
             hidden, fail, exit, headers, big)"
        ),
        "{}",
        view.output.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_server_gets_only_its_listed_environment_and_the_team_dir() {
    const CANARY: &str = "canary-host-variable-6b1f";
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([("env", "{}".to_string()), ("cwd", "{}".to_string())]),
        Turn::text("done"),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let team = scratch.write(
        "team.yaml",
        team_yaml(
            &server,
            &[(
                "a",
                counted_toolset(&starts, &[], ", env: {GREETING: hello}"),
            )],
        ),
    );

    let run = run_team_with(
        &team,
        "go",
        &[("MCP_TEST_CANARY", CANARY), ("OPENAI_API_KEY", CANARY)],
    )
    .await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = server.requests();
    let results = seen[1].tool_results();
    let environment = &results[0];
    assert!(!environment.contains(CANARY), "{environment}");
    let mut names: Vec<&str> = environment
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        // Python sets this itself when the locale is C (PEP 538).
        .filter(|name| *name != "LC_CTYPE")
        .collect();
    names.sort();
    assert_eq!(names, ["GREETING", "PATH"], "{environment}");
    assert!(environment.contains("GREETING=hello"));
    // It ran in the team file's directory.
    assert_eq!(
        Path::new(&results[1]).canonicalize().unwrap(),
        scratch.dir.canonicalize().unwrap()
    );
    // Its stderr is not in the run's output, and it ended with the run.
    assert!(!text(&run.stderr).contains("fixture MCP server starting"));
    assert!(!text(&run.stdout).contains("fixture MCP server starting"));
    let pids = lines(&starts);
    assert_eq!(pids.len(), 1, "{pids:?}");
    bgagents_testkit::eventually("the server to end with the run", || !alive(&pids[0])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_exits_gives_a_tool_error_and_is_restarted_once() {
    let server = ModelServer::start(Script::new([
        call("exit", json!({"code": 7})),
        call("echo", json!({"text": "after the restart"})),
        call("exit", json!({"code": 9})),
        call("echo", json!({"text": "never answered"})),
        Turn::text("done"),
        Turn::text("still up"),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[("a", counted_toolset(&starts, &[], ""))],
    ));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    // The task went on after each failure and finished.
    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    assert_eq!(view.result.as_deref(), Some("done"));
    let seen = server.requests();
    let first = last_result(&seen[1]);
    assert!(
        first.contains("stopped (exit status: 7) during the call")
            && first.contains("it will be started again on the next call"),
        "{first}"
    );
    assert!(first.contains(python()), "names the server: {first}");
    assert_eq!(last_result(&seen[2]), "echo: after the restart");
    let second = last_result(&seen[3]);
    assert!(
        second.contains("stopped (exit status: 9)")
            && second.contains("its tools are unavailable for the rest of this run"),
        "{second}"
    );
    let after = last_result(&seen[4]);
    assert!(
        after.contains("was already restarted once; its tools are unavailable"),
        "{after}"
    );
    assert_eq!(lines(&starts).len(), 2, "started, then restarted once");
    // The host is still up: another task runs, told why the server's tools
    // are missing.
    let next = bgagents_testkit::run_to_end(&toolset, "a", "again").await;
    assert_eq!(next.result.as_deref(), Some("still up"), "{next:?}");
    assert!(
        next.output.text.contains("its tools are unavailable"),
        "{}",
        next.output.text
    );
    assert!(server.requests()[5].tool_names().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_server_is_started_once_for_two_agents_running_at_once() {
    let server = ModelServer::start(Script::per_model([
        (
            "a-model",
            vec![
                call("echo", json!({"text": "from a"})),
                Turn::text("a done"),
            ],
        ),
        (
            "b-model",
            vec![
                call("echo", json!({"text": "from b"})),
                Turn::text("b done"),
            ],
        ),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let toolsets = counted_toolset(&starts, &[], "");
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[("a", toolsets.clone()), ("b", toolsets)],
    ));

    let (a, b) = tokio::join!(
        bgagents_testkit::run_to_end(&toolset, "a", "go"),
        bgagents_testkit::run_to_end(&toolset, "b", "go"),
    );

    assert_eq!(a.result.as_deref(), Some("a done"), "{a:?}");
    assert_eq!(b.result.as_deref(), Some("b done"), "{b:?}");
    let results: Vec<String> = server.requests().iter().map(last_result).collect();
    assert!(results.contains(&"echo: from a".to_string()), "{results:?}");
    assert!(results.contains(&"echo: from b".to_string()), "{results:?}");
    assert_eq!(lines(&starts).len(), 1, "one server for the team");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_end_when_the_toolset_is_dropped() {
    let server = ModelServer::start(Script::new([
        call("echo", json!({"text": "hi"})),
        Turn::text("done"),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[("a", counted_toolset(&starts, &[], ""))],
    ));
    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;
    assert_eq!(view.result.as_deref(), Some("done"), "{view:?}");
    let pids = lines(&starts);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(alive(&pids[0]), "the server runs while the toolset lives");

    drop(toolset);

    bgagents_testkit::eventually("the server to end with the toolset", || !alive(&pids[0])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_exits_at_start_gives_no_tools_and_says_why() {
    let server = ModelServer::start(Script::new([Turn::text("done"), Turn::text("again")])).await;
    let toolsets = format!(
        "      - {{type: mcp, command: {}, args: [-c, 'import sys; sys.exit(4)']}}\n",
        json!(python())
    );
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", toolsets)]));

    let first = bgagents_testkit::run_to_end(&toolset, "a", "go").await;
    let second = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    for view in [&first, &second] {
        assert_eq!(
            view.info.status,
            bgagents::TaskStatus::Completed,
            "{view:?}"
        );
        assert!(
            view.output
                .text
                .contains("the server exited during its start (exit status: 4)"),
            "{}",
            view.output.text
        );
    }
    assert!(server.requests()[0].tool_names().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_first_start_fails_is_started_once_more_on_the_next_use() {
    let server = ModelServer::start(Script::new([
        Turn::text("first done"),
        call("echo", json!({"text": "second start"})),
        Turn::text("second done"),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let flag = scratch.dir.join("failed-once");
    let flag_arg = flag.display().to_string();
    let toolset = bgagents_testkit::toolset(&team_yaml(
        &server,
        &[(
            "a",
            counted_toolset(&starts, &["--fail-first", &flag_arg], ""),
        )],
    ));

    let first = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(first.result.as_deref(), Some("first done"), "{first:?}");
    assert!(
        first.output.text.contains(
            "the server exited during its start (exit status: 5); its stderr is in the host log"
        ) && first
            .output
            .text
            .contains("it will be started once more on the next use"),
        "{}",
        first.output.text
    );
    assert!(server.requests()[0].tool_names().is_empty());
    assert_eq!(lines(&starts).len(), 1, "no start again within the task");

    let second = bgagents_testkit::run_to_end(&toolset, "a", "again").await;

    assert_eq!(second.result.as_deref(), Some("second done"), "{second:?}");
    let seen = server.requests();
    assert!(seen[1].tool_names().contains(&"echo".to_string()));
    assert_eq!(last_result(&seen[2]), "echo: second start");
    assert_eq!(lines(&starts).len(), 2, "started once more, and only once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_fails_to_start_twice_is_not_started_a_third_time() {
    let server = ModelServer::start(Script::new([
        Turn::text("one"),
        Turn::text("two"),
        Turn::text("three"),
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let script = format!(
        "open({:?}, 'a').write('x\\n'); raise SystemExit(4)",
        starts.display().to_string()
    );
    let toolsets = format!(
        "      - {{type: mcp, command: {}, args: [-c, {}]}}\n",
        json!(python()),
        json!(script)
    );
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", toolsets)]));

    let mut outputs = Vec::new();
    for task in ["1", "2", "3"] {
        outputs.push(
            bgagents_testkit::run_to_end(&toolset, "a", task)
                .await
                .output
                .text,
        );
    }

    assert!(
        outputs[0].contains("it will be started once more on the next use"),
        "{}",
        outputs[0]
    );
    for later in &outputs[1..] {
        assert!(
            later.contains("it was started once more and that failed too: the server exited")
                && later.contains("its tools are unavailable for the rest of this run"),
            "{later}"
        );
    }
    assert_eq!(lines(&starts).len(), 2, "two starts in all");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_server_and_what_it_started_end_when_the_host_is_killed() {
    // The model never answers, so the run is still going when it is killed.
    let server = ModelServer::start(Script::new([
        Turn::text("never sent").delay(Duration::from_secs(600))
    ]))
    .await;
    let scratch = Scratch::new();
    let starts = scratch.dir.join("starts");
    let child_pid = scratch.dir.join("child");
    let (starts_arg, child_arg) = (
        starts.display().to_string(),
        child_pid.display().to_string(),
    );
    let team = scratch.write(
        "team.yaml",
        team_yaml(
            &server,
            &[(
                "a",
                stdio_toolset(
                    &["--starts", &starts_arg, "--child", &child_arg, "--linger"],
                    "",
                ),
            )],
        ),
    );
    let mut host = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(&team)
        .arg("go")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The tools are listed before the model is asked.
    server.wait_for_requests(1, HANG).await;
    let pids = lines(&starts);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let child = lines(&child_pid)
        .pop()
        .expect("the server started its child");
    assert!(alive(&pids[0]) && alive(&child));

    host.start_kill().unwrap();
    host.wait().await.unwrap();

    bgagents_testkit::eventually("the server to end with the killed host", || {
        !alive(&pids[0])
    })
    .await;
    bgagents_testkit::eventually("the server's child to end with it", || !alive(&child)).await;
}

/// A remote server URL with a key in its path and one in its query, the
/// host in mixed case (the HTTP stack prints it in lower case, with a `/`
/// before the query), and a header carrying a third.
fn secret_url(port: u16) -> String {
    format!("http://LocalHost:{port}/mcp/{PATH_SECRET}/sse?key={QUERY_SECRET}")
}
const PATH_SECRET: &str = "path-secret-7c21d9e04b";
const QUERY_SECRET: &str = "query-secret-51ae";
const HEADER_SECRET: &str = "header-secret-e3f0";

fn remote_toolset(url: &str) -> String {
    format!(
        "      - type: mcp\n        remote:\n          url: {url}\n          headers: \
         {{Authorization: Bearer {HEADER_SECRET}}}\n"
    )
}

fn assert_no_secret(text: &str) {
    for secret in [PATH_SECRET, QUERY_SECRET, HEADER_SECRET] {
        assert!(!text.contains(secret), "{secret} in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_servers_url_keys_stay_out_of_output_errors_and_check() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ModelServer::start(Script::new([Turn::text("done"), Turn::text("again")])).await;
    let scratch = Scratch::new();
    let team = scratch.write(
        "team.yaml",
        team_yaml(&server, &[("a", remote_toolset(&secret_url(port)))]),
    );
    let toolset = bgagents_testkit::toolset(&std::fs::read_to_string(&team).unwrap());

    let first = bgagents_testkit::run_to_end(&toolset, "a", "go").await;
    let second = bgagents_testkit::run_to_end(&toolset, "a", "go").await;
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(&team)
        .output()
        .unwrap();

    for view in [&first, &second] {
        // Named by scheme, host and port only, the HTTP client's error
        // without its URL.
        let said = &view.output.text;
        assert!(
            said.contains(&format!("[mcp: http://localhost:{port}: "))
                && said.contains("cannot connect: error sending request: ")
                && said.contains("Connection refused"),
            "{said}"
        );
        assert_no_secret(&view.output.text);
    }
    let check = format!("{}{}", text(&check.stdout), text(&check.stderr));
    assert!(
        check.contains(&format!("mcp: http://localhost:{port}")),
        "{check}"
    );
    assert_no_secret(&check);
    assert_no_secret(&format!("{:?}", server.requests()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_server_that_goes_away_gives_tool_errors_without_its_url_keys() {
    let remote = http_fixture().await;
    let port: u16 = reqwest::Url::parse(&remote.url).unwrap().port().unwrap();
    let url = secret_url(port);
    let server = ModelServer::start(Script::new([
        call("echo", json!({"text": "before"})),
        // Late enough for the fixture to be gone when it is made.
        call("echo", json!({"text": "gone"})).delay(Duration::from_millis(500)),
        call("echo", json!({"text": "still gone"})),
        Turn::text("done"),
    ]))
    .await;
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", remote_toolset(&url))]));
    let fixture = std::sync::Mutex::new(Some(remote));
    let script_server = &server;

    let run = bgagents_testkit::run_to_end(&toolset, "a", "go");
    let stop_after_first_call = async {
        script_server.wait_for_requests(2, HANG).await;
        fixture.lock().unwrap().take();
    };
    let (view, ()) = tokio::join!(run, stop_after_first_call);

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    let seen = server.requests();
    assert_eq!(last_result(&seen[1]), "echo: before");
    let errors = [last_result(&seen[2]), last_result(&seen[3])];
    for error in &errors {
        assert!(
            error.starts_with(&format!("MCP server http://localhost:{port}: ")),
            "{error}"
        );
        assert_no_secret(error);
    }
    assert_no_secret(&view.output.text);
}

/// The fixture serving Streamable HTTP on 127.0.0.1, ended when dropped.
struct HttpFixture {
    _child: tokio::process::Child,
    url: String,
}

async fn http_fixture() -> HttpFixture {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(python())
        .arg(fixture())
        .arg("--http")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut port = String::new();
    tokio::time::timeout(HANG, tokio::io::BufReader::new(stdout).read_line(&mut port))
        .await
        .expect("the HTTP fixture did not start")
        .unwrap();
    HttpFixture {
        _child: child,
        url: format!("http://127.0.0.1:{}/mcp", port.trim()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_server_is_reached_over_streamable_http_with_its_headers() {
    let remote = http_fixture().await;
    let server = ModelServer::start(Script::new([
        call("echo", json!({"text": "over http"})),
        call("headers", json!({})),
        Turn::text("done"),
    ]))
    .await;
    let toolsets = format!(
        "      - type: mcp\n        remote:\n          url: {}\n          headers: \
         {{X-Fixture-Token: token-for-the-fixture}}\n        tools: [echo, headers]\n",
        remote.url
    );
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", toolsets)]));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    let seen = server.requests();
    assert_eq!(seen[0].tool_names(), ["echo", "headers"]);
    assert_eq!(last_result(&seen[1]), "echo: over http");
    let headers: Value = serde_json::from_str(&last_result(&seen[2])).unwrap();
    assert_eq!(headers["x-fixture-token"], "token-for-the-fixture");
    assert_eq!(headers["mcp-session-id"], "fixture-session");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_server_that_is_not_there_gives_no_tools_and_says_why() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ModelServer::start(Script::new([Turn::text("done")])).await;
    let toolsets = format!(
        "      - type: mcp\n        remote:\n          url: http://127.0.0.1:{port}/mcp?key=secret-in-query\n"
    );
    let toolset = bgagents_testkit::toolset(&team_yaml(&server, &[("a", toolsets)]));

    let view = bgagents_testkit::run_to_end(&toolset, "a", "go").await;

    assert_eq!(
        view.info.status,
        bgagents::TaskStatus::Completed,
        "{view:?}"
    );
    assert!(
        view.output
            .text
            .contains(&format!("[mcp: http://127.0.0.1:{port}: cannot connect")),
        "{}",
        view.output.text
    );
    assert!(
        view.output.text.contains("Connection refused"),
        "{}",
        view.output.text
    );
    assert!(
        !view.output.text.contains("secret-in-query"),
        "{}",
        view.output.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ref_docker_starts_dockers_mcp_gateway_found_on_path() {
    let server = ModelServer::start(Script::new([
        call("echo", json!({"text": "through the gateway"})),
        Turn::text("done"),
    ]))
    .await;
    let scratch = Scratch::new();
    let argv = scratch.dir.join("docker-argv");
    let bin = scratch.dir.join("bin");
    let docker = scratch.write(
        "bin/docker",
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nenv > '{}'\nexec '{}' '{}'\n",
            argv.display(),
            scratch.dir.join("docker-env").display(),
            python(),
            fixture().display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let team = scratch.write(
        "team.yaml",
        team_yaml(
            &server,
            &[(
                "a",
                "      - {type: mcp, ref: \"docker:fetch\"}\n".to_string(),
            )],
        ),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let run = run_team_with(
        &team,
        "go",
        &[
            ("PATH", &path),
            ("MCP_TEST_CANARY", "canary-for-docker-3c9a"),
        ],
    )
    .await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    // Docker's own variables pass, the host's others do not.
    let environment = std::fs::read_to_string(scratch.dir.join("docker-env")).unwrap();
    assert!(
        environment.contains(&format!("PATH={path}")),
        "{environment}"
    );
    assert!(!environment.contains("canary-for-docker"), "{environment}");
    assert_eq!(
        lines(&argv),
        [
            "mcp",
            "gateway",
            "run",
            "--servers",
            "fetch",
            "--catalog",
            "https://desktop.docker.com/mcp/catalog/v3/catalog.yaml"
        ]
    );
    assert_eq!(
        last_result(&server.requests()[1]),
        "echo: through the gateway"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ref_docker_without_docker_on_path_is_a_clear_error() {
    let server = ModelServer::start(Script::new([Turn::text("done")])).await;
    let scratch = Scratch::new();
    let empty = scratch.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let team = scratch.write(
        "team.yaml",
        team_yaml(
            &server,
            &[(
                "a",
                "      - {type: mcp, ref: \"docker:fetch\"}\n".to_string(),
            )],
        ),
    );
    let expected = "agents.a.toolsets: mcp docker:fetch: `docker` is not on PATH; ref: \
                    docker:fetch needs Docker's MCP gateway (install Docker Desktop or the \
                    docker mcp plugin) or use `command:`";
    let path = empty.display().to_string();

    let run = run_team_with(&team, "go", &[("PATH", &path)]).await;
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(&team)
        .env("PATH", &path)
        .output()
        .unwrap();

    for refused in [&run, &check] {
        assert!(!refused.status.success(), "{}", text(&refused.stdout));
        assert!(
            text(&refused.stderr).contains(expected),
            "{}",
            text(&refused.stderr)
        );
    }
    assert!(server.requests().is_empty(), "the team did not run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_tool_named_like_a_filtered_built_in_never_runs_the_built_in() {
    let server = ModelServer::start(Script::new([
        call(
            "write_file",
            json!({"path": "planted.txt", "content": "x", "text": "hi"}),
        ),
        Turn::text("done"),
    ]))
    .await;
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("work")).unwrap();
    let toolsets = format!(
        "      - {{type: filesystem, tools: [read_file]}}\n{}",
        stdio_toolset(&["--also", "write_file"], "")
    );
    let yaml = team_yaml(&server, &[("a", toolsets)]).replace(
        "    toolsets:\n",
        "    grants:\n      files: [{host: work, guest: /work, mode: read-write}]\n    toolsets:\n",
    );
    let team = scratch.write("team.yaml", yaml);

    let run = run_team_with(&team, "go", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = server.requests();
    assert!(seen[0].tool_names().contains(&"write_file".to_string()));
    assert_eq!(seen[1].tool_results(), ["write_file from the server: hi"]);
    assert!(!scratch.dir.join("work/planted.txt").exists());
}
