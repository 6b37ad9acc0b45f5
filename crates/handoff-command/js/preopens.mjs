// Preopens for `jco run`: load with `--jco-import` so the command sees only
// the directories named in HANDOFF_DIRS, as wasmtime's `--dir` would give them.
//
//   HANDOFF_DIRS=/mnt/ckpt::/root,./out::/src \
//     npx jco run --jco-import ./preopens.mjs handoff-command.wasm publish --root /root --step 7 /src
//
// Each entry is HOST_DIR::GUEST_PATH (or HOST_DIR, seen at the same path),
// separated by commas. Without HANDOFF_DIRS the command gets no directory at
// all: jco's own default is the whole host filesystem at "/".
import { resolve } from 'node:path';
import { _setPreopens, _addPreopen } from '@bytecodealliance/preview2-shim/filesystem';

_setPreopens({});
for (const entry of (process.env.HANDOFF_DIRS ?? '').split(',').filter(Boolean)) {
  const at = entry.indexOf('::');
  const host = at === -1 ? entry : entry.slice(0, at);
  const guest = at === -1 ? entry : entry.slice(at + 2);
  if (!host || !guest) {
    console.error(`HANDOFF_DIRS: expected HOST_DIR::GUEST_PATH, got ${JSON.stringify(entry)}`);
    process.exit(2);
  }
  _addPreopen(guest, resolve(host));
}
