//! The sandbox each task runs in: a WASI context that grants only what the
//! agent's config grants, the gate its outgoing HTTP requests pass, a
//! resource limiter for its Store, and the capped buffer that captures its
//! output. The toolset assembles these into a fresh Store per task.

pub mod egress;
pub mod http;
pub mod limits;
pub mod output;
pub mod process;
pub mod wasi;

pub use http::TaskHttp;
pub use limits::{TaskLimiter, open_files_breach, raise_open_file_limit};
pub use output::{OutputBuffer, OutputListener, OutputSnapshot, SandboxOutput};
pub use wasi::task_context;
