"""A session against `bgagents serve --http` with the official MCP Python
SDK, over Streamable HTTP with a bearer token.

Usage: python mcp_python_http_client.py BGAGENTS TEAM.yaml SCRATCH_DIR

Starts the daemon on 127.0.0.1 (a free port) with a token file in
SCRATCH_DIR, checks that a client without the token is refused, then
runs a background calculator task, waits for it, and views it, with the
token. A second session (the SDK's `Client`, which negotiates 2026-07-28)
declares the MCP tasks extension (`io.modelcontextprotocol/tasks`,
SEP-2663) as a `ClientExtension` whose result claim takes `resultType:
"task"`: `run_background_agent` then answers with an MCP task whose id is
the bgagents task id, `tasks/get` is polled until it is completed with the
calculator's result, `run_agent` through `Client.call_tool` is resolved by
the claim (polling `tasks/get`) into its result, and a spinner started as a
task is cancelled with `tasks/cancel`, after which `tasks/get` reports it
cancelled. Any mismatch raises, so the process exits non-zero with the
reason.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any, Literal

import anyio
from mcp import Client, ClientSession
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, Request, RequestParams, Result

TIMEOUT_SECONDS = 120
PREFIX = "Background agent task started with ID: "
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
FINAL_STATUSES = ("completed", "failed", "cancelled")


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def text_of(result):
    check(not result.is_error, f"tool error: {result}")
    return "".join(block.text for block in result.content)


# The MCP tasks extension (SEP-2663) through the SDK's extension surface
# (`ClientExtension`, `ResultClaim`, `Request.name_param`). The SDK ships no
# tasks extension of its own, and its task types are the 2025-11-25 core ones
# (`CreateTaskResult` nests the task under `task`, `ttl`/`pollInterval`, no
# `Mcp-Name` for tasks/*, `tasks/cancel` answering with the task), so the
# extension's wire shapes are declared here. The SDK sends the requests with
# the per-request `_meta` and headers, `Mcp-Name` from `name_param`, and
# parses a `resultType: "task"` answer to `tools/call` through the claim.


class CreateTaskResult(Result):
    """`tools/call` answered with a task: the task's fields at the top level."""

    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class TaskResult(Result):
    """`tasks/get`: the task, with its result once completed (its error once failed)."""

    result_type: str | None = None
    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskParams(RequestParams):
    task_id: str


