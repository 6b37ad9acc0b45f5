#!/usr/bin/env bash
# Build and test the Python and Node bindings from a fresh clone.
#
# Needs: rustup/cargo (the pinned toolchain installs itself), python3 (3.10+)
# with pip and venv, node 20+ and npm, and the package registries.
# Builds the component and the CLI, installs the Python package into
# target/py-venv, runs `npm ci` + the jco transpile in bindings/js, then runs
# pytest, `node --test`, the 9-cell parity matrix (CLI x Python x Node) and
# the prime_rl example. Exits non-zero if anything fails.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
start=$SECONDS
export HANDOFF_CACHE_DIR="${HANDOFF_CACHE_DIR:-$repo/target/bindings-cache}"

step() { printf '\n=== %s\n' "$*"; }

step "build the component and the CLI"
wasm="$(bindings/build-component.sh)"
echo "component: $wasm ($(wc -c <"$wasm") bytes)"
# HANDOFF_BIN (scripts/test sets it to the binary `cargo test` built) saves a
# build of the CLI with another feature set.
cli="${HANDOFF_BIN:-}"
if [ -z "$cli" ]; then
    cargo build --quiet --release -p handoff
    cli="$repo/target/release/handoff"
fi

step "install the Python package into target/py-venv"
[ -x target/py-venv/bin/python ] || python3 -m venv target/py-venv
py="$repo/target/py-venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "./bindings/python[test]"
"$py" -c 'import handoff, importlib.metadata as m; print("handoff", m.version("handoff"), "on wasmtime", m.version("wasmtime"))'

step "install and transpile the Node package (npm ci, jco)"
(cd bindings/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)

failed=()
run() {
    local name="$1"
    shift
    step "$name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

# pytest's folders under one of this script's own, removed at the end
# (pytest itself would leave a pytest-of-$USER folder behind).
scratch="$(mktemp -d "${TMPDIR:-/tmp}/handoff-bindings-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# HANDOFF_BIN: tests/test_bulk.py compares the manifests of the Python host's
# native hashing with the CLI's.
run "pytest (bindings/python)" env HANDOFF_BIN="$cli" "$py" -m pytest -q -p no:cacheprovider --basetemp "$scratch/pytest" bindings/python/tests
run "node --test (bindings/js)" bash -c 'cd bindings/js && node --test test/'
run "parity matrix (writer x reader)" "$py" bindings/parity/parity.py --cli "$cli"
run "prime_rl example" "$py" examples/prime_rl/run.py

echo
if [ ${#failed[@]} -ne 0 ]; then
    echo "bindings: FAILED: ${failed[*]} ($((SECONDS - start)) s)"
    exit 1
fi
echo "bindings: all passed ($((SECONDS - start)) s)"
