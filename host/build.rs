//! Builds the bundled LLM agent (`plugins/agent`) as a WebAssembly
//! component for `components::bundled` to embed in the binary, so a team
//! file can use it without a `component:` of its own.
//!
//! A nested cargo with its own target directory (`<target>/bundled-agent`)
//! avoids waiting on the lock the outer build holds, and on the one the
//! test kit's plugin build (`<target>/plugins`) holds. Set
//! `BGAGENTS_BUNDLED_AGENT` to a prebuilt `.wasm` to embed that instead.

use std::path::PathBuf;
use std::process::Command;

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
    for input in ["plugins/agent", "plugins/bgagents-guest", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    // OUT_DIR is <target>/[<triple>/]<profile>/build/<crate>-<hash>/out.
    let target_root = out_dir.ancestors().nth(4).unwrap();
    let guest_target = target_root.join("bundled-agent");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["-p", "bgagents-agent"])
        .env("CARGO_TARGET_DIR", &guest_target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cannot run cargo to build the bundled agent");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nThe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`.\n"
            } else {
                ""
            };
        panic!("building the bundled agent (plugins/agent) as a component failed:{hint}\n{stderr}");
    }
    let built = guest_target
        .join("wasm32-wasip2")
        .join("release")
        .join(FILE);
    std::fs::copy(&built, out_dir.join(FILE))
        .unwrap_or_else(|error| panic!("cannot copy {}: {error}", built.display()));
}
