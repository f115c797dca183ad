//! `bgagents worker`: takes tasks from the work queue and runs each through
//! an ordinary toolset of its own (the same runner and sandbox as on one
//! host), publishing its output and its end, and saying every
//! [`HEARTBEAT`] that it is alive.

use super::{
    ATTEMPT_HEADER, Cluster, HEARTBEAT, OUTPUT_PIECE_BYTES, Record, consumer_name, output_subject,
    task_key, work_subject, worker_key,
};
use crate::tasks::{Caller, EventKind, Reach, TaskId, TaskStatus};
use crate::toolset::{Session, Toolset};
use async_nats::jetstream;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What a worker serves.
pub struct WorkerOptions {
    /// Its name in the bucket (heartbeats, the records it claims).
    pub name: String,
    /// Tasks it runs at once.
    pub slots: usize,
    /// The agents whose tasks it takes.
    pub agents: Vec<String>,
    /// Each agent's component hash, as this worker runs it: a task whose
    /// record names another is refused.
    pub components: HashMap<String, String>,
}

/// How long a worker lets a task's output gather before publishing it,
/// so a chatty task costs a few pieces a second, not one per write.
const OUTPUT_GATHER: Duration = Duration::from_millis(50);

/// How long a claimed message may go unacknowledged before another
/// worker gets it.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How many times a work message is offered: without end (-1), since the
/// task's record stays `queued` until a worker claims it. A message no
/// worker can ever run (it names no task, or another agent) is dropped
/// explicitly; one handed back because its task still runs here, or whose
/// claim failed on a NATS error, comes back.
const MAX_DELIVER: i64 = -1;

/// How often a running task's record is read for a stop this worker's
/// subscription missed, whatever the task is doing.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// Whether `id` is a task id as this project makes them
/// (`agent_task_<uuid>`), so safe in a key and a subject.
fn is_task_id(id: &str) -> bool {
    id.strip_prefix("agent_task_")
        .is_some_and(|uuid| uuid::Uuid::parse_str(uuid).is_ok())
}

struct Shared {
    toolset: Toolset,
    session: Session,
    cluster: Cluster,
    name: String,
    /// The tasks it took from the queue, while they run (under their
    /// cluster ids, which they have here too).
    running: Arc<Mutex<HashSet<String>>>,
    /// [`WorkerOptions::components`].
    components: HashMap<String, String>,
    /// Cancelled when the worker is being shut down.
    shutdown: CancellationToken,
}

impl Shared {
    fn caller(&self) -> &Caller {
        self.session.caller()
    }
}

