//! Components: the shared Engine, and each agent's component compiled once
//! (or loaded from the on-disk cache).

mod bundled;
mod cache;
mod engine;
mod load;

pub use bundled::BUNDLED_AGENT;
pub use cache::{CacheOutcome, ComponentCache, check_grants_avoid_cache};
pub use engine::{Allocator, EngineOptions, new_engine};
pub use load::{LoadProgress, load_component, load_embedded};
