//! Builds the bundled LLM agent (`plugins/agent`) as a WebAssembly
//! component for `components::bundled` to embed in the binary, so a team
//! file can use it without a `component:` of its own.
//!
//! A nested cargo with its own target directory (`<target>/bundled-agent`)
//! avoids waiting on the lock the outer build holds, and on the one the
//! test kit's plugin build (`<target>/plugins`) holds. Set
//! `BGAGENTS_BUNDLED_AGENT` to a prebuilt `.wasm` to embed that instead.

use std::path::PathBuf;

const FILE: &str = "bgagents_agent.wasm";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    println!("cargo:rerun-if-env-changed=BGAGENTS_BUNDLED_AGENT");
    if let Some(prebuilt) = std::env::var_os("BGAGENTS_BUNDLED_AGENT") {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&prebuilt).display()
        );
        std::fs::copy(&prebuilt, out_dir.join(FILE)).unwrap_or_else(|error| {
            panic!("BGAGENTS_BUNDLED_AGENT={prebuilt:?} cannot be read: {error}")
        });
        return;
    }

    // Only what the component is built from; everything else the host
    // changes leaves it alone.
    for input in [
        "plugins/agent",
        "plugins/bgagents-guest",
        "wit",
        "host/build_guests.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    let wasm_dir = build_guests(
        workspace,
        &out_dir,
        "bundled-agent",
        &["bgagents-agent"],
        "the bundled agent (plugins/agent)",
    );
    let built = wasm_dir.join(FILE);
    std::fs::copy(&built, out_dir.join(FILE))
        .unwrap_or_else(|error| panic!("cannot copy {}: {error}", built.display()));
}

include!("build_guests.rs");
