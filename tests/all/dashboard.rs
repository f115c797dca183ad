//! The dashboard in a real headless Chromium ([`crate::browser`]) against a
//! real `bgagents serve --http`: tasks started elsewhere appear live with
//! their children under them, a task's output streams into the page and
//! stays text however hostile, a task starts from the page's form and stops
//! from its button, and a thousand tasks stay listed. Screenshots are saved
//! under `target/test-artifacts/`.
//!
//! They need Debian's `chromium` package, so `cargo test` skips them; CI
//! installs it and runs `cargo test --test all -- --ignored dashboard::`.

use super::browser::Browser;
use super::serve::Daemon;
use bgagents_testkit::Scratch;
use serde_json::{Value, json};
use std::path::PathBuf;

const TEAM: &str = r#"
agents:
  root:
    description: Probes the sandbox and starts helpers
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    description: Echoes, prints and sleeps
    component: '{plugins}/probe.wasm'
limits:
  max_retained: 1100
engine:
  pool_size: 50
"#;

/// Output a guest could print to take over a page that rendered it as HTML.
const HOSTILE: &str =
    r#"<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>"#;

/// A daemon serving HTTP, and the dashboard's address with the token.
fn daemon(scratch: &Scratch) -> (Daemon, String) {
    let team = scratch.team(TEAM);
    let daemon = Daemon::start_with(
        &team,
        Some(&scratch.dir.join("state")),
        &scratch.dir,
        // A name, as people write it.
        &["--http", "localhost:0"],
    );
    let log = daemon.log();
    let page = (log.lines())
        .find_map(|line| line.split_once("dashboard at ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no dashboard line in:\n{log}"))
        .to_string();
    let token = std::fs::read_to_string(daemon.state.join("http-token")).unwrap();
    let url = format!("{page}#token={}", token.trim());
    (daemon, url)
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-artifacts"
    ))
    .join(name)
}

/// The task rows the page shows: task id, agent, status, and the id cell's
/// text (the tree's mark and the id's start).
fn rows(browser: &mut Browser) -> Vec<(String, String, String, String)> {
    let rows = browser.eval(
        "[...document.querySelectorAll('#tasks tbody tr')].map(row => \
         [row.dataset.id, row.querySelector('.id').textContent, \
          row.querySelector('.agent').textContent, row.querySelector('.status').textContent])",
    );
    (rows.as_array().unwrap().iter())
        .map(|row| {
            let text = |index: usize| row[index].as_str().unwrap().to_string();
            (text(0), text(2), text(3), text(1))
        })
        .collect()
}

fn status_in_page(id: &str) -> String {
    format!("document.querySelector('tr[data-id=\"{id}\"] .status')?.textContent")
}

