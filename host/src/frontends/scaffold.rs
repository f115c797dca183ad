//! `bgagents new NAME [--lang rust|python|js]`: a plugin project that builds
//! with its language's toolchain (cargo, componentize-py, componentize-js)
//! and runs with `bgagents run` right away. It carries its own copy of the
//! WIT, so it builds anywhere its package registry is reachable. The
//! templates are the files under `host/templates/`, which docs/plugins.md
//! shows verbatim.

use crate::wit::WIT;
use std::path::{Path, PathBuf};

/// The languages `bgagents new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built by cargo.
    #[default]
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript, built by componentize-js.
    Js,
}

impl Lang {
    /// The template files: path in the project, contents with `{name}` and
    /// `{artifact}` placeholders.
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[
                (
                    "Cargo.toml",
                    include_str!("../../templates/rust/Cargo.toml"),
                ),
                (
                    "src/lib.rs",
                    include_str!("../../templates/rust/src/lib.rs"),
                ),
                ("team.yaml", include_str!("../../templates/rust/team.yaml")),
                ("README.md", include_str!("../../templates/rust/README.md")),
                (".gitignore", "target/\n"),
            ],
            Lang::Python => &[
                ("app.py", include_str!("../../templates/python/app.py")),
                ("build.sh", include_str!("../../templates/python/build.sh")),
                (
                    "team.yaml",
                    include_str!("../../templates/python/team.yaml"),
                ),
                (
                    "README.md",
                    include_str!("../../templates/python/README.md"),
                ),
                (".gitignore", "venv/\n__pycache__/\n*.wasm\n"),
            ],
            Lang::Js => &[
                ("agent.js", include_str!("../../templates/js/agent.js")),
                ("build.mjs", include_str!("../../templates/js/build.mjs")),
                (
                    "package.json",
                    include_str!("../../templates/js/package.json"),
                ),
                ("team.yaml", include_str!("../../templates/js/team.yaml")),
                ("README.md", include_str!("../../templates/js/README.md")),
                (".gitignore", "node_modules/\n*.wasm\n"),
            ],
        }
    }

    /// The commands that build and run a fresh project in `dir`.
    pub fn next_steps(self, dir: &Path) -> String {
        let build = match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2",
            Lang::Python => "sh build.sh",
            Lang::Js => "npm install && npm run build",
        };
        format!(
            "  cd {}\n  {build}\n  bgagents run team.yaml \"some task\"",
            dir.display()
        )
    }
}

/// Writes the WIT package into `dir` as `bgagents.wit`; returns the file.
pub fn write_wit(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join("bgagents.wit");
    std::fs::write(&file, WIT).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(file)
}

/// Creates the project `name` in `dir`; returns the files written.
pub fn new_plugin(name: &str, dir: &Path, lang: Lang) -> Result<Vec<PathBuf>, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a usable plugin name: start with a lowercase letter and use \
             lowercase letters, digits, - and _"
        ));
    }
    if dir.exists()
        && dir
            .read_dir()
            .map_or(true, |mut entries| entries.next().is_some())
    {
        return Err(format!(
            "{} already exists and is not empty; choose another name or --dir",
            dir.display()
        ));
    }
    // Cargo names the component after the library, with - turned into _;
    // the other languages' build scripts use the same name.
    let artifact = name.replace('-', "_");
    let files = lang.templates().iter().map(|(relative, template)| {
        let contents = template
            .replace("{name}", name)
            .replace("{artifact}", &artifact);
        (*relative, contents)
    });
    let mut written = vec![write_wit(&dir.join("wit"))?];
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
