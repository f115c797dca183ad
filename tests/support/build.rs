//! Builds every plugin in `plugins/` as a WebAssembly component, so that
//! `cargo test` on a fresh clone needs nothing but the wasm32-wasip2 target.
//! A nested cargo with its own target directory (under the workspace's
//! target/) avoids waiting on the lock the outer build holds.

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().parent().unwrap();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("plugins").display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    let shared = workspace.join("host/build_guests.rs");
    println!("cargo:rerun-if-changed={}", shared.display());

    let plugins = plugin_names(&workspace.join("plugins"));
    let plugins: Vec<&str> = plugins.iter().map(String::as_str).collect();
    let wasm_dir = build_guests(workspace, &out_dir, "plugins", &plugins, "the plugins");
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

include!("../../host/build_guests.rs");
