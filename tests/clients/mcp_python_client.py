"""A session against `bgagents mcp` with the official MCP Python SDK.

Usage: python mcp_python_client.py BGAGENTS TEAM.yaml

Initializes, sets the logging level, lists the tools, runs a background
calculator task, waits for it with progress, and checks every result. Any
mismatch raises, so the process exits non-zero with the reason.
"""

import json
import sys
import warnings

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

# logging/setLevel is deprecated in the newest protocol revision, but it is
# what this session exercises.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated.*")

TOOLS = [
    "run_background_agent",
    "list_background_agents",
    "view_background_agent",
    "stop_background_agent",
    "wait_background_agents",
    "run_agent",
]
TIMEOUT_SECONDS = 120


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def text_of(result):
    check(not result.is_error, f"tool error: {result}")
    return text_of_any(result)


def text_of_any(result):
    return "".join(block.text for block in result.content)


async def session(bgagents, team):
    logs = []
    progress = []

    async def on_log(params):
        logs.append((params.level, params.data))

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    server = StdioServerParameters(command=bgagents, args=["mcp", team])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, logging_callback=on_log) as client:
            info = await client.initialize()
            check(info.server_info.name == "bgagents", f"server info: {info.server_info}")
            check("calculator" in (info.instructions or ""), f"instructions: {info.instructions}")

            # Only notice and above: finishes, but no output or start events.
            await client.set_logging_level("notice")

            listed = await client.list_tools()
            names = [tool.name for tool in listed.tools]
            check(names == TOOLS, f"tools: {names}")

            started = text_of(await client.call_tool(
                "run_background_agent",
                {"agent": "calculator", "task": "(17 + 25) * 3"},
            ))
            prefix = "Background agent task started with ID: "
            check(started.startswith(prefix), f"run: {started!r}")
            task_id = started.splitlines()[0][len(prefix):]

            waited = text_of(await client.call_tool(
                "wait_background_agents",
                {"task_ids": [task_id], "timeout": 60},
                progress_callback=on_progress,
            ))
            report = json.loads(waited)
            check(list(report) == ["all_done", "tasks"], f"wait keys: {waited}")
            check(report["all_done"] is True, f"wait: {waited}")
            entry = report["tasks"][0]
            check(list(entry) == ["task_id", "status", "done", "output"], f"task keys: {waited}")
            check(entry["task_id"] == task_id and entry["status"] == "completed", f"wait: {waited}")
            check("126" in entry["output"], f"calculator output: {entry['output']!r}")

            viewed = text_of(await client.call_tool("view_background_agent", {"task_id": task_id}))
            check("Status:  completed" in viewed, f"view: {viewed!r}")

            refused = await client.call_tool("list_background_agents", {"verbose": True})
            check(refused.is_error, f"an unknown argument was accepted: {refused}")
            check(text_of_any(refused) == 'unknown argument "verbose"; this tool takes no arguments',
                  f"refusal: {refused}")

            # Notifications travel on their own; give the last ones a moment.
            with anyio.move_on_after(10):
                while not any(data.get("event") == "finished" for _, data in logs):
                    await anyio.sleep(0.05)
            events = [(level, data.get("event")) for level, data in logs
                      if isinstance(data, dict) and data.get("task_id") == task_id]
            check(("notice", "finished") in events, f"no finished notification: {logs}")
            check(all(level == "notice" for level, _ in events),
                  f"notifications below the level set: {events}")
            # A task that finished before the wait began reports no progress;
            # one that finished during it reports 1 of 1.
            check(all(total == 1 for _, total, _ in progress), f"progress: {progress}")
    return task_id, len(events), len(progress)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bgagents, team = sys.argv[1], sys.argv[2]

    async def run():
        with anyio.fail_after(TIMEOUT_SECONDS):
            return await session(bgagents, team)

    task_id, notifications, progress = anyio.run(run)
    print(f"python SDK session ok: task {task_id} completed, "
          f"{notifications} notification(s) at notice, {progress} progress update(s)")


if __name__ == "__main__":
    main()
