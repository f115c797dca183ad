// Shared by the build scripts that compile guests (`host/build.rs`, the
// bundled agent; `tests/support/build.rs`, the test plugins), through
// `include!`: a nested cargo that builds WebAssembly components.

/// Builds `packages` for wasm32-wasip2 (release) with a nested cargo whose
/// target directory is `<target>/<dir_name>`, beside the outer build's
/// (`out_dir` is the build script's OUT_DIR), so it never waits on the
/// outer build's lock or another nested build's. Returns the directory
/// holding the `.wasm` files; panics saying what failed (and how to add the
/// target when it is missing). `what` names the guests in that message.
fn build_guests(
    workspace: &std::path::Path,
    out_dir: &std::path::Path,
    dir_name: &str,
    packages: &[&str],
    what: &str,
) -> std::path::PathBuf {
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<crate>-<hash>/out.
    let target_dir = out_dir.ancestors().nth(4).unwrap().join(dir_name);
    let mut cargo =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    for package in packages {
        cargo.args(["-p", package]);
    }
    let output = cargo
        .output()
        .unwrap_or_else(|error| panic!("cannot run cargo to build {what}: {error}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nThe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`.\n"
            } else {
                ""
            };
        panic!("building {what} as components failed:{hint}\n{stderr}");
    }
    target_dir.join("wasm32-wasip2").join("release")
}
