#!/usr/bin/env bash
# Build a handoff component and print its .wasm path.
#
#   build-component.sh            the guest component (world `handoff`),
#                                 exactly as crates/handoff-runtime/build.rs
#                                 builds it (same profile overrides, same
#                                 target dir), so the CLI, the Python and the
#                                 Node packages all run the same bytes;
#   build-component.sh --command  handoff-command.wasm, the plain WASI
#                                 command (the Python package's `handoff`
#                                 console command runs it).
#
# HANDOFF_GUEST_WASM (HANDOFF_COMMAND_WASM with --command) set to a built
# file skips the build and prints that path instead. Installs the pinned
# toolchain's wasm32-wasip2 target first when it is missing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

prebuilt() {
    [ -f "$1" ] || { echo "$2=$1: no such file" >&2; exit 1; }
    echo "$1"
    exit 0
}

case "${1:-}" in
--command)
    [ -z "${HANDOFF_COMMAND_WASM:-}" ] || prebuilt "$HANDOFF_COMMAND_WASM" HANDOFF_COMMAND_WASM
    "$repo/scripts/ensure-toolchain"
    cargo build --quiet --release --target wasm32-wasip2 -p handoff-command \
        --manifest-path "$repo/Cargo.toml" >&2
    echo "${CARGO_TARGET_DIR:-$repo/target}/wasm32-wasip2/release/handoff-command.wasm"
    ;;
"")
    [ -z "${HANDOFF_GUEST_WASM:-}" ] || prebuilt "$HANDOFF_GUEST_WASM" HANDOFF_GUEST_WASM
    "$repo/scripts/ensure-toolchain"
    env CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
        CARGO_PROFILE_RELEASE_LTO=true \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
        CARGO_PROFILE_RELEASE_STRIP=true \
        CARGO_PROFILE_RELEASE_PANIC=abort \
        CARGO_PROFILE_RELEASE_DEBUG=false \
        cargo build --quiet --release --target wasm32-wasip2 -p handoff-guest \
            --manifest-path "$repo/Cargo.toml" --target-dir "$repo/target/guest" >&2
    echo "$repo/target/guest/wasm32-wasip2/release/handoff_guest.wasm"
    ;;
*)
    echo "usage: $0 [--command]" >&2
    exit 2
    ;;
esac
