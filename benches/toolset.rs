//! The bgagents benchmark: `cargo bench -p bgagents --bench toolset`.
//!
//! Prints, for this machine:
//! 1. dispatch latency, from `run` to the guest's first output (p50, p99),
//!    with warm instances and without, against raw wasmtime instantiating
//!    the same component and calling its `run`;
//! 2. throughput of trivial sub-agents;
//! 3. host RSS with up to 10,000 live sub-agents, each blocked in a host call;
//! 4. stop latency of a CPU-bound guest that never calls the host, for
//!    several fuel yield intervals, against what metering costs at each;
//! 5. metering overhead: the same guest with fuel and epoch interruption
//!    (the default), fuel only, epoch only, neither, and native;
//! 6. cold compile against cached load for each example component;
//! 7. stop and timeout latency of guests flooding host calls with huge
//!    arguments (`output.write` and `run` with 4 MiB, the per-call cap), and
//!    how fast floods over the cap (16/64/32 MiB) fail;
//! 8. host overhead per model call against the scripted model server: a raw
//!    HTTP/1.1 client on a kept-alive socket (the server's own time), the
//!    host's model client alone, and LLM agents (the bundled agent component)
//!    whose tasks make 11 model calls each;
//! 9. host RSS with 1,000 LLM agents blocked in a model call at once, and how
//!    fast they stop (the server sees every connection close);
//! 10. host cost per tool call of the toolsets that reach past the sandbox
//!     (filesystem `read_file`, `memory` `add_memory`, `shell` running `true`
//!     in bubblewrap), against `think`, through the bundled agent;
//! 11. what keeping tasks in a store costs (`bgagents serve`): dispatch
//!     latency and throughput with and without one, in one run;
//! 12. how fast the Python and JavaScript example guests start: first run
//!     and cached load, each against raw wasmtime on the same bytes
//!     ([`startup`]; needs `bash plugins/polyglot/build.sh`).
//!
//! Items 8 and 9 run the scripted model server in a child process (this
//! binary, re-run with `BGAGENTS_BENCH_MODEL_SERVER` set), so its CPU time
//! is not on the host's runtime and its memory is not in the host's RSS.
//!
//! `BENCH_QUICK=1` runs smaller sizes (a smoke run, not for numbers);
//! `BENCH_ONLY=cache|dispatch|throughput|stop|scale|flood|model|blocked|tools|persistence|startup`
//! runs one part;
//! `BENCH_RUNTIME=current_thread` runs everything on one thread.

