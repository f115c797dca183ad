//! How long wasmtime's two compilers take on the same components, with the
//! host's engine settings (fuel and epoch interruption): Cranelift, which
//! the host uses, against Winch, the baseline compiler an immediate first
//! run could use.

use std::time::Instant;
use wasmtime::{Config, Engine, Strategy, component::Component};

fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        for (label, strategy) in [("Cranelift", Strategy::Cranelift), ("Winch", Strategy::Winch)] {
            let mut config = Config::new();
            config
                .strategy(strategy)
                .wasm_component_model(true)
                .consume_fuel(true)
                .epoch_interruption(true);
            let engine = Engine::new(&config).unwrap_or_else(|error| panic!("{label}: {error:#}"));
            let started = Instant::now();
            match Component::new(&engine, &bytes) {
                Ok(_) => println!(
                    "{path}: {label} compiled it in {:.0} ms",
                    started.elapsed().as_secs_f64() * 1e3
                ),
                Err(error) => println!("{path}: {label} failed: {error:#}"),
            }
        }
    }
}
