//! Components: the shared Engine, and each agent's component compiled once
//! (or loaded from the on-disk cache) and pre-instantiated (`InstancePre`)
//! so a task only has to instantiate.

mod bundled;
mod cache;
mod engine;
mod load;

#[expect(unused_imports, reason = "not wired into team loading yet")]
pub use bundled::BUNDLED_AGENT;
pub use cache::{CacheOutcome, ComponentCache, check_grants_avoid_cache};
pub use engine::{Allocator, EngineOptions, new_engine};
pub use load::{LoadProgress, load_component};
