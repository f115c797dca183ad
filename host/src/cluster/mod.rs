//! Running a team's tasks on worker processes across machines, through
//! NATS JetStream.
//!
//! # Design
//!
//! The toolset's operations (run, list, view, stop, wait), their scoping,
//! limits and texts stay where they are, written once: a coordinator is an
//! ordinary `bgagents serve` whose [`Toolset`](crate::toolset::Toolset)
//! has a [`Remote`] executor. The runner's one hook asks it to run a task
//! instead of running the guest itself: the task is admitted, queued,
//! listed, stopped and stored by the coordinator exactly as a local one,
//! and only its execution happens elsewhere. A worker (`bgagents worker`)
//! is a second process with an ordinary toolset of its own (no remote): it
//! takes work from the queue and runs each task through that toolset's
//! `run_background_agent`, i.e. in the same runner and sandbox as on one
//! host, then reports back.
//!
//! What travels through JetStream:
//!
//! - the **task registry**: key-value bucket [`BUCKET`], one key per task
//!   (`t.<task id>`) holding a [`Record`] (JSON). Every status change is a
//!   compare-and-set on the key's revision: the worker claims a queued
//!   task (`queued → running`), the worker finishes it
//!   (`running → completed | failed`), the coordinator stops it
//!   (`queued | running → stopped`) or declares it interrupted when its
//!   worker went silent. Two writers racing from the same revision cannot
//!   both succeed, so a stop and a completion never both win in the bucket;
//! - **heartbeats**: key `w.<worker id>` in bucket [`WORKERS_BUCKET`],
//!   rewritten every [`HEARTBEAT`] by each worker (and dropped by the
//!   server a minute after a dead worker's last). The coordinator watches the
//!   heartbeat of the worker running each of its tasks, by the key's
//!   revision (so clocks need not agree); after [`DEAD_AFTER`] without a
//!   new one it moves the task to `interrupted` (by compare-and-set, so a
//!   completion that lands first wins instead);
//! - **work**: stream [`WORK_STREAM`] with work-queue retention, subject
//!   `bgagents.work.<agent>`, one durable pull consumer per agent shared
//!   by every worker serving that agent. A message carries a task id; a
//!   worker acknowledges it once its claim is in the bucket, so a worker
//!   that dies before claiming leaves the message to be redelivered to
//!   another, and a redelivered message of a task already claimed or
//!   stopped is dropped;
//! - **output**: stream [`OUTPUT_STREAM`], subject
//!   `bgagents.output.<task id>` (capped per task and in total); the final
//!   record says how many pieces there were, so the coordinator has all of
//!   it before it reports the task final;
//! - **stops**: a plain message on `bgagents.stop.<task id>`, after the
//!   stop is in the bucket; a worker that missed it sees the stop in the
//!   bucket at its next check (every second) and its completion, if any,
//!   fails the compare-and-set.
//!
//! Sub-agents: a worker's own toolset has a [`Remote`] too, which queues
//! every task but those the worker took from the queue, so a guest's
//! sub-agent may run on another worker; the worker runs each task under
//! its cluster id below its ancestors, so scoping, limits and cascading
//! stops work as on one host, and the coordinator lists each new child
//! record under its parent ([`mirror_subtasks`]), followed like its own.
//!
//! Restarts: a restarted coordinator follows again ([`readopt`]) the tasks
//! its store restored as interrupted that the bucket still has running or
//! ended. A task of an agent with `retry: true` whose worker died is
//! queued again (at most [`MAX_RETRIES`] times) instead of interrupted.
//!
//! Components travel by content hash through the object store
//! ([`components`]): a worker runs the coordinator's bytes.
//!
//! A stop the coordinator answered stands: should the worker's completion
//! reach the bucket first, the coordinator writes `stopped` over it at the
//! completion's revision, so clients, store and bucket all say `stopped`.
//! A worker may take from the queue a sub-agent its own guest started; its
//! follower there then hands the task back to the runner, which runs it
//! here (the [`Remote::run`] answer `None`).

pub mod components;
mod record;
pub mod team;
pub mod worker;

pub use record::{ATTEMPT_HEADER, Record};

