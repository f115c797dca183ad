//! Harness agents end to end: fake Claude Code, Codex and OpenCode CLIs —
//! Python scripts written into a scratch directory — replay the NDJSON
//! streams of tests/fixtures/harness as the real CLIs would write them,
//! and record their arguments, stdin, environment and what they could
//! reach into the granted directory. Run by the real `bgagents` binary
//! (`run`, `check`) or the library's `Toolset`, each in the host's real
//! bubblewrap.
//!
//! Skipped (saying why) where bubblewrap cannot run.

use crate::text;
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use bgagents_testkit::{HANG, Scratch, host_has_process};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A fixture stream.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/harness");
    std::fs::read_to_string(path.join(name)).unwrap()
}

/// How a fake CLI behaves after replaying its stream.
#[derive(Default)]
struct Fake<'a> {
    stream: String,
    stderr: &'a str,
    exit: i32,
    /// Python run before the stream (after recording).
    before: &'a str,
    /// Python run after the stream, instead of exiting.
    after: &'a str,
}

/// Writes fake CLI `name` into `scratch`'s `bin/`; returns its path.
fn fake(scratch: &Scratch, name: &str, fake: Fake) -> PathBuf {
    let script = format!(
        r#"#!/usr/bin/python3
import json, os, signal, socket, sys, time
record = {{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}}
record["stdin"] = sys.stdin.read()
{before}
with open("record.json", "w") as out:
    json.dump(record, out)
for line in {stream}.splitlines():
    print(line, flush=True)
sys.stderr.write({stderr})
sys.stderr.flush()
{after}
sys.exit({exit})
"#,
        before = fake.before,
        stream = json!(fake.stream),
        stderr = json!(fake.stderr),
        after = fake.after,
        exit = fake.exit,
    );
    let path = scratch.write(&format!("bin/{name}"), script);
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

/// A team with one harness agent `coder` of `kind` running `command`, its
/// working directory `work` granted read-write at /work, `harness` YAML
/// lines under its `harness:` and `more` under the agent.
fn team(scratch: &Scratch, kind: &str, command: &Path, harness: &str, more: &str) -> PathBuf {
    let work = scratch.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    scratch.write(
        "team.yaml",
        format!(
            "agents:\n  coder:\n    instruction: You write code.\n    harness:\n      type: {kind}\n      \
             command: {}\n{harness}    grants:\n      files: [{{host: {}, guest: /work, mode: read-write}}]\n{more}",
            command.display(),
            work.display()
        ),
    )
}

/// What the fake recorded.
fn recorded(scratch: &Scratch) -> Value {
    let text = std::fs::read_to_string(scratch.dir.join("work/record.json"))
        .expect("the fake CLI did not run");
    serde_json::from_str(&text).unwrap()
}

/// `bgagents run TEAM TASK` with `env`.
async fn run(team: &Path, task: &str, env: &[(&str, &str)]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(team)
        .arg(task)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(HANG, child)
        .await
        .expect("bgagents run hung")
        .unwrap()
}

fn check(team: &Path, env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(team)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Whether the fakes' interpreter is here (else the test prints why and
/// is skipped).
fn python() -> bool {
    let found = Path::new("/usr/bin/python3").is_file();
    if !found {
        eprintln!("skipped: the fake CLIs need /usr/bin/python3");
    }
    found
}

/// Whether bubblewrap can sandbox here and the fakes can run (else the
/// test prints why and is skipped).
fn confinable() -> bool {
    if !python() {
        return false;
    }
    let scratch = Scratch::new();
    let command = fake(&scratch, "claude", Fake::default());
    let said = check(&team(&scratch, "claude-code", &command, "", ""), &[]);
    let all = format!("{}{}", text(&said.stdout), text(&said.stderr));
    if all.contains("cannot create a sandbox") || all.contains("is not installed") {
        eprintln!("skipped: {all}");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_streams_text_once_and_its_result_is_the_tasks() {
    if !confinable() {
        return;
    }
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "claude-code",
        &command,
        "      model: anthropic/claude-fixture\n      effort: high\n      args: [--max-turns, \"30\"]\n      \
         env: {API_TOKEN: \"${GRANTED_TOKEN}\", MODE: fast}\n",
        "",
    );
    let team = std::fs::read_to_string(&team)
        .unwrap()
        .replace("    grants:\n", "    grants:\n      env: [GRANTED_TOKEN]\n");
    let team = scratch.write("team.yaml", team);

    let run = run(
        &team,
        "Greet the notes",
        &[
            ("GRANTED_TOKEN", "granted-value"),
            ("NOT_GRANTED", "hidden"),
        ],
    )
    .await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "Hello from the notes.");
    let live = text(&run.stderr);
    // Each delta once; the assistant events' repeats are not shown.
    assert_eq!(live.matches("Let me look.").count(), 1, "{live}");
    assert_eq!(live.matches("Hello from the notes.").count(), 1, "{live}");
    assert_eq!(live.matches("[tool: Read]").count(), 1, "{live}");
    assert!(
        live.contains("[thinking] The user wants a greeting."),
        "{live}"
    );

    let seen = recorded(&scratch);
    let argv: Vec<&str> = (seen["argv"].as_array().unwrap().iter())
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(
        &argv[1..],
        [
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--model",
            "claude-fixture",
            "--effort",
            "high",
            "--dangerously-skip-permissions",
            "--max-turns",
            "30"
        ]
    );
    let stdin = seen["stdin"].as_str().unwrap();
    assert!(stdin.starts_with("You write code.\n\n"), "{stdin}");
    assert!(
        stdin.contains("<task>\nGreet the notes\n</task>"),
        "{stdin}"
    );
    assert_eq!(seen["cwd"], "/work");
    // Only the basics, the granted variable and harness.env (which may
    // name the granted one).
    let env = seen["env"].as_object().unwrap();
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "API_TOKEN",
            "GRANTED_TOKEN",
            "HOME",
            "IS_SANDBOX",
            "LANG",
            "MODE",
            "PATH",
            "PWD",
            "TMPDIR"
        ]
    );
    assert_eq!(env["GRANTED_TOKEN"], "granted-value");
    assert_eq!(env["API_TOKEN"], "granted-value");
    assert_eq!(env["MODE"], "fast");
    assert_eq!(env["HOME"], "/tmp/home");
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_and_opencode_stream_and_answer() {
    if !confinable() {
        return;
    }
    for (kind, name, stream, answer, tool) in [
        (
            "codex",
            "codex",
            "codex/run.ndjson",
            "The directory holds notes.txt.",
            "[tool: shell]",
        ),
        (
            "opencode",
            "opencode",
            "opencode/run.ndjson",
            "There is one file: notes.txt.",
            "[tool: bash]",
        ),
    ] {
        let scratch = Scratch::new();
        let command = fake(
            &scratch,
            name,
            Fake {
                stream: fixture(stream),
                ..Fake::default()
            },
        );
        let team = team(
            &scratch,
            kind,
            &command,
            "      model: provider/model-x\n",
            "",
        );

        let run = run(&team, "List the files", &[]).await;

        assert_eq!(run.status.code(), Some(0), "{kind}: {}", text(&run.stderr));
        assert_eq!(text(&run.stdout).trim(), answer, "{kind}");
        let live = text(&run.stderr);
        assert!(live.contains(tool), "{kind}: {live}");
        assert!(live.contains("[thinking] "), "{kind}: {live}");
        let seen = recorded(&scratch);
        let argv: Vec<&str> = (seen["argv"].as_array().unwrap().iter())
            .map(|arg| arg.as_str().unwrap())
            .collect();
        // The prompt comes on stdin, not on the command line (`codex exec
        // -` reads it there; `opencode run` appends its stdin).
        let prompt = seen["stdin"].as_str().unwrap();
        assert!(prompt.starts_with("You write code.\n\n"), "{prompt}");
        assert!(
            !argv.iter().any(|arg| arg.contains("List the files")),
            "{argv:?}"
        );
        assert!(
            prompt.contains("<task>\nList the files\n</task>"),
            "{prompt}"
        );
        assert!(argv.contains(&"--model") && argv.contains(&"provider/model-x"));
        match kind {
            "codex" => {
                assert_eq!(argv[1..3], ["exec", "--json"]);
                assert_eq!(argv.last(), Some(&"-"));
            }
            _ => assert_eq!(argv[1..4], ["run", "--format", "json"]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_errors_and_failing_exits_fail_the_task_with_the_harness_message() {
    if !confinable() {
        return;
    }
    for (kind, name, stream, stderr, exit, expected) in [
        (
            "claude-code",
            "claude",
            fixture("claude/max_turns.ndjson"),
            "",
            1,
            "maximum number of turns (error_max_turns): reached the limit of 3 turns",
        ),
        (
            "codex",
            "codex",
            fixture("codex/turn_failed.ndjson"),
            "",
            1,
            "the context window of the model was exceeded",
        ),
        (
            "opencode",
            "opencode",
            fixture("opencode/error.ndjson"),
            "",
            0,
            "ProviderAuthError: no credentials for the provider",
        ),
        (
            "codex",
            "codex",
            "not json at all\n".to_string(),
            "Error: the API key is missing\n",
            3,
            "codex exited with status 3\n  stderr (its end):\n  Error: the API key is missing",
        ),
    ] {
        let scratch = Scratch::new();
        let command = fake(
            &scratch,
            name,
            Fake {
                stream,
                stderr,
                exit,
                ..Fake::default()
            },
        );
        let team = team(&scratch, kind, &command, "", "");

        let run = run(&team, "Do it", &[]).await;

        assert_ne!(run.status.code(), Some(0), "{kind}");
        let said = text(&run.stderr);
        assert!(said.contains(expected), "{kind}: {said}");
    }
}

/// A library toolset of `team`.
fn load(team: &Path) -> bgagents::Toolset {
    let team = bgagents::Team::load(team).unwrap_or_else(|error| panic!("{error}"));
    bgagents::Toolset::load(team).unwrap_or_else(|error| panic!("{error}"))
}

/// A fake that ignores SIGTERM and leaves a detached `sleep MARK1` behind
/// it, itself becoming `sleep MARK2`.
/// Two numbers for a [`stubborn`] CLI's processes to carry, `first` and
/// `second` plus a part of this process's id, so that concurrent test
/// runs never mistake each other's processes.
fn marks(first: u32, second: u32) -> (u32, u32) {
    let own = std::process::id() % 100_000;
    (own + first, own + second)
}

/// Whether harness processes are capped by a pids cgroup here (what
/// `check` says); says why the test is skipped when not.
fn pids_cgroup(scratch: &Scratch) -> bool {
    let probe = fake(scratch, "claude", Fake::default());
    let said = text(&check(&team(scratch, "claude-code", &probe, "", ""), &[]).stdout);
    let capped = said.contains("process count capped by the cgroup");
    if !capped {
        eprintln!("skipped: no pids cgroup here:\n{said}");
    }
    capped
}

fn stubborn(scratch: &Scratch, marks: (u32, u32)) -> PathBuf {
    let after = format!(
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        \
         os.execv('/bin/sleep', ['sleep', '{}'])\n    os._exit(0)\n\
         os.execv('/bin/sleep', ['sleep', '{}'])",
        marks.0, marks.1
    );
    fake(
        scratch,
        "claude",
        Fake {
            stream: r#"{"type":"system","subtype":"init"}"#.to_string(),
            after: Box::leak(after.into_boxed_str()),
            ..Fake::default()
        },
    )
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + HANG;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: hang");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_timeout_kill_the_harness_and_everything_it_started() {
    if !confinable() {
        return;
    }
    let marks = marks(4_100_000, 4_200_000);
    let (one, two) = (marks.0.to_string(), marks.1.to_string());
    let scratch = Scratch::new();
    let command = stubborn(&scratch, marks);
    let toolset = load(&team(&scratch, "claude-code", &command, "", ""));
    let session = toolset.open_session(None).unwrap();
    let id = bgagents_testkit::start(&toolset, session.caller(), "coder", "Hang");
    until("the harness's processes start", || {
        host_has_process(&["sleep", &one]) && host_has_process(&["sleep", &two])
    })
    .await;

    toolset
        .stop_background_agent(session.caller(), &id)
        .await
        .unwrap();

    until("every process of the stopped harness is gone", || {
        !host_has_process(&["sleep", &one]) && !host_has_process(&["sleep", &two])
    })
    .await;

    // The same harness at its timeout.
    let marks = (marks.0 + 1, marks.1 + 1);
    let (one, two) = (marks.0.to_string(), marks.1.to_string());
    let scratch = Scratch::new();
    let command = stubborn(&scratch, marks);
    let toolset = load(&team(
        &scratch,
        "claude-code",
        &command,
        "",
        "    limits: {timeout: 2s}\n",
    ));
    let view = bgagents_testkit::run_to_end(&toolset, "coder", "Hang").await;
    let error = view.error.unwrap_or_default();
    assert!(error.contains("timed out after 2s"), "{error}");
    until("every process of the timed-out harness is gone", || {
        !host_has_process(&["sleep", &one]) && !host_has_process(&["sleep", &two])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_harness_reaches_neither_ungranted_files_nor_the_network() {
    if !confinable() {
        return;
    }
    let outside = Scratch::new();
    let secret = outside.write("secret.txt", "host secret");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let before = format!(
        "for path in ['{}', '/etc/shadow', '/root/.ssh']:\n    \
         try:\n        open(path).read()\n        record[path] = 'read'\n    \
         except Exception as error:\n        record[path] = type(error).__name__\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    \
         record['connect'] = 'connected'\n\
         except Exception as error:\n    record['connect'] = type(error).__name__\n\
         try:\n    socket.getaddrinfo('example.com', 443)\n    record['dns'] = 'resolved'\n\
         except Exception as error:\n    record['dns'] = type(error).__name__",
        secret.display()
    );
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/max_turns.ndjson"),
            before: &before,
            ..Fake::default()
        },
    );
    let team = team(&scratch, "claude-code", &command, "", "");

    let _ = run(&team, "Snoop", &[]).await;

    let seen = recorded(&scratch);
    assert_eq!(seen[secret.display().to_string()], "FileNotFoundError");
    assert_eq!(seen["/etc/shadow"], "FileNotFoundError");
    assert_ne!(seen["/root/.ssh"], "read");
    assert_ne!(seen["connect"], "connected", "{seen}");
    assert_ne!(seen["dns"], "resolved", "{seen}");
    assert!(listener.accept().is_err(), "nothing reached the host");
}

#[test]
fn check_shows_a_process_agent_and_what_it_can_reach() {
    let scratch = Scratch::new();
    let command = fake(&scratch, "claude", Fake::default());
    let team = team(&scratch, "claude-code", &command, "", "");
    let team_text = std::fs::read_to_string(&team).unwrap().replace(
        "    grants:\n",
        "    grants:\n      env: [ANTHROPIC_API_KEY]\n      http: [https://api.anthropic.com]\n",
    );
    let team = scratch.write("team.yaml", team_text);

    let said = check(&team, &[("ANTHROPIC_API_KEY", "sk-ant-canary-check")]);

    let out = text(&said.stdout);
    if text(&said.stderr).contains("cannot create a sandbox") {
        return eprintln!("skipped: {}", text(&said.stderr));
    }
    assert!(said.status.success(), "{}{out}", text(&said.stderr));
    assert!(out.contains("as a process agent"), "{out}");
    assert!(
        out.contains(&format!("runs {}", command.display())),
        "{out}"
    );
    assert!(out.contains("at /work (read-write)"), "{out}");
    assert!(
        out.contains("env: PATH, HOME, TMPDIR, LANG, ANTHROPIC_API_KEY"),
        "{out}"
    );
    assert!(
        out.contains("network: only https://api.anthropic.com:443, through the egress gate"),
        "{out}"
    );
    assert!(!out.contains("sk-ant-canary-check"), "a value shown: {out}");

    let unconfined = std::fs::read_to_string(&team)
        .unwrap()
        .replace("    grants:\n", "    grants:\n      unconfined: true\n");
    let said = check(&scratch.write("team.yaml", unconfined), &[]);
    assert!(
        text(&said.stdout).contains("UNCONFINED"),
        "{}",
        text(&said.stdout)
    );
}

#[test]
fn check_names_a_missing_binary_with_its_install_hint_and_unknown_types() {
    let scratch = Scratch::new();
    let team = scratch.team(
        "agents:\n  coder:\n    harness: {type: opencode, command: no-such-opencode-binary}\n",
    );
    let said = text(&check(&team, &[]).stderr);
    assert!(
        said.contains(
            "harness binary \"no-such-opencode-binary\" (for a opencode harness) is not on PATH"
        ) && said.contains("npm install -g opencode-ai"),
        "{said}"
    );

    let team = scratch.team("agents:\n  coder:\n    harness: {type: copilot}\n");
    let said = text(&check(&team, &[]).stderr);
    assert!(
        said.contains(
            "harness type `copilot` is not supported; bgagents runs claude-code, codex or opencode"
        ),
        "{said}"
    );
    let team = scratch.team(
        "agents:\n  coder:\n    harness: {type: codex}\n    sub_agents: [other]\n  other:\n    harness: {type: codex}\n",
    );
    let said = text(&check(&team, &[]).stderr);
    assert!(
        said.contains("a harness agent cannot dispatch sub-agents"),
        "{said}"
    );
    let team = scratch
        .team("agents:\n  coder:\n    harness: {type: codex, env: {TOKEN: \"${HOST_TOKEN}\"}}\n");
    let said = text(&check(&team, &[("HOST_TOKEN", "t0ken-value")]).stderr);
    assert!(
        said.contains("add `HOST_TOKEN` to agents.coder.grants.env"),
        "{said}"
    );
    assert!(!said.contains("t0ken-value"), "{said}");
}

#[test]
fn the_docker_agent_example_passes_check() {
    let scratch = Scratch::new();
    for name in ["claude", "codex"] {
        fake(&scratch, name, Fake::default());
    }
    let path = format!(
        "{}:{}",
        scratch.dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/harness-team.yaml");
    let said = check(
        &example,
        &[
            ("PATH", path.as_str()),
            ("ANTHROPIC_API_KEY", "sk-ant-dummy"),
        ],
    );
    let stderr = text(&said.stderr);
    if stderr.contains("cannot create a sandbox") {
        return eprintln!("skipped: {stderr}");
    }
    assert!(said.status.success(), "{stderr}");
    assert!(stderr.contains("`sandbox` is ignored"), "{stderr}");
    let out = text(&said.stdout);
    assert_eq!(out.matches("as a process agent").count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_mixing_an_llm_agent_a_component_and_a_harness_runs() {
    if !confinable() {
        return;
    }
    let transfer = |agent: &str, task: &str| {
        Turn::tool_calls([(
            "transfer_task",
            json!({"agent": agent, "task": task, "expected_output": "a line"}).to_string(),
        )])
    };
    let server = ModelServer::start(Script::new([
        transfer("coder", "List the files"),
        transfer("counter", "one two three"),
        Turn::text("All done: notes.txt, three words."),
    ]))
    .await;
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "codex",
        Fake {
            stream: fixture("codex/run.ndjson"),
            ..Fake::default()
        },
    );
    let work = scratch.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let team = scratch.write(
        "team.yaml",
        format!(
            "models:\n  m: {{provider: openai, model: gpt-4o, base_url: {}}}\n\
             agents:\n  root:\n    model: m\n    instruction: Delegate.\n    sub_agents: [coder, counter]\n  \
             coder:\n    harness: {{type: codex, command: {}}}\n    grants:\n      files: [{{host: {}, guest: /work, mode: read-write}}]\n  \
             counter:\n    component: {}\n",
            server.base_url(),
            command.display(),
            work.display(),
            bgagents_testkit::plugin("wordstats").display()
        ),
    );

    let run = run(&team, "Do the work", &[("OPENAI_API_KEY", "sk-test")]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("All done"),
        "{}",
        text(&run.stdout)
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let results = seen[1].tool_results().join("\n");
    assert!(
        results.contains("The directory holds notes.txt."),
        "{results}"
    );
    let results = seen[2].tool_results().join("\n");
    assert!(results.contains('3'), "the component counted: {results}");
}

/// A server on 127.0.0.1 answering every request with `body`; its port.
fn http_server(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let _ = (&stream).write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_harness_granted_a_host_reaches_it_through_the_gate_and_nothing_else() {
    if !confinable() {
        return;
    }
    let granted = http_server("granted body");
    let other = http_server("other body");
    let before = format!(
        "import urllib.request\n\
         for port in [{granted}, {other}]:\n    \
         try:\n        record[str(port)] = urllib.request.urlopen(\n            \
         f'http://127.0.0.1:{{port}}/', timeout=20).read().decode()\n    \
         except Exception as error:\n        record[str(port)] = str(error)"
    );
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "codex",
        Fake {
            stream: fixture("codex/run.ndjson"),
            before: &before,
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "codex",
        &command,
        "",
        &format!("      http: [http://127.0.0.1:{granted}]\n"),
    );
    let said = text(&check(&team, &[]).stdout);
    assert!(
        said.contains(&format!(
            "network: only http://127.0.0.1:{granted}, through the egress gate"
        )),
        "{said}"
    );

    let run = run(&team, "Fetch", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = recorded(&scratch);
    assert_eq!(seen[granted.to_string()], "granted body", "{seen}");
    let refused = seen[other.to_string()].as_str().unwrap_or_default();
    assert!(refused.contains("403"), "{seen}");
    let live = text(&run.stderr);
    assert!(
        live.contains(&format!("127.0.0.1:{other}")),
        "the refusal is shown: {live}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_npm_installed_cli_runs_from_its_package_with_node() {
    if !confinable() {
        return;
    }
    let Some(node) = ["/usr/bin/node", "/usr/local/bin/node"]
        .into_iter()
        .find(|node| Path::new(node).is_file())
    else {
        return eprintln!("skipped: no node here");
    };
    // npm's layout: bin/claude -> ../lib/node_modules/@fake/claude-code/cli.js,
    // which loads a file of its package beside it.
    let scratch = Scratch::new();
    let package = "npm/lib/node_modules/@fake/claude-code";
    scratch.write(
        &format!("{package}/package.json"),
        r#"{"name": "@fake/claude-code"}"#,
    );
    scratch.write(
        &format!("{package}/stream.js"),
        format!(
            "module.exports = {};\n",
            json!(fixture("claude/partial.ndjson"))
        ),
    );
    let cli = scratch.write(
        &format!("{package}/cli.js"),
        "#!/usr/bin/env node\n\
         const fs = require('fs');\n\
         fs.writeFileSync('record.json', JSON.stringify({argv: process.argv, env: process.env, cwd: process.cwd()}));\n\
         process.stdout.write(require('./stream.js'));\n",
    );
    let mut permissions = std::fs::metadata(&cli).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&cli, permissions).unwrap();
    std::fs::create_dir_all(scratch.dir.join("npm/bin")).unwrap();
    let link = scratch.dir.join("npm/bin/claude");
    std::os::unix::fs::symlink("../lib/node_modules/@fake/claude-code/cli.js", &link).unwrap();
    let team = team(&scratch, "claude-code", &link, "", "");

    let run = run(&team, "Greet", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{node}: {}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "Hello from the notes.");
    let seen = recorded(&scratch);
    assert!(
        seen["argv"][1]
            .as_str()
            .unwrap()
            .ends_with("claude-code/cli.js"),
        "run from its package: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_past_the_limit_fail_the_task() {
    if !confinable() {
        return;
    }
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "claude-code",
        &command,
        "",
        "    limits: {tokens: 100}\n",
    );

    let run = run(&team, "Greet", &[]).await;

    assert_ne!(run.status.code(), Some(0));
    let said = text(&run.stderr);
    assert!(
        said.contains("this task used 240 of its 100 tokens; raise agents.coder.limits.tokens"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfined_harness_runs_loudly_with_only_its_granted_variables() {
    if !python() {
        return;
    }
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "codex",
        Fake {
            stream: fixture("codex/run.ndjson"),
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "codex",
        &command,
        "",
        "      unconfined: true\n      env: [GRANTED_TOKEN]\n",
    );

    let run = run(
        &team,
        "List",
        &[("GRANTED_TOKEN", "granted"), ("NOT_GRANTED", "hidden")],
    )
    .await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("UNCONFINED"),
        "{}",
        text(&run.stderr)
    );
    let seen = recorded(&scratch);
    assert_eq!(seen["cwd"], scratch.dir.join("work").display().to_string());
    let env = seen["env"].as_object().unwrap();
    assert_eq!(env["GRANTED_TOKEN"], "granted");
    assert!(!env.contains_key("NOT_GRANTED"), "{env:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_host_kills_the_harness_and_everything_it_started() {
    if !confinable() {
        return;
    }
    let marks = marks(4_300_000, 4_400_000);
    let (one, two) = (marks.0.to_string(), marks.1.to_string());
    let scratch = Scratch::new();
    let command = stubborn(&scratch, marks);
    let team = team(&scratch, "claude-code", &command, "", "");
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(&team)
        .arg("Hang")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until("the harness's processes start", || {
        host_has_process(&["sleep", &one]) && host_has_process(&["sleep", &two])
    })
    .await;

    host.kill().unwrap();
    host.wait().unwrap();

    until("every process of the harness is gone with its host", || {
        !host_has_process(&["sleep", &one]) && !host_has_process(&["sleep", &two])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tokens_a_harness_reports_are_the_tasks_model_use() {
    if !confinable() {
        return;
    }
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            ..Fake::default()
        },
    );
    let toolset = load(&team(&scratch, "claude-code", &command, "", ""));

    let view = bgagents_testkit::run_to_end(&toolset, "coder", "Greet").await;

    assert_eq!(view.result.as_deref(), Some("Hello from the notes."));
    assert_eq!(
        view.output.text,
        "[thinking] The user wants a greeting.\nLet me look.\n[tool: Read]\nHello from the notes."
    );
    let used = view.info.model.expect("model use is in the view");
    // Input counts cache writes and reads; calls are the CLI's turns.
    assert_eq!(
        (used.calls, used.input_tokens, used.output_tokens),
        (2, 200, 40)
    );
    let shown = bgagents::render::view(&view);
    assert!(
        shown.contains("Model:   2 calls, 240 tokens (200 in, 40 out)"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_keys_and_working_dir_shape_the_command_and_where_it_runs() {
    if !confinable() {
        return;
    }
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            ..Fake::default()
        },
    );
    std::fs::create_dir_all(scratch.dir.join("work/sub")).unwrap();
    let team = team(
        &scratch,
        "claude-code",
        &command,
        "      working_dir: /work/sub\n      min_version: \"2.0\"\n      config:\n        \
         max_turns: 7\n        permission_mode: acceptEdits\n        include_partial_messages: false\n        \
         colour: blue\n",
        "",
    );
    let said = check(&team, &[]);
    let warnings = text(&said.stderr);
    assert!(said.status.success(), "{warnings}");
    assert!(
        warnings.contains("`min_version` (a docker-agent key) is ignored"),
        "{warnings}"
    );
    assert!(
        warnings.contains("`colour` is ignored: not a claude-code setting bgagents knows"),
        "{warnings}"
    );

    let run = run(&team, "Greet", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    // The fake writes its record where it runs.
    let seen: Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.dir.join("work/sub/record.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(seen["cwd"], "/work/sub");
    let argv: Vec<&str> = (seen["argv"].as_array().unwrap().iter())
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(
        &argv[1..],
        [
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--max-turns",
            "7",
            "--permission-mode",
            "acceptEdits"
        ]
    );

    let outside = team_with_working_dir(&scratch, &command, "/elsewhere");
    let said = text(&check(&outside, &[]).stderr);
    assert!(
        said.contains("working_dir: `/elsewhere` is not inside a granted directory (/work)"),
        "{said}"
    );
}

fn team_with_working_dir(scratch: &Scratch, command: &Path, dir: &str) -> PathBuf {
    team(
        scratch,
        "claude-code",
        command,
        &format!("      working_dir: {dir}\n"),
        "",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfined_harness_is_stopped_with_what_left_its_group_where_cgroups_exist() {
    if !python() {
        return;
    }
    let scratch = Scratch::new();
    if !pids_cgroup(&scratch) {
        return;
    }
    let marks = marks(4_500_000, 4_600_000);
    let (one, two) = (marks.0.to_string(), marks.1.to_string());
    let command = stubborn(&scratch, marks);
    let toolset = load(&team(
        &scratch,
        "claude-code",
        &command,
        "",
        "      unconfined: true\n",
    ));
    let session = toolset.open_session(None).unwrap();
    let id = bgagents_testkit::start(&toolset, session.caller(), "coder", "Hang");
    until("the harness's processes start", || {
        host_has_process(&["sleep", &one]) && host_has_process(&["sleep", &two])
    })
    .await;

    toolset
        .stop_background_agent(session.caller(), &id)
        .await
        .unwrap();

    until(
        "the unconfined harness and its setsid child are gone",
        || !host_has_process(&["sleep", &one]) && !host_has_process(&["sleep", &two]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_under_home_beside_a_stray_package_json_shows_only_itself() {
    if !confinable() {
        return;
    }
    // ~/package.json (left by some `npm install` in ~) and a CLI installed
    // at ~/.opencode/bin: the sandbox shows the CLI, not the home.
    let scratch = Scratch::new();
    let home = scratch.dir.join("home");
    scratch.write("home/package.json", r#"{"name": "stray"}"#);
    let key = scratch.write("home/.ssh/id_rsa", "PRIVATE KEY");
    let before = format!(
        "try:\n    record['key'] = open('{}').read()\n\
         except Exception as error:\n    record['key'] = type(error).__name__",
        key.display()
    );
    let written = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            before: &before,
            ..Fake::default()
        },
    );
    let command = home.join(".opencode/bin/claude");
    std::fs::create_dir_all(command.parent().unwrap()).unwrap();
    std::fs::rename(&written, &command).unwrap();
    let team = team(&scratch, "claude-code", &command, "", "");
    let env = [("HOME", home.to_str().unwrap())];

    let said = check(&team, &env);
    let out = text(&said.stdout);
    assert!(
        out.contains(&format!("program (read-only): {}\n", command.display())),
        "{out}"
    );
    let run = run(&team, "Greet", &env).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = recorded(&scratch);
    assert_eq!(seen["key"], "FileNotFoundError", "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_claude_is_stopped_as_its_messages_pass_the_token_limit() {
    if !confinable() {
        return;
    }
    // Messages of 100 tokens each, one every 50 ms, and never a result.
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            after: "for n in range(100000):\n    \
                    print(json.dumps({'type': 'assistant', 'message': {'id': 'm%d' % n, \
                    'usage': {'input_tokens': 60, 'output_tokens': 40}, \
                    'content': [{'type': 'text', 'text': 'step %d' % n}]}}), flush=True)\n    \
                    time.sleep(0.05)",
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "claude-code",
        &command,
        "",
        "    limits: {tokens: 250, timeout: 2m}\n",
    );

    let started = std::time::Instant::now();
    let run = run(&team, "Loop", &[]).await;

    assert_ne!(run.status.code(), Some(0));
    let said = text(&run.stderr);
    assert!(
        said.contains("this task used 300 of its 250 tokens; raise agents.coder.limits.tokens"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "not stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_host_process_shows_the_task_on_its_command_line() {
    if !confinable() {
        return;
    }
    // The fake says it runs, then waits to be let go: meanwhile every
    // process's command line on the host is read.
    let before = "open('started', 'w').close()\n\
                  while not os.path.exists('go'):\n    time.sleep(0.02)";
    for (kind, name, stream) in [
        ("codex", "codex", "codex/run.ndjson"),
        ("opencode", "opencode", "opencode/run.ndjson"),
        ("claude-code", "claude", "claude/partial.ndjson"),
    ] {
        let scratch = Scratch::new();
        let command = fake(
            &scratch,
            name,
            Fake {
                stream: fixture(stream),
                before,
                ..Fake::default()
            },
        );
        let team = team(&scratch, kind, &command, "", "");
        let task = format!("Count the marmots {}", std::process::id());
        let work = scratch.dir.join("work");

        let running = tokio::spawn({
            let (team, task) = (team.clone(), task.clone());
            async move { run(&team, &task, &[]).await }
        });
        until("the fake CLI starts", || work.join("started").exists()).await;
        let mut shown = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            // Not the test's own `bgagents run TEAM TASK`.
            let client = format!("{}\0run\0", env!("CARGO_BIN_EXE_bgagents"));
            if let Ok(line) = std::fs::read(entry.path().join("cmdline"))
                && !line.starts_with(client.as_bytes())
                && String::from_utf8_lossy(&line).contains(&task)
            {
                shown.push(String::from_utf8_lossy(&line).replace('\0', " "));
            }
        }
        std::fs::write(work.join("go"), "").unwrap();
        let run = running.await.unwrap();

        assert!(
            shown.is_empty(),
            "{kind}: the task on a command line: {shown:?}"
        );
        assert_eq!(run.status.code(), Some(0), "{kind}: {}", text(&run.stderr));
        let seen = recorded(&scratch);
        assert!(
            seen["stdin"].as_str().unwrap().contains(&task),
            "{kind}: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfined_harness_runs_in_the_deepest_grant_holding_its_working_dir() {
    if !python() {
        return;
    }
    // /work and, mounted over part of it, /work/sub from elsewhere: the
    // sandbox would run in `other`, and so does an unconfined CLI.
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "codex",
        Fake {
            stream: fixture("codex/run.ndjson"),
            ..Fake::default()
        },
    );
    let work = scratch.dir.join("work");
    let other = scratch.dir.join("other");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let team = scratch.write(
        "team.yaml",
        format!(
            "agents:\n  coder:\n    instruction: You write code.\n    harness:\n      type: codex\n      \
             command: {}\n      working_dir: /work/sub\n    grants:\n      unconfined: true\n      \
             files:\n        - {{host: {}, guest: /work, mode: read-write}}\n        \
             - {{host: {}, guest: /work/sub, mode: read-write}}\n",
            command.display(),
            work.display(),
            other.display()
        ),
    );

    let run = run(&team, "List", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(other.join("record.json").exists(), "ran elsewhere");
    assert!(!work.join("sub/record.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_that_hangs_after_its_result_is_killed_and_the_task_keeps_the_result() {
    if !confinable() {
        return;
    }
    // After its result, the CLI becomes a `sleep` this test can find.
    let marker = format!("{}.25", 600 + std::process::id() % 1000);
    let after = format!("sys.stdout.flush()\nos.execvp('sleep', ['sleep', '{marker}'])");
    let scratch = Scratch::new();
    let command = fake(
        &scratch,
        "claude",
        Fake {
            stream: fixture("claude/partial.ndjson"),
            after: &after,
            ..Fake::default()
        },
    );
    let team = team(
        &scratch,
        "claude-code",
        &command,
        "",
        "    limits: {timeout: 40s}\n",
    );

    let started = std::time::Instant::now();
    let run = run(&team, "Greet", &[]).await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "Hello from the notes.");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for the timeout"
    );
    assert!(!host_has_process(&["sleep", &marker]), "the CLI lives on");
}

#[test]
fn check_warns_of_a_cli_inside_a_directory_an_agent_may_write() {
    // The CLI lives in `tools`, which another agent may write.
    let scratch = Scratch::new();
    let command = fake(&scratch, "claude", Fake::default());
    let tools = command.parent().unwrap();
    let team = team(&scratch, "claude-code", &command, "", "");
    let text_of_team = std::fs::read_to_string(&team).unwrap();
    let team = scratch.write(
        "team.yaml",
        format!(
            "{text_of_team}  builder:\n    instruction: You build.\n    harness:\n      \
             type: claude-code\n      command: {}\n    grants:\n      files: [{{host: {}, \
             guest: /tools, mode: read-write}}]\n",
            command.display(),
            tools.display()
        ),
    );

    let said = check(&team, &[]);

    let out = text(&said.stdout);
    if text(&said.stderr).contains("cannot create a sandbox") {
        return eprintln!("skipped: {}", text(&said.stderr));
    }
    assert!(said.status.success(), "{out}{}", text(&said.stderr));
    let real = command.canonicalize().unwrap();
    assert!(
        out.contains(&format!(
            "WARNING: the program bind {} lies inside {} (agents.builder.grants.files, read-write)",
            real.display(),
            tools.display()
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_an_unconfined_cli_left_when_its_host_was_killed_dies_at_the_next_start() {
    if !python() {
        return;
    }
    let scratch = Scratch::new();
    if !pids_cgroup(&scratch) {
        return;
    }
    let marks = marks(4_700_000, 4_800_000);
    let one = marks.0.to_string();
    let command = stubborn(&scratch, marks);
    let unconfined = "      unconfined: true\n";
    let team = team(&scratch, "claude-code", &command, "", unconfined);
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(&team)
        .arg("Hang")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until("the harness's processes start", || {
        host_has_process(&["sleep", &one])
    })
    .await;
    host.kill().unwrap();
    host.wait().unwrap();
    // Its setsid child outlives a SIGKILLed host…
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(host_has_process(&["sleep", &one]), "nothing left to clear");

    // …until the next host starts an unconfined CLI.
    let other = Scratch::new();
    let quick = fake(
        &other,
        "codex",
        Fake {
            stream: fixture("codex/run.ndjson"),
            ..Fake::default()
        },
    );
    let next = run(&team_of(&other, "codex", &quick, unconfined), "List", &[]).await;
    assert_eq!(next.status.code(), Some(0), "{}", text(&next.stderr));
    until("the leftover is gone", || {
        !host_has_process(&["sleep", &one])
    })
    .await;
}

fn team_of(scratch: &Scratch, kind: &str, command: &Path, more: &str) -> PathBuf {
    team(scratch, kind, command, "", more)
}