use bgagents::EventKind;
use bgagents::{Caller, Store, TaskStatus, Team, Toolset};
use bgagents::{Message, ModelApi, ModelBinding, ModelClient, ToolDefinition};
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use bgagents_testkit::{Scratch, plugin_dir};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod startup;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn team(yaml: &str) -> Team {
    Team::parse(yaml, Path::new("bench.yaml"), plugin_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn load(yaml: &str) -> Toolset {
    Toolset::load(team(yaml)).unwrap_or_else(|e| panic!("{e}"))
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// CPU seconds (user and system) used so far by this process's threads
/// named `name`.
fn thread_cpu_secs(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    threads
        .flatten()
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the command's closing parenthesis: utime is the
            // 12th, stime the 13th.
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
            (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / ticks
        })
        .sum()
}

fn rss_mib() -> f64 {
    status_rss_mib("/proc/self/status")
}

/// VmRSS from a `/proc/PID/status` file, in MiB.
fn status_rss_mib(path: &str) -> f64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn until_running(toolset: &Toolset, caller: &Caller, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while toolset
        .view_background_agent(caller, id)
        .unwrap()
        .info
        .status
        != TaskStatus::Running
    {
        assert!(Instant::now() < deadline, "task never ran");
        tokio::task::yield_now().await;
    }
}

/// `run` → the guest's first output, `rounds` times after 200 to warm up;
/// with `settle`, `run` → the task's record on disk (what a client of
/// `bgagents serve` waits for before it is answered) → first output.
async fn dispatch_samples(toolset: &Toolset, rounds: usize, settle: bool) -> Vec<Duration> {
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let mut events = toolset.events().subscribe();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds + 200 {
        let started = Instant::now();
        let id = toolset
            .run_background_agent(caller, "probe", "print 1 x", None)
            .unwrap()
            .id;
        if settle {
            toolset.settled().await.unwrap();
        }
        loop {
            let event = events.recv().await.unwrap();
            if event.id == id && matches!(event.kind, EventKind::Output(_)) {
                break;
            }
        }
        // The first 200 warm up the allocator and caches.
        if round >= 200 {
            samples.push(started.elapsed());
        }
        bgagents_testkit::finished(toolset, caller, id.as_str()).await;
    }
    session.close().await;
    samples
}

const PROBE_TEAM: &str = "agents:\n  probe: {component: probe.wasm}\n";

async fn dispatch_latency() {
    let rounds = if quick() { 200 } else { 5000 };
    let raw = raw_instantiate_and_call(&plugin_dir().join("probe.wasm"), rounds).await;
    let raw_p50 = percentile(&mut raw.clone(), 0.5);
    for (label, engine) in [
        ("warm instances", "{}"),
        ("on demand (warm_instances: 0)", "{warm_instances: 0}"),
    ] {
        let toolset = load(&format!("engine: {engine}\n{PROBE_TEAM}"));
        let mut samples = dispatch_samples(&toolset, rounds, false).await;
        let p50 = percentile(&mut samples, 0.5);
        println!(
            "1. dispatch latency (run → guest's first output), {label}, {rounds} runs: p50 {} \
             ({:.2}× raw), p99 {}  [{}; {} tasks started warm]",
            micros(p50),
            p50.as_secs_f64() / raw_p50.as_secs_f64(),
            micros(percentile(&mut samples, 0.99)),
            toolset.load_report().allocator,
            toolset.warm_stats("probe").used,
        );
    }
    let mut raw = raw;
    println!(
        "   raw wasmtime, the same component instantiated and `run` called (a new Store \
         each time, no sandbox, no task), {rounds} runs: p50 {}, p99 {}",
        micros(raw_p50),
        micros(percentile(&mut raw, 0.99))
    );
}

/// What plain wasmtime takes to instantiate `component` in a new Store and
/// call its `run` (`echo x`, which calls no import), `rounds` times after
/// 200 to warm up: the floor on-demand dispatch is compared with.
async fn raw_instantiate_and_call(component: &Path, rounds: usize) -> Vec<Duration> {
    use wasmtime::component::{Component, Linker, ResourceTable, Val};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
    struct Raw {
        wasi: WasiCtx,
        table: ResourceTable,
    }
    impl WasiView for Raw {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }
    // The pooling allocator, as bgagents uses: on-demand allocation would
    // make the floor slower than it need be.
    let mut config = wasmtime::Config::new();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
        wasmtime::PoolingAllocationConfig::new(),
    ));
    let engine = wasmtime::Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, component).unwrap();
    let mut linker = Linker::<Raw>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let text = |text: &str| Val::String(text.into());
    let request = Val::Record(vec![
        ("task-id".into(), text("t1")),
        ("agent".into(), text("probe")),
        ("instruction".into(), text("")),
        ("task".into(), text("echo x")),
        ("expected-output".into(), Val::Option(None)),
        ("sub-agents".into(), Val::List(Vec::new())),
        ("description".into(), text("")),
        ("date".into(), Val::Option(None)),
        ("max-iterations".into(), Val::U32(0)),
    ]);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds + 200 {
        let started = Instant::now();
        let mut store = wasmtime::Store::new(
            &engine,
            Raw {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let agent = instance
            .get_export_index(&mut store, None, "bgagents:agents/agent@0.2.0")
            .unwrap();
        let run = instance
            .get_export_index(&mut store, Some(&agent), "run")
            .unwrap();
        let run = instance.get_func(&mut store, run).unwrap();
        let mut result = [Val::Bool(false)];
        run.call_async(&mut store, std::slice::from_ref(&request), &mut result)
            .await
            .unwrap();
        if round >= 200 {
            samples.push(started.elapsed());
        }
        assert!(matches!(result[0], Val::Result(Ok(_))), "{:?}", result[0]);
    }
    samples
}

fn throughput_team(count: usize) -> Team {
    team(&format!(
        "limits: {{max_running: 20, max_retained: {}}}\nagents:\n  probe: {{component: probe.wasm}}\n",
        count + 1
    ))
}

/// Runs `count` trivial sub-agents 20 at a time; tasks per second, until
/// every result is known (and, with a store, on disk).
async fn throughput_of(toolset: &Toolset, count: usize) -> f64 {
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let started = Instant::now();
    let ids: Vec<String> = (0..count)
        .map(|_| {
            toolset
                .run_background_agent(caller, "probe", "echo x", None)
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    for chunk in ids.chunks(100) {
        let report = toolset
            .wait_background_agents(caller, chunk, 600)
            .await
            .unwrap();
        assert!(report.all_done);
    }
    toolset.settled().await.unwrap();
    let elapsed = started.elapsed();
    session.close().await;
    count as f64 / elapsed.as_secs_f64()
}

async fn throughput() {
    let count = if quick() { 2000 } else { 20_000 };
    let toolset = Toolset::load(throughput_team(count)).unwrap_or_else(|e| panic!("{e}"));
    let rate = throughput_of(&toolset, count).await;
    println!(
        "2. throughput: {count} trivial sub-agents in {:.2} s = {rate:.0} tasks/s  [{}]",
        count as f64 / rate,
        toolset.load_report().allocator
    );
}

/// Item 11: dispatch latency and throughput without a store, with one (as
/// `bgagents serve` keeps), and with one as a client of the daemon sees
/// it (answered once the task is on disk), in one run.
async fn persistence_cost() {
    let rounds = if quick() { 200 } else { 5000 };
    let count = if quick() { 2000 } else { 20_000 };
    let scratch = Scratch::new();
    let with_store = |team: Team, name: &str| {
        let store = Store::open(scratch.dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        Toolset::load_with_store(team, store, |_| {}).unwrap_or_else(|e| panic!("{e}"))
    };
    let mut rows = Vec::new();
    for (label, toolset, settle) in [
        ("no store", load(PROBE_TEAM), false),
        ("store", with_store(team(PROBE_TEAM), "dispatch"), false),
        (
            "store, answered once on disk",
            with_store(team(PROBE_TEAM), "settled"),
            true,
        ),
    ] {
        let mut samples = dispatch_samples(&toolset, rounds, settle).await;
        rows.push((
            label,
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99),
        ));
    }
    let plain = Toolset::load(throughput_team(count)).unwrap_or_else(|e| panic!("{e}"));
    let off = throughput_of(&plain, count).await;
    drop(plain);
    let stored = with_store(throughput_team(count), "throughput");
    let writer_before = thread_cpu_secs("task-store");
    let on = throughput_of(&stored, count).await;
    let writer_cpu = thread_cpu_secs("task-store") - writer_before;
    let (_, base50, base99) = rows[0];
    for (label, p50, p99) in &rows {
        println!(
            "11. dispatch latency, {label}, {rounds} runs: p50 {} ({:.2}×), p99 {} ({:.2}×)",
            micros(*p50),
            p50.as_secs_f64() / base50.as_secs_f64(),
            micros(*p99),
            p99.as_secs_f64() / base99.as_secs_f64(),
        );
    }
    println!(
        "11. throughput, {count} trivial sub-agents: no store {off:.0} tasks/s, store {on:.0} tasks/s ({:.2}× slower); the store's writer thread used {:.2} s of CPU ({:.1} µs a task)",
        off / on,
        writer_cpu,
        writer_cpu * 1e6 / count as f64
    );
}

async fn scale() {
    let steps: &[usize] = if quick() {
        &[100, 500]
    } else {
        &[1000, 2500, 5000, 10_000]
    };
    let most = *steps.last().unwrap();
    let toolset = load(&format!(
        "limits: {{max_running: {most}, max_retained: {most}}}\nengine: {{pool_size: {most}}}\n\
         agents:\n  probe: {{component: probe.wasm, limits: {{timeout: 1h}}}}\n"
    ));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let baseline = rss_mib();
    let mut started = 0;
    let mut last = String::new();
    print!(
        "3. live sub-agents blocked in a host call (sleep), host RSS: baseline {baseline:.0} MiB"
    );
    for &step in steps {
        while started < step {
            last = toolset
                .run_background_agent(caller, "probe", "sleep 3600000", None)
                .unwrap()
                .id
                .to_string();
            started += 1;
        }
        until_running(&toolset, caller, &last).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        while toolset
            .list_background_agents(caller)
            .iter()
            .filter(|info| info.status == TaskStatus::Running)
            .count()
            < step
        {
            assert!(Instant::now() < deadline, "not every task ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        print!("; {step} live: {:.0} MiB", rss_mib());
    }
    let stopping = Instant::now();
    session.close().await;
    println!(
        "; all {most} stopped in {}  [{}]",
        millis(stopping.elapsed()),
        toolset.load_report().allocator
    );
}

/// Runs the spinner for `rounds` and returns the wall time of the task.
async fn spin_time(toolset: &Toolset, rounds: u64) -> Duration {
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let id = toolset
            .run_background_agent(caller, "spinner", &format!("{rounds} rounds"), None)
            .unwrap()
            .id;
        let view = bgagents_testkit::finished(toolset, caller, id.as_str()).await;
        assert_eq!(view.info.status, TaskStatus::Completed, "{:?}", view.error);
        best = best.min(started.elapsed());
    }
    best
}

const SPINNER: &str =
    "agents:\n  spinner: {component: spinner.wasm, limits: {fuel: 1_000_000_000_000_000}}\n";

async fn stop_latency_and_metering() {
    let rounds = if quick() { 2_000_000 } else { 50_000_000 };
    let stops = if quick() { 20 } else { 200 };
    let unmetered = Toolset::load_unmetered(team(SPINNER)).unwrap();
    let unmetered_time = spin_time(&unmetered, rounds).await;
    println!(
        "4. stop latency of a guest that never calls the host, and metering cost \
         ({rounds} spinner rounds; unmetered {}):",
        millis(unmetered_time)
    );
    for interval in [10_000u64, 50_000, 200_000, 1_000_000] {
        let toolset = load(&format!(
            "engine: {{fuel_yield_interval: {interval}}}\n{SPINNER}"
        ));
        let session = toolset.open_session(None).unwrap();
        let caller = session.caller();
        let mut samples = Vec::with_capacity(stops);
        for _ in 0..stops {
            let id = toolset
                .run_background_agent(caller, "spinner", "forever", None)
                .unwrap()
                .id;
            until_running(&toolset, caller, id.as_str()).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            let started = Instant::now();
            toolset
                .stop_background_agent(caller, id.as_str())
                .await
                .unwrap();
            samples.push(started.elapsed());
        }
        let metered = spin_time(&toolset, rounds).await;
        println!(
            "   yield every {interval:>9} fuel: stop p50 {}, p99 {}; metered run {} ({:+.1} % over unmetered)",
            micros(percentile(&mut samples, 0.5)),
            micros(percentile(&mut samples, 0.99)),
            millis(metered),
            (metered.as_secs_f64() / unmetered_time.as_secs_f64() - 1.0) * 100.0
        );
    }
    let metered = spin_time(&load(SPINNER), rounds).await;
    let fuel_only = spin_time(
        &Toolset::load_with(team(SPINNER), true, false).unwrap(),
        rounds,
    )
    .await;
    let epoch_only = spin_time(
        &Toolset::load_with(team(SPINNER), false, true).unwrap(),
        rounds,
    )
    .await;
    let native = {
        let started = Instant::now();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..rounds {
            state = std::hint::black_box(native_mix(state));
        }
        std::hint::black_box(state);
        started.elapsed()
    };
    println!(
        "5. metering overhead ({rounds} rounds): metered {} vs unmetered {} = {:+.1} %; native {} \
         (wasm unmetered is {:.2}× native)",
        millis(metered),
        millis(unmetered_time),
        (metered.as_secs_f64() / unmetered_time.as_secs_f64() - 1.0) * 100.0,
        millis(native),
        unmetered_time.as_secs_f64() / native.as_secs_f64()
    );
    let over = |time: Duration| (time.as_secs_f64() / unmetered_time.as_secs_f64() - 1.0) * 100.0;
    println!(
        "   fuel only {} ({:+.1} %), epoch only {} ({:+.1} %), both (default) {} ({:+.1} %)",
        millis(fuel_only),
        over(fuel_only),
        millis(epoch_only),
        over(epoch_only),
        millis(metered),
        over(metered)
    );
}

/// Floods under the per-call cap (every call is accepted).
const FLOODS: &[&str] = &["write-flood 4", "task-flood probe 3"];
/// Floods over it (the first call fails the task).
const OVER_CAP: &[&str] = &["write-flood 16", "write-flood 64", "task-flood probe 32"];

/// How fast a stop and a timeout end guests that flood host calls.
async fn flood_latency() {
    let rounds = if quick() { 3 } else { 20 };
    let toolset = load(
        "agents:\n  flooder: {component: probe.wasm, limits: {output: 64KiB}}\n  \
         hasty: {component: probe.wasm, limits: {timeout: 1s, output: 64KiB}}\n",
    );
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    println!("7. stop and timeout latency under host-call floods ({rounds} of each):");
    for flood in FLOODS {
        let mut stops = Vec::new();
        let mut overshoots = Vec::new();
        for _ in 0..rounds {
            let task = format!("print 1 flooding && {flood}");
            let id = toolset
                .run_background_agent(caller, "flooder", &task, None)
                .unwrap()
                .id;
            while toolset
                .view_background_agent(caller, id.as_str())
                .unwrap()
                .output
                .text
                .is_empty()
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            toolset
                .stop_background_agent(caller, id.as_str())
                .await
                .unwrap();
            stops.push(started.elapsed());

            let id = toolset
                .run_background_agent(caller, "hasty", flood, None)
                .unwrap()
                .id;
            let view = bgagents_testkit::finished(&toolset, caller, id.as_str()).await;
            assert_eq!(view.error.as_deref(), Some("timed out after 1s"));
            overshoots.push(view.info.runtime.saturating_sub(Duration::from_secs(1)));
        }
        println!(
            "   {flood:<20} stop p50 {}, max {}; past the 1 s timeout p50 {}, max {}",
            millis(percentile(&mut stops, 0.5)),
            millis(percentile(&mut stops, 1.0)),
            millis(percentile(&mut overshoots, 0.5)),
            millis(percentile(&mut overshoots, 1.0)),
        );
    }
    for flood in OVER_CAP {
        let mut ends = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let id = toolset
                .run_background_agent(caller, "flooder", flood, None)
                .unwrap()
                .id;
            let view = bgagents_testkit::finished(&toolset, caller, id.as_str()).await;
            assert_eq!(view.info.status, TaskStatus::Failed);
            ends.push(started.elapsed());
        }
        println!(
            "   {flood:<20} over the per-call cap: failed after p50 {}, max {}",
            millis(percentile(&mut ends, 0.5)),
            millis(percentile(&mut ends, 1.0)),
        );
    }
}

/// The spinner plugin's round, compiled natively as the baseline.
fn native_mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn compile_versus_cache() {
    let scratch = Scratch::new();
    let yaml = format!(
        "engine: {{cache_dir: {}}}\nagents:\n{}",
        scratch.dir.display(),
        ["coordinator", "wordstats", "calculator", "spinner", "probe"]
            .iter()
            .map(|name| format!("  {name}: {{component: {name}.wasm}}\n"))
            .collect::<String>()
    );
    let cold = load(&yaml);
    // An entry's record vouches for it once the files have settled; the
    // first load after that checks the entry once more, later ones map it
    // unread.
    std::thread::sleep(Duration::from_millis(2500));
    let checked = load(&yaml);
    let cached = load(&yaml);
    println!("6. cold compile vs cached load (unchanged files: nothing read; map, link):");
    let reports = (cold.load_report().components.iter())
        .zip(&checked.load_report().components)
        .zip(&cached.load_report().components);
    for ((cold, checked), cached) in reports {
        let size = std::fs::metadata(&cold.path).map(|m| m.len()).unwrap_or(0);
        println!(
            "   {:<16} {:>4} KiB: cold {} ({}), cached {} ({}); read and checked once more {}",
            cold.path.file_name().unwrap().to_string_lossy(),
            size / 1024,
            millis(cold.took),
            cold.cache,
            millis(cached.took),
            cached.cache,
            millis(checked.took),
        );
    }
}

/// Set in the child process that serves the scripted model (items 8 and 9).
const MODEL_SERVER_VAR: &str = "BGAGENTS_BENCH_MODEL_SERVER";
/// The final answer every model call ends with (streamed a word at a time).
const ANSWER: &str = "Six times seven is forty-two.";
/// Tool calls (`think`) an LLM agent's task makes before its answer (item 8).
const AGENT_TOOL_CALLS: usize = 10;
/// How long the server holds a `blocked` model's answer (item 9).
const BLOCKED_DELAY: Duration = Duration::from_secs(3600);

/// The scripted turn for a request, by the body's `model`: `agent` calls
/// `think` until the conversation has [`AGENT_TOOL_CALLS`] tool results,
/// then answers; `blocked` answers after [`BLOCKED_DELAY`]; any other
/// model answers at once.
fn scripted_turn(body: &Value) -> Turn {
    let tool_results = body["messages"].as_array().map_or(0, |messages| {
        messages
            .iter()
            .filter(|message| message["role"] == "tool")
            .count()
    });
    let model = body["model"].as_str().unwrap_or_default();
    if let Some(tool) = model.strip_prefix("tool-")
        && tool_results < AGENT_TOOL_CALLS
    {
        let arguments = match tool {
            "read_file" => r#"{"path":"notes.md"}"#,
            "add_memory" => r#"{"memory":"x"}"#,
            "shell" => r#"{"cmd":"true"}"#,
            _ => r#"{"thought":"x"}"#,
        };
        return Turn::tool_calls([(tool, arguments)]);
    }
    match body["model"].as_str() {
        Some("agent") if tool_results < AGENT_TOOL_CALLS => {
            Turn::tool_calls([("think", r#"{"thought":"x"}"#)])
        }
        Some("blocked") => Turn::text(ANSWER).delay(BLOCKED_DELAY),
        _ => Turn::text(ANSWER),
    }
}

/// The child process: serves the scripted model on 127.0.0.1, prints its
/// port, then answers one line per command read from stdin: `count`
/// (requests received and answers the client closed) and `last N` (the
/// bodies of the last N requests, as one JSON array). Exits at EOF.
fn serve_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let turns = std::iter::repeat_n(Turn::from_request(scripted_turn), 200_000);
    let server = runtime.block_on(ModelServer::start(Script::new(turns)));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.addr().port()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let reply = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("count", _) => format!("{} {}", server.requests().len(), server.aborted()),
            ("last", n) => {
                let requests = server.requests();
                let n: usize = n.parse().unwrap();
                let bodies: Vec<&Value> = requests[requests.len().saturating_sub(n)..]
                    .iter()
                    .map(|request| &request.body)
                    .collect();
                serde_json::to_string(&bodies).unwrap()
            }
            _ => panic!("unknown command {line:?}"),
        };
        writeln!(out, "{reply}").unwrap();
        out.flush().unwrap();
    }
}

/// The scripted model server, in a child process.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(MODEL_SERVER_VAR, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        stdout.read_line(&mut port).unwrap();
        ServerProcess {
            child,
            stdin,
            stdout,
            port: port.trim().parse().unwrap(),
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// One command, one line back (a short, non-blocking exchange).
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    /// Requests received, and answers cut short by the client closing.
    fn count(&mut self) -> (usize, usize) {
        let reply = self.ask("count");
        let (received, aborted) = reply.split_once(' ').unwrap();
        (received.parse().unwrap(), aborted.parse().unwrap())
    }

    /// The bodies of the last `n` requests.
    fn last(&mut self, n: usize) -> Vec<Value> {
        serde_json::from_str(&self.ask(&format!("last {n}"))).unwrap()
    }

    fn rss_mib(&self) -> f64 {
        status_rss_mib(&format!("/proc/{}/status", self.child.id()))
    }

    /// Polls `count` until `done` holds; panics after `timeout`.
    async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn((usize, usize)) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.count();
            if done(count) {
                return;
            }
            assert!(Instant::now() < deadline, "model server: {what}: {count:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // EOF on its stdin ends the child.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 client on one kept-alive socket: it sends a body as is
/// and reads until the chunked stream's last chunk, parsing nothing. Its
/// time per call is the server's own time plus loopback.
struct RawClient {
    socket: tokio::net::TcpStream,
    port: u16,
    buffer: Vec<u8>,
}

impl RawClient {
    async fn connect(port: u16) -> RawClient {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        socket.set_nodelay(true).unwrap();
        RawClient {
            socket,
            port,
            buffer: Vec::with_capacity(64 << 10),
        }
    }

    /// Posts `body` to `/v1/chat/completions` and reads the streamed answer.
    async fn post(&mut self, body: &[u8]) {
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\
             content-type: application/json\r\naccept: text/event-stream, application/json\r\n\
             content-length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.socket.write_all(&request).await.unwrap();
        self.buffer.clear();
        let mut chunk = [0u8; 16 << 10];
        while !self.buffer.ends_with(b"\r\n0\r\n\r\n") {
            let read = self.socket.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the model server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        assert!(
            self.buffer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&self.buffer)
        );
    }
}

/// Times `rounds` replays of `bodies` (one after another) by the raw client,
/// after `warmup` untimed ones, on a runtime worker.
async fn replay(
    mut raw: RawClient,
    bodies: Vec<Vec<u8>>,
    rounds: usize,
    warmup: usize,
) -> (RawClient, Vec<Duration>) {
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(rounds);
        for round in 0..rounds + warmup {
            let started = Instant::now();
            for body in &bodies {
                raw.post(body).await;
            }
            if round >= warmup {
                samples.push(started.elapsed());
            }
        }
        (raw, samples)
    })
    .await
    .unwrap()
}

fn model_yaml(base_url: &str, model: &str, limits: &str, agent_extra: &str) -> String {
    format!(
        "{limits}models:\n  m: {{provider: ollama, model: {model}, base_url: '{base_url}'}}\n\
         agents:\n  llm:\n    model: m\n    instruction: Answer.\n{agent_extra}"
    )
}

/// p50 and p99 of `samples`, formatted.
fn spread(samples: &mut [Duration]) -> String {
    format!(
        "p50 {}, p99 {}",
        micros(percentile(samples, 0.5)),
        micros(percentile(samples, 0.99))
    )
}

fn signed_micros(seconds: f64) -> String {
    format!("{:+.1} µs", seconds * 1e6)
}

/// Runs one task of the agent `llm` and waits for it to finish: how long
/// that took (run → finished) and the task's view.
async fn run_llm_task(
    toolset: &Toolset,
    caller: &Caller,
    events: &mut tokio::sync::broadcast::Receiver<bgagents::TaskEvent>,
    task: &str,
) -> (Duration, bgagents::TaskView) {
    let started = Instant::now();
    let id = toolset
        .run_background_agent(caller, "llm", task, None)
        .unwrap()
        .id;
    loop {
        let event = events.recv().await.unwrap();
        if event.id == id && matches!(event.kind, EventKind::Finished(_)) {
            break;
        }
    }
    let took = started.elapsed();
    (
        took,
        toolset.view_background_agent(caller, id.as_str()).unwrap(),
    )
}

/// Item 8: what the host adds to each model call, beyond the server's time.
async fn model_call_overhead() {
    let calls = if quick() { 200 } else { 2000 };
    let tasks = if quick() { 20 } else { 200 };
    let warmup = calls / 10;
    let mut server = ServerProcess::start();
    println!(
        "8. host overhead per model call (scripted server in a child process; OpenAI chat \
         completions, streamed; answer \"{ANSWER}\"):"
    );

    // The host's model client alone: build the request, stream, parse.
    let client = ModelClient::new(&ModelBinding {
        reference: "bench".into(),
        provider: "ollama".into(),
        model: "direct".into(),
        api: ModelApi::OpenAiChat,
        base_url: server.base_url(),
        key_var: None,
        max_tokens: None,
        temperature: None,
        top_p: None,
        parallel_tool_calls: None,
    })
    .unwrap();
    let messages = [
        Message::system("Answer."),
        Message::user("What is six times seven?"),
    ];
    let tools = [ToolDefinition {
        name: "think".into(),
        description: "Think out loud.".into(),
        parameters:
            r#"{"type":"object","properties":{"thought":{"type":"string"}},"required":["thought"]}"#
                .into(),
    }];
    // Both loops run on a runtime worker, as a task's model call does (a
    // future polled by `block_on` on the main thread would add a thread hop
    // per wake-up).
    let mut client_samples = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(calls);
        for round in 0..calls + warmup {
            let mut text = String::new();
            let started = Instant::now();
            let completion = client
                .complete(
                    &messages,
                    &tools,
                    tokio::time::Instant::now() + Duration::from_secs(60),
                    &mut |delta: &str| text.push_str(delta),
                )
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(text, ANSWER, "{completion:?}");
            if round >= warmup {
                samples.push(took);
            }
        }
        samples
    })
    .await
    .unwrap();
    let direct_body = serde_json::to_vec(&server.last(1)[0]).unwrap();
    let raw = RawClient::connect(server.port).await;
    let (raw, mut raw_samples) = replay(raw, vec![direct_body], calls, warmup).await;
    let raw_p50 = percentile(&mut raw_samples, 0.5);
    let client_p50 = percentile(&mut client_samples, 0.5);
    println!(
        "   raw HTTP client (server + loopback), {calls} calls: {}",
        spread(&mut raw_samples)
    );
    println!(
        "   model client, same request, {calls} calls: {}; overhead p50 {}",
        spread(&mut client_samples),
        signed_micros(client_p50.as_secs_f64() - raw_p50.as_secs_f64())
    );

    // Through the guest: tasks whose agent makes AGENT_TOOL_CALLS + 1 calls.
    let per_task = AGENT_TOOL_CALLS + 1;
    let toolset = load(&model_yaml(
        &server.base_url(),
        "agent",
        &format!("limits: {{max_retained: {}}}\n", tasks + warmup + 1),
        "    toolsets: [{type: think}]\n",
    ));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    let mut events = toolset.events().subscribe();
    let mut task_samples = Vec::with_capacity(tasks);
    let task_warmup = tasks / 10;
    for round in 0..tasks + task_warmup {
        let before = server.count().0;
        let (took, view) =
            run_llm_task(&toolset, caller, &mut events, "What is six times seven?").await;
        assert_eq!(view.info.status, TaskStatus::Completed, "{:?}", view.error);
        assert!(
            view.result.as_deref().unwrap_or_default().contains(ANSWER)
                || view.output.text.contains(ANSWER),
            "{view:?}"
        );
        assert_eq!(server.count().0 - before, per_task, "model calls per task");
        if round >= task_warmup {
            task_samples.push(took);
        }
    }
    session.close().await;
    // The same requests, replayed by the raw client: the server's share.
    let bodies: Vec<Vec<u8>> = server
        .last(per_task)
        .iter()
        .map(|body| serde_json::to_vec(body).unwrap())
        .collect();
    let (_, mut replay_samples) = replay(raw, bodies, tasks, task_warmup).await;
    let task_p50 = percentile(&mut task_samples, 0.5).as_secs_f64();
    let task_p99 = percentile(&mut task_samples, 0.99).as_secs_f64();
    let replay_p50 = percentile(&mut replay_samples, 0.5).as_secs_f64();
    let replay_p99 = percentile(&mut replay_samples, 0.99).as_secs_f64();
    println!(
        "   LLM agent, {tasks} tasks of {per_task} model calls ({AGENT_TOOL_CALLS} think, 1 \
         answer), run → finished: {}; the raw client replaying the same {per_task} requests: {}",
        spread(&mut task_samples),
        spread(&mut replay_samples)
    );
    println!(
        "   host overhead per model call through the guest (task − replay) / {per_task}: \
         p50 {}, p99 {} (dispatch, instantiation and the final result included)",
        signed_micros((task_p50 - replay_p50) / per_task as f64),
        signed_micros((task_p99 - replay_p99) / per_task as f64)
    );
}

/// Item 10: what one call of each confined tool costs the host, beyond a
/// `think` call: tasks of [`AGENT_TOOL_CALLS`] calls of one tool and an
/// answer, run → finished, p50 against the same with `think`.
async fn tool_call_cost() {
    let tasks = if quick() { 10 } else { 100 };
    let warmup = tasks / 10;
    let server = ServerProcess::start();
    let scratch = Scratch::new();
    scratch.write("work/notes.md", "Six times seven is forty-two.\n");
    let toolsets = "    toolsets: [{type: think}, {type: filesystem}, {type: shell}, \
                    {type: memory, path: memory.db}]\n    grants:\n      files: \
                    [{host: work, guest: /work, mode: read-write}]\n";
    println!(
        "10. host cost per tool call, through the bundled agent ({AGENT_TOOL_CALLS} calls of one \
         tool per task, then the answer; {tasks} tasks each):"
    );
    let mut think_p50 = None;
    for tool in ["think", "read_file", "add_memory", "shell"] {
        let yaml = model_yaml(
            &server.base_url(),
            &format!("tool-{tool}"),
            &format!("limits: {{max_retained: {}}}\n", tasks + warmup + 1),
            toolsets,
        );
        let team = Team::parse(&yaml, Path::new("bench.yaml"), &scratch.dir).unwrap();
        let toolset = Toolset::load(team).unwrap();
        let session = toolset.open_session(None).unwrap();
        let caller = session.caller();
        let mut events = toolset.events().subscribe();
        let mut samples = Vec::with_capacity(tasks);
        for round in 0..tasks + warmup {
            let (took, view) = run_llm_task(&toolset, caller, &mut events, "Go.").await;
            assert_eq!(
                view.info.status,
                TaskStatus::Completed,
                "{tool}: {:?}",
                view.error
            );
            if round >= warmup {
                samples.push(took);
            }
        }
        session.close().await;
        let p50 = percentile(&mut samples, 0.5).as_secs_f64();
        let per_call = match think_p50 {
            None => {
                think_p50 = Some(p50);
                String::from("the baseline")
            }
            Some(base) => format!(
                "{} per call more than think",
                signed_micros((p50 - base) / AGENT_TOOL_CALLS as f64)
            ),
        };
        println!("   {tool}: task {}; {per_call}", spread(&mut samples));
    }
}

/// Item 9: 1,000 LLM agents, each blocked in a model call, at once.
async fn blocked_in_model_calls() {
    let count = if quick() { 100 } else { 1000 };
    let mut server = ServerProcess::start();
    let toolset = load(&model_yaml(
        &server.base_url(),
        "blocked",
        &format!(
            "limits: {{max_running: {count}, max_retained: {}}}\nengine: {{pool_size: {count}}}\n",
            2 * count
        ),
        "    limits: {timeout: 2h, model_timeout: 2h}\n",
    ));
    let session = toolset.open_session(None).unwrap();
    let caller = session.caller();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_mib();
    let started = Instant::now();
    for _ in 0..count {
        toolset
            .run_background_agent(caller, "llm", "What is six times seven?", None)
            .unwrap();
    }
    server
        .until(
            Duration::from_secs(300),
            "every agent's model call",
            |(n, _)| n >= count,
        )
        .await;
    let all_waiting = started.elapsed();
    let running = toolset
        .list_background_agents(caller)
        .iter()
        .filter(|info| info.status == TaskStatus::Running)
        .count();
    assert_eq!(running, count, "running tasks");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = rss_mib();
    let server_rss = server.rss_mib();
    let stopping = Instant::now();
    session.close().await;
    let stopped = stopping.elapsed();
    server
        .until(
            Duration::from_secs(60),
            "every connection closed",
            |(_, aborted)| aborted >= count,
        )
        .await;
    let closed = stopping.elapsed();
    let (received, aborted) = server.count();
    println!(
        "9. {count} LLM agents blocked in a model call at once: all {count} in the server after \
         {}; host RSS baseline {baseline:.0} MiB, {count} blocked {live:.0} MiB \
         ({:.0} KiB each); the server process {server_rss:.0} MiB; session closed in {}, \
         the server saw {aborted} of {received} connections closed after {}  [{}]",
        millis(all_waiting),
        (live - baseline) * 1024.0 / count as f64,
        millis(stopped),
        millis(closed),
        toolset.load_report().allocator
    );
}

fn main() {
    if std::env::var_os(MODEL_SERVER_VAR).is_some() {
        serve_model();
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    // `BENCH_RUNTIME=current_thread` measures without thread hops.
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        _ => tokio::runtime::Runtime::new().unwrap(),
    };
    println!(
        "bgagents benchmark — {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick() { "quick sizes" } else { "full sizes" }
    );
    // `BENCH_ONLY=dispatch` (or throughput, stop, scale, cache, flood, model,
    // blocked) runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only == part;
    if wanted("cache") {
        compile_versus_cache();
    }
    if wanted("startup") {
        startup::startup();
    }
    runtime.block_on(async {
        if wanted("dispatch") {
            dispatch_latency().await;
        }
        if wanted("throughput") {
            throughput().await;
        }
        if wanted("stop") {
            stop_latency_and_metering().await;
        }
        if wanted("scale") {
            scale().await;
        }
        if wanted("flood") {
            flood_latency().await;
        }
        if wanted("model") {
            model_call_overhead().await;
        }
        if wanted("blocked") {
            blocked_in_model_calls().await;
        }
        if wanted("tools") {
            tool_call_cost().await;
        }
        if wanted("persistence") {
            persistence_cost().await;
        }
    });
}
