// Arguments are checked against the WIT types before the component runs:
// out of range or ill-typed is UsageError (kind usage, exit 2) and writes
// nothing; in range reaches the component unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as handoff from '../src/index.js';
import { fixture, random, snapshot } from './fixture.js';

const U64_MAX = 2n ** 64n - 1n;
const SEED = 17;

/** A UsageError with the shared message shape. */
function usage(param, why) {
  return (e) => {
    assert.ok(e instanceof handoff.UsageError, `${e?.name}: ${e?.message}`);
    assert.ok(e instanceof handoff.HandoffError);
    assert.equal(e.kind, 'usage');
    assert.equal(e.exitCode, 2);
    assert.equal(e.retryable, false);
    if (param) assert.match(e.message, new RegExp(`^invalid value .* for ${param}: `), e.message);
    if (why) assert.ok(e.message.endsWith(why), e.message);
    return true;
  };
}

test('messages name the value, the parameter and why, as the CLI and Python do', () => {
  const { root } = fixture();
  const cases = [
    [() => handoff.gc(root, 0), 'invalid value 0 for keep: 0 is not in 1..=4294967295'],
    [() => handoff.gc(root, 2 ** 32), 'invalid value 4294967296 for keep: 4294967296 is not in 1..=4294967295'],
    [() => handoff.gc(root, 2n ** 32n + 1n), 'invalid value 4294967297n for keep: 4294967297 is not in 1..=4294967295'],
    [() => handoff.gc(root, true), 'invalid value true for keep: expected an integer in 1..=4294967295, got boolean'],
    [() => handoff.gc(root, 1.5), 'invalid value 1.5 for keep: expected an integer in 1..=4294967295, got number'],
    [() => handoff.pin(root, -1, 'r'), 'invalid value -1 for step: -1 is not in 0..=18446744073709551615'],
    [() => handoff.pin(root, 2n ** 64n, 'r'), 'invalid value 18446744073709551616n for step: 18446744073709551616 is not in 0..=18446744073709551615'],
    [() => handoff.pin(root, '1', 'r'), "invalid value '1' for step: expected an integer in 0..=18446744073709551615, got string"],
    [() => handoff.pin(root, 1, 'r', { ttlMs: -1 }), 'invalid value -1 for ttlMs: expected a non-negative number of milliseconds, got -1'],
    [() => handoff.pin(root, 1, 'r', { ttlMs: NaN }), 'invalid value NaN for ttlMs: expected a non-negative number of milliseconds, got NaN'],
    [() => handoff.pin(root, 1, 5), 'invalid value 5 for holder: expected a string, got number'],
    [() => handoff.wait(root, { latest: 'no' }), "invalid value 'no' for latest: expected true or false, got string"],
    [() => handoff.fsck(root, { repair: 'false' }), "invalid value 'false' for repair: expected true or false, got string"],
    [() => handoff.ls(root, { prefix: 5 }), 'invalid value 5 for prefix: expected a string, got number'],
    [() => handoff.ls(''), "invalid value '' for root: the path is empty"],
    [() => handoff.latest(root, { verify: 'sha1' }), "invalid value 'sha1' for verify: expected 'size' or 'hash'"],
    [() => handoff.seal(root, 1, { writer: 7 }), 'invalid value 7 for writer: expected a string, got number'],
  ];
  for (const [fn, message] of cases) {
    assert.throws(fn, (e) => usage()(e) && (assert.equal(e.message, message), true));
  }
});

test('a stray argument, a missing or doubled target and an unknown option are usage errors', () => {
  const { root } = fixture();
  assert.throws(() => handoff.wait(root, { latest: true }, { timeoutMs: 5 }), usage(null, 'takes 2 arguments'));
  assert.throws(() => handoff.ls(root, {}, 'x'), usage());
  assert.throws(() => handoff.wait(root, {}), usage());
  assert.throws(() => handoff.wait(root, { latest: false }), usage());
  assert.throws(() => handoff.wait(root, { step: 1, after: 0 }), usage());
  assert.throws(() => handoff.wait(root, 1, { timeout: 5, timeoutMs: 0 }), usage('timeout'));
  assert.throws(() => handoff.wait(root, 1, { after: 5, timeoutMs: 0 }), usage('after'));
});

