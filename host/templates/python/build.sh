#!/bin/sh
# Builds app.py into {artifact}.wasm with componentize-py, which is
# installed into venv/ the first time.
set -eu
cd "$(dirname "$0")"
if [ ! -x venv/bin/componentize-py ]; then
    python3 -m venv venv
    venv/bin/pip install --quiet componentize-py==0.25.1
fi
venv/bin/componentize-py -d wit -w sub-agent componentize app -o {artifact}.wasm
