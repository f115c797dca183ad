//! The `shell` toolset: commands run on the host inside an OS sandbox
//! (bubblewrap). Stub: filled in by the shell work.

use super::ToolSpec;
use super::args::Args;
use crate::config::{Grants, ShellSettings};

/// The toolset's tools, under docker-agent's names and schemas.
pub fn specs() -> Vec<ToolSpec> {
    Vec::new()
}

/// Whether commands can be confined on this host: `Ok` with a line for
/// `bgagents check`, or why not and how to fix it.
pub fn probe() -> Result<String, String> {
    Err("the shell toolset is not built yet".to_string())
}

/// One task's shell: its background jobs, all killed when it is dropped.
pub struct Shell {}

impl Shell {
    pub fn new(settings: &ShellSettings, grants: &Grants) -> Shell {
        let _ = (settings, grants);
        Shell {}
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&mut self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let _ = (name, args);
        None
    }
}