test('a missing root is not-found and a file is invalid-input, as with the CLI', () => {
  const { dir, root, src } = fixture();
  assert.throws(() => handoff.ls(join(dir, 'nope')), (e) => e instanceof handoff.NotFoundError && e.kind === 'not-found' && e.exitCode === 1);
  assert.throws(() => handoff.publish(root, 1, join(dir, 'nope')), (e) => e instanceof handoff.NotFoundError && e.path === join(dir, 'nope'));
  assert.throws(() => handoff.ls(join(src, 'adapter_config.json')), (e) => e instanceof handoff.InvalidInputError && /not a directory/.test(e.message));
});

test('publish with keep 0 fails before writing anything; the retry then succeeds', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  const before = snapshot(root);
  assert.throws(() => handoff.publish(root, 2, src, { keep: 0 }), usage('keep'));
  assert.throws(() => handoff.publish(root, 2, src, { keep: 2 ** 32 + 1 }), usage('keep'));
  assert.deepEqual(snapshot(root), before);
  assert.equal(existsSync(join(root, 'step_2')), false);
  assert.equal(handoff.publish(root, 2, src, { keep: 1 }).version.step, 2);
});

test('a pin with a huge ttl saturates and holds, never wraps (gc keeps the step)', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  for (const ttlMs of [1e300, Infinity, 2 ** 64, 2n ** 70n]) {
    const info = handoff.pin(root, 1, 'r', { ttlMs });
    assert.equal(info.expiresMs, Infinity);
  }
  handoff.publish(root, 2, src);
  handoff.publish(root, 3, src);
  const report = handoff.gc(root, 1);
  assert.deepEqual(report.pinned, [1]);
  assert.deepEqual(report.removed, [2]);
});

test('a wait with timeoutMs 2**64 waits (no limit) instead of timing out at once', () => {
  const { root, src } = fixture();
  // Publish step 1 from another process in 400 ms, while this thread waits.
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const child = spawn(process.execPath, [
    '--input-type=module',
    '-e',
    `import * as h from ${JSON.stringify(index)}; setTimeout(() => h.publish(${JSON.stringify(root)}, 1, ${JSON.stringify(src)}), 400);`,
  ]);
  for (const timeoutMs of [2 ** 64]) {
    const start = performance.now();
    assert.equal(handoff.wait(root, 1, { timeoutMs }).step, 1);
    assert.ok(performance.now() - start >= 300);
  }
  child.kill();
});

// --- properties ----------------------------------------------------------

/** Ill-typed or out-of-range values for a parameter of range lo..=hi. */
function badIntegers(rng, lo, hi) {
  const out = [lo - 1n, hi + 1n, hi + 1n + rng.bits(64), -rng.bits(70) - 1n, 1.5, NaN, Infinity, -Infinity, '1', true, false, {}, [], Symbol('s')];
  if (lo > 0n) out.push(0, Number(lo) - 1);
  out.push(Number(hi) * 2, -1 - rng.int(1e9), rng.next() + 0.25);
  return out;
}

