//! The WIT front-end: the `output` and `background-agents` imports a guest
//! calls, adapted onto the toolset with the calling task as the caller; and
//! WASI 0.2 with symlink creation refused.

use crate::bindings::SubAgent;
use crate::bindings::bgagents::agents::{background_agents, output, types};
use crate::tasks::{TaskInfo, TaskStatus, TaskView};
use crate::toolset::{GuestState, WaitReport};
use wasmtime::component::{HasSelf, Linker};

/// Adds WASI 0.2 and the bgagents imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    refuse_symlink_creation(linker)?;
    SubAgent::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
}

/// The WASI filesystem interface the linker provides (guests importing any
/// earlier 0.2 version are linked to it).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `descriptor.symlink-at` with one that always answers
/// `not-permitted`. A guest cannot follow a symlink out of its grant, but a
/// link it planted in a read-write grant (`out/l -> ../secret`) would be
/// followed by whatever on the host uses that directory later.
fn refuse_symlink_creation(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
    linker.allow_shadowing(true);
    let replaced = linker.instance(WASI_FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.symlink-at",
        |_store, (_dir, _target, _link): (Resource<Descriptor>, String, String)| {
            Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
        },
    );
    linker.allow_shadowing(false);
    replaced
}

impl types::Host for GuestState {}

impl output::Host for GuestState {
    async fn write(&mut self, text: String) {
        self.output.append(text.as_bytes());
    }
}

impl background_agents::Host for GuestState {
    async fn run_background_agent(
        &mut self,
        agent: String,
        task: String,
        expected_output: Option<String>,
    ) -> Result<types::TaskInfo, String> {
        self.toolset
            .run_background_agent(&self.caller, &agent, &task, expected_output.as_deref())
            .map(|info| wit_info(&info))
            .map_err(|error| error.to_string())
    }

    async fn list_background_agents(&mut self) -> Vec<types::TaskInfo> {
        self.toolset
            .list_background_agents(&self.caller)
            .iter()
            .map(wit_info)
            .collect()
    }

    async fn view_background_agent(&mut self, task_id: String) -> Result<types::TaskView, String> {
        self.toolset
            .view_background_agent(&self.caller, &task_id)
            .map(wit_view)
            .map_err(|error| error.to_string())
    }

    async fn stop_background_agent(&mut self, task_id: String) -> Result<types::TaskInfo, String> {
        self.toolset
            .stop_background_agent(&self.caller, &task_id)
            .await
            .map(|info| wit_info(&info))
            .map_err(|error| error.to_string())
    }

    async fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u32,
    ) -> Result<types::WaitReport, String> {
        let (toolset, caller) = (self.toolset.clone(), self.caller.clone());
        let waited = toolset.wait_background_agents(&caller, &task_ids, timeout_seconds.into());
        self.lending_slot(waited)
            .await
            .map(wit_report)
            .map_err(|error| error.to_string())
    }
}

fn wit_status(status: TaskStatus) -> types::TaskStatus {
    match status {
        TaskStatus::Queued => types::TaskStatus::Queued,
        TaskStatus::Running => types::TaskStatus::Running,
        TaskStatus::Completed => types::TaskStatus::Completed,
        TaskStatus::Failed => types::TaskStatus::Failed,
        TaskStatus::Stopped => types::TaskStatus::Stopped,
    }
}

fn wit_info(info: &TaskInfo) -> types::TaskInfo {
    types::TaskInfo {
        id: info.id.to_string(),
        agent: info.agent.clone(),
        status: wit_status(info.status),
        runtime_ms: info.runtime.as_millis().try_into().unwrap_or(u64::MAX),
        parent_id: info.parent.as_ref().map(ToString::to_string),
    }
}

fn wit_view(view: TaskView) -> types::TaskView {
    types::TaskView {
        info: wit_info(&view.info),
        task: view.task,
        output: view.output.text,
        truncated: view.output.truncated,
        result: view.result,
        error: view.error,
    }
}

fn wit_report(report: WaitReport) -> types::WaitReport {
    types::WaitReport {
        all_done: report.all_done,
        timed_out: report.timed_out,
        tasks: report
            .tasks
            .into_iter()
            .map(|entry| types::WaitEntry {
                task_id: entry.task_id,
                status: entry.status.map(wit_status),
                output: entry.output,
                error: entry.error,
                truncated: entry.truncated,
            })
            .collect(),
    }
}
