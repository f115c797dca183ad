//! The `memory` toolset: notes kept in a store file, one store per path.

use super::ToolSpec;
use super::args::Args;
use std::path::Path;
use std::sync::Arc;

pub fn specs() -> Vec<ToolSpec> {
    Vec::new()
}

/// One store file, shared by every agent naming its path.
pub struct MemoryStore {}

impl MemoryStore {
    pub fn open(path: &Path) -> Result<Arc<MemoryStore>, String> {
        let _ = path;
        Ok(Arc::new(MemoryStore {}))
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let _ = (name, args);
        None
    }
}
