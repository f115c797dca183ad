//! Test guest built with wit-bindgen directly against
//! `bgagents:agents@0.1.0` (the copy in `wit/`), as plugins built before
//! 0.2.0 were. A host that speaks 0.2.0 must still run it: it writes
//! `legacy <task id>: <task>` to its live output and returns
//! `legacy: <task>`, with a 0.1.0 request (no description, date or
//! max-iterations).

wit_bindgen::generate!({ path: "wit", world: "sub-agent" });

use bgagents::agents::output;
use exports::bgagents::agents::agent::{Guest, Request};

struct Legacy;

impl Guest for Legacy {
    fn run(request: Request) -> Result<String, String> {
        output::write(&format!("legacy {}: {}\n", request.task_id, request.task));
        Ok(format!("legacy: {}", request.task))
    }
}

export!(Legacy);
