#!/usr/bin/env bash
# The WASI command in the runtimes people already have.
#
# Builds handoff-command.wasm (and the build without exit-with-code), makes
# sure the stock wasmtime CLI (48.0.8) and jco (crates/handoff-command/js) are
# there, installing what is missing, then runs the e2e tests that use them
# (tests/wasi_command.rs, tests/strace.rs):
#   - native handoff <-> wasmtime <-> jco: publish/seal in one, wait --verify
#     hash in another, every direction;
#   - the same JSON keys as the native CLI; exit codes 3/4/5 per runtime;
#   - nothing outside the preopens is reachable;
#   - strace -f of `wasmtime run ... seal`: the native host's fsync order.
#
# Environment: WASMTIME (a wasmtime 48.0.8 to use), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
wasmtime_version=48.0.8

step() { printf '\n== %s\n' "$*" >&2; }

step "build handoff-command.wasm (and the build without exit-with-code)"
out="$target_dir/wasm32-wasip2/release"
cargo build --release --target wasm32-wasip2 -p handoff-command --no-default-features
cp "$out/handoff-command.wasm" "$out/handoff-command-plain.wasm"
# The default build last: it is what target/.../handoff-command.wasm holds.
cargo build --release --target wasm32-wasip2 -p handoff-command
ls -l "$out/handoff-command.wasm" "$out/handoff-command-plain.wasm" >&2

step "wasmtime-cli $wasmtime_version"
find_wasmtime() {
    local w
    for w in "${WASMTIME:-}" "$(command -v wasmtime || true)" \
        "${CARGO_HOME:-$HOME/.cargo}/bin/wasmtime" "$target_dir/tools/bin/wasmtime"; do
        if [ -n "$w" ] && [ -x "$w" ] && "$w" --version 2>/dev/null | grep -Eq "(^| )$wasmtime_version( |$)"; then
            echo "$w"
            return 0
        fi
    done
    return 1
}
if ! WASMTIME="$(find_wasmtime)"; then
    echo "installing wasmtime-cli $wasmtime_version into ${CARGO_HOME:-$HOME/.cargo}/bin" \
        "(cargo install --locked: several minutes on 2 cores, once per machine)" >&2
    cargo install --locked wasmtime-cli --version "$wasmtime_version"
    WASMTIME="$(find_wasmtime)"
fi
export WASMTIME
"$WASMTIME" --version >&2

step "jco (npm ci in crates/handoff-command/js)"
if ! command -v node >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "error: node is missing and cannot be installed here" >&2
        exit 1
    fi
fi
# node_modules/.package-lock.json is npm's record of what it installed.
if [ ! -f "$here/js/node_modules/.package-lock.json" ] \
    || [ "$here/js/package-lock.json" -nt "$here/js/node_modules/.package-lock.json" ]; then
    (cd "$here/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
node --version >&2
node "$here/js/node_modules/@bytecodealliance/jco/dist/jco.js" --version >&2

step "tests: native <-> wasmtime <-> jco, exit codes, preopens, strace"
export HANDOFF_COMMAND_WASM="$out/handoff-command.wasm"
export HANDOFF_COMMAND_WASM_PLAIN="$out/handoff-command-plain.wasm"
cargo test --release -p handoff --test e2e -- wasi_command strace --nocapture
