//! Item 12: how fast a large guest starts — the Python and JavaScript
//! example guests that `bash plugins/polyglot/build.sh` builds into
//! `target/polyglot/`. For each, in one run:
//!
//! - the first run: the host loading the component with an empty cache
//!   (read, hash, compile, store), next to raw wasmtime compiling the same
//!   bytes with the same engine settings (`Component::new`), and what
//!   Cranelift's optimisation level and parallel compilation change (raw,
//!   `opt_level` none; one thread);
//! - the cached load: the host loading it again once its entry has settled
//!   (nothing read: the path's and the entry's records vouch for the
//!   files), next to raw wasmtime mapping the same artifact
//!   (`Component::deserialize_file`).

use bgagents::{Team, Toolset};
use bgagents_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, OptLevel};

const GUESTS: [&str; 2] = ["coordinator-py.wasm", "shouter-js.wasm"];

fn polyglot(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/polyglot")).join(name)
}

/// The engine settings the host compiles with (fuel, epoch), raw.
fn raw_engine(opt_level: OptLevel, parallel: bool) -> Engine {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(opt_level)
        .parallel_compilation(parallel);
    Engine::new(&config).unwrap()
}

fn host_load(cache: &Path, component: &Path) -> (Duration, String) {
    let yaml = format!(
        "engine: {{cache_dir: '{}', pooling: off}}\nagents:\n  guest: {{component: '{}'}}\n",
        cache.display(),
        component.display()
    );
    let team = Team::parse(&yaml, Path::new("startup.yaml"), Path::new(".")).unwrap();
    let toolset = Toolset::load(team).unwrap();
    let report = &toolset.load_report().components[0];
    (report.took, report.cache.to_string())
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

pub fn startup() {
    println!(
        "12. large guests: first run and cached load, against raw wasmtime on the same bytes:"
    );
    for name in GUESTS {
        let path = polyglot(name);
        let Ok(bytes) = std::fs::read(&path) else {
            println!("   {name}: missing; build it with bash plugins/polyglot/build.sh");
            continue;
        };
        let scratch = Scratch::new();
        let cache = scratch.dir.join("cache");
        // Copied so that its path record is fresh and its file settled.
        let component = scratch.dir.join(name);
        std::fs::copy(&path, &component).unwrap();

        let (first, outcome) = host_load(&cache, &component);
        let speed = raw_engine(OptLevel::Speed, true);
        let started = Instant::now();
        let compiled = Component::new(&speed, &bytes).unwrap();
        let raw_compile = started.elapsed();
        let started = Instant::now();
        Component::new(&raw_engine(OptLevel::None, true), &bytes).unwrap();
        let raw_unoptimised = started.elapsed();
        let started = Instant::now();
        Component::new(&raw_engine(OptLevel::Speed, false), &bytes).unwrap();
        let raw_serial = started.elapsed();

        // Records are relied on once the files have settled.
        std::thread::sleep(Duration::from_millis(2500));
        let (checked, _) = host_load(&cache, &component);
        let mut cached = Vec::new();
        for _ in 0..5 {
            cached.push(host_load(&cache, &component).0);
        }
        cached.sort();
        let artifact = scratch.dir.join("raw.cwasm");
        std::fs::write(&artifact, compiled.serialize().unwrap()).unwrap();
        let mut raw_mapped = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            // SAFETY: the artifact was serialised by this engine just now.
            unsafe { Component::deserialize_file(&speed, &artifact) }.unwrap();
            raw_mapped.push(started.elapsed());
        }
        raw_mapped.sort();
        let (cached, raw_mapped) = (cached[2], raw_mapped[2]);
        println!(
            "   {name} ({:.1} MB): first run {} ({outcome}) vs raw compile {} = {:.2}x; \
             raw with Cranelift opt_level none {} ({:.0} % of speed); on one thread {} \
             ({:.2}x)",
            bytes.len() as f64 / 1e6,
            ms(first),
            ms(raw_compile),
            first.as_secs_f64() / raw_compile.as_secs_f64(),
            ms(raw_unoptimised),
            100.0 * raw_unoptimised.as_secs_f64() / raw_compile.as_secs_f64(),
            ms(raw_serial),
            raw_serial.as_secs_f64() / raw_compile.as_secs_f64(),
        );
        println!(
            "   {name}: cached load {} (median of 5; the first after compiling, which \
             checks the entry, {}) vs raw deserialize_file {} = {:.2}x",
            ms(cached),
            ms(checked),
            ms(raw_mapped),
            cached.as_secs_f64() / raw_mapped.as_secs_f64(),
        );
    }
}
