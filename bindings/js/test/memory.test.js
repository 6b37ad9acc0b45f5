// An instance whose linear memory grew past RELEASE_ABOVE_BYTES is released
// after the call, so a 15 MiB manifest does not keep ~75 MB for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { fixture } from './fixture.js';

test('memory drops after a call with a 15 MiB manifest', () => {
  const { root, src } = fixture();
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  // In a process of its own, run with --expose-gc; `external` counts wasm memories.
  const script = `
    import * as h from ${JSON.stringify(index)};
    import { readFileSync, writeFileSync } from 'node:fs';
    const root = ${JSON.stringify(root)}, src = ${JSON.stringify(src)};
    const external = () => { for (let i = 0; i < 3; i++) gc(); return process.memoryUsage().external; };
    h.publish(root, 1, src);
    h.publish(root, 2, src);
    h.wait(root, 1);
    const before = external();
    // A 15 MiB manifest (a writer id no writer may record any more, but one a
    // reader accepts: the manifest is under the 16 MiB limit).
    const manifest = root + '/step_2/handoff.manifest.json';
    const big = JSON.parse(readFileSync(manifest, 'utf8'));
    big.writer = 'w'.repeat(15 * 2 ** 20);
    writeFileSync(manifest, JSON.stringify(big));
    h.wait(root, 2);
    const afterWait = external();
    const wasm = h.memoryBytes?.();
    h.wait(root, 1);
    console.log(JSON.stringify({ before, afterWait, wasm, wasmNext: h.memoryBytes?.(), limit: h.RELEASE_ABOVE_BYTES }));
  `;
  const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  const MiB = 2 ** 20;
  const shown = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, `${(v / MiB).toFixed(1)} MiB`]));
  assert.ok(out.afterWait - out.before < 8 * MiB, JSON.stringify(shown));
  assert.equal(out.wasm, 0, 'released');
  assert.ok(out.wasmNext > 0 && out.wasmNext <= out.limit, JSON.stringify(shown));
});