use crate::tasks::{Outcome, Task, TaskStatus};
use async_nats::jetstream;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The key-value bucket holding every task's record.
pub const BUCKET: &str = "bgagents_tasks";
/// The key-value bucket holding every worker's heartbeat; a heartbeat not
/// renewed within [`HEARTBEAT_KEPT`] is dropped by the server, so a dead
/// worker leaves nothing behind.
pub const WORKERS_BUCKET: &str = "bgagents_workers";
/// The work-queue stream.
pub const WORK_STREAM: &str = "BGAGENTS_WORK";
/// The stream holding tasks' output.
pub const OUTPUT_STREAM: &str = "BGAGENTS_OUTPUT";
/// How often a worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A worker silent this long is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How long the server keeps a heartbeat that is not renewed.
const HEARTBEAT_KEPT: Duration = Duration::from_secs(60);
/// Output pieces kept per task in the output stream.
const OUTPUT_PIECES_PER_TASK: i64 = 100_000;
/// The largest output piece a worker publishes.
pub(crate) const OUTPUT_PIECE_BYTES: usize = 64 << 10;
/// Times a task of an agent with `retry: true` is run again after its
/// worker died, before it ends `interrupted`.
pub const MAX_RETRIES: u32 = 3;
/// How long a coordinator waits for output pieces the final record counts
/// but the stream no longer has (cut by its caps).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Runs tasks somewhere other than in this process: the runner's hook.
pub(crate) trait Remote: Send + Sync {
    /// Whether `task` runs elsewhere (otherwise it runs here).
    fn claims(&self, task: &Task) -> bool;

    /// Runs `task` to its end, calling `started` once it runs somewhere
    /// (until then the task is queued). Dropped before it ends when the
    /// task is stopped; it then stops the task wherever it runs. `None`:
    /// this very process took it from the queue, so it runs here.
    fn run(&self, task: Arc<Task>, started: Started) -> BoxFuture<'static, Option<Outcome>>;

    /// Task `id` (finished) was pruned here.
    fn pruned(&self, id: &str);
}

/// Marks a task running, once a worker has claimed it.
pub(crate) type Started = Box<dyn FnOnce() + Send>;

/// How to reach the NATS server: its URL and the client's credentials and
/// TLS settings (passed to `async-nats` as they are).
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    pub url: String,
    /// A `.creds` file (a user JWT and its NKey seed).
    pub creds: Option<PathBuf>,
    /// A file holding a token.
    pub token_file: Option<PathBuf>,
    /// A user name, with its password in `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding an NKey seed.
    pub nkey_file: Option<PathBuf>,
    /// Require TLS (implied by `ca`, `cert` and a `tls://` URL).
    pub tls: bool,
    /// CA certificates (PEM) to trust for the server's certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Reads a secret from `path`, first line, trimmed; never shown.
fn secret(path: &PathBuf, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "cannot read the NATS {what} file {}: {error}",
            path.display()
        )
    })?;
    let text = text.lines().next().unwrap_or("").trim().to_string();
    if text.is_empty() {
        return Err(format!(
            "the NATS {what} file {} is empty; write the {what} on its first line",
            path.display()
        ));
    }
    Ok(text)
}

impl NatsOptions {
    /// Connects, with the client name `name`.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, String> {
        // A secret on a command line is seen by every process of the
        // machine (and lands in shell histories): refused.
        if self.url.contains('@') {
            return Err(format!(
                "--nats {} carries a user, password or token: give a token in a file \
                 with --nats-token-file, a user with --nats-user and --nats-password-file, \
                 or credentials with --nats-creds",
                shown_url(&self.url)
            ));
        }
        let mut options = async_nats::ConnectOptions::new().name(name);
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds).await.map_err(|error| {
                format!(
                    "cannot read the NATS credentials file {}: {error}",
                    creds.display()
                )
            })?;
        }
        if let Some(file) = &self.token_file {
            options = options.token(secret(file, "token")?);
        }
        match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                options = options.user_and_password(user.clone(), secret(file, "password")?)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "--nats-user and --nats-password-file go together: give both".to_string(),
                );
            }
            (None, None) => {}
        }
        if let Some(file) = &self.nkey_file {
            options = options.nkey(secret(file, "nkey seed")?);
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone())
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("--nats-cert and --nats-key go together: give both".to_string());
            }
            (None, None) => {}
        }
        if self.tls || self.ca.is_some() || self.cert.is_some() {
            options = options.require_tls(true);
        }
        // Without retries at connect, a wrong URL is said at once.
        options.connect(self.url.as_str()).await.map_err(|error| {
            format!(
                "cannot connect to NATS at {}: {error}",
                shown_url(&self.url)
            )
        })
    }
}

