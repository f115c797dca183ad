//! The one wasmtime Engine every task shares: async, fuel-metered.

use wasmtime::Result;
use wasmtime::{Config, Engine};

/// Builds the shared engine. Fuel metering is what lets a stop or timeout
/// take effect inside a guest loop that never calls the host.
pub fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true).consume_fuel(true);
    Engine::new(&config)
}
