//! Test guest whose `agent.run` has the wrong signature
//! (`func(request, u32) -> string`); loading it must fail as a world mismatch.

wit_bindgen::generate!({ path: "wit", world: "sub-agent" });

use exports::bgagents::agents::agent::{Guest, Request};

struct WrongSignature;

impl Guest for WrongSignature {
    fn run(request: Request, extra: u32) -> String {
        format!("{} {extra}", request.task)
    }
}

export!(WrongSignature);