/// A URL as shown in messages: any user and password in it left out.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_string(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => url.to_string(),
        },
    }
}

/// The streams and bucket, made if missing.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) kv: kv::Store,
    /// Heartbeats ([`WORKERS_BUCKET`]).
    pub(crate) workers: kv::Store,
    pub(crate) output: jetstream::stream::Stream,
    pub(crate) work: jetstream::stream::Stream,
    /// Stops being written to the bucket, awaited before the process ends.
    stops: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// On a coordinator: the sub-agents guests started on workers, by the
    /// task that started them ([`mirror_subtasks`]), while that task is
    /// followed: those of a run that is given up are stopped.
    children: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl Cluster {
    /// Connects and makes (or finds) the bucket and the streams.
    pub async fn open(options: &NatsOptions, name: &str) -> Result<Cluster, String> {
        let client = options.connect(name).await?;
        let js = jetstream::new(client.clone());
        let jetstream_error = |what: &str, error: &dyn std::fmt::Display| {
            format!(
                "cannot set up {what} on NATS at {}: {error} (is JetStream enabled? start the \
                 server with `nats-server -js`)",
                shown_url(&options.url)
            )
        };
        let kv = match js.get_key_value(BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.to_string(),
                    description: "bgagents: task records and worker heartbeats".to_string(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|error| jetstream_error("the task bucket", &error))?,
        };
        let workers = match js.get_key_value(WORKERS_BUCKET).await {
            Ok(workers) => workers,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: WORKERS_BUCKET.to_string(),
                    description: "bgagents: worker heartbeats".to_string(),
                    history: 1,
                    max_age: HEARTBEAT_KEPT,
                    ..Default::default()
                })
                .await
                .map_err(|error| jetstream_error("the heartbeat bucket", &error))?,
        };
        let work = js
            .get_or_create_stream(jetstream::stream::Config {
                name: WORK_STREAM.to_string(),
                description: Some("bgagents: tasks waiting for a worker".to_string()),
                subjects: vec!["bgagents.work.>".to_string()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .map_err(|error| jetstream_error("the work queue", &error))?;
        let output = js
            .get_or_create_stream(jetstream::stream::Config {
                name: OUTPUT_STREAM.to_string(),
                description: Some("bgagents: tasks' output".to_string()),
                subjects: vec!["bgagents.output.>".to_string()],
                max_messages_per_subject: OUTPUT_PIECES_PER_TASK,
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|error| jetstream_error("the output stream", &error))?;
        Ok(Cluster {
            client,
            js,
            kv,
            workers,
            output,
            work,
            stops: Arc::default(),
            children: Arc::default(),
        })
    }

    /// Records a stop of task `id` in the bucket and tells its worker, in
    /// the background; [`Cluster::settle_stops`] awaits it.
    fn stop_in_background(&self, id: String) {
        let cluster = self.clone();
        let stop = tokio::spawn(async move {
            // Tried until it is in the bucket (a server restarting, a
            // partition): the stop was answered here, so it must stand
            // there. A process that ends waits for it in `settle_stops`.
            let mut pause = Duration::from_millis(100);
            while let Err(error) = stop_remote(&cluster, &id).await {
                tracing::warn!(task = %id, error = %error, "cannot record a stop in the cluster yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
        let mut stops = self.stops.lock().unwrap();
        stops.retain(|stop| !stop.is_finished());
        stops.push(stop);
    }

    /// Stops the sub-agents that guests of task `id` started elsewhere, as
    /// known here: its run that started them was given up (its worker
    /// died and the task is run again), as on one host the sub-agents of a
    /// task that did not complete are stopped.
    fn stop_children(&self, id: &str) {
        let children = self.children.lock().unwrap().remove(id);
        for child in children.unwrap_or_default() {
            tracing::info!(task = %id, child = %child, "stopping a sub-agent of a run given up");
            self.stop_in_background(child);
        }
    }

    /// Waits (up to `limit`) until every stop made so far is in the bucket
    /// and sent to its worker: a process that stops its tasks as it ends
    /// calls it before it exits.
    pub async fn settle_stops(&self, limit: Duration) {
        let pending: Vec<_> = std::mem::take(&mut *self.stops.lock().unwrap());
        let all = async {
            for stop in pending {
                let _ = stop.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("some stops did not reach NATS before the end");
        }
        let _ = self.client.flush().await;
    }
}

/// Task `key`'s worker `dead` went silent for `silent` seconds while
/// the task's record was `record` at `revision`: the task is queued again
/// when `retry` allows, and interrupted otherwise. A lost race means the
/// record changed (the task ended, or was stopped): that stands.
async fn worker_died(
    cluster: &Cluster,
    key: &str,
    mut record: Record,
    revision: u64,
    dead: &str,
    silent: u64,
    retry: bool,
) {
    let id = record.id.clone();
    let why = format!(
        "worker {dead} stopped sending heartbeats while running this task (none for {silent} s)"
    );
    if retry && record.retries < MAX_RETRIES {
        record.retries += 1;
        record.status = TaskStatus::Queued.as_str().to_string();
        record.worker = None;
        if let Ok(queued_revision) = cluster.kv.update(key, record.encode(), revision).await {
            tracing::warn!(task = %id, worker = %dead, retry = record.retries, "worker silent: task queued again (retry: true)");
            let queued = async {
                cluster
                    .js
                    .publish(work_subject(&record.agent), id.clone().into())
                    .await?
                    .await
            };
            if let Err(error) = queued.await {
                // No worker would ever take it: ended here instead.
                tracing::warn!(task = %id, error = %error, "cannot queue the task again; interrupted");
                record.status = TaskStatus::Interrupted.as_str().to_string();
                record.error = Some(format!(
                    "interrupted: {why}; it could not be queued again: {error}"
                ));
                let _ = cluster
                    .kv
                    .update(key, record.encode(), queued_revision)
                    .await;
            }
        }
        return;
    }
    record.status = TaskStatus::Interrupted.as_str().to_string();
    record.error = Some(match retry {
        true => format!(
            "interrupted: {why}; it was run {} times, as often as retry allows",
            record.retries + 1
        ),
        false => format!("interrupted: {why}"),
    });
    tracing::warn!(task = %id, worker = %dead, "worker silent: task interrupted");
    let _ = cluster.kv.update(key, record.encode(), revision).await;
}

/// Lists on the coordinator the tasks guests start on workers, each as a
/// child of its parent (when the parent is listed here), followed to its
/// end like any task the coordinator dispatched. Runs until NATS goes away.
pub async fn mirror_subtasks(toolset: crate::toolset::Toolset, cluster: Cluster) {
    loop {
        let mut watch = match cluster.kv.watch("t.>").await {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(error = %error, "cannot watch for sub-agents started on workers; trying again");
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { continue };
            if let kv::Operation::Put = entry.operation {
                mirror_one(&toolset, &cluster, &entry.key, &entry.value);
            }
        }
        // A server restarted: watched anew.
        tracing::warn!("the watch for sub-agents started on workers ended; watching anew");
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Lists the task whose record `key` holds, when it is a sub-agent whose
/// parent is listed here and it is not listed yet. Any of its records
/// will do, not only its first: a watch that fell behind sees only the
/// latest of a key's.
fn mirror_one(toolset: &crate::toolset::Toolset, cluster: &Cluster, key: &str, value: &[u8]) {
    let Ok(record) = Record::decode(value) else {
        return;
    };
    // Listed under the id its key names, or not at all.
    if key.strip_prefix("t.") != Some(record.id.as_str()) {
        tracing::warn!(key = %key, "a task record whose id is not its key's; not listed");
        return;
    }
    let Some(parent) = record.ancestors.last() else {
        return;
    };
    let mirrored = toolset.mirror(
        crate::tasks::TaskId::from(record.id.as_str()),
        parent,
        &record.agent,
        &record.task,
        record.expected_output.as_deref(),
    );
    match mirrored {
        Ok(_) => {
            tracing::debug!(task = %record.id, parent = %parent, "sub-agent listed");
            // Known while its parent is followed here.
            if let Some(children) = cluster.children.lock().unwrap().get_mut(parent) {
                children.push(record.id.clone());
            }
        }
        // Listed already (most records of a listed child), or its parent
        // is not here.
        Err(error) => {
            tracing::trace!(task = %record.id, error = %error, "sub-agent not listed here")
        }
    }
}

/// Follows again the tasks an earlier coordinator dispatched that its
/// task store restored as interrupted while the cluster still runs them
/// (or has their end): each becomes live again under its id, its output
/// read anew, its end taken from the bucket. Returns how many.
pub async fn readopt(toolset: &crate::toolset::Toolset, cluster: &Cluster) -> usize {
    let mut followed = 0;
    for (info, session) in toolset.list_every_session() {
        if session != crate::tasks::SessionId::RESTORED || info.status != TaskStatus::Interrupted {
            continue;
        }
        let id = info.id.to_string();
        let record = match cluster.kv.get(task_key(&id)).await {
            Ok(Some(value)) => match Record::decode(&value) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(task = %id, error = %error, "not followed");
                    continue;
                }
            },
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(task = %id, error = %error, "cannot read its record; not followed");
                continue;
            }
        };
        // Interrupted in the cluster too (its worker died): as it was.
        if record.status() == TaskStatus::Interrupted {
            continue;
        }
        let ancestors = (record.ancestors.iter()).map(|id| crate::tasks::TaskId::from(id.as_str()));
        match toolset.readopt(
            info.id.clone(),
            &record.agent,
            &record.task,
            record.expected_output.as_deref(),
            ancestors.collect(),
            record.lineage.clone(),
        ) {
            Ok(_) => followed += 1,
            Err(error) => tracing::warn!(task = %id, error = %error, "not followed"),
        }
    }
    followed
}

/// The subject a task of `agent` is queued on.
pub(crate) fn work_subject(agent: &str) -> String {
    format!("bgagents.work.{}", subject_token(agent))
}

/// The durable consumer every worker serving `agent` pulls from.
pub(crate) fn consumer_name(agent: &str) -> String {
    format!("work-{}", subject_token(agent))
}

pub(crate) fn output_subject(id: &str) -> String {
    format!("bgagents.output.{id}")
}

pub(crate) fn stop_subject(id: &str) -> String {
    format!("bgagents.stop.{id}")
}

pub(crate) fn task_key(id: &str) -> String {
    format!("t.{id}")
}

pub(crate) fn worker_key(worker: &str) -> String {
    format!("w.{worker}")
}

/// `name` as one subject token: letters, digits and `-` kept, any other
/// byte (`_` included, so that no two names meet) as `_XX`.
pub(crate) fn subject_token(name: &str) -> String {
    let mut token = String::new();
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => token.push(byte as char),
            other => token.push_str(&format!("_{other:02x}")),
        }
    }
    token
}

/// The coordinator's executor: queues each task for the workers and
/// follows it in the bucket until it ends.
pub struct Coordinator {
    cluster: Cluster,
    /// On a worker: its name and the tasks it took from the queue, which
    /// run here (every other task, one a guest here started, is queued for
    /// the cluster). `None` on the coordinator, where every task is queued.
    local: Option<(String, Arc<Mutex<HashSet<String>>>)>,
    /// The agents whose tasks are run again when their worker dies.
    retry: Arc<HashSet<String>>,
    /// Each agent's component hash, put in its tasks' records.
    components: Arc<HashMap<String, String>>,
}

/// The agents of `team` with `retry: true`.
fn retrying(team: &crate::config::Team) -> Arc<HashSet<String>> {
    let agents = team.agents.values().filter(|spec| spec.retry);
    Arc::new(agents.map(|spec| spec.name.clone()).collect())
}

impl Coordinator {
    pub fn new(
        cluster: Cluster,
        team: &crate::config::Team,
        components: HashMap<String, String>,
    ) -> Coordinator {
        Coordinator {
            cluster,
            local: None,
            retry: retrying(team),
            components: Arc::new(components),
        }
    }

    /// A worker's: the tasks in `local` run here, the others are queued.
    pub(crate) fn for_worker(
        cluster: Cluster,
        team: &crate::config::Team,
        components: HashMap<String, String>,
        name: String,
        local: Arc<Mutex<HashSet<String>>>,
    ) -> Coordinator {
        Coordinator {
            cluster,
            local: Some((name, local)),
            retry: retrying(team),
            components: Arc::new(components),
        }
    }
}

impl Remote for Coordinator {
    /// On the coordinator, whose task list and store are the cluster's
    /// record of what ran, a pruned task's record leaves the bucket too, so
    /// `max_retained` bounds the bucket as it bounds the store. (A worker
    /// keeps the records: its list is not the cluster's.)
    fn pruned(&self, id: &str) {
        if self.local.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let kv = self.cluster.kv.clone();
        // Purged from the stream by subject, not deleted: a deletion would
        // leave a marker behind for every task.
        let subject = format!("{}{}", kv.prefix, task_key(id));
        runtime.spawn(async move {
            if let Err(error) = kv.stream.purge().filter(&subject).await {
                tracing::debug!(subject = %subject, error = %error, "a pruned task's record not purged from NATS");
            }
        });
    }

    fn claims(&self, task: &Task) -> bool {
        (self.local.as_ref())
            .is_none_or(|(_, local)| !local.lock().unwrap().contains(task.id.as_str()))
    }

    fn run(&self, task: Arc<Task>, started: Started) -> BoxFuture<'static, Option<Outcome>> {
        let cluster = self.cluster.clone();
        let here = self.local.as_ref().map(|(name, _)| name.clone());
        let retry = self.retry.contains(&task.agent);
        let component = self.components.get(&task.agent).cloned();
        Box::pin(async move {
            let mut guard = StopOnDrop {
                cluster: cluster.clone(),
                id: task.id.to_string(),
                armed: false,
            };
            // Disarmed by it when the task ended; on any other exit (the
            // record lost or deleted) the task is stopped on its worker.
            let followed = Followed {
                component,
                retry,
                here,
            };
            dispatch_and_follow(&cluster, &task, followed, started, &mut guard).await
        })
    }
}

/// Stops the task in the bucket and tells its worker, when the future
/// following it is dropped before it ended (the task was stopped here) or
/// gives up following it.
struct StopOnDrop {
    cluster: Cluster,
    id: String,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Whatever became of it, it is no longer followed here.
        self.cluster.children.lock().unwrap().remove(&self.id);
        if self.armed {
            self.cluster.stop_in_background(self.id.clone());
        }
    }
}

/// Moves task `id` to `stopped` in the bucket, then tells its worker.
async fn stop_remote(cluster: &Cluster, id: &str) -> Result<(), String> {
    let key = task_key(id);
    // A few rounds of compare-and-set against a record that keeps moving
    // (a claim, an end); then the caller tries again later.
    for round in 0.. {
        if round == 8 {
            return Err("its record kept changing".to_string());
        }
        let Some(entry) = cluster.kv.entry(&key).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let mut record = Record::decode(&entry.value)?;
        let status = record.status();
        if status.is_final() {
            if status != TaskStatus::Stopped {
                // Its end reached the bucket before the stop did; here it
                // was stopped (and told so), which is what stands.
                tracing::info!(task = %id, status = %status, "stopped here after its worker ended it");
                record.status = TaskStatus::Stopped.as_str().to_string();
                record.error = None;
                record.result = None;
                let _ = cluster
                    .kv
                    .update(&key, record.encode(), entry.revision)
                    .await;
            }
            break;
        }
        record.status = TaskStatus::Stopped.as_str().to_string();
        if cluster
            .kv
            .update(&key, record.encode(), entry.revision)
            .await
            .is_ok()
        {
            break;
        }
    }
    cluster
        .client
        .publish(stop_subject(id), bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let _ = cluster.client.flush().await;
    Ok(())
}

/// The consumers a follower made, deleted when it ends. The server would
/// keep each for 30 s after its last read, and allows a stream 1000 by
/// default: a coordinator following a few dozen tasks a second would run
/// out.
#[derive(Default)]
struct Consumers(Vec<(jetstream::stream::Stream, String)>);

impl Consumers {
    fn made(&mut self, stream: &jetstream::stream::Stream, name: &str) {
        self.0.push((stream.clone(), name.to_string()));
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        let made = std::mem::take(&mut self.0);
        if made.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for (stream, name) in made {
                if let Err(error) = stream.delete_consumer(&name).await {
                    tracing::debug!(consumer = %name, error = %error, "a follower's consumer not deleted (the server drops it in 30 s)");
                }
            }
        });
    }
}

/// The changes of bucket key `key` from its current value on, read through
/// a consumer of the bucket's stream that `consumers` deletes when the
/// follower ends (a watch's would stay on the server for 30 s after).
async fn watch_record(
    cluster: &Cluster,
    key: &str,
    consumers: &mut Consumers,
) -> Result<jetstream::consumer::pull::Ordered, String> {
    let stream = &cluster.kv.stream;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}{key}", cluster.kv.prefix),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())?;
    consumers.made(stream, &consumer.cached_info().name);
    consumer.messages().await.map_err(|error| error.to_string())
}

