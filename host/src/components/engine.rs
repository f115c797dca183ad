//! The one wasmtime Engine every task shares: async, fuel-metered, and —
//! where the machine allows — with a pooling instance allocator so that a
//! task's instantiation reuses pre-reserved memory instead of mapping anew.

use crate::config::Pooling;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the engine is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    pub pooling: Pooling,
    /// Tasks whose instances can be live at once in the pool.
    pub pool_size: u32,
    /// Fuel metering; off only to measure its cost in benchmarks.
    pub fuel_metering: bool,
}

/// Which allocator the engine ended up with, for `check` and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocator {
    Pooling { slots: u32 },
    OnDemand { fallback_reason: Option<String> },
}

impl std::fmt::Display for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Allocator::Pooling { slots } => write!(f, "pooling ({slots} task slots)"),
            Allocator::OnDemand {
                fallback_reason: None,
            } => write!(f, "on-demand"),
            Allocator::OnDemand {
                fallback_reason: Some(reason),
            } => write!(f, "on-demand (the pool could not be reserved: {reason})"),
        }
    }
}

/// Builds the shared engine. Fuel metering is what lets a stop or timeout
/// take effect inside a guest loop that never calls the host.
pub fn new_engine(options: &EngineOptions) -> Result<(Engine, Allocator), String> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(options.fuel_metering);
    if options.pooling != Pooling::Off {
        let mut pooled = config.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(options.pool_size)));
        match Engine::new(&pooled) {
            Ok(engine) => {
                let slots = options.pool_size;
                return Ok((engine, Allocator::Pooling { slots }));
            }
            Err(error) if options.pooling == Pooling::Auto => {
                let engine = Engine::new(&config).map_err(|e| e.to_string())?;
                let reason = Some(format!("{error:#}"));
                return Ok((
                    engine,
                    Allocator::OnDemand {
                        fallback_reason: reason,
                    },
                ));
            }
            Err(error) => {
                return Err(format!(
                    "cannot reserve the instance pool for {} tasks ({error:#}); lower \
                     engine.pool_size or set engine.pooling to auto or off",
                    options.pool_size
                ));
            }
        }
    }
    let engine = Engine::new(&config).map_err(|error| format!("{error:#}"))?;
    Ok((
        engine,
        Allocator::OnDemand {
            fallback_reason: None,
        },
    ))
}

/// Bytes of each pooled memory, table and stack reset in place rather than
/// returned to the kernel.
const KEEP_RESIDENT: usize = 64 << 10;

/// A pool for `tasks` live task instances. A component holds several core
/// instances and tables but normally one linear memory.
fn pool(tasks: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(tasks)
        .total_core_instances(tasks.saturating_mul(16))
        .total_memories(tasks.saturating_mul(2))
        .total_tables(tasks.saturating_mul(4))
        .total_stacks(tasks)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_memory_size(crate::config::MAX_AGENT_MEMORY as usize)
        // Returning memory to the kernel one instance at a time makes every
        // core flush its TLB; batching and keeping the first pages resident
        // (reset by memset) take most of that off the dispatch path.
        .decommit_batch_size(32)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    pool
}
