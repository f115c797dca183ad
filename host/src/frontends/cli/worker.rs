//! `bgagents worker --nats URL [TEAM.yaml]`: a worker of a cluster (with
//! a team file of its own, or the one its coordinator shipped), and the
//! NATS options `serve --nats` shares with it.

use super::sanitise::{Keep, printable, shown_path};
use super::{EXIT_BAD_INPUT, HOST};
use crate::cluster::team::Shipped;
use crate::cluster::worker::{WorkerOptions, serve};
use crate::cluster::{Cluster, NatsOptions, shown_url};
use crate::toolset::Toolset;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// How to reach NATS: credentials and TLS, passed to the client as given.
/// Secrets are read from files, never given on the command line.
#[derive(Args, Clone, Default)]
pub struct NatsArgs {
    /// A NATS credentials file (.creds: a user JWT and its NKey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding the NATS token (first line).
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A NATS user name (with --nats-password-file).
    #[arg(long, value_name = "USER")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password (first line).
    #[arg(long, value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A file holding an NKey seed (first line).
    #[arg(long, value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// Require TLS (implied by --nats-ca and --nats-cert).
    #[arg(long)]
    pub nats_tls: bool,
    /// CA certificates (PEM) to trust for the NATS server's certificate.
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with --nats-key.
    #[arg(long, value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
}

impl NatsArgs {
    pub fn options(self, url: String) -> NatsOptions {
        NatsOptions {
            url,
            creds: self.nats_creds,
            token_file: self.nats_token_file,
            user: self.nats_user,
            password_file: self.nats_password_file,
            nkey_file: self.nats_nkey_file,
            tls: self.nats_tls,
            ca: self.nats_ca,
            cert: self.nats_cert,
            key: self.nats_key,
        }
    }
}

/// Connects a coordinator's toolset to the cluster: its tasks run on workers.
/// Its team file and components go into NATS first, so that a worker
/// started without a team file of its own finds them.
pub async fn coordinate(
    toolset: &crate::toolset::Toolset,
    options: &NatsOptions,
) -> Result<Cluster, String> {
    let cluster = Cluster::open(options, "bgagents coordinator").await?;
    let published = crate::cluster::components::publish(&cluster, toolset.team()).await?;
    tracing::info!(uploaded = published.uploaded, "components in NATS");
    match crate::cluster::team::publish(&cluster, toolset.team()).await? {
        Shipped::Team { hash } => tracing::info!(hash = %hash, "team file in NATS"),
        Shipped::Withheld(why) => eprintln!(
            "{HOST} warning: the team file is not shipped to workers: {}",
            printable(&why, Keep::Lines)
        ),
    }
    toolset.set_remote(std::sync::Arc::new(crate::cluster::Coordinator::new(
        cluster.clone(),
        toolset.team(),
        published.hashes,
    )));
    eprintln!(
        "{HOST} coordinating workers through NATS at {}",
        shown_url(&options.url)
    );
    tokio::spawn(crate::cluster::mirror_subtasks(
        toolset.clone(),
        cluster.clone(),
    ));
    let followed = crate::cluster::readopt(toolset, &cluster).await;
    if followed > 0 {
        eprintln!("{HOST} following {followed} task(s) an earlier coordinator dispatched");
    }
    Ok(cluster)
}

