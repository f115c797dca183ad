//! The engine's fast paths, checked for correctness (timings belong to the
//! benchmark): the compiled-component cache (hit, miss, corrupt, truncated,
//! foreign and planted entries, entries damaged after loads began to map
//! them unread, a component changed in place, engine change, off; its
//! private directory and grants that would reach it) and the pooling
//! allocator with its fallback.

use bgagents::{Allocator, CacheOutcome};
use bgagents::{TaskStatus, Team, Toolset};
use bgagents_testkit::{Scratch, finished, plugin_dir};
use std::path::{Path, PathBuf};

fn team(engine: &str) -> Team {
    let yaml = format!(
        "engine: {engine}\nagents:\n  a: {{component: probe.wasm}}\n  b: {{component: probe.wasm}}\n  \
         c: {{component: spinner.wasm}}\n"
    );
    Team::parse(&yaml, Path::new("engine.yaml"), plugin_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn cached(dir: &Path) -> Team {
    // No warm instances: a refill still under way would keep the dropped
    // toolsets' entries mapped while the tests damage them in place.
    team(&format!(
        "{{cache_dir: '{}', warm_instances: 0}}",
        dir.display()
    ))
}

fn outcomes(toolset: &Toolset) -> Vec<CacheOutcome> {
    toolset
        .load_report()
        .components
        .iter()
        .map(|component| component.cache.clone())
        .collect()
}

/// The cache's entries (not its key).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|read| read.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    entries.retain(|path| path.extension().is_some_and(|ext| ext == "cwasm"));
    entries.sort();
    entries
}

/// Every component of `toolset` was compiled anew, its entry replaced for
/// a reason starting with `why`.
fn assert_all_replaced(toolset: &Toolset, why: &str) {
    for outcome in outcomes(toolset) {
        match outcome {
            CacheOutcome::Replaced(reason) => assert!(reason.starts_with(why), "{reason}"),
            other => panic!("a bad entry was not replaced: {other:?}"),
        }
    }
}

/// A way of spoiling a cache entry.
type Damage = fn(&Path);

/// Runs one task to show the loaded component works.
async fn works(toolset: &Toolset) {
    let session = toolset.open_session(None).unwrap();
    let info = toolset
        .run_background_agent(session.caller(), "a", "echo fine", None)
        .unwrap();
    let view = finished(toolset, session.caller(), info.id.as_str()).await;
    assert_eq!(view.result.as_deref(), Some("fine"), "{:?}", view.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_load_compiles_and_later_loads_hit_the_cache() {
    let scratch = Scratch::new();
    let first = Toolset::load(cached(&scratch.dir)).unwrap();
    // Two agents share probe.wasm: it is compiled once.
    assert_eq!(
        outcomes(&first),
        [CacheOutcome::Stored, CacheOutcome::Stored]
    );
    assert_eq!(entries(&scratch.dir).len(), 2);
    assert_eq!(
        first.load_report().cache_dir.as_deref(),
        Some(scratch.dir.as_path())
    );

    let second = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_eq!(outcomes(&second), [CacheOutcome::Hit, CacheOutcome::Hit]);
    works(&second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_and_foreign_entries_are_recompiled_not_trusted() {
    let scratch = Scratch::new();
    Toolset::load(cached(&scratch.dir)).unwrap();
    let damage: [(&str, Damage); 5] = [
        ("authentication failed", |entry| {
            let mut bytes = std::fs::read(entry).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(entry, bytes).unwrap();
        }),
        ("authentication failed", |entry| {
            let bytes = std::fs::read(entry).unwrap();
            std::fs::write(entry, &bytes[..bytes.len() - 1000]).unwrap();
        }),
        ("not a bgagents cache entry", |entry| {
            std::fs::write(entry, b"\0asm\x0d\0\x01\0 a component, not compiled code").unwrap();
        }),
        ("not a bgagents cache entry", |entry| {
            std::fs::write(entry, b"").unwrap()
        }),
        // Its record gone: an entry without one is never trusted.
        ("not a bgagents cache entry (it has no record)", |entry| {
            std::fs::remove_file(entry.with_extension("mac")).unwrap()
        }),
    ];
    for (expected, damage) in damage {
        for entry in entries(&scratch.dir) {
            damage(&entry);
        }
        let toolset = Toolset::load(cached(&scratch.dir)).unwrap();
        assert_all_replaced(&toolset, expected);
        works(&toolset).await;
        // The replacement is good again.
        let again = Toolset::load(cached(&scratch.dir)).unwrap();
        assert_eq!(outcomes(&again), [CacheOutcome::Hit, CacheOutcome::Hit]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_damaged_after_its_fast_loads_began_is_still_caught() {
    let scratch = Scratch::new();
    Toolset::load(cached(&scratch.dir)).unwrap();
    // Once an entry has settled, loads map it without reading it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let checked = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_eq!(outcomes(&checked), [CacheOutcome::Hit, CacheOutcome::Hit]);
    let mapped = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_eq!(
        outcomes(&mapped),
        [CacheOutcome::Unchanged, CacheOutcome::Unchanged],
        "settled files are loaded without reading them"
    );
    works(&mapped).await;
    // Nothing may map an entry while it is damaged in place.
    drop((checked, mapped));
    for entry in entries(&scratch.dir) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
    }
    let toolset = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_all_replaced(&toolset, "authentication failed");
    works(&toolset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_changed_in_place_is_compiled_again_not_taken_from_the_cache() {
    let scratch = Scratch::new();
    let cache = scratch.dir.join("cache");
    let component = scratch.dir.join("agent.wasm");
    std::fs::copy(plugin_dir().join("probe.wasm"), &component).unwrap();
    let load = || {
        let yaml = format!(
            "engine: {{cache_dir: '{}'}}\nagents:\n  a: {{component: '{}'}}\n",
            cache.display(),
            component.display()
        );
        Toolset::load(Team::parse(&yaml, Path::new("changed.yaml"), plugin_dir()).unwrap()).unwrap()
    };
    assert_eq!(outcomes(&load()), [CacheOutcome::Stored]);
    assert_eq!(outcomes(&load()), [CacheOutcome::Hit]);
    // Same size, same file, at once (within the file system's timestamp
    // granularity, maybe): one byte of the name of the compiler in its
    // producers section, which nothing checks.
    let mut bytes = std::fs::read(&component).unwrap();
    let at = (bytes.windows(5).rposition(|window| window == b"rustc"))
        .expect("probe.wasm names rustc in its producers section");
    bytes[at] = b'R';
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&component)
        .unwrap();
    std::io::Write::write_all(&mut file, &bytes).unwrap();
    drop(file);
    let changed = load();
    assert_eq!(outcomes(&changed), [CacheOutcome::Stored]);
    assert_eq!(entries(&cache).len(), 2);
    works(&changed).await;
    // And replaced by another file.
    std::fs::copy(
        plugin_dir().join("probe.wasm"),
        scratch.dir.join("other.wasm"),
    )
    .unwrap();
    std::fs::rename(scratch.dir.join("other.wasm"), &component).unwrap();
    assert_eq!(outcomes(&load()), [CacheOutcome::Hit]);
    assert_eq!(entries(&cache).len(), 2);

    // Once everything has settled, a load reads nothing; a change after
    // that is still seen.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(outcomes(&load()), [CacheOutcome::Hit]);
    assert_eq!(outcomes(&load()), [CacheOutcome::Unchanged]);
    let mut bytes = std::fs::read(&component).unwrap();
    let at = (bytes.windows(5).rposition(|window| window == b"rustc")).unwrap();
    bytes[at] = b'X';
    std::fs::write(&component, &bytes).unwrap();
    let changed = load();
    assert_eq!(outcomes(&changed), [CacheOutcome::Stored]);
    works(&changed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_engine_configuration_gets_its_own_entries() {
    let scratch = Scratch::new();
    Toolset::load(cached(&scratch.dir)).unwrap();
    // Without fuel metering the compiled code differs: a miss, not a hit.
    let unmetered = Toolset::load_unmetered(cached(&scratch.dir)).unwrap();
    assert_eq!(
        outcomes(&unmetered),
        [CacheOutcome::Stored, CacheOutcome::Stored]
    );
    assert_eq!(entries(&scratch.dir).len(), 4);
    // Both stay valid side by side.
    let metered = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_eq!(outcomes(&metered), [CacheOutcome::Hit, CacheOutcome::Hit]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_can_be_turned_off_or_fail_to_write_without_failing_the_load() {
    let off = Toolset::load(team("{cache: false}")).unwrap();
    assert_eq!(
        outcomes(&off),
        [CacheOutcome::Disabled, CacheOutcome::Disabled]
    );
    assert_eq!(off.load_report().cache_dir, None);
    works(&off).await;

    let scratch = Scratch::new();
    let not_a_dir = scratch.write("file", "in the way");
    let unwritable = Toolset::load(cached(&not_a_dir)).unwrap();
    for outcome in outcomes(&unwritable) {
        assert!(matches!(outcome, CacheOutcome::NotStored(_)), "{outcome:?}");
    }
    works(&unwritable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_is_used_when_asked_and_falls_back_when_the_pool_cannot_be_reserved() {
    let on = Toolset::load(team("{pooling: on, pool_size: 8, cache: false}")).unwrap();
    assert_eq!(on.load_report().allocator, Allocator::Pooling { slots: 8 });
    works(&on).await;

    let off = Toolset::load(team("{pooling: off, cache: false}")).unwrap();
    assert_eq!(
        off.load_report().allocator,
        Allocator::OnDemand {
            fallback_reason: None
        }
    );
    works(&off).await;

    // A pool far beyond any address space cannot be reserved.
    let huge = "pool_size: 100_000_000, cache: false";
    let auto = Toolset::load(team(&format!("{{pooling: auto, {huge}}}"))).unwrap();
    match &auto.load_report().allocator {
        Allocator::OnDemand {
            fallback_reason: Some(reason),
        } => assert!(!reason.is_empty()),
        other => panic!("no fallback: {other:?}"),
    }
    works(&auto).await;

    let error = Toolset::load(team(&format!("{{pooling: on, {huge}}}")))
        .err()
        .expect("pooling: on must refuse an impossible pool");
    assert!(
        error
            .to_string()
            .contains("cannot reserve the instance pool for 100000000 tasks")
            && error.to_string().contains("lower engine.pool_size"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_fails_the_task_and_frees_its_slot() {
    let toolset = Toolset::load(team("{pooling: on, pool_size: 1, cache: false}")).unwrap();
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let holder = toolset
        .run_background_agent(caller, "a", "print 1 holding && sleep 60000", None)
        .unwrap();
    // Its first output proves it is instantiated and holds the only slot.
    bgagents_testkit::eventually("the holder to hold its instance", || {
        let view = toolset
            .view_background_agent(caller, holder.id.as_str())
            .unwrap();
        view.output.text == "holding\n"
    })
    .await;
    let second = toolset
        .run_background_agent(caller, "a", "echo hi", None)
        .unwrap();
    let view = finished(&toolset, caller, second.id.as_str()).await;
    assert_eq!(view.info.status, TaskStatus::Failed);
    let reason = view.error.unwrap();
    assert!(
        reason.starts_with("no free instance slot (maximum concurrent limit of 1 for ")
            && reason
                .ends_with("raise engine.pool_size in the team file, or set engine.pooling to off"),
        "{reason}"
    );
    toolset
        .stop_background_agent(caller, holder.id.as_str())
        .await
        .unwrap();
    works(&toolset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_size_evicting_the_least_recently_used() {
    let scratch = Scratch::new();
    let only = |component: &str, cache_max: u64| {
        let yaml = format!(
            "engine: {{cache_dir: '{}', cache_max: {cache_max}}}\nagents:\n  x: {{component: {component}}}\n",
            scratch.dir.display()
        );
        let team = Team::parse(&yaml, Path::new("lru.yaml"), plugin_dir()).unwrap();
        outcomes(&Toolset::load(team).unwrap())
    };
    let size = |entries: &[PathBuf]| -> u64 {
        entries
            .iter()
            .map(|e| std::fs::metadata(e).unwrap().len())
            .sum()
    };
    // Learn the entry sizes, then keep room for probe and calculator only.
    let unlimited = u64::MAX / 2;
    only("probe.wasm", unlimited);
    only("calculator.wasm", unlimited);
    let cap = size(&entries(&scratch.dir));
    for entry in entries(&scratch.dir) {
        std::fs::remove_file(entry).unwrap();
    }
    only("probe.wasm", unlimited);
    only("spinner.wasm", unlimited);

    // A hit makes probe the most recently used; then a third entry pushes
    // the least recently used (spinner) out.
    assert_eq!(only("probe.wasm", cap), [CacheOutcome::Hit]);
    assert_eq!(only("calculator.wasm", cap), [CacheOutcome::Stored]);
    assert_eq!(
        only("probe.wasm", cap),
        [CacheOutcome::Hit],
        "the recently used entry was evicted"
    );
    assert_eq!(
        only("spinner.wasm", cap),
        [CacheOutcome::Stored],
        "the least recently used entry was kept"
    );
    assert!(size(&entries(&scratch.dir)) <= cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_planted_without_the_hosts_key_are_recompiled_never_loaded() {
    // Entries made under another key: well-formed, right names, valid for
    // this engine — what anyone who can write the directory but has not
    // got the key could plant.
    let elsewhere = Scratch::new();
    Toolset::load(cached(&elsewhere.dir)).unwrap();
    let scratch = Scratch::new();
    Toolset::load(cached(&scratch.dir)).unwrap();
    for planted in entries(&elsewhere.dir) {
        std::fs::copy(&planted, scratch.dir.join(planted.file_name().unwrap())).unwrap();
        // With its record, which vouches for it under the other key.
        let record = planted.with_extension("mac");
        std::fs::copy(&record, scratch.dir.join(record.file_name().unwrap())).unwrap();
    }
    let toolset = Toolset::load(cached(&scratch.dir)).unwrap();
    assert_all_replaced(&toolset, "authentication failed");
    works(&toolset).await;
    // An entry renamed to another component's name does not pass either.
    let names = entries(&scratch.dir);
    let probe = names
        .iter()
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    for name in &names {
        if name != probe {
            std::fs::copy(probe, name).unwrap();
        }
    }
    let again = Toolset::load(cached(&scratch.dir)).unwrap();
    let replaced = outcomes(&again)
        .iter()
        .filter(|outcome| matches!(outcome, CacheOutcome::Replaced(_)))
        .count();
    assert_eq!(replaced, names.len() - 1, "{:?}", outcomes(&again));
}

#[test]
fn the_cache_directory_and_key_are_private_to_this_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scratch = Scratch::new();
    let dir = scratch.dir.join("cache");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    Toolset::load(cached(&dir)).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "a world-writable cache was trusted");
    assert_eq!(mode(&dir.join("key")), 0o600);

    // A directory someone else owns is not used at all (needs root to set up).
    if std::fs::metadata(&scratch.dir).unwrap().uid() == 0 {
        let foreign = scratch.dir.join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
        let toolset = Toolset::load(cached(&foreign)).unwrap();
        for outcome in outcomes(&toolset) {
            match outcome {
                CacheOutcome::NotStored(why) => assert!(
                    why.contains("belongs to user 65534") && why.contains("engine.cache_dir"),
                    "{why}"
                ),
                other => panic!("a foreign cache directory was used: {other:?}"),
            }
        }
        assert!(entries(&foreign).is_empty());
    }
}

#[test]
fn grants_that_contain_or_lie_inside_the_cache_are_refused() {
    let scratch = Scratch::new();
    let base = scratch.dir.canonicalize().unwrap();
    let cache = base.join("home/.cache/bgagents");
    std::fs::create_dir_all(cache.join("inner")).unwrap();
    for (granted, relation) in [
        (base.join("home"), "contains"),
        (cache.clone(), "contains"),
        (cache.join("inner"), "lies inside"),
    ] {
        let yaml = format!(
            "engine: {{cache_dir: '{}'}}\nagents:\n  nosy:\n    component: probe.wasm\n    \
             grants:\n      files: [{{host: '{}', guest: /home, mode: read-write}}]\n",
            cache.display(),
            granted.display()
        );
        let team = Team::parse(&yaml, Path::new("nosy.yaml"), plugin_dir()).unwrap();
        let error = Toolset::load(team)
            .err()
            .expect("a grant reaching the cache");
        let error = error.to_string();
        assert!(
            error.starts_with("agents.nosy.grants.files: ")
                && error.contains(&format!(
                    "{} {relation} the compiled-component cache {}",
                    granted.display(),
                    cache.display()
                ))
                && error.contains("engine.cache_dir"),
            "{error}"
        );
    }
    // A sibling directory is fine.
    let sibling = base.join("home/data");
    std::fs::create_dir_all(&sibling).unwrap();
    let yaml = format!(
        "engine: {{cache_dir: '{}'}}\nagents:\n  fine:\n    component: probe.wasm\n    \
         grants:\n      files: [{{host: '{}', guest: /data}}]\n",
        cache.display(),
        sibling.display()
    );
    let team = Team::parse(&yaml, Path::new("fine.yaml"), plugin_dir()).unwrap();
    Toolset::load(team).unwrap();
}

/// `bgagents check` on `team` from `cwd`, with only the cache-related
/// variables of the environment as given.
fn check_with_env(team: &Path, cwd: &Path, vars: &[(&str, &Path)]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"));
    command.arg("check").arg(team).current_dir(cwd);
    for name in ["BGAGENTS_CACHE_DIR", "XDG_CACHE_HOME", "HOME"] {
        command.env_remove(name);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn a_relative_cache_directory_that_does_not_exist_yet_is_still_kept_from_grants() {
    let scratch = Scratch::new();
    let base = scratch.dir.canonicalize().unwrap();
    // The agent may write anywhere in the team's directory.
    let team = scratch.team(
        "agents:\n  nosy:\n    component: '{plugins}/probe.wasm'\n    \
         grants:\n      files: [{host: ., guest: /team, mode: read-write}]\n",
    );
    let refused = |output: &str, cache: &Path| {
        output.contains(&format!(
            "agents.nosy.grants.files: {} contains the compiled-component cache {}",
            base.display(),
            cache.display()
        ))
    };
    // BGAGENTS_CACHE_DIR relative to the current directory (the team's).
    let (code, output) =
        check_with_env(&team, &base, &[("BGAGENTS_CACHE_DIR", ".bgcache".as_ref())]);
    assert_eq!(code, 2, "{output}");
    assert!(refused(&output, &base.join(".bgcache")), "{output}");
    assert!(!base.join(".bgcache").exists());
    // A relative XDG_CACHE_HOME is ignored (as the XDG specification says):
    // the cache falls back to $HOME/.cache/bgagents, here inside the grant.
    let elsewhere = Scratch::new();
    let (code, output) = check_with_env(
        &team,
        &elsewhere.dir,
        &[("XDG_CACHE_HOME", "cache".as_ref()), ("HOME", &base)],
    );
    assert_eq!(code, 2, "{output}");
    assert!(refused(&output, &base.join(".cache/bgagents")), "{output}");
    assert!(!elsewhere.dir.join("cache").exists());
    // And a relative cache directory outside the grant is used.
    let (code, output) = check_with_env(
        &team,
        &elsewhere.dir,
        &[("BGAGENTS_CACHE_DIR", "cache".as_ref())],
    );
    assert_eq!(code, 0, "{output}");
    assert!(
        elsewhere.dir.join("cache").join("key").is_file(),
        "{output}"
    );
}
