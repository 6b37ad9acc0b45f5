#!/usr/bin/env bash
# The packages of scripts/dist where no Rust toolchain exists: the wheel in a
# fresh virtualenv and the npm tarball in a fresh folder, with PATH holding
# only python3, node, npm and the system directories (no cargo, no rustup).
# Through each: publish -> wait --verify hash -> gc, the documented exit
# codes, and each reading what the other wrote.
#
# Usage: tests/dist.sh [DIST_DIR]   (default target/dist; run scripts/dist first)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dist="$(cd "${1:-$repo/target/dist}" && pwd)"
wheel="$(ls "$dist"/handoff-*-py3-none-any.whl)"
tarball="$(ls "$dist"/handoff-*.tgz)"

work="$(mktemp -d "${TMPDIR:-/tmp}/handoff-dist-XXXXXX")"
trap 'rm -rf "$work"' EXIT

fail() { echo "dist test: FAILED: $*" >&2; exit 1; }

# A PATH with python3, node and npm only, besides /usr/bin and /bin.
python="$(python3 -c 'import sys; print(sys.executable)')"
mkdir "$work/bin"
ln -s "$python" "$work/bin/python3"
ln -s "$(command -v node)" "$work/bin/node"
ln -s "$(readlink -f "$(command -v npm)")" "$work/bin/npm"
export PATH="$work/bin:/usr/bin:/bin"
for tool in cargo rustup rustc; do
    if command -v "$tool" >/dev/null; then fail "$tool is on the clean PATH ($(command -v "$tool"))"; fi
done
# Each package brings its own compiled-code cache, out of the user's.
export HANDOFF_CACHE_DIR="$work/cache"

root="$work/root"
src="$work/src"
mkdir -p "$root" "$src/sub"
head -c 3000000 /dev/urandom >"$src/adapter_model.safetensors"
echo '{"r": 8}' >"$src/adapter_config.json"
echo extra >"$src/sub/extra.bin"

# expect CODE CMD...: run CMD, check its exit code.
expect() {
    local want="$1" got=0
    shift
    "$@" >"$work/out" 2>"$work/err" || got=$?
    [ "$got" = "$want" ] || fail "$* exited $got, expected $want: $(cat "$work/err")"
}
field() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"v": v}))' "$work/out" "$1"; }

echo "== wheel: $(basename "$wheel") into a fresh virtualenv" >&2
python3 -m venv "$work/venv"
"$work/venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$wheel"
hf="$work/venv/bin/handoff"
[ -x "$hf" ] || fail "the wheel installed no handoff command"

expect 0 "$hf" publish --root "$root" --step 1 "$src" --json
[ "$(field 'v["path"]')" = "$(readlink -f "$root")/step_1" ] || fail "publish printed $(cat "$work/out")"
[ "$(field 'len(v["files"])')" = 3 ] || fail "publish listed $(cat "$work/out")"
expect 0 "$hf" wait --root "$root" --step 1 --verify hash --timeout 10s --json
[ "$(field 'v["step"]')" = 1 ] || fail "wait printed $(cat "$work/out")"
expect 5 "$hf" publish --root "$root" --step 1 "$src"
expect 3 "$hf" wait --root "$root" --step 9 --timeout 200ms --json
[ "$(field 'v["error"]["exit_code"]')" = 3 ] || fail "a timed-out wait printed $(cat "$work/out")"
expect 2 "$hf" gc --root "$root" --keep 0
expect 1 "$hf" ls --root "$work/missing"
expect 0 "$hf" publish --root "$root" --step 2 "$src" --keep 1 --json
expect 0 "$hf" gc --root "$root" --keep 1 --json
[ ! -e "$root/step_1" ] || fail "gc --keep 1 left step_1"
[ -f "$root/step_2/STABLE" ] || fail "step_2 is gone"
echo "wheel: publish, wait --verify hash, gc and exit codes 1/2/3/5 as documented" >&2

echo "== npm: $(basename "$tarball") into a fresh folder" >&2
app="$work/app"
mkdir "$app"
(cd "$app" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "$tarball")
cat >"$app/check.mjs" <<'JS'
import * as handoff from 'handoff';
const [root, src] = process.argv.slice(2);
const read = handoff.wait(root, { step: 2, verify: 'hash', timeoutMs: 10_000 });
if (read.files.length !== 3) throw new Error(`step 2 (written by the wheel) lists ${read.files.length} files`);
const report = handoff.publish(root, 3, src);
const again = handoff.wait(root, { step: 3, verify: 'hash', timeoutMs: 10_000 });
if (again.path !== report.version.path) throw new Error(`wait returned ${again.path}`);
try {
  handoff.publish(root, 3, src);
  throw new Error('a second publish of step 3 succeeded');
} catch (e) {
  if (!(e instanceof handoff.ConflictError)) throw e;
}
const gc = handoff.gc(root, 1);
console.log(JSON.stringify({ removed: gc.removed.map(Number), kept: gc.kept.map(Number) }));
JS
(cd "$app" && node check.mjs "$root" "$src") >"$work/out" || fail "the npm package failed"
[ "$(field 'v["removed"]')" = "[2]" ] || fail "gc through npm: $(cat "$work/out")"
expect 0 "$hf" wait --root "$root" --step 3 --verify hash --timeout 10s
echo "npm: wait --verify hash of the wheel's step, publish, conflict, gc; the wheel reads npm's step" >&2
echo "dist test: passed" >&2
