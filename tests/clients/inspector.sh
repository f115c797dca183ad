#!/usr/bin/env bash
# Drives `bgagents mcp` with the official MCP Inspector in CLI mode, one
# session per call: tools/list, logging/setLevel, a tools/call that starts a
# task (an MCP task: the Inspector declares the tasks extension), and a
# tools/call the server must refuse. Fails loudly on anything
# unexpected.
#
# Usage: tests/clients/inspector.sh INSPECTOR BGAGENTS TEAM.yaml
#   INSPECTOR  the Inspector's `mcp-inspector` launcher (Node >= 22.19 on PATH)
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
inspector=$1 bgagents=$2 team=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The Inspector keeps a catalog of servers; keep it out of $HOME.
export MCP_CATALOG_PATH="$scratch/catalog.json"

fail() {
    echo "inspector.sh: $*" >&2
    exit 1
}

# inspect NAME EXPECTED_EXIT ARGS...: one Inspector session; its JSON output
# goes to $scratch/NAME.json.
inspect() {
    local name=$1 expected=$2 status=0
    shift 2
    timeout 120 "$inspector" --cli "$bgagents" mcp "$team" "$@" \
        >"$scratch/$name.json" 2>"$scratch/$name.err" || status=$?
    if [ "$status" -ne "$expected" ]; then
        cat "$scratch/$name.json" "$scratch/$name.err" >&2
        fail "$name: the Inspector exited with $status, expected $expected"
    fi
}

# check NAME JS_CONDITION: evaluates the condition with `r` bound to the
# session's JSON output.
check() {
    local name=$1 condition=$2
    node -e '
        const fs = require("fs");
        const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        if (!('"$condition"')) {
            console.error(JSON.stringify(r, null, 2));
            process.exit(1);
        }' "$scratch/$name.json" || fail "$name: expected $condition"
}

# Connecting sets the logging level first: the server must implement it.
inspect list 0 --method tools/list
check list 'r.tools.map(t => t.name).join() === "run_background_agent,list_background_agents,view_background_agent,stop_background_agent,wait_background_agents,run_agent"'
check list 'r.tools.every(t => t.inputSchema.additionalProperties === false)'

inspect level 0 --method logging/setLevel --log-level notice
check level 'Object.keys(r).length === 0'

inspect run 0 --method tools/call --tool-name run_background_agent \
    --tool-arg agent=calculator "task=(17 + 25) * 3"
# The Inspector declares the MCP tasks extension, so the task comes back as
# an MCP task whose id is the bgagents task id.
check run '/^agent_task_[0-9a-f-]{36}$/.test(r.taskId) && r.status === "working" && r.statusMessage === "calculator queued" && r.pollIntervalMs > 0'

inspect wait 0 --method tools/call --tool-name wait_background_agents \
    --tool-arg 'task_ids=["agent_task_unknown"]' timeout=1
check wait 'r.content[0].text === JSON.stringify({all_done: true, tasks: [{task_id: "agent_task_unknown", status: "not_found", done: true, error: "Task not found; it may have been pruned."}]})'

# A tool error (isError) makes the Inspector exit with 5.
inspect refused 5 --method tools/call --tool-name list_background_agents --tool-arg verbose=true
check refused 'r.isError === true && r.content[0].text === "unknown argument \"verbose\"; this tool takes no arguments"'

echo "MCP Inspector CLI sessions ok: tools/list, logging/setLevel, tools/call (run as an MCP task, wait, a refused call)"
