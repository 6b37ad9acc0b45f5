// The async API: the same calls in worker threads, with deadlines and abort.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

import * as handoff from '../src/index.js';
import * as promises from '../src/promises.js';
import { fixture } from './fixture.js';

test('timers keep firing during an async wait', async () => {
  const { root } = fixture();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 50);
  const start = performance.now();
  await assert.rejects(promises.wait(root, 9, { timeoutMs: 2000 }), (e) => e instanceof handoff.TimedOutError && e.kind === 'timed-out');
  clearInterval(timer);
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 2000, `${elapsed} ms`);
  assert.ok(ticks >= 25, `${ticks} ticks in ${elapsed} ms`);
});

test('results and errors are those of the synchronous calls', async () => {
  const { root, src } = fixture();
  assert.equal(handoff.promises, promises);
  const report = await promises.publish(root, 1, src, { writer: 'w', createdMs: 1_700_000_000_000 });
  assert.deepEqual(report.version, handoff.wait(root, 1, { timeoutMs: 0 }));
  assert.deepEqual(await handoff.promises.wait(root, { latest: true, timeoutMs: 1000 }), report.version);
  assert.deepEqual(await promises.ls(root), handoff.ls(root));
  await assert.rejects(promises.publish(root, 1, src), (e) => e instanceof handoff.ConflictError && e.exitCode === 5 && e.retryable === false && /already published/.test(e.message));
  await assert.rejects(
    promises.wait(root, 9, { timeoutMs: 10 }),
    (e) => e instanceof handoff.TimedOutError && e.name === 'TimeoutError' && e.code === 'ETIMEDOUT' && e.retryable === true && e.path === null,
  );
  await assert.rejects(promises.gc(root, 0), (e) => e instanceof handoff.UsageError && e.message === 'invalid value 0 for keep: 0 is not in 1..=4294967295');
  await assert.rejects(promises.wait(root, { latest: true }, { timeoutMs: 5 }), handoff.UsageError);
  await assert.rejects(promises.ls(root, { prefix: () => 1 }), handoff.UsageError);
  await assert.rejects(promises.pin(root, 7, 'h'), (e) => e instanceof handoff.NotFoundError && e.kind === 'not-found');
  const pinned = await promises.pin(root, 1, 'h', { ttlMs: 60_000 });
  assert.equal(pinned.step, 1);
  await promises.unpin(root, 1, 'h');
  assert.deepEqual(await promises.fsck(root), handoff.fsck(root));
  assert.equal((await promises.latest(root)).step, 1);
  // Calls at once run in workers of their own.
  const [a, b] = await Promise.all([promises.wait(root, 1, { timeoutMs: 1000 }), promises.wait(root, { after: 0, timeoutMs: 1000 })]);
  assert.deepEqual(a, b);
});

test('deadlineMs stops the call and its worker; the next call gets a new one', async () => {
  const { root, src } = fixture();
  const start = performance.now();
  // No timeout, and one that saturates to no limit: only the deadline ends them.
  for (const options of [{}, { timeoutMs: 2 ** 64 }]) {
    await assert.rejects(
      promises.wait(root, 9, { ...options, deadlineMs: 300 }),
      (e) => e instanceof handoff.DeadlineExceededError && e.kind === 'deadline-exceeded' && e.exitCode === 3 && e.code === 'ETIMEDOUT' && /deadline of 300 ms/.test(e.message),
    );
  }
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 600 && elapsed < 5000, `${elapsed} ms`);
  await promises.publish(root, 9, src, { deadlineMs: 60_000 });
  assert.equal((await promises.wait(root, 9, { deadlineMs: 60_000 })).step, 9);
  await assert.rejects(promises.ls(root, { deadlineMs: -1 }), (e) => e instanceof handoff.UsageError && /for deadlineMs: /.test(e.message));
});

test('an AbortSignal stops the call with its reason', async () => {
  const { root } = fixture();
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 200);
  await assert.rejects(promises.wait(root, { latest: true, signal: controller.signal }), (e) => e.name === 'AbortError');
  const reason = new Error('shutting down');
  await assert.rejects(promises.wait(root, 9, { signal: AbortSignal.abort(reason) }), (e) => e === reason);
  await assert.rejects(promises.wait(root, 9, { signal: AbortSignal.timeout(100) }), (e) => e.name === 'TimeoutError' && !(e instanceof handoff.HandoffError));
  await assert.rejects(promises.ls(root, { signal: 'no' }), handoff.UsageError);
  assert.deepEqual(await promises.ls(root, { signal: controller.signal.aborted ? undefined : controller.signal }), []);
});

test('the process exits when no call is running, and stays while one is', () => {
  const { root } = fixture();
  const index = fileURLToPath(new URL('../src/promises.js', import.meta.url));
  const run = (body) => {
    const start = performance.now();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import * as p from ${JSON.stringify(index)}; ${body}`], { encoding: 'utf8', timeout: 30_000 });
    return { ...r, elapsed: performance.now() - start };
  };
  // Idle workers are unref'ed: done after a call, the process ends at once.
  const idle = run(`await p.ls(${JSON.stringify(root)}); console.log('done');`);
  assert.equal(idle.status, 0, idle.stderr);
  assert.equal(idle.stdout.trim(), 'done');
  assert.ok(idle.elapsed < 10_000, `${idle.elapsed} ms`);
  // A call in flight keeps it alive until it settles.
  const busy = run(`p.wait(${JSON.stringify(root)}, 9, { timeoutMs: 1500 }).catch((e) => console.log(e.kind));`);
  assert.equal(busy.stdout.trim(), 'timed-out', busy.stderr);
  assert.ok(busy.elapsed >= 1500, `${busy.elapsed} ms`);
});

test('the async calls work whatever Node flags the process was started with', () => {
  const { root } = fixture();
  const index = JSON.stringify(pathToFileURL(fileURLToPath(new URL('../src/promises.js', import.meta.url))).href);
  const ls = `.ls(${JSON.stringify(root)})`;
  const esm = `import * as p from ${index}; console.log(JSON.stringify(await p${ls}));`;
  const commonJs = `import(${index}).then((p) => p${ls}).then((r) => console.log(JSON.stringify(r)));`;
  // --title and --v8-pool-size are flags of the whole process, which a
  // worker refuses when they are given to it, and --input-type one it
  // refuses for its file; --no-deprecation is one it takes.
  for (const flags of [['--title=handoff-test'], ['--v8-pool-size=2', '--no-deprecation'], ['--input-type', 'module', '--title=handoff-test'], ['--input-type=module', '--no-deprecation']]) {
    const code = flags.some((f) => f.startsWith('--input-type')) ? esm : commonJs;
    const r = spawnSync(process.execPath, [...flags, '-e', code], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, `${flags.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), '[]', flags.join(' '));
  }
});
