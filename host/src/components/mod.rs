//! Components: the shared Engine, and each agent's component compiled once
//! and pre-instantiated (`InstancePre`) so a task only has to instantiate.

mod engine;
mod load;

pub use engine::new_engine;
pub use load::load_component;
