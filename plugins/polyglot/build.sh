#!/usr/bin/env bash
# Builds the Python and JavaScript example guests into target/polyglot/:
#   coordinator-py.wasm  (Python, componentize-py)
#   shouter-js.wasm      (JavaScript, componentize-js)
# Installs the two toolchains from PyPI and npm into target/polyglot/ first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/polyglot"
mkdir -p "$out"

if [ ! -x "$out/venv/bin/componentize-py" ]; then
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install --quiet componentize-py==0.25.1
fi
(cd "$here/python" &&
    "$out/venv/bin/componentize-py" -d "$root/wit" -w sub-agent componentize app \
        -o "$out/coordinator-py.wasm")

# npm prunes a nested dependency of componentize-js when it reinstalls over
# an existing node_modules (with or without a lock file), so install fresh,
# and only when something is missing.
cd "$here/js"
if [ ! -d node_modules/@bytecodealliance/preview2-shim ]; then
    rm -rf node_modules
    npm install --no-package-lock --silent --no-audit --no-fund
fi
node build.mjs agent.js "$out/shouter-js.wasm"
ls -l "$out"/*.wasm
