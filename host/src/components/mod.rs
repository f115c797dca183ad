//! Components: the shared Engine, and each agent's component compiled once
//! (or loaded from the on-disk cache) and pre-instantiated (`InstancePre`)
//! so a task only has to instantiate.

mod cache;
mod engine;
mod load;

pub use cache::{CacheOutcome, ComponentCache, check_grants_avoid_cache};
pub use engine::{Allocator, EngineOptions, new_engine};
pub use load::{LoadProgress, load_component};
