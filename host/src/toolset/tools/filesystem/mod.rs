//! The `filesystem` toolset under docker-agent's tool names and arguments,
//! working only inside the agent's `grants.files` directories, read-only
//! ones included but never changed. Paths are the ones a component sees:
//! each directory at its guest path (`/work/notes.md`); a relative path
//! starts at the first granted directory.

mod ops;
mod paths;
mod walk;

use super::ToolSpec;
use super::args::Args;
use crate::config::DirGrant;
use paths::Root;
use serde_json::{Value, json};
use std::sync::Arc;

pub const READ_FILE: &str = "read_file";
pub const READ_MULTIPLE_FILES: &str = "read_multiple_files";
pub const EDIT_FILE: &str = "edit_file";
pub const WRITE_FILE: &str = "write_file";
pub const DIRECTORY_TREE: &str = "directory_tree";
pub const LIST_DIRECTORY: &str = "list_directory";
pub const SEARCH_FILES_CONTENT: &str = "search_files_content";
pub const CREATE_DIRECTORY: &str = "create_directory";
pub const REMOVE_DIRECTORY: &str = "remove_directory";

/// Bytes of one file the read tools return; a bigger file is refused.
pub const MAX_READ_BYTES: u64 = 2 << 20;
/// Entries a listing, tree or search visits before it stops and says so.
pub const MAX_ENTRIES: usize = 1000;

fn path_param(what: &str) -> Value {
    json!({"type": "string", "description": what})
}

fn paths_param(what: &str) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "description": what})
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

const WHERE: &str = "Only the directories granted to this agent can be reached, at their \
    granted paths; a relative path starts at the first of them.";

pub fn specs() -> Vec<ToolSpec> {
    let spec = |name: &str, what: &str, parameters: Value, read_only: bool| ToolSpec {
        name: name.to_string(),
        description: format!("{what} {WHERE}"),
        parameters,
        read_only,
    };
    vec![
        spec(
            READ_FILE,
            "Read the whole text of a file.",
            object(json!({"path": path_param("The file to read")}), &["path"]),
            true,
        ),
        spec(
            READ_MULTIPLE_FILES,
            "Read several files at once; a file that cannot be read gets its error in place \
             of its text.",
            object(
                json!({
                    "paths": paths_param("The files to read"),
                    "json": {"type": "boolean", "description": "Answer as a JSON array of {path, content}"},
                }),
                &["paths"],
            ),
            true,
        ),
        spec(
            EDIT_FILE,
            "Edit a text file: each edit replaces the first occurrence of its exact old text \
             with its new text, in order. If any old text is missing nothing is changed.",
            object(
                json!({
                    "path": path_param("The file to edit"),
                    "edits": {
                        "type": "array",
                        "description": "The edits, applied in order",
                        "items": {
                            "type": "object",
                            "properties": {
                                "oldText": {"type": "string", "description": "The exact text to replace"},
                                "newText": {"type": "string", "description": "The text to put in its place"},
                            },
                            "required": ["oldText", "newText"],
                            "additionalProperties": false,
                        },
                    },
                }),
                &["path", "edits"],
            ),
            false,
        ),
        spec(
            WRITE_FILE,
            "Create a file, or replace all of an existing file's text. Missing parent \
             directories are created.",
            object(
                json!({
                    "path": path_param("The file to write"),
                    "content": {"type": "string", "description": "The file's new text"},
                }),
                &["path", "content"],
            ),
            false,
        ),
        spec(
            DIRECTORY_TREE,
            "The files and directories under a directory, recursively, as JSON \
             ({name, type, children}).",
            object(
                json!({"path": path_param("The directory to start at")}),
                &["path"],
            ),
            true,
        ),
        spec(
            LIST_DIRECTORY,
            "List a directory: one `DIR  name` or `FILE name` line per entry.",
            object(
                json!({"path": path_param("The directory to list")}),
                &["path"],
            ),
            true,
        ),
        spec(
            SEARCH_FILES_CONTENT,
            "Search the files under a directory for a text (or a regular expression); \
             answers `path:line: text` for each matching line.",
            object(
                json!({
                    "path": path_param("The directory to search"),
                    "query": {"type": "string", "description": "The text or regular expression to find"},
                    "is_regex": {"type": "boolean", "description": "Treat query as a regular expression"},
                    "excludePatterns": paths_param("Names or glob patterns (`*.log`, `target`) to skip"),
                }),
                &["path", "query"],
            ),
            true,
        ),
        spec(
            CREATE_DIRECTORY,
            "Create directories, with any missing parents.",
            object(
                json!({"paths": paths_param("The directories to create")}),
                &["paths"],
            ),
            false,
        ),
        spec(
            REMOVE_DIRECTORY,
            "Remove empty directories.",
            object(
                json!({"paths": paths_param("The directories to remove")}),
                &["paths"],
            ),
            false,
        ),
    ]
}

/// One agent's granted directories, opened once and shared by its tasks.
pub struct Files {
    roots: Arc<Vec<Root>>,
}

impl Files {
    pub fn new(dirs: &[DirGrant]) -> Files {
        Files {
            roots: Arc::new(dirs.iter().map(Root::open).collect()),
        }
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's. The
    /// work runs on a blocking thread: file I/O must not stall the tasks
    /// sharing this runtime thread.
    pub async fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let tool = ops::Tool::named(name)?;
        let roots = self.roots.clone();
        let args = Args::new(Some(args.as_map().clone()));
        let answer = tokio::task::spawn_blocking(move || tool.run(&roots, &args)).await;
        Some(answer.unwrap_or_else(|_| Err(format!("{name} stopped unexpectedly"))))
    }
}
