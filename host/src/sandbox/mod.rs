//! The sandbox each task runs in: a WASI context that grants nothing, a
//! resource limiter for its Store, and the capped buffer that captures its
//! output. The task layer assembles these into a fresh Store per task.

pub mod limits;
pub mod output;
pub mod wasi;

pub use limits::TaskLimiter;
pub use output::{OutputBuffer, OutputListener, OutputSnapshot};
pub use wasi::deny_all_context;
