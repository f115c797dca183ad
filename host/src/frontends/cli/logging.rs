//! Operator logs: `tracing` events to stderr, chosen by `RUST_LOG`
//! (`RUST_LOG=bgagents=debug` shows every task's lifecycle, each line
//! carrying the task's id, agent and parent). Without `RUST_LOG` only
//! warnings and errors are logged, so a terminal run stays quiet.

use std::io::IsTerminal;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the stderr subscriber for this process.
pub fn init() {
    let (filter, problem) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (
                quiet(),
                Some(format!(
                    "RUST_LOG={spec:?} is not a log filter ({error}); logging warnings only. \
                     Write it as `bgagents=debug` or `info`"
                )),
            ),
        },
        _ => (quiet(), None),
    };
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (a test embedding the CLI) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

fn quiet() -> Targets {
    Targets::new().with_default(LevelFilter::WARN)
}