/// `bgagents worker`: serves `team` (a file of its own), or without one
/// the team the coordinator shipped through NATS.
pub async fn worker(
    team: Option<&Path>,
    options: NatsOptions,
    slots: Option<usize>,
    agents: Option<String>,
    name: Option<String>,
) -> ExitCode {
    let fail = |error: String| {
        eprintln!("error: {}", printable(&error, Keep::Lines));
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let slots = slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |cores| cores.get()));
    if slots == 0 {
        return fail("--slots must be at least 1".to_string());
    }
    let name = name.unwrap_or_else(default_name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(format!(
            "--name {name:?}: use letters, digits, - and _ only"
        ));
    }
    // A team file of its own is checked before anything is connected.
    let own = match team {
        Some(path) => match crate::config::Team::load(path) {
            Ok(team) => Some((team, path)),
            Err(error) => {
                super::print_problems(&error.source, &error.problems, error.more);
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        },
        None => None,
    };
    let cluster = match Cluster::open(&options, &format!("bgagents worker {name}")).await {
        Ok(cluster) => cluster,
        Err(error) => return fail(error),
    };
    let (mut team, serving) = match own {
        Some((team, path)) => (team, shown_path(path)),
        None => {
            let shipped =
                match crate::cluster::team::fetch(&cluster, &shown_url(&options.url)).await {
                    Ok(shipped) => shipped,
                    Err(error) => return fail(error),
                };
            let parsed =
                crate::config::Team::parse(&shipped.text, &shipped.source, &shipped.base_dir);
            match parsed {
                Ok(team) => {
                    tokio::spawn(crate::cluster::team::watch(
                        cluster.clone(),
                        shipped.hash.clone(),
                    ));
                    let serving = format!(
                        "the coordinator's team {} (BLAKE3 {})",
                        shown_path(&shipped.source),
                        &shipped.hash[..16]
                    );
                    (team, serving)
                }
                Err(error) => {
                    super::print_problems(&error.source, &error.problems, error.more);
                    eprintln!(
                        "error: the coordinator's team cannot be loaded on this machine (it is \
                         read as if it were in {}, with this machine's environment); fix what \
                         is said above here, or give this worker a team file of its own",
                        shown_path(&shipped.base_dir)
                    );
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            }
        }
    };
    let runnable: Vec<String> = (team.agents.values())
        .filter(|spec| spec.component.is_some() || spec.model.is_some() || spec.harness.is_some())
        .map(|spec| spec.name.clone())
        .collect();
    let agents = match agents {
        None => runnable.clone(),
        Some(list) => {
            let mut chosen = Vec::new();
            for agent in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                if !runnable.iter().any(|known| known == agent) {
                    return fail(format!(
                        "--agents: the team has no agent `{agent}` to run; it has: {}",
                        runnable.join(", ")
                    ));
                }
                chosen.push(agent.to_string());
            }
            if chosen.is_empty() {
                return fail("--agents names no agent; give a comma-separated list".to_string());
            }
            chosen
        }
    };
    // The coordinator's components, where ours differ or are missing.
    let cache = crate::cluster::components::cache_dir();
    let components = match crate::cluster::components::fetch(&cluster, &mut team, &cache).await {
        Ok(fetched) => {
            for (agent, file, missing) in fetched.changed {
                let why = if missing {
                    "this machine has no file at the team's path"
                } else {
                    "not this machine's, whose content differs"
                };
                eprintln!(
                    "{HOST} {agent}: running the coordinator's component (fetched by hash: {}), \
                     {why}",
                    shown_path(&file)
                );
            }
            fetched.hashes
        }
        Err(error) => return fail(error),
    };
    let source = team.source.clone();
    for warning in &team.warnings {
        eprintln!(
            "{}: warning: {}",
            shown_path(&source),
            super::indented(warning, "  ")
        );
    }
    let progress = super::progress::CompileNotices::new(true);
    let loaded = Toolset::load_with_progress(team, |event| progress.show(event));
    drop(progress);
    let toolset = match loaded {
        Ok(toolset) => toolset,
        Err(error) => {
            super::print_problems(&source, &error.problems, 0);
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    eprintln!(
        "{HOST} worker {name} serving {serving} ({}) from NATS at {}, {slots} task(s) at once \
         (pid {})",
        agents.join(", "),
        shown_url(&options.url),
        std::process::id()
    );
    use tokio::signal::unix::{SignalKind, signal};
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            return fail(format!("cannot handle SIGTERM and SIGINT: {error}"));
        }
    };
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let signal = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            eprintln!("{HOST} {signal}: stopping; running tasks end interrupted");
            shutdown.cancel();
        });
    }
    let options = WorkerOptions {
        name,
        slots,
        agents,
        components,
    };
    match serve(toolset, cluster, options, shutdown).await {
        Ok(()) => {
            eprintln!("{HOST} stopped");
            ExitCode::SUCCESS
        }
        Err(error) => fail(error),
    }
}

/// `HOST-PID`, from the machine's host name.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let host = if host.is_empty() {
        "worker".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}
