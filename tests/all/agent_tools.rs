//! The filesystem and memory toolsets, and `add_environment_info`, driven
//! the way a model drives them: the bundled agent run by the real
//! `bgagents` binary against the scripted model server, which records the
//! tool results the agent sent back. Escapes a model could be told to try
//! must come back as refusals in those results, with nothing touched.

use crate::llm::run_team;
use crate::text;
use bgagents_testkit::Scratch;
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use serde_json::json;

/// A team of one `openai/gpt-4o` agent named `worker` talking to `server`,
/// with the given toolsets and grants (YAML, indented for the agent).
fn team(server: &ModelServer, extra: &str) -> String {
    format!(
        "models:\n  gpt:\n    provider: openai\n    model: gpt-4o\n    base_url: {}\n\
         agents:\n  root:\n    model: gpt\n    instruction: Work with files.\n{extra}",
        server.base_url()
    )
}

/// One turn calling each `(tool, arguments)` in order.
fn calls(calls: &[(&str, serde_json::Value)]) -> Turn {
    Turn::tool_calls(
        calls
            .iter()
            .map(|(name, args)| (name.to_string(), args.to_string())),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn filesystem_tools_work_inside_the_grants_and_refuse_every_way_out() {
    let scratch = Scratch::new();
    scratch.write("work/notes.md", "line one\nthe needle is here\n");
    scratch.write("docs/readme.md", "read me, do not change me");
    let outside = scratch.write("secret/shadow", "root:SECRET-HASH");
    // A link planted in the writable grant, pointing out of it.
    std::os::unix::fs::symlink(outside.parent().unwrap(), scratch.dir.join("work/leak")).unwrap();
    let server = ModelServer::start(Script::new([
        calls(&[
            ("read_file", json!({"path": "notes.md"})),
            ("read_file", json!({"path": "/docs/readme.md"})),
            ("write_file", json!({"path": "/work/out/new.txt", "content": "written"})),
            (
                "edit_file",
                json!({"path": "/work/notes.md", "edits": [{"oldText": "needle", "newText": "pin"}]}),
            ),
            ("search_files_content", json!({"path": "/work", "query": "pin"})),
            ("list_directory", json!({"path": "/work"})),
            ("create_directory", json!({"paths": ["/work/a/b"]})),
            ("remove_directory", json!({"paths": ["/work/a/b"]})),
            ("directory_tree", json!({"path": "/work/out"})),
            ("read_multiple_files", json!({"paths": ["/work/out/new.txt", "/nowhere/x"]})),
        ]),
        calls(&[
            ("read_file", json!({"path": "../../secret/shadow"})),
            ("read_file", json!({"path": "/etc/shadow"})),
            ("read_file", json!({"path": "leak/shadow"})),
            ("write_file", json!({"path": "leak/planted", "content": "x"})),
            ("write_file", json!({"path": "/docs/readme.md", "content": "changed"})),
            ("remove_directory", json!({"paths": ["/work"]})),
            ("edit_file", json!({"path": "notes.md", "edits": [{"oldText": "absent", "newText": "x"}]})),
            ("read_file", json!({"path": "notes.md", "mode": "fast"})),
        ]),
        Turn::text("done with files"),
    ]))
    .await;
    let yaml = team(
        &server,
        "    toolsets: [{type: filesystem}]\n    grants:\n      files:\n        \
         - {host: work, guest: /work, mode: read-write}\n        - {host: docs, guest: /docs}\n",
    );
    let file = scratch.write("team.yaml", yaml);

    let run = run_team(&file, "Do the file work").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("done with files"));
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(
        seen[0].tool_names(),
        [
            "create_directory",
            "directory_tree",
            "edit_file",
            "list_directory",
            "read_file",
            "read_multiple_files",
            "remove_directory",
            "search_files_content",
            "write_file"
        ]
    );
    let done = seen[1].tool_results();
    assert_eq!(done[0], "line one\nthe needle is here\n");
    assert_eq!(done[1], "read me, do not change me");
    assert!(done[2].contains("wrote 7 bytes"), "{}", done[2]);
    assert!(done[3].contains("1 edit(s) applied"), "{}", done[3]);
    assert!(
        done[4].contains("/work/notes.md:2: the pin is here"),
        "{}",
        done[4]
    );
    assert!(
        done[5].contains("FILE notes.md") && done[5].contains("DIR  out"),
        "{}",
        done[5]
    );
    assert!(done[6].contains("created: /work/a/b"), "{}", done[6]);
    assert!(done[7].contains("removed: /work/a/b"), "{}", done[7]);
    assert!(
        done[8].contains(r#"{"name":"new.txt","type":"file"}"#),
        "{}",
        done[8]
    );
    assert!(
        done[9].contains("=== /work/out/new.txt ===\nwritten"),
        "{}",
        done[9]
    );
    assert!(
        done[9].contains("/nowhere/x is outside the granted directories"),
        "{}",
        done[9]
    );
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("work/out/new.txt")).unwrap(),
        "written"
    );
    assert!(
        std::fs::read_to_string(scratch.dir.join("work/notes.md"))
            .unwrap()
            .contains("pin")
    );

    // The conversation so far carries the first turn's results too.
    let refused = seen[2].tool_results()[done.len()..].to_vec();
    assert!(
        refused[0].contains("leads outside the granted directory /work"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains(
            "/etc/shadow is outside the granted directories (/work (read-write), \
             /docs (read-only))"
        ),
        "{}",
        refused[1]
    );
    assert!(
        refused[2].contains("leads outside the granted directory /work"),
        "{}",
        refused[2]
    );
    assert!(
        refused[3].contains("leads outside the granted directory /work"),
        "{}",
        refused[3]
    );
    assert!(
        refused[4].contains("/docs is granted read-only; nothing was changed"),
        "{}",
        refused[4]
    );
    assert!(
        refused[5].contains("is a granted directory itself"),
        "{}",
        refused[5]
    );
    assert!(
        refused[6].contains("edit 1: the old text is not in notes.md"),
        "{}",
        refused[6]
    );
    assert!(
        refused[7].contains("unknown argument \"mode\""),
        "{}",
        refused[7]
    );
    for result in &refused {
        assert!(!result.contains("SECRET-HASH"), "{result}");
    }
    assert!(!scratch.dir.join("secret/planted").exists());
    assert_eq!(
        std::fs::read_to_string(scratch.dir.join("docs/readme.md")).unwrap(),
        "read me, do not change me"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filesystem_tools_without_a_files_grant_say_how_to_grant() {
    let server = ModelServer::start(Script::new([
        calls(&[("list_directory", json!({"path": "."}))]),
        Turn::text("nothing to see"),
    ]))
    .await;
    let scratch = Scratch::new();
    let file = scratch.write(
        "team.yaml",
        team(&server, "    toolsets: [{type: filesystem}]\n"),
    );

    let run = run_team(&file, "Look around").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let answer = &server.requests()[1].tool_results()[0];
    assert!(
        answer.contains("this agent has no granted directories")
            && answer.contains("`grants.files`"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memories_persist_across_runs_in_the_store_the_path_names() {
    let scratch = Scratch::new();
    let toolsets = "    toolsets:\n      - type: memory\n        path: data/memory.db\n";
    std::fs::create_dir_all(scratch.dir.join("data")).unwrap();

    let first = ModelServer::start(Script::new([
        calls(&[
            (
                "add_memory",
                json!({"memory": "The user prefers tea", "category": "preference"}),
            ),
            ("add_memory", json!({"memory": "The build uses cargo"})),
        ]),
        Turn::text("remembered"),
    ]))
    .await;
    let file = scratch.write("team.yaml", team(&first, toolsets));
    let run = run_team(&file, "Remember").await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let added = first.requests()[1].tool_results();
    assert!(added[0].starts_with("memory added with ID "), "{added:?}");
    let id = added[0]
        .trim_start_matches("memory added with ID ")
        .to_string();

    let second = ModelServer::start(Script::new([
        calls(&[
            ("search_memories", json!({"query": "TEA prefers"})),
            (
                "update_memory",
                json!({"id": id, "memory": "The user prefers green tea"}),
            ),
            ("delete_memory", json!({"id": "12345"})),
            ("get_memories", json!({})),
        ]),
        Turn::text("recalled"),
    ]))
    .await;
    let file = scratch.write("team.yaml", team(&second, toolsets));
    let run = run_team(&file, "Recall").await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = second.requests();
    assert_eq!(
        seen[0].tool_names(),
        [
            "add_memory",
            "delete_memory",
            "get_memories",
            "search_memories",
            "update_memory"
        ]
    );
    let recalled = seen[1].tool_results();
    let found: serde_json::Value = serde_json::from_str(&recalled[0]).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["memory"], "The user prefers tea");
    assert_eq!(found[0]["category"], "preference");
    assert!(recalled[1].contains("updated"), "{}", recalled[1]);
    assert!(
        recalled[2].contains("no memory has ID \"12345\""),
        "{}",
        recalled[2]
    );
    let all: serde_json::Value = serde_json::from_str(&recalled[3]).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all[0]["memory"], "The user prefers green tea");
    let store = std::fs::read_to_string(scratch.dir.join("data/memory.db")).unwrap();
    assert!(store.contains("green tea"), "{store}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_is_not_ours_is_refused_when_the_team_loads() {
    let scratch = Scratch::new();
    scratch.write("memory.db", b"SQLite format 3\0binary".as_slice());
    let server = ModelServer::start(Script::new([Turn::text("unused")])).await;
    let file = scratch.write(
        "team.yaml",
        team(&server, "    toolsets: [{type: memory, path: memory.db}]\n"),
    );

    let run = run_team(&file, "Recall").await;

    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("agents.root.toolsets: memory:")
            && stderr.contains("is not a bgagents memory store")
            && stderr.contains("point `path:` at a new file"),
        "{stderr}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_info_tells_the_model_what_it_can_reach() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("work")).unwrap();
    let server = ModelServer::start(Script::new([Turn::text("noted")])).await;
    let file = scratch.write(
        "team.yaml",
        team(
            &server,
            "    add_environment_info: true\n    toolsets: [{type: filesystem}, {type: fetch}]\n    \
             grants:\n      files: [{host: work, guest: /work, mode: read-write}]\n      \
             http: [https://api.example.com]\n",
        ),
    );

    let run = run_team(&file, "Where am I?").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let system = server.requests()[0].contents("system").join("\n");
    assert!(system.contains("Work with files."), "{system}");
    assert!(
        system.contains("<environment>\nWorking directory: /work"),
        "{system}"
    );
    assert!(
        system.contains("Granted directory: /work (read-write)"),
        "{system}"
    );
    assert!(
        system.contains("Fetch: only https://api.example.com:443"),
        "{system}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_planted_in_a_grant_is_refused_not_waited_on() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("work")).unwrap();
    let fifo = scratch.dir.join("work/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let server = ModelServer::start(Script::new([
        calls(&[
            ("read_file", json!({"path": "pipe"})),
            ("write_file", json!({"path": "pipe", "content": "x"})),
            (
                "edit_file",
                json!({"path": "pipe", "edits": [{"oldText": "a", "newText": "b"}]}),
            ),
            ("search_files_content", json!({"path": ".", "query": "x"})),
        ]),
        Turn::text("pipes refused"),
    ]))
    .await;
    let file = scratch.write(
        "team.yaml",
        team(
            &server,
            "    toolsets: [{type: filesystem}]\n    grants:\n      files: \
             [{host: work, guest: /work, mode: read-write}]\n",
        ),
    );

    // run_team bounds the run by HANG: a blocked open would fail here.
    let run = run_team(&file, "Read the pipe").await;

    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let refused = server.requests()[1].tool_results();
    for answer in &refused[..3] {
        assert!(answer.contains("pipe: not a regular file"), "{refused:?}");
    }
    assert!(refused[3].contains("no matches under ."), "{refused:?}");
}
