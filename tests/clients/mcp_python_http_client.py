"""A session against `bgagents serve --http` with the official MCP Python
SDK, over Streamable HTTP with a bearer token.

Usage: python mcp_python_http_client.py BGAGENTS TEAM.yaml SCRATCH_DIR

Starts the daemon on 127.0.0.1 (a free port) with a token file in
SCRATCH_DIR, checks that a client without the token is refused, then
runs a background calculator task, waits for it, and views it, with the
token. Any mismatch raises, so the process exits non-zero with the reason.
"""

import json
import os
import secrets
import subprocess
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TIMEOUT_SECONDS = 120
PREFIX = "Background agent task started with ID: "


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def text_of(result):
    check(not result.is_error, f"tool error: {result}")
    return "".join(block.text for block in result.content)


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
                return await session(url, token)

        task_id = anyio.run(run)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    log = open(os.path.join(scratch, "serve.log")).read()
    check(token not in log, "the token reached the daemon's log")
    print(f"python SDK over HTTP ok: task {task_id} completed, token required")


if __name__ == "__main__":
    main()
