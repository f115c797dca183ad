//! The one wasmtime Engine every task shares: async, fuel-metered, with
//! epoch interruption driven by a ticker thread, and — where the machine
//! allows — with a pooling instance allocator so that a task's instantiation
//! reuses pre-reserved memory instead of mapping anew.
//!
//! Fuel is the CPU budget. The epoch is what bounds how long a guest runs
//! without giving its worker back: every [`EPOCH_TICK`] each running guest
//! yields to the runtime at its next function entry or loop header, however
//! little fuel it burns (a guest that loops over host calls with huge
//! arguments burns almost none), so a timeout or stop takes effect within a
//! tick plus one host call.

use crate::config::Pooling;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances, so how often every running guest yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How the engine is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    pub pooling: Pooling,
    /// Tasks whose instances can be live at once in the pool.
    pub pool_size: u32,
    /// Fuel metering; off only to measure its cost in benchmarks.
    pub fuel_metering: bool,
    /// Epoch interruption; off only to measure its cost in benchmarks.
    pub epoch_interruption: bool,
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

/// Builds the shared engine and, with epoch interruption, starts its ticker.
pub fn new_engine(options: &EngineOptions) -> Result<(Engine, Allocator), String> {
    let (engine, allocator) = build_engine(options)?;
    if options.epoch_interruption {
        start_epoch_ticker(&engine)?;
    }
    Ok((engine, allocator))
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on a thread of its own,
/// which ends once the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> Result<(), String> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("bgagents-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(drop)
        .map_err(|error| format!("cannot start the epoch ticker thread: {error}"))
}

fn build_engine(options: &EngineOptions) -> Result<(Engine, Allocator), String> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(options.fuel_metering)
        .epoch_interruption(options.epoch_interruption);
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