class GetTaskRequest(Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class CancelTaskRequest(Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


async def get_task(session, task_id):
    got = await session.send_request(GetTaskRequest(params=TaskParams(task_id=task_id)), TaskResult)
    check(got.task_id == task_id, f"tasks/get {task_id} answered for {got.task_id}")
    return got


async def poll_to_end(session, task_id):
    """Polls `tasks/get` at the interval the server asks for until the task is final."""
    while True:
        got = await get_task(session, task_id)
        if got.status in FINAL_STATUSES:
            return got
        check(got.status == "working", f"tasks/get: {got}")
        await anyio.sleep((got.poll_interval_ms or 100) / 1000)


async def resolve_task(created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    """What `Client.call_tool` returns for a task: its result once completed."""
    done = await poll_to_end(ctx.session, created.task_id)
    check(done.status == "completed", f"{ctx.tool_name} as a task: {done}")
    return CallToolResult.model_validate(done.result)


class TasksExtension(ClientExtension):
    identifier = TASKS_EXTENSION

    def claims(self):
        return (ResultClaim(result_type="task", model=CreateTaskResult, resolve=resolve_task),)


def start_daemon(bgagents, team, scratch):
    token = secrets.token_hex(32)
    token_file = os.path.join(scratch, "token")
    # Readable by its owner only, or the daemon refuses it.
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(token + "\n")
    log_path = os.path.join(scratch, "serve.log")
    log = open(log_path, "w")
    daemon = subprocess.Popen(
        [bgagents, "serve", team, "--state", os.path.join(scratch, "state"),
         "--http", "127.0.0.1:0", "--auth-token-file", token_file],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with open(log_path) as file:
            for line in file:
                if "serving MCP over HTTP at " in line:
                    return daemon, line.rsplit(" ", 1)[1].strip(), token
        check(daemon.poll() is None, f"the daemon exited: {open(log_path).read()}")
        time.sleep(0.05)
    raise AssertionError("the daemon never listened")


async def refused_without_token(url):
    try:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as client:
                with anyio.fail_after(10):
                    await client.initialize()
    except Exception:  # noqa: BLE001 — any failure is the refusal
        return True
    return False


async def session(url, token):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as client:
            info = await client.initialize()
            check(info.server_info.name == "bgagents", f"server info: {info.server_info}")
            names = [tool.name for tool in (await client.list_tools()).tools]
            check("run_background_agent" in names and "list_all_background_agents" in names,
                  f"tools: {names}")
            started = text_of(await client.call_tool(
                "run_background_agent", {"agent": "calculator", "task": "(17 + 25) * 3"}))
            check(started.startswith(PREFIX), f"run: {started!r}")
            task_id = started.splitlines()[0][len(PREFIX):]
            report = json.loads(text_of(await client.call_tool(
                "wait_background_agents", {"task_ids": [task_id], "timeout": 60})))
            entry = report["tasks"][0]
            check(entry["status"] == "completed", f"wait: {report}")
            check("126" in entry["output"], f"calculator output: {entry['output']!r}")
            listed = text_of(await client.call_tool("list_background_agents", {}))
            check(task_id in listed, f"list: {listed!r}")
            viewed = text_of(await client.call_tool("view_background_agent", {"task_id": task_id}))
            check("Status:  completed" in viewed, f"view: {viewed!r}")
    return task_id


def result_text(task):
    check(task.result is not None, f"a completed task without its result: {task}")
    result = CallToolResult.model_validate(task.result)
    return text_of(result)


async def tasks_session(url, token):
    """The tasks extension: tasks started, polled to their result, cancelled."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    transport = streamable_http_client(url, http_client=http)
    async with Client(transport, extensions=[TasksExtension()]) as client:
        # The extension is of the 2026-07-28 revision; the SDK claims
        # `resultType: "task"` only on a connection that negotiated it.
        check(client.protocol_version == "2026-07-28",
              f"protocol version: {client.protocol_version}")
        extensions = client.server_capabilities.extensions or {}
        check(TASKS_EXTENSION in extensions, f"server extensions: {extensions}")
        await client.list_tools()
        session = client.session

        created = await session.call_tool(
            "run_background_agent", {"agent": "calculator", "task": "(17 + 25) * 3"},
            allow_claimed=True)
        check(isinstance(created, CreateTaskResult), f"run_background_agent, no task: {created}")
        check(created.status == "working", f"a new task: {created}")
        task_id = created.task_id
        # The MCP task id is the bgagents task id.
        listed = text_of(await client.call_tool("list_background_agents", {}))
        check(task_id in listed, f"task {task_id} not in the list: {listed!r}")
        done = await poll_to_end(session, task_id)
        check(done.status == "completed", f"calculator task: {done}")
        output = result_text(done)
        check("126" in output, f"calculator result: {output!r}")

        # run_agent through the SDK's own call_tool: the claim resolves the
        # task into the tool's result.
        answer = text_of(await client.call_tool(
            "run_agent", {"agent": "calculator", "task": "2^10"}))
        check("1024" in answer, f"run_agent: {answer!r}")

        spinning = await session.call_tool(
            "run_background_agent", {"agent": "spinner", "task": "spin"}, allow_claimed=True)
        check(isinstance(spinning, CreateTaskResult), f"spinner, no task: {spinning}")
        spinner = spinning.task_id
        running = await get_task(session, spinner)
        check(running.status == "working", f"spinner before the cancel: {running}")
        await session.send_request(CancelTaskRequest(params=TaskParams(task_id=spinner)), Result)
        # The daemon answers the cancel once the task has stopped.
        cancelled = await get_task(session, spinner)
        check(cancelled.status == "cancelled", f"spinner after tasks/cancel: {cancelled}")
        viewed = text_of(await client.call_tool("view_background_agent", {"task_id": spinner}))
        check("Status:  stopped" in viewed, f"spinner view: {viewed!r}")
    return task_id, spinner


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    bgagents, team, scratch = sys.argv[1:]
    os.makedirs(scratch, exist_ok=True)
    daemon, url, token = start_daemon(bgagents, team, scratch)
    try:
        async def run():
            with anyio.fail_after(TIMEOUT_SECONDS):
                check(await refused_without_token(url), "a client without the token was served")
                return await session(url, token), await tasks_session(url, token)

        task_id, (mcp_task, spinner) = anyio.run(run)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    log = open(os.path.join(scratch, "serve.log")).read()
    check(token not in log, "the token reached the daemon's log")
    print(f"python SDK over HTTP ok: task {task_id} completed, token required; "
          f"tasks extension: MCP task {mcp_task} completed, {spinner} cancelled")


if __name__ == "__main__":
    main()
