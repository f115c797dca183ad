//! Test guest built against `bgagents:agents@0.3.0`, which this host does
//! not speak; loading it must fail naming both versions.

wit_bindgen::generate!({ path: "wit", world: "sub-agent" });

struct Future;

impl exports::bgagents::agents::agent::Guest for Future {
    fn run(task: String) -> Result<String, String> {
        Ok(task)
    }
}

export!(Future);
