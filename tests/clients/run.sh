#!/usr/bin/env bash
# Runs real MCP clients against `bgagents mcp examples/team.yaml`: the
# official Python SDK (tests/clients/mcp_python_client.py; over HTTP against
# `bgagents serve --http`: mcp_python_http_client.py) and the official
# MCP Inspector's CLI (tests/clients/inspector.sh). Installs both, pinned,
# under target/mcp-clients/ the first time (and again when a pin changes);
# builds the host and the example plugins.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
clients="$root/target/mcp-clients"
mkdir -p "$clients"

python_sdk=2.3.0
inspector=2.12.0
# The Inspector needs Node >= 22.19; npm ships Node itself as a package.
node=22.23.3

if ! "$clients/venv/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('mcp') != '$python_sdk')" 2>/dev/null; then
    rm -rf "$clients/venv"
    python3 -m venv "$clients/venv"
    "$clients/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$python_sdk"
fi

npm_pins="node@$node @modelcontextprotocol/inspector@$inspector"
if [ "$(cat "$clients/npm/pins" 2>/dev/null)" != "$npm_pins" ]; then
    rm -rf "$clients/npm"
    mkdir -p "$clients/npm"
    # shellcheck disable=SC2086 # the pins are separate arguments
    npm install --prefix "$clients/npm" --no-package-lock --no-audit --no-fund --loglevel=error $npm_pins
    echo "$npm_pins" >"$clients/npm/pins"
fi
bin="$clients/npm/node_modules/.bin"

# The binary `cargo test` builds (the mcp test drives it), so that after the
# test step this builds nothing.
cargo build --quiet -p bgagents --test all
cargo build-plugins --quiet
bgagents="$root/target/debug/bgagents"
team="$root/examples/team.yaml"

"$clients/venv/bin/python" --version
"$clients/venv/bin/python" tests/clients/mcp_python_client.py "$bgagents" "$team"
scratch=$(mktemp -d)
"$clients/venv/bin/python" tests/clients/mcp_python_http_client.py "$bgagents" "$team" "$scratch"
rm -rf "$scratch"
PATH="$bin:$PATH" node --version
PATH="$bin:$PATH" bash tests/clients/inspector.sh "$bin/mcp-inspector" "$bgagents" "$team"
