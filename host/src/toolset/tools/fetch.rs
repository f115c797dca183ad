//! The `fetch` toolset: HTTP(S) GET to the origins the agent's
//! `grants.http` allows. Stub: filled in by the HTTP work.

use super::ToolSpec;
use super::args::Args;
use crate::config::{FetchSettings, Grants};
use std::sync::Arc;

pub fn specs() -> Vec<ToolSpec> {
    Vec::new()
}

/// One agent's fetcher.
pub struct Fetcher {}

impl Fetcher {
    pub fn new(settings: &FetchSettings, grants: Arc<Grants>) -> Result<Fetcher, String> {
        let _ = (settings, grants);
        Ok(Fetcher {})
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let _ = (name, args);
        None
    }
}
