//! The `filesystem` toolset, confined to the agent's `grants.files`.

use super::ToolSpec;
use super::args::Args;
use crate::config::DirGrant;

pub fn specs() -> Vec<ToolSpec> {
    Vec::new()
}

/// One agent's view of its granted directories.
pub struct Files {}

impl Files {
    pub fn new(dirs: &[DirGrant]) -> Files {
        let _ = dirs;
        Files {}
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let _ = (name, args);
        None
    }
}