/// The daemon's own word on a task's status.
fn status_on_daemon(daemon: &Daemon, id: &str) -> String {
    let listed: Value = serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
    (listed.as_array().unwrap().iter())
        .find(|task| task["task_id"] == id)
        .map(|task| task["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{id} is not on the daemon: {listed}"))
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium"]
fn the_dashboard_shows_tasks_live_streams_hostile_output_as_text_starts_and_stops_tasks() {
    let scratch = Scratch::new();
    let (daemon, url) = daemon(&scratch);
    let mut browser = Browser::start(&scratch.dir, 1440, 900);
    browser.open(&url);
    // The token is kept by the tab, not left in the address bar.
    assert_eq!(browser.eval("location.hash"), json!(""));
    browser.wait_for(
        "connected to the event stream",
        "document.getElementById('connection').textContent === 'live'",
    );
    let agents =
        browser.eval("[...document.querySelectorAll('#start-agent option')].map(o => o.value)");
    assert_eq!(agents, json!(["helper", "root"]));

    // Started from the command line while the page is open: it appears,
    // with the helper it starts listed under it.
    let task =
        format!("spawn helper sleep 600000 && sleep 1500 && print 2 {HOSTILE} && sleep 600000");
    let root = daemon.ok(&["start", "root", &task]).trim().to_string();
    browser.wait_for(
        "the root task running",
        &format!("{} === 'running'", status_in_page(&root)),
    );
    browser.wait_for(
        "the helper under it",
        "[...document.querySelectorAll('#tasks tbody tr .id')].some(cell => cell.textContent.startsWith('└ '))",
    );
    let shown = rows(&mut browser);
    let root_row = shown.iter().position(|row| row.0 == root).unwrap();
    let helper = &shown[root_row + 1];
    assert!(helper.3.starts_with("└ "), "{shown:?}");
    assert_eq!(
        (helper.1.as_str(), helper.2.as_str()),
        ("helper", "running"),
        "{shown:?}"
    );

    // Its output streams into the page as it is written, as text.
    browser.eval(&format!(
        "document.querySelector('tr[data-id=\"{root}\"]').click()"
    ));
    browser.wait_for(
        "the output streamed",
        "document.getElementById('detail-output').textContent.includes('window.pwned=2</script>')",
    );
    let output = browser.eval("document.getElementById('detail-output').textContent");
    assert_eq!(
        output.as_str().unwrap().matches(HOSTILE).count(),
        2,
        "{output}"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#detail-output *').length"),
        json!(0)
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('img, b').length"),
        json!(0)
    );
    assert_eq!(browser.eval("document.scripts.length"), json!(1));
    // Let an image's error handler have had its chance.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(browser.eval("typeof window.pwned"), json!("undefined"));
    let task_text = browser.eval("document.getElementById('detail-task').textContent");
    assert_eq!(task_text, json!(task));
    browser.screenshot(&artifact("dashboard.png"));

    // A task started from the page's form.
    browser.eval(
        "document.getElementById('start-agent').value = 'helper';\
         document.getElementById('start-task').value = 'echo started from the page';\
         document.querySelector('#start-form button').click()",
    );
    browser.wait_for(
        "the page's task completed",
        "[...document.querySelectorAll('#tasks tbody tr')].some(row => \
          row.querySelector('.session').textContent === 'http' && \
          row.querySelector('.status').textContent === 'completed')",
    );
    browser.wait_for(
        "its result shown",
        "document.getElementById('detail-result').textContent === 'started from the page'",
    );

    // Stopped from the row's button: the root and the helper it started.
    browser.eval(&format!(
        "document.querySelector('tr[data-id=\"{root}\"] button.stop').click()"
    ));
    browser.wait_for(
        "the root task stopped",
        &format!("{} === 'stopped'", status_in_page(&root)),
    );
    browser.wait_for(
        "the helper stopped with it",
        "![...document.querySelectorAll('#tasks tbody tr .status')].some(cell => cell.textContent === 'running')",
    );
    assert_eq!(status_on_daemon(&daemon, &root), "stopped");
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('tr[data-id=\"{root}\"] button.stop').hidden"
        )),
        json!(true)
    );

    // Finished tasks can be hidden.
    browser.eval("document.getElementById('hide-finished').click()");
    assert_eq!(
        browser.eval("document.querySelectorAll('#tasks tbody tr').length"),
        json!(0)
    );
}

#[test]
#[ignore = "needs Chromium: apt-get install chromium"]
fn the_dashboard_lists_a_thousand_tasks() {
    const TASKS: usize = 1000;
    let scratch = Scratch::new();
    let (_daemon, url) = daemon(&scratch);
    let mut browser = Browser::start(&scratch.dir, 1440, 900);
    browser.open(&url);
    browser.wait_for(
        "connected to the event stream",
        "document.getElementById('connection').textContent === 'live'",
    );
    // Started through the API from the page itself, a few at a time.
    let started = browser.eval(&format!(
        "(async () => {{
            const token = sessionStorage.getItem('bgagents-token');
            let ok = 0;
            for (let i = 0; i < {TASKS}; i += 20) {{
                const batch = [];
                for (let j = i; j < i + 20; j++) {{
                    batch.push(fetch('/api/tasks', {{method: 'POST',
                        headers: {{Authorization: 'Bearer ' + token}},
                        body: JSON.stringify({{agent: 'helper', task: 'echo task ' + j}})}}));
                }}
                for (const response of await Promise.all(batch)) ok += response.status === 201;
            }}
            return ok;
        }})()"
    ));
    assert_eq!(started, json!(TASKS));
    browser.wait_for(
        "every task listed and completed",
        &format!(
            "document.querySelectorAll('#tasks tbody tr.status-completed').length === {TASKS}"
        ),
    );
    // The list stays in step: filtering, and a full re-render, work on
    // every row.
    let timing = browser.eval(
        "(() => {
            const filter = document.getElementById('filter');
            filter.value = document.querySelector('#tasks tbody tr').dataset.id;
            const started = performance.now();
            filter.dispatchEvent(new Event('input'));
            const filtered = document.querySelectorAll('#tasks tbody tr').length;
            filter.value = '';
            filter.dispatchEvent(new Event('input'));
            return {filtered, all: document.querySelectorAll('#tasks tbody tr').length,
                    ms: performance.now() - started};
        })()",
    );
    assert_eq!(timing["filtered"], json!(1), "{timing}");
    assert_eq!(timing["all"], json!(TASKS), "{timing}");
    println!(
        "filtering and re-listing {TASKS} tasks took {} ms",
        timing["ms"]
    );
    browser.screenshot(&artifact("dashboard-1000.png"));
}