/// Whether a message of the bucket's stream deletes its key.
fn is_deletion(message: &jetstream::Message) -> bool {
    let operation = (message.headers.as_ref()).and_then(|headers| headers.get("KV-Operation"));
    operation.is_some_and(|operation| matches!(operation.as_str(), "DEL" | "PURGE"))
}

/// What a follower knows of the task it dispatches.
struct Followed {
    /// The hash of the component its agent runs.
    component: Option<String>,
    /// Whether it runs again when its worker dies.
    retry: bool,
    /// On a worker, its name: a task it took from the queue itself runs
    /// here, not followed.
    here: Option<String>,
}

async fn dispatch_and_follow(
    cluster: &Cluster,
    task: &Arc<Task>,
    followed: Followed,
    started: Started,
    guard: &mut StopOnDrop,
) -> Option<Outcome> {
    let Followed {
        component,
        retry,
        here,
    } = followed;
    let mut started = Some(started);
    let id = task.id.to_string();
    let key = task_key(&id);
    let record = Record::queued(task, component);
    // Watched before it is written: no change is missed (and one written
    // already, by an earlier coordinator, is followed from where it is).
    // The consumers it makes go with it (see [`Consumers`]).
    let mut consumers = Consumers::default();
    let mut watch = match watch_record(cluster, &key, &mut consumers).await {
        Ok(watch) => watch,
        Err(error) => {
            return Some(Outcome::Failed(format!(
                "cannot follow the task in NATS: {error}"
            )));
        }
    };
    match cluster.kv.create(&key, record.encode()).await {
        Ok(_) => {
            guard.armed = true;
            let queued = async {
                cluster
                    .js
                    .publish(work_subject(&task.agent), id.clone().into())
                    .await?
                    .await
            };
            if let Err(error) = queued.await {
                let error = format!("cannot queue the task in NATS: {error}");
                // No worker will take it: its record says why.
                if let Ok(Some(entry)) = cluster.kv.entry(&key).await
                    && let Ok(mut record) = Record::decode(&entry.value)
                    && record.status() == TaskStatus::Queued
                {
                    record.status = TaskStatus::Failed.as_str().to_string();
                    record.error = Some(error.clone());
                    let _ = cluster
                        .kv
                        .update(&key, record.encode(), entry.revision)
                        .await;
                }
                guard.armed = false;
                return Some(Outcome::Failed(error));
            }
            tracing::debug!(task = %id, "queued for the workers");
        }
        // Dispatched by an earlier coordinator: followed, not queued again.
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
            guard.armed = true;
            tracing::debug!(task = %id, "following a task dispatched earlier");
        }
        Err(error) => {
            return Some(Outcome::Failed(format!(
                "cannot record the task in NATS: {error}"
            )));
        }
    }
    let output = async {
        let consumer = (cluster.output)
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: output_subject(&id),
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?;
        consumers.made(&cluster.output, &consumer.cached_info().name);
        consumer.messages().await.map_err(|error| error.to_string())
    };
    let mut output = match output.await {
        Ok(messages) => messages,
        Err(error) => {
            return Some(Outcome::Failed(format!(
                "cannot read the task's output: {error}"
            )));
        }
    };
    // Output pieces received, by the run they are from.
    let mut pieces: HashMap<u32, u64> = HashMap::new();
    let count = |pieces: &HashMap<u32, u64>, record: &Record| {
        pieces.get(&record.retries).copied().unwrap_or(0)
    };
    let mut ended: Option<(Record, Instant)> = None;
    // The run of it last seen (its record's `retries`).
    let mut attempt: Option<u32> = None;
    cluster
        .children
        .lock()
        .unwrap()
        .insert(id.clone(), Vec::new());
    // The worker running it: its heartbeat's last revision and when that
    // was seen to change.
    let mut worker: Option<(String, u64, Instant)> = None;
    let mut tick = tokio::time::interval(HEARTBEAT);
    // Whether the output stream has ended (its server went away for good):
    // no more reads of it, the grace below ends the wait.
    let mut output_closed = false;
    loop {
        if let Some((record, at)) = &ended
            && (output_closed
                || count(&pieces, record) >= record.output_pieces
                || at.elapsed() > OUTPUT_GRACE)
        {
            guard.armed = false;
            // What its model calls used, as on one host.
            if record.model.is_some() {
                *task.model.lock().unwrap() = record.model;
            }
            return Some(record.outcome());
        }
        tokio::select! {
            entry = watch.next() => {
                let entry = match entry {
                    Some(Ok(message)) => message,
                    // A server restarted or paused: the consumer says so,
                    // then carries on by itself.
                    Some(Err(error)) => {
                        tracing::warn!(task = %id, error = %error, "watching the task's record failed; still following");
                        continue;
                    }
                    // Ended: watched anew, from its current value on.
                    None => {
                        tracing::warn!(task = %id, "the watch of the task's record ended; watching it anew");
                        tokio::time::sleep(HEARTBEAT).await;
                        match watch_record(cluster, &key, &mut consumers).await {
                            Ok(again) => watch = again,
                            Err(error) => {
                                // The guard stays armed: the task is stopped.
                                return Some(Outcome::Failed(format!("lost the task's record in NATS: {error}")));
                            }
                        }
                        continue;
                    }
                };
                if is_deletion(&entry) {
                    return Some(Outcome::Failed("the task's record was deleted from NATS".to_string()));
                }
                let record = match Record::decode(&entry.payload) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::warn!(task = %id, error = %error, "an unreadable record of the task in NATS; ignored");
                        continue;
                    }
                };
                // Run again: the sub-agents of the run given up are stopped.
                if attempt.is_some_and(|seen| record.retries > seen) {
                    cluster.stop_children(&id);
                    cluster.children.lock().unwrap().insert(id.clone(), Vec::new());
                }
                attempt = Some(record.retries);
                let status = record.status();
                // Taken from the queue by this very worker: run here.
                if status == TaskStatus::Running
                    && here.is_some()
                    && record.worker == here
                {
                    guard.armed = false;
                    return None;
                }
                // Running from its first claim on.
                if record.worker.is_some() && status != TaskStatus::Queued
                    && let Some(started) = started.take()
                {
                    started();
                }
                if status.is_final() {
                    if ended.is_none() {
                        ended = Some((record, Instant::now()));
                    }
                } else if let Some(name) = &record.worker
                    && worker.as_ref().is_none_or(|(known, ..)| known != name)
                {
                    tracing::debug!(task = %id, worker = %name, "running on a worker");
                    worker = Some((name.clone(), 0, Instant::now()));
                }
            }
            piece = output.next(), if !output_closed && ended.as_ref().is_none_or(|(r, _)| count(&pieces, r) < r.output_pieces) => {
                match piece {
                    Some(Ok(message)) => {
                        task.output.append(&message.payload);
                        let attempt = (message.headers.as_ref())
                            .and_then(|headers| headers.get(ATTEMPT_HEADER))
                            .and_then(|value| value.as_str().parse().ok())
                            .unwrap_or(0);
                        *pieces.entry(attempt).or_default() += 1;
                    }
                    Some(Err(error)) => tracing::debug!(task = %id, error = %error, "output read failed; retrying"),
                    None => {
                        tracing::warn!(task = %id, "the task's output stream ended; reading no more of it");
                        output_closed = true;
                    }
                }
            }
            _ = tick.tick() => {
                if ended.is_some() {
                    continue;
                }
                let Some((name, seen_revision, seen_at)) = &mut worker else { continue };
                match cluster.workers.entry(worker_key(name)).await {
                    Ok(Some(beat)) if beat.revision != *seen_revision => {
                        *seen_revision = beat.revision;
                        *seen_at = Instant::now();
                    }
                    Ok(_) if seen_at.elapsed() > DEAD_AFTER => {
                        let silent = seen_at.elapsed().as_secs();
                        let dead = name.clone();
                        // Followed anew once claimed again.
                        worker = None;
                        // Only the run it saw on that worker: another
                        // follower of the task (a sub-agent is followed by
                        // its parent's worker and by the coordinator) may
                        // have queued it again already.
                        if let Ok(Some(entry)) = cluster.kv.entry(&key).await
                            && let Ok(record) = Record::decode(&entry.value)
                            && record.status() == TaskStatus::Running
                            && record.worker.as_deref() == Some(dead.as_str())
                            && Some(record.retries) == attempt
                        {
                            worker_died(cluster, &key, record, entry.revision, &dead, silent, retry).await;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(error = %error, "heartbeat read failed"),
                }
            }
        }
    }
}
