//! Task state, independent of how tasks execute: records and their status
//! machine, who may see which task, the retained set, and task events.

pub mod events;
pub mod registry;
mod report;
pub mod scope;
pub mod task;

pub use events::{EventKind, Events, TaskEvent};
pub use registry::Registry;
pub use report::{WaitEntry, WaitReport};
pub use scope::{Caller, Reach, SessionId};
pub use task::{ModelUse, NewTask, Outcome, Task, TaskId, TaskInfo, TaskStatus, TaskView};
