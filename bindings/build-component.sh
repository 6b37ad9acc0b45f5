#!/usr/bin/env bash
# Build the handoff guest component exactly as crates/handoff-runtime/build.rs
# does (same profile overrides, same target dir), so the CLI, the Python and
# the Node packages all run the same bytes. Prints the .wasm path.
#
# HANDOFF_GUEST_WASM=/path/to/handoff_guest.wasm skips the build and prints
# that path instead.
set -euo pipefail
if [ -n "${HANDOFF_GUEST_WASM:-}" ]; then
    [ -f "$HANDOFF_GUEST_WASM" ] || { echo "HANDOFF_GUEST_WASM=$HANDOFF_GUEST_WASM: no such file" >&2; exit 1; }
    echo "$HANDOFF_GUEST_WASM"
    exit 0
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
env CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo build --quiet --release --target wasm32-wasip2 -p handoff-guest \
        --manifest-path "$repo/Cargo.toml" --target-dir "$repo/target/guest" >&2
echo "$repo/target/guest/wasm32-wasip2/release/handoff_guest.wasm"
