// Steps, sizes and times come back as numbers, always: a value a number
// cannot hold exactly throws a HandoffError naming it, never a bigint or a
// raw "Cannot mix BigInt" TypeError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import * as handoff from '../src/index.js';
import { fixture } from './fixture.js';

const HUGE = 2n ** 53n + 2n; // above Number.MAX_SAFE_INTEGER
const tmpfs = existsSync('/dev/shm') && statSync('/dev/shm').isDirectory() ? '/dev/shm' : null;

test('every number in a result is a number', () => {
  const { root, src } = fixture();
  const report = handoff.publish(root, 2n, src, { createdMs: 1_700_000_000_000n, run: 0n });
  const numbers = [report.fsyncs, report.version.step, report.version.run, report.version.createdMs, report.version.bytes, ...report.version.files.map((f) => f.size)];
  const pin = handoff.pin(root, 2, 'h');
  numbers.push(pin.step, pin.expiresMs, ...handoff.ls(root).flatMap((s) => [s.step, s.bytes, s.files]), handoff.begin(root));
  for (const n of numbers) assert.equal(typeof n, 'number');
  assert.deepEqual(handoff.gc(root, 1n).kept, [2]);
});

test('a step or createdMs a number cannot hold is refused before publish writes', () => {
  const { root, src } = fixture();
  for (const [step, options, field] of [
    [HUGE, {}, /^step is 9007199254740994, above Number\.MAX_SAFE_INTEGER/],
    [5, { createdMs: HUGE }, /^createdMs is 9007199254740994, above/],
    [5, { run: 9008 }, /^step \(5 of run 9008\) is 9008000000000005, above/],
  ]) {
    assert.throws(
      () => handoff.publish(root, step, src, options),
      (e) => e instanceof handoff.HandoffError && e.kind === 'unsafe-integer' && field.test(e.message) && /nothing was written/.test(e.message),
    );
    assert.throws(() => handoff.seal(root, step, options), (e) => e.kind === 'unsafe-integer');
  }
  assert.deepEqual(readdirSync(root), []);
  // Reading one is fine until a result would hold it.
  assert.throws(() => handoff.wait(root, HUGE, { timeoutMs: 0 }), handoff.TimedOutError);
});

test('a file size above 2**53 is a clear error naming it, never "Cannot mix BigInt"', { skip: tmpfs ? false : 'no tmpfs for a sparse 8 PiB file' }, () => {
  const { root, src } = fixture(tmpfs);
  handoff.publish(root, 1, src);
  // Make adapter_config.json a sparse file of 2**53 + 2 bytes, and the manifest say so.
  const manifest = join(root, 'step_1', 'handoff.manifest.json');
  const text = readFileSync(manifest, 'utf8');
  const edited = text.replace(/("path":"adapter_config.json","size":)\d+/, `$1${HUGE}`);
  assert.notEqual(edited, text);
  writeFileSync(manifest, edited);
  execFileSync('truncate', ['-s', String(HUGE), join(root, 'step_1', 'adapter_config.json')]);
  const named = (e) => {
    assert.ok(!(e instanceof TypeError), `${e.name}: ${e.message}`);
    assert.ok(e instanceof handoff.HandoffError, `${e.name}: ${e.message}`);
    assert.equal(e.kind, 'unsafe-integer');
    assert.match(e.message, / is \d+, above Number\.MAX_SAFE_INTEGER/);
    return true;
  };
  assert.throws(() => handoff.wait(root, 1, { timeoutMs: 1000 }), (e) => named(e) && /^size of adapter_config\.json in \S+ is 9007199254740994, above/.test(e.message));
  assert.throws(() => handoff.latest(root), named);
  assert.throws(() => handoff.ls(root), (e) => named(e) && /^bytes of \S+step_1 is \d+, above/.test(e.message));
});

test('every export is declared in the .d.ts files, and every declared value exists', async () => {
  for (const [module, types] of [
    ['../src/index.js', '../src/index.d.ts'],
    ['../src/promises.js', '../src/promises.d.ts'],
  ]) {
    const exported = Object.keys(await import(module)).sort();
    const text = readFileSync(new URL(types, import.meta.url), 'utf8');
    const declared = [...text.matchAll(/^export (?:const|function|class) (\w+)|^export \* as (\w+)/gm)].map((m) => m[1] ?? m[2]);
    assert.deepEqual([...new Set(declared)].sort(), exported, types);
  }
});