test('property: every out-of-range or ill-typed argument is a UsageError and writes nothing', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  handoff.pin(root, 1, 'r');
  const before = snapshot(root);
  const rng = random(SEED);
  const calls = {
    step: (v) => [() => handoff.publish(root, v, src), () => handoff.seal(root, v), () => handoff.pin(root, v, 'h'), () => handoff.unpin(root, v, 'h'), ...(typeof v === 'object' ? [] : [() => handoff.wait(root, v)])],
    after: (v) => [() => handoff.wait(root, { after: v })],
    createdMs: (v) => [() => handoff.publish(root, 5, src, { createdMs: v }), () => handoff.seal(root, 5, { createdMs: v })],
    run: (v) => [() => handoff.publish(root, 5, src, { run: v }), () => handoff.seal(root, 5, { run: v })],
    keep: (v) => [() => handoff.gc(root, v), () => handoff.publish(root, 5, src, { keep: v }), () => handoff.seal(root, 5, { keep: v })],
  };
  let checked = 0;
  for (let round = 0; round < 20; round++) {
    for (const [param, make] of Object.entries(calls)) {
      const [lo, hi] = param === 'keep' ? [1n, 2n ** 32n - 1n] : [0n, U64_MAX];
      for (const value of badIntegers(rng, lo, hi)) {
        if (value === undefined || (param !== 'step' && param !== 'keep' && value === null)) continue;
        for (const fn of make(value)) {
          assert.throws(fn, usage(param), `${param} = ${String(value)} (seed ${SEED})`);
          checked++;
        }
      }
    }
    // Durations: negative, NaN or not a number.
    const durations = [-1, -rng.next() * 1e9, -1n, NaN, '5', true, null, {}];
    for (const value of durations) {
      const fns = {
        ttlMs: [() => handoff.pin(root, 1, 'r', { ttlMs: value }), () => handoff.wait(root, 1, { pin: 'r', ttlMs: value })],
        timeoutMs: value === null ? [] : [() => handoff.wait(root, 1, { timeoutMs: value })],
        settleMs: [() => handoff.wait(root, 1, { settleMs: value })],
        pollMs: [() => handoff.wait(root, 1, { pollMs: value })],
        graceMs: [() => handoff.gc(root, 1, { graceMs: value })],
        skewMs: [() => handoff.gc(root, 1, { skewMs: value })],
      };
      for (const [param, list] of Object.entries(fns)) {
        for (const fn of list) {
          assert.throws(fn, usage(param, `expected a non-negative number of milliseconds, got ${typeof value === 'string' ? `'${value}'` : String(value) + (typeof value === 'bigint' ? 'n' : '')}`.replace('[object Object]', '{}')), `${param} = ${String(value)}`);
          checked++;
        }
      }
    }
    // Booleans, strings and paths.
    for (const value of [0, 1, 'true', 'no', null, {}, 1n]) {
      assert.throws(() => handoff.wait(root, { latest: value }), usage('latest'));
      assert.throws(() => handoff.fsck(root, { repair: value }), usage('repair'));
      checked += 2;
    }
    for (const value of [5, 5n, true, {}, [], null]) {
      assert.throws(() => handoff.ls(root, { prefix: value }), usage('prefix'));
      assert.throws(() => handoff.pin(root, 1, value), usage('holder'));
      if (value !== null) assert.throws(() => handoff.publish(root, 5, src, { writer: value }), usage('writer'));
      assert.throws(() => handoff.ls(value), usage('root'));
      assert.throws(() => handoff.publish(root, 5, value), usage('source'));
      checked += 5;
    }
  }
  assert.ok(checked > 1000, `${checked} cases`);
  assert.deepEqual(snapshot(root), before, 'nothing was written');
  assert.throws(() => handoff.publish('', 5, src), usage('root', 'the path is empty'));
  assert.deepEqual(readdirSync(root).sort(), ['.handoff', 'step_1']);
});

test('property: every in-range step, after and keep reaches the component unchanged', () => {
  const { root, src } = fixture();
  const rng = random(SEED + 1);
  const steps = [0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, U64_MAX];
  for (let i = 0; i < 40; i++) steps.push(rng.bits(1 + rng.int(64)));
  for (const step of steps) {
    // As a bigint, and as a number where one holds it exactly.
    const forms = [step, ...(step <= BigInt(Number.MAX_SAFE_INTEGER) ? [Number(step)] : [])];
    for (const value of forms) {
      assert.throws(
        () => handoff.wait(root, value, { timeoutMs: 0 }),
        (e) => e instanceof handoff.TimedOutError && e.message.includes(`step ${step} is not committed`),
        `step ${value}`,
      );
      assert.throws(
        () => handoff.wait(root, { after: value, timeoutMs: 0 }),
        (e) => e instanceof handoff.TimedOutError && e.message.includes(`no step above ${step} `),
        `after ${value}`,
      );
    }
  }
  for (const step of [1, 2, 3]) handoff.publish(root, step, src);
  for (const keep of [2 ** 32 - 1, 2 ** 31, 3, 4, ...Array.from({ length: 10 }, () => 3 + rng.int(2 ** 32 - 4)), 4294967295n]) {
    const report = handoff.gc(root, keep);
    assert.deepEqual([report.removed, report.kept], [[], [1, 2, 3]], `keep ${keep}`);
  }
});

test('property: every in-range ttl reaches the component unchanged (pin expiry)', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  const rng = random(SEED + 2);
  const ttls = [0, 1, 999, 0.5, 2 ** 40, ...Array.from({ length: 30 }, () => rng.int(2 ** 30)), ...Array.from({ length: 10 }, () => rng.bits(40))];
  for (const ttlMs of ttls) {
    const before = Date.now();
    const { expiresMs } = handoff.pin(root, 1, 'r', { ttlMs });
    const ttl = Math.ceil(Number(ttlMs));
    assert.ok(expiresMs >= before + ttl - 5 && expiresMs <= Date.now() + ttl + 5, `ttl ${ttlMs}: expires ${expiresMs - before} ms on`);
  }
});
