#!/usr/bin/env bash
# Runs the recipes of docs/plugins.md exactly as the guide writes them. Each
# shell block marked `<!-- recipe: NAME -->` runs with bash -e in a fresh
# directory that holds the files of docs/recipes/NAME/ (the guide shows each
# of them verbatim; `cargo test --test all plugins::` checks that it does), with
# the bgagents of this checkout first on PATH.
#
#   bash docs/recipes/run.sh            # every recipe
#   bash docs/recipes/run.sh NAME...    # some of them
#
# Needs what the recipes install from: crates.io, PyPI and npm, python3
# (3.10 or newer), node and npm, and the wasm32-wasip2 Rust target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
guide="$root/docs/plugins.md"
target=${CARGO_TARGET_DIR:-$root/target}

cargo build --quiet --manifest-path "$root/Cargo.toml" -p bgagents
export PATH="$target/debug:$PATH"

# The lines of the fenced block after `<!-- recipe: $1 -->`.
block() {
    awk -v marker="<!-- recipe: $1 -->" '
        $0 == marker { armed = 1; next }
        armed && !inside && /^```/ { inside = 1; next }
        inside && /^```/ { exit }
        inside { print }
    ' "$guide"
}

if [ $# -gt 0 ]; then
    names=("$@")
else
    mapfile -t names < <(sed -n 's/^<!-- recipe: \(.*\) -->$/\1/p' "$guide")
fi

failed=0
for name in "${names[@]}"; do
    commands=$(block "$name")
    if [ -z "$commands" ]; then
        echo "no recipe named $name in $guide" >&2
        exit 2
    fi
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/bgagents-recipe-$name.XXXXXX")
    if [ -d "$here/$name" ]; then
        cp -R "$here/$name/." "$scratch/"
    fi
    # bgagents-guest is not on crates.io yet: recipes that depend on it get
    # this checkout's copy.
    mkdir -p "$scratch/.cargo"
    printf '[patch.crates-io]\nbgagents-guest = { path = "%s" }\n' \
        "$root/plugins/bgagents-guest" > "$scratch/.cargo/config.toml"
    started=$SECONDS
    echo "== recipe $name (in $scratch)"
    if (cd "$scratch" && bash -euo pipefail -x -c "$commands") > "$scratch.log" 2>&1; then
        echo "   ok in $((SECONDS - started)) s; last lines:"
        tail -n 3 "$scratch.log" | sed 's/^/   | /'
        rm -rf "$scratch" "$scratch.log"
    else
        echo "   FAILED after $((SECONDS - started)) s:"
        sed 's/^/   | /' "$scratch.log"
        failed=1
    fi
done
exit $failed
