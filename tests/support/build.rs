//! Builds every plugin in `plugins/` as a WebAssembly component, so that
//! `cargo test` on a fresh clone needs nothing but the wasm32-wasip2 target.
//! A nested cargo with its own target directory (under the workspace's
//! target/) avoids waiting on the lock the outer build holds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().parent().unwrap();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<crate>-<hash>/out.
    let target_root = out_dir.ancestors().nth(4).unwrap();
    let guest_target = target_root.join("plugins");

    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("plugins").display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());

    let plugins = plugin_names(&workspace.join("plugins"));
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &guest_target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    for plugin in &plugins {
        cargo.args(["-p", plugin]);
    }
    let output = cargo
        .output()
        .expect("cannot run cargo to build the plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nThe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`.\n"
            } else {
                ""
            };
        panic!("building the plugins as components failed:{hint}\n{stderr}");
    }
    let wasm_dir = guest_target.join("wasm32-wasip2").join("release");
    std::fs::write(
        out_dir.join("plugins.rs"),
        format!(
            "pub const PLUGIN_DIR: &str = {:?};\n",
            wasm_dir.display().to_string()
        ),
    )
    .unwrap();
}

/// Package names of the plugin crates (each directory with a Cargo.toml).
fn plugin_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let manifest = std::fs::read_to_string(entry.ok()?.path().join("Cargo.toml")).ok()?;
            let line = manifest.lines().find(|line| line.starts_with("name = "))?;
            Some(
                line.trim_start_matches("name = ")
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    names
}
