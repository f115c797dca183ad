//! Helpers for the integration tests: where the compiled plugins are,
//! team files written to a scratch directory, and a scripted model server
//! ([`model_server`]).

pub mod model_server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// The directory holding `<plugin>.wasm` for every crate in plugins/.
pub fn plugin_dir() -> &'static Path {
    Path::new(PLUGIN_DIR)
}

/// The compiled component of plugin `name` (e.g. "probe").
pub fn plugin(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// A scratch directory, removed when dropped.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bgagents-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    /// Writes `contents` to `name` (which may hold folders) inside the
    /// scratch directory.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes a team file; `{plugins}` in `yaml` becomes the plugin directory.
    pub fn team(&self, yaml: &str) -> PathBuf {
        self.write(
            "team.yaml",
            yaml.replace("{plugins}", &plugin_dir().display().to_string()),
        )
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loads team `yaml` (components named relative to the plugin directory)
/// into a toolset, panicking with the full problem list if it does not load.
pub fn toolset(yaml: &str) -> bgagents::Toolset {
    let team = bgagents::Team::parse(yaml, Path::new("test-team.yaml"), plugin_dir())
        .unwrap_or_else(|error| panic!("team does not parse:\n{error}"));
    bgagents::Toolset::load(team).unwrap_or_else(|error| panic!("team does not load:\n{error}"))
}

/// How long a test waits for something that should happen at once before
/// calling it a hang. Generous: these machines are noisy.
pub const HANG: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits (through the toolset's own wait) until task `id` is final and
/// returns its view.
pub async fn finished(
    toolset: &bgagents::Toolset,
    caller: &bgagents::Caller,
    id: &str,
) -> bgagents::TaskView {
    let ids = [id.to_string()];
    let report = tokio::time::timeout(HANG, toolset.wait_background_agents(caller, &ids, 120))
        .await
        .expect("task did not finish: hang")
        .expect("wait refused");
    assert!(report.all_done, "task {id} did not finish: {report:?}");
    toolset
        .view_background_agent(caller, id)
        .expect("view refused")
}

/// Polls `check` until it holds, panicking after [`HANG`].
pub async fn eventually(what: &str, check: impl FnMut() -> bool) {
    assert!(
        holds_within(HANG, check).await,
        "timed out waiting for {what}"
    );
}

/// Polls `check` until it holds (`true`) or `within` has passed (`false`).
pub async fn holds_within(within: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The status of task `id` as `caller` sees it.
pub fn status(
    toolset: &bgagents::Toolset,
    caller: &bgagents::Caller,
    id: &str,
) -> bgagents::TaskStatus {
    toolset.task_status(caller, id).expect("task not visible")
}

/// Starts `task` on `agent` for `caller`, panicking if refused; its id.
pub fn start(
    toolset: &bgagents::Toolset,
    caller: &bgagents::Caller,
    agent: &str,
    task: &str,
) -> String {
    toolset
        .run_background_agent(caller, agent, task, None)
        .unwrap_or_else(|error| panic!("{agent} refused {task:?}: {error}"))
        .id
        .to_string()
}

/// Runs `task` on `agent` in a session of its own and returns the final view.
pub async fn run_to_end(
    toolset: &bgagents::Toolset,
    agent: &str,
    task: &str,
) -> bgagents::TaskView {
    let session = toolset.open_session(None).unwrap();
    let id = start(toolset, session.caller(), agent, task);
    finished(toolset, session.caller(), &id).await
}

/// Runs the ignored test `name` (its full path, e.g. `sandbox::measure`) in
/// a process of its own and fails if it fails. For tests that measure the
/// whole process (resident memory, open descriptors), which the other tests
/// of the same binary would disturb by running beside them.
pub fn run_alone(name: &str) {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(test_binary)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("cannot run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name}, run alone, failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run (is it an ignored test of this binary?):\n{stdout}\n{stderr}"
    );
    eprint!("{stderr}");
}

/// Whether a process on this host runs with exactly the command line
/// `cmdline`. A sandbox with its own PID namespace hides the pids its
/// processes see, so tests find them by what they run.
pub fn host_has_process(cmdline: &[&str]) -> bool {
    let wanted: Vec<u8> = (cmdline.iter())
        .flat_map(|arg| [arg.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|found| found == wanted))
}