/// Serves until `shutdown` is cancelled, then stops what runs (its tasks
/// end `interrupted` in the bucket) and returns.
pub async fn serve(
    toolset: Toolset,
    cluster: Cluster,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), String> {
    // It reaches every task of its toolset: those a guest here started
    // too, which it may take from the queue itself.
    let session = toolset.open_operator_session(Reach::Everything);
    let shared = Arc::new(Shared {
        toolset: toolset.clone(),
        session,
        cluster: cluster.clone(),
        name: options.name.clone(),
        running: Arc::default(),
        shutdown: shutdown.clone(),
        components: options.components.clone(),
    });
    // What guests here start is queued for the cluster.
    toolset.set_remote(Arc::new(super::Coordinator::for_worker(
        cluster.clone(),
        toolset.team(),
        options.components.clone(),
        options.name.clone(),
        shared.running.clone(),
    )));
    let mut consumers = Vec::new();
    for agent in &options.agents {
        let consumer: jetstream::consumer::PullConsumer = cluster
            .work
            .get_or_create_consumer(
                &consumer_name(agent),
                jetstream::consumer::pull::Config {
                    durable_name: Some(consumer_name(agent)),
                    filter_subject: work_subject(agent),
                    ack_wait: ACK_WAIT,
                    max_deliver: MAX_DELIVER,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| format!("cannot pull {agent}'s tasks from NATS: {error}"))?;
        consumers.push((agent.clone(), consumer));
    }
    let stops = cluster
        .client
        .subscribe("bgagents.stop.*")
        .await
        .map_err(|error| format!("cannot listen for stops on NATS: {error}"))?;
    let background = CancellationToken::new();
    tokio::spawn(heartbeat(shared.clone(), background.clone()));
    tokio::spawn(follow_stops(shared.clone(), stops, background.clone()));
    let slot_count = options.slots.max(1);
    let slots = Arc::new(Semaphore::new(slot_count));
    let mut pulling = tokio::task::JoinSet::new();
    for (agent, consumer) in consumers {
        pulling.spawn(pull(
            shared.clone(),
            agent,
            consumer,
            slots.clone(),
            shutdown.clone(),
        ));
    }
    shutdown.cancelled().await;
    while pulling.join_next().await.is_some() {}
    // Every task is stopped here; each one's follower records its end and
    // gives its slot back.
    toolset.shutdown().await;
    // Sub-agents it had queued for others are stopped there.
    cluster.settle_stops(Duration::from_secs(10)).await;
    let every_slot = slots.acquire_many(slot_count as u32);
    let _ = tokio::time::timeout(Duration::from_secs(10), every_slot).await;
    background.cancel();
    let _ = shared
        .cluster
        .workers
        .delete(worker_key(&shared.name))
        .await;
    let _ = shared.cluster.client.flush().await;
    Ok(())
}

async fn heartbeat(shared: Arc<Shared>, done: CancellationToken) {
    let key = worker_key(&shared.name);
    loop {
        let running = shared.running.lock().unwrap().len();
        let beat = serde_json::json!({"running": running, "at_ms": crate::store::now_ms()});
        if let Err(error) = shared
            .cluster
            .workers
            .put(&key, beat.to_string().into())
            .await
        {
            tracing::warn!(error = %error, "cannot send a heartbeat");
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

async fn follow_stops(
    shared: Arc<Shared>,
    mut stops: async_nats::Subscriber,
    done: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = done.cancelled() => return,
            message = stops.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let id = message
            .subject
            .as_str()
            .trim_start_matches("bgagents.stop.");
        let local = shared.running.lock().unwrap().get(id).cloned();
        if let Some(local) = local {
            tracing::debug!(task = %id, "stop received");
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = (shared.toolset)
                    .stop_background_agent(shared.caller(), &local)
                    .await;
            });
        }
    }
}

/// Takes `consumer`'s tasks one at a time, whenever a slot is free.
async fn pull(
    shared: Arc<Shared>,
    agent: String,
    consumer: jetstream::consumer::PullConsumer,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
        };
        let fetched = async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|error| error.to_string())?;
            match batch.next().await {
                Some(message) => message.map(Some).map_err(|error| error.to_string()),
                None => Ok(None),
            }
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = fetched => message,
        };
        match message {
            Ok(Some(message)) => {
                tokio::spawn(take(shared.clone(), agent.clone(), message, permit));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error, "cannot pull work; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Claims the task `message` (from `agent`'s queue) names and runs it,
/// holding `_permit`.
async fn take(
    shared: Arc<Shared>,
    agent: String,
    message: jetstream::Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let id = String::from_utf8_lossy(&message.payload).into_owned();
    if !is_task_id(&id) {
        tracing::warn!(agent = %agent, payload = %id.escape_debug(), "a work message that names no task; dropped");
        terminate(&message).await;
        return;
    }
    // Still running here (its record queued again meanwhile): left for
    // another worker, never run twice at once here.
    if shared.running.lock().unwrap().contains(&id) {
        tracing::debug!(task = %id, "already running here; left for another worker");
        let later = jetstream::AckKind::Nak(Some(Duration::from_secs(1)));
        if let Err(error) = message.ack_with(later).await {
            tracing::warn!(task = %id, error = %error, "cannot hand work back");
        }
        return;
    }
    let key = task_key(&id);
    let kv = &shared.cluster.kv;
    let claimed = async {
        let entry = kv.entry(&key).await.map_err(|e| e.to_string())?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let mut record = Record::decode(&entry.value)?;
        if record.status() != TaskStatus::Queued {
            return Ok(None);
        }
        // Only the agent whose queue it came from, which this worker
        // serves (`--agents`).
        if record.agent != agent {
            return Err(format!(
                "its record names agent {:?}, not {agent:?} whose queue it came from",
                record.agent
            ));
        }
        record.status = TaskStatus::Running.as_str().to_string();
        record.worker = Some(shared.name.clone());
        match kv.update(&key, record.encode(), entry.revision).await {
            Ok(revision) => Ok(Some((record, revision))),
            // Stopped (or claimed) meanwhile.
            Err(_) => Ok(None),
        }
    };
    let claimed: Result<_, String> = claimed.await;
    // Acknowledged once claimed (or found not to need a worker): until
    // then a redelivery can reach another worker.
    match &claimed {
        Ok(_) => {
            if let Err(error) = message.double_ack().await {
                tracing::warn!(task = %id, error = %error, "cannot acknowledge work");
            }
        }
        Err(error) if error.starts_with("its record names agent") => {
            tracing::warn!(task = %id, error = %error, "work refused; dropped");
            terminate(&message).await;
            return;
        }
        Err(error) => {
            tracing::warn!(task = %id, error = %error, "cannot claim a task; leaving it to be redelivered");
            return;
        }
    }
    let Ok(Some((record, revision))) = claimed else {
        tracing::debug!(task = %id, "task no longer queued; dropped");
        return;
    };
    tracing::debug!(task = %id, agent = %record.agent, "claimed");
    let ended = run(&shared, &id, &record).await;
    let mut record = record;
    record.status = ended.status.as_str().to_string();
    record.result = ended.result;
    record.error = ended.error;
    record.output_pieces = ended.pieces;
    record.model = ended.model;
    match kv.update(&key, record.encode(), revision).await {
        Ok(_) => tracing::debug!(task = %id, status = %record.status, "ended"),
        // Stopped or interrupted by the coordinator meanwhile: that stands.
        Err(error) => {
            tracing::debug!(task = %id, error = %error, "end not recorded: the record moved on")
        }
    }
    shared.running.lock().unwrap().remove(&id);
}

/// Tells the server never to deliver `message` again.
async fn terminate(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(jetstream::AckKind::Term).await {
        tracing::warn!(error = %error, "cannot drop a work message");
    }
}

struct Ended {
    status: TaskStatus,
    result: Option<String>,
    error: Option<String>,
    pieces: u64,
    model: Option<crate::tasks::ModelUse>,
}

/// Runs the claimed task through this worker's toolset, publishing its
/// output as it comes, until it ends.
async fn run(shared: &Shared, id: &str, record: &Record) -> Ended {
    let failed = |error: String| Ended {
        status: TaskStatus::Failed,
        result: None,
        error: Some(error),
        pieces: 0,
        model: None,
    };
    // Only with the component it was queued for.
    if let Err(error) = super::components::check(&shared.cluster, &shared.components, record).await
    {
        return failed(format!("worker {}: {error}", shared.name));
    }
    let toolset = &shared.toolset;
    // Under the task's own id, below its ancestors (which ran elsewhere),
    // so that its sub-agents are scoped, limited and cascaded as on one
    // host.
    let ancestors = (record.ancestors.iter()).map(|id| TaskId::from(id.as_str()));
    let mut lineage = record.lineage.clone();
    lineage.pop();
    let caller = (shared.caller()).on_behalf_of(ancestors.collect(), lineage);
    (shared.running.lock().unwrap()).insert(id.to_string());
    // Subscribed before the start: no change of the task is missed.
    let mut events = toolset.events().subscribe();
    let here = toolset.task_status(shared.caller(), id);
    let local = if here.is_ok_and(|status| !status.is_final()) {
        // A sub-agent a guest here started: listed here already, it now
        // runs here (its follower hands it over on seeing this claim).
        tracing::debug!(task = %id, "a sub-agent of a task here; running it here");
        id.to_string()
    } else {
        let started = toolset.run_background_agent_as(
            &caller,
            TaskId::from(id),
            &record.agent,
            &record.task,
            record.expected_output.as_deref(),
        );
        match started {
            Ok(info) => info.id.to_string(),
            Err(error) => return failed(format!("worker {}: {error}", shared.name)),
        }
    };
    let mut offset = 0;
    let mut pieces = 0u64;
    // The first check comes at once: a stop recorded between the claim
    // and this task being listed as running here found nothing to stop.
    let mut checked = tokio::time::Instant::now()
        .checked_sub(STOP_CHECK)
        .unwrap_or_else(tokio::time::Instant::now);
    let subject = output_subject(id);
    loop {
        // The status before the output: output read after a final status
        // is all there will be.
        let done = match toolset.task_status(shared.caller(), &local) {
            Ok(status) => status.is_final(),
            Err(error) => return failed(format!("worker {}: {error}", shared.name)),
        };
        let view = match toolset.view_background_agent(shared.caller(), &local) {
            Ok(view) => view,
            Err(error) => return failed(format!("worker {}: {error}", shared.name)),
        };
        let all = view.output.text;
        let mut end = all.len();
        // A character still being written is left for the next look.
        if !done && all.ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        let start = all.floor_char_boundary(offset.min(end));
        let mut text = &all[start..end];
        while !text.is_empty() {
            let mut end = text.floor_char_boundary(text.len().min(OUTPUT_PIECE_BYTES));
            if end == 0 {
                end = 1;
                while !text.is_char_boundary(end) {
                    end += 1;
                }
            }
            let (piece, rest) = text.split_at(end);
            text = rest;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ATTEMPT_HEADER, record.retries.to_string().as_str());
            let sent = async {
                (shared.cluster.js)
                    .publish_with_headers(subject.clone(), headers, piece.to_string().into())
                    .await?
                    .await
            };
            match sent.await {
                Ok(_) => pieces += 1,
                Err(error) => tracing::warn!(task = %id, error = %error, "output piece lost"),
            }
        }
        offset = end;
        if done {
            break;
        }
        // A stop whose message was missed is in the bucket: checked every
        // [`STOP_CHECK`], however busy the task. Stopped here too when the
        // record was given to another worker or another attempt.
        if checked.elapsed() >= STOP_CHECK {
            checked = tokio::time::Instant::now();
            // Gone from the bucket (the coordinator pruned it): ended
            // there, so stopped here too.
            let over = match shared.cluster.kv.entry(task_key(id)).await {
                Ok(Some(entry)) => Record::decode(&entry.value).is_ok_and(|now| {
                    now.status().is_final()
                        || now.worker.as_deref() != Some(shared.name.as_str())
                        || now.retries != record.retries
                }),
                Ok(None) => true,
                Err(_) => false,
            };
            if over {
                tracing::debug!(task = %id, "stopped in the bucket; stopping it here");
                let _ = toolset.stop_background_agent(shared.caller(), &local).await;
            }
        }
        // Until the task changes or writes (a short pause then lets more
        // output gather), or the next check is due.
        let changed = async {
            loop {
                match events.recv().await {
                    Ok(event) if event.id.as_str() == local => return Some(event.kind),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        };
        let due = STOP_CHECK.saturating_sub(checked.elapsed());
        if let Ok(Some(EventKind::Output(_))) = tokio::time::timeout(due, changed).await {
            tokio::time::sleep(OUTPUT_GATHER).await;
        }
    }
    let view = match toolset.view_background_agent(shared.caller(), &local) {
        Ok(view) => view,
        Err(error) => return failed(format!("worker {}: {error}", shared.name)),
    };
    let status = match view.info.status {
        // Stopped here by this worker's shutdown (a stop in the bucket or
        // of a parent here is recorded as a stop).
        TaskStatus::Stopped if shared.shutdown.is_cancelled() => {
            return Ended {
                status: TaskStatus::Interrupted,
                result: None,
                error: Some(format!(
                    "interrupted: worker {} was shut down while running this task",
                    shared.name
                )),
                pieces,
                model: view.info.model,
            };
        }
        status => status,
    };
    Ended {
        status,
        result: view.result,
        error: view.error,
        pieces,
        model: view.info.model,
    }
}
