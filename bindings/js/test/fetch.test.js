// fetch: a verified local copy of a shared step, pinned while it is copied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, openSync, ftruncateSync, closeSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

import * as handoff from '../src/index.js';
import { fixture } from './fixture.js';

const MANIFEST = 'handoff.manifest.json';

test('fetch copies the step with the shared manifest and releases its pin', () => {
  const { dir, root, src } = fixture();
  handoff.publish(root, 1, src);
  handoff.publish(root, 2, src);
  const local = join(dir, 'local', 'adapters'); // made by fetch
  const report = handoff.fetch(root, { latest: true, to: local, holder: 'server-a' });
  assert.equal(report.copied, true);
  assert.equal(report.version.step, 2);
  assert.equal(report.version.path, join(local, 'step_2'));
  assert.equal(report.source, join(root, 'step_2'));
  assert.equal(report.bytesCopied, report.version.bytes);
  assert.deepEqual(readFileSync(join(local, 'step_2', MANIFEST)), readFileSync(join(root, 'step_2', MANIFEST)));
  assert.deepEqual(readdirSync(join(root, 'step_2', '.handoff.pins')), []);
  assert.equal(handoff.wait(local, 2, { verify: 'hash', timeoutMs: 5000 }).step, 2);
  const again = handoff.fetch(root, 2, { to: local });
  assert.equal(again.copied, false);
  assert.equal(again.bytesCopied, 0);
  const kept = handoff.fetch(root, 1, { to: local, keep: 1 });
  assert.deepEqual([kept.gc.removed, kept.gc.kept], [[1], [2]]);
  assert.deepEqual(handoff.ls(root).map((s) => s.step), [1, 2]);
});

test('a copy that does not match the manifest commits nothing', () => {
  const { dir, root, src } = fixture();
  handoff.publish(root, 1, src);
  const shared = join(root, 'step_1', 'adapter_model.safetensors');
  writeFileSync(shared, randomBytes(statSync(shared).size)); // same size, other bytes
  const local = join(dir, 'local');
  assert.throws(
    () => handoff.fetch(root, 1, { to: local, settleMs: 300 }),
    (e) => e instanceof handoff.IntegrityError && e.message.includes(shared),
  );
  assert.equal(existsSync(join(local, 'step_1')), false);
  const staging = join(local, '.handoff', 'staging');
  assert.ok(!existsSync(staging) || readdirSync(staging).length === 0);
  assert.deepEqual(readdirSync(join(root, 'step_1', '.handoff.pins')), []);
});

test('the shared step stays pinned while an async fetch copies it', async () => {
  const { dir, root, src } = fixture();
  const big = join(dir, 'big');
  mkdirSync(big);
  const fd = openSync(join(big, 'weights.bin'), 'w');
  ftruncateSync(fd, 192 * 2 ** 20); // zeros: a copy of some length, quickly made
  closeSync(fd);
  handoff.publish(root, 1, big);
  handoff.publish(root, 2, src); // the trainer has moved on
  const local = join(dir, 'local');
  const fetching = handoff.promises.fetch(root, 1, { to: local });
  const staging = join(local, '.handoff', 'staging');
  const started = Date.now();
  let running = true;
  fetching.finally(() => (running = false));
  while (running && !(existsSync(staging) && readdirSync(staging).length > 0)) {
    assert.ok(Date.now() - started < 30_000, 'the copy never started');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  assert.ok(running, 'the copy ended before gc could run: make the payload bigger');
  // The trainer collects while the server copies (the event loop is free).
  const report = handoff.gc(root, 1);
  const done = await fetching;
  assert.deepEqual([report.pinned, report.removed], [[1], []]);
  assert.equal(done.copied, true);
  assert.deepEqual(handoff.gc(root, 1).removed, [1]);
});

test('fetch arguments are checked before anything is written', () => {
  const { dir, root, src } = fixture();
  handoff.publish(root, 1, src);
  const local = join(dir, 'local');
  const usage = (f, re) => assert.throws(f, (e) => e instanceof handoff.UsageError && re.test(e.message));
  usage(() => handoff.fetch(root, 1, { to: local, keep: 0 }), /for keep/);
  usage(() => handoff.fetch(root, 1, { to: '' }), /for to: the path is empty/);
  usage(() => handoff.fetch(root, { to: local }), /give exactly one of/);
  usage(() => handoff.fetch(root, 1, { to: local }, {}), /./);
  assert.equal(existsSync(local), false);
  for (const inside of [root, join(root, 'mirror'), dir]) {
    assert.throws(() => handoff.fetch(root, 1, { to: inside }), (e) => e instanceof handoff.InvalidInputError && /shared root/.test(e.message));
  }
  assert.equal(existsSync(join(root, 'mirror')), false);
});
