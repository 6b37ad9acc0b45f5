// The Node binding against the real (transpiled) component, on a local filesystem.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as handoff from '../src/index.js';
import { stats } from '../src/durability.js';

// Every fixture folder, removed when the file's tests are done.
const fixtures = [];
after(() => {
  for (const dir of fixtures) rmSync(dir, { recursive: true, force: true });
});

function fixture() {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-js-'));
  fixtures.push(dir);
  const root = join(dir, 'root');
  const src = join(dir, 'src');
  mkdirSync(root);
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'adapter_model.safetensors'), randomBytes(65536));
  writeFileSync(join(src, 'adapter_config.json'), '{"r": 8}');
  writeFileSync(join(src, 'sub', 'extra.bin'), 'x'.repeat(10));
  return { dir, root, src };
}

test('publish then wait returns the same version', () => {
  const { root, src } = fixture();
  const report = handoff.publish(root, 3, src, { writer: 'trainer-0', createdMs: 1_700_000_000_000 });
  assert.equal(report.version.step, 3);
  assert.equal(report.version.path, join(realpathSync(root), 'step_3'));
  assert.equal(report.version.writer, 'trainer-0');
  assert.equal(report.version.createdMs, 1_700_000_000_000);
  assert.deepEqual(
    report.version.files.map((f) => f.path),
    ['adapter_config.json', 'adapter_model.safetensors', 'sub/extra.bin'],
  );
  assert.equal(report.version.bytes, 65536 + 8 + 10);
  assert.ok(report.fsyncs >= 6);
  assert.deepEqual(report.warnings, []);
  assert.equal(readFileSync(join(root, 'step_3', 'STABLE')).length, 0);
  assert.deepEqual(handoff.wait(root, 3, { verify: 'hash', timeoutMs: 1000 }), report.version);
});

test('every reported fsync goes through the durability import', () => {
  const { root, src } = fixture();
  const before = stats.file + stats.directory;
  const report = handoff.publish(root, 1, src);
  assert.equal(stats.file + stats.directory - before, report.fsyncs);
  assert.ok(stats.directory > 0 && stats.file > 0);
});

test('a second publish is a conflict and the first stays intact', () => {
  const { dir, root, src } = fixture();
  const first = handoff.publish(root, 1, src, { writer: 'a' });
  const manifest = readFileSync(join(root, 'step_1', 'handoff.manifest.json'));
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'adapter_model.safetensors'), 'different');
  assert.throws(
    () => handoff.publish(root, 1, other, { writer: 'b' }),
    (e) =>
      e instanceof handoff.ConflictError && e.name === 'ConflictError' && e.exitCode === 5 && e.kind === 'conflict' && e.retryable === false && /already published/.test(e.message),
  );
  assert.deepEqual(readFileSync(join(root, 'step_1', 'handoff.manifest.json')), manifest);
  assert.deepEqual(handoff.wait(root, 1, { verify: 'hash', timeoutMs: 1000 }), first.version);
  assert.deepEqual(readdirSync(join(root, '.handoff', 'staging')), []);
});

test('a source that is, is inside or holds the root is refused before anything is written', () => {
  const { dir, root, src } = fixture();
  cpSync(src, join(root, 'incoming'), { recursive: true });
  for (const [source, needle] of [
    [root, /is the root itself/],
    [join(root, 'incoming'), /is inside the root/],
    [dir, /contains the root/],
  ]) {
    assert.throws(
      () => handoff.publish(root, 2, source),
      (e) => e instanceof handoff.InvalidInputError && e.kind === 'invalid-input' && needle.test(e.message) && e.message.includes(source),
    );
  }
  assert.deepEqual(readdirSync(root), ['incoming']);
});

test('a top-level STABLE or manifest in the source is refused', () => {
  const { root, src } = fixture();
  for (const name of ['STABLE', 'handoff.manifest.json']) {
    writeFileSync(join(src, name), 'x');
    assert.throws(
      () => handoff.publish(root, 5, src),
      (e) => e.kind === 'invalid-input' && e.message.includes(`\`${name}\` is a name handoff reserves`),
    );
    rmSync(join(src, name));
  }
  assert.equal(existsSync(join(root, 'step_5')), false);
});

test('corruption is an integrity error with verify hash', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  const payload = join(root, 'step_1', 'adapter_model.safetensors');
  const data = readFileSync(payload);
  data[100] ^= 0xff; // same size: only the hash can tell
  writeFileSync(payload, data);
  assert.equal(handoff.wait(root, 1, { verify: 'size', timeoutMs: 1000 }).step, 1);
  const start = performance.now();
  assert.throws(
    () => handoff.wait(root, 1, { verify: 'hash', timeoutMs: 5000, settleMs: 200 }),
    (e) => e instanceof handoff.IntegrityError && e.exitCode === 4 && e.message.includes('adapter_model.safetensors'),
  );
  assert.ok(performance.now() - start < 5000);
});

test('wait times out within its timeout', () => {
  const { root } = fixture();
  handoff.ls(root); // instantiate first: only the wait is timed
  const start = performance.now();
  assert.throws(
    () => handoff.wait(root, 9, { timeoutMs: 300 }),
    (e) => e instanceof handoff.TimedOutError && e.name === 'TimeoutError' && e.exitCode === 3 && /step 9 is not committed/.test(e.message),
  );
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 300 && elapsed < 800, `${elapsed} ms`);
});

test('seal in place keeps STABLE for old readers', () => {
  const { root, src } = fixture();
  cpSync(src, join(root, 'step_4'), { recursive: true });
  const report = handoff.seal(root, 4, { writer: 'trainer' });
  assert.ok(existsSync(join(root, 'step_4', 'STABLE')));
  assert.deepEqual(handoff.wait(root, 4, { verify: 'hash', timeoutMs: 1000 }), report.version);
  assert.throws(() => handoff.seal(root, 4), handoff.ConflictError);
});

test('seal claimed by another writer conflicts; its own writer takes over', () => {
  const { root, src } = fixture();
  cpSync(src, join(root, 'step_4'), { recursive: true });
  mkdirSync(join(root, 'step_4', '.handoff.seal'));
  writeFileSync(join(root, 'step_4', '.handoff.seal', 'writer'), 'trainer-7');
  assert.throws(
    () => handoff.seal(root, 4, { writer: 'other' }),
    (e) => e instanceof handoff.ConflictError && /trainer-7/.test(e.message),
  );
  assert.ok(!existsSync(join(root, 'step_4', 'handoff.manifest.json')));
  assert.equal(handoff.seal(root, 4, { writer: 'trainer-7' }).version.writer, 'trainer-7');
  assert.ok(!existsSync(join(root, 'step_4', '.handoff.seal')));
});

test("a restarted trainer's run supersedes the old one", () => {
  const { root, src } = fixture();
  for (const step of [1, 2, 3]) handoff.publish(root, step, src);
  const run = handoff.begin(root);
  assert.equal(run, 1);
  const report = handoff.publish(root, 2, src, { run });
  assert.deepEqual([report.version.run, report.version.step], [1, 1e12 + 2]);
  assert.equal(handoff.latest(root).step, 1e12 + 2);
  assert.equal(handoff.wait(root, { after: 1, timeoutMs: 1000 }).step, 1e12 + 2);
  assert.throws(() => handoff.publish(root, 4, src), (e) => e instanceof handoff.ConflictError && /superseded/.test(e.message));
});

test('latest, pin, gc and unpin', () => {
  const { root, src } = fixture();
  for (const step of [1, 2, 3]) handoff.publish(root, step, src);
  mkdirSync(join(root, 'step_banana')); // stray: ignored
  mkdirSync(join(root, 'step_9')); // incomplete: skipped by latest
  assert.equal(handoff.wait(root, { latest: true, pin: 'server-a', ttlMs: 60_000, timeoutMs: 1000 }).step, 3);
  assert.equal(handoff.latest(root).step, 3);
  handoff.pin(root, 1, 'server-b', { ttlMs: 60_000 });
  const report = handoff.gc(root, 1);
  assert.deepEqual(report.removed, [2]);
  assert.deepEqual([...report.kept, ...report.pinned].sort(), [1, 3]);
  handoff.unpin(root, 1, 'server-b');
  assert.throws(() => handoff.unpin(root, 1, 'server-b'), handoff.NotFoundError);
  assert.deepEqual(handoff.gc(root, 1).removed, [1]);
  assert.deepEqual(
    handoff.ls(root).map((s) => [s.step, s.state]),
    [
      [3, 'committed'],
      [9, 'incomplete'],
    ],
  );
});

test('wait with a pin keeps the previous pin until the reader unpins it', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  assert.equal(handoff.wait(root, { latest: true, pin: 'r', timeoutMs: 1000 }).step, 1);
  handoff.publish(root, 2, src);
  assert.equal(handoff.wait(root, { after: 1, pin: 'r', timeoutMs: 1000 }).step, 2);
  // Still serving step 1 until switched over: gc keeps it.
  assert.deepEqual(handoff.gc(root, 1).pinned, [1]);
  handoff.unpin(root, 1, 'r'); // switched over
  assert.deepEqual(handoff.gc(root, 1).removed, [1]);
  handoff.unpin(root, 2, 'r');
});

test('gc reports what it cannot remove and goes on', () => {
  const { root, src } = fixture();
  for (const step of [1, 2, 3]) handoff.publish(root, step, src);
  // A pin directory that is not one: gc cannot claim step 1.
  rmSync(join(root, 'step_1', '.handoff.pins'), { recursive: true });
  writeFileSync(join(root, 'step_1', '.handoff.pins'), '');
  const report = handoff.gc(root, 1);
  assert.deepEqual(report.removed, [2]);
  assert.deepEqual(report.kept, [3]);
  assert.equal(report.failed.length, 1);
  const [{ name, error }] = report.failed;
  assert.equal(name, 'step_1');
  assert.ok(error instanceof handoff.HandoffError);
  assert.equal(error.kind, 'io');
  assert.match(error.message, /\.handoff\.pins/);
});

test('publish with keep runs gc', () => {
  const { root, src } = fixture();
  let report;
  for (const step of [1, 2, 3]) report = handoff.publish(root, step, src, { keep: 2 });
  assert.deepEqual(report.gc.removed, [1]);
  assert.deepEqual(handoff.ls(root).map((s) => s.step), [2, 3]);
});

// Set every time in the tree at `path` `seconds` back.
function age(path, seconds) {
  const then = Date.now() / 1000 - seconds;
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path)) age(join(path, name), seconds);
  }
  utimesSync(path, then, then);
}

test('fsck repairs what a crash left and is idempotent', () => {
  const { root, src } = fixture();
  handoff.publish(root, 1, src);
  cpSync(src, join(root, 'step_2'), { recursive: true }); // crashed before STABLE, or at work
  const staging = join(root, '.handoff', 'staging', 'step_3.0001');
  cpSync(src, staging, { recursive: true });
  age(staging, 2 * 3600); // a publisher that crashed two hours ago
  const entries = Object.fromEntries(handoff.fsck(root).map((e) => [e.name, e]));
  assert.equal(entries.step_1.state, 'committed');
  assert.equal(entries.step_2.state, 'incomplete');
  const repaired = Object.fromEntries(handoff.fsck(root, { repair: true }).map((e) => [e.name, e]));
  assert.ok(repaired['.handoff/staging/step_3.0001'].action);
  assert.ok(!existsSync(staging));
  // Younger than the grace period: left (removed once an hour old).
  assert.equal(repaired.step_2.action, null);
  assert.match(repaired.step_2.detail, /grace/);
  assert.ok(existsSync(join(root, 'step_2')));
  assert.ok(handoff.fsck(root, { repair: true }).every((e) => e.action === null));
});

test('errors: missing step, bad holder, missing root, bad arguments', () => {
  const { dir, root, src } = fixture();
  assert.throws(() => handoff.pin(root, 7, 'h'), handoff.NotFoundError);
  handoff.publish(root, 1, src);
  assert.throws(() => handoff.pin(root, 1, '../evil'), handoff.InvalidInputError);
  const missing = join(dir, 'nope');
  assert.throws(
    () => handoff.ls(missing),
    (e) =>
      e instanceof handoff.NotFoundError && e.message.startsWith(`root ${missing}: `) && e.exitCode === 1 && e.kind === 'not-found' && e.path === missing && e.retryable === false,
  );
  assert.throws(() => handoff.wait(root, {}), handoff.UsageError);
  assert.throws(() => handoff.wait(root, { step: 1, latest: true }), handoff.UsageError);
  assert.throws(() => handoff.wait(root, 1, { verify: 'sha1' }), handoff.UsageError);
  assert.throws(() => handoff.gc(root, 0), handoff.UsageError);
  assert.throws(() => handoff.publish(root, -1, src), handoff.UsageError);
});

test('a missing manifest is a retryable integrity error naming it', () => {
  const { root } = fixture();
  mkdirSync(join(root, 'step_2'));
  writeFileSync(join(root, 'step_2', 'STABLE'), '');
  assert.throws(
    () => handoff.wait(root, 2, { timeoutMs: 5000, settleMs: 100 }),
    (e) =>
      e instanceof handoff.IntegrityError &&
      e.kind === 'integrity' &&
      e.path === join(realpathSync(root), 'step_2', 'handoff.manifest.json') &&
      e.retryable === true,
  );
});

test('a timeout is retryable and named TimeoutError', () => {
  const { root } = fixture();
  assert.throws(
    () => handoff.wait(root, 9, { timeoutMs: 100 }),
    (e) => e instanceof handoff.TimedOutError && e.name === 'TimeoutError' && e.kind === 'timed-out' && e.path === null && e.retryable === true,
  );
});

test('a call sees only its own directories', () => {
  const a = fixture();
  const b = fixture();
  handoff.publish(a.root, 1, a.src);
  // The component was given b.root only: a.root is out of its reach.
  assert.throws(() => handoff.wait(b.root, { latest: true, timeoutMs: 100 }), handoff.TimedOutError);
  assert.equal(handoff.wait(a.root, 1, { timeoutMs: 100 }).step, 1);
});

test('every reported fsync is a real fsync', { skip: spawnSync('strace', ['-V']).error ? 'strace is not installed' : false }, () => {
  const { dir, root, src } = fixture();
  const trace = join(dir, 'trace');
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const script = `import * as h from ${JSON.stringify(index)}; h.ls(${JSON.stringify(root)}); console.log(h.publish(${JSON.stringify(root)}, 1, ${JSON.stringify(src)}).fsyncs);`;
  const out = execFileSync('strace', ['-f', '-qq', '-o', trace, '-e', 'trace=fsync,fdatasync', process.execPath, '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  const reported = Number(out.trim());
  const fsyncs = readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes('fsync(') && l.includes('= 0'));
  assert.ok(reported >= 6);
  assert.ok(fsyncs.length >= reported, `${reported} reported, ${fsyncs.length} traced`);
});

test('a publish flushes every file before the commit, and the root and staging after it', { skip: spawnSync('strace', ['-V']).error ? 'strace is not installed' : false }, () => {
  const { dir, root, src } = fixture();
  const trace = join(dir, 'trace');
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const script = `import * as h from ${JSON.stringify(index)}; h.publish(${JSON.stringify(root)}, 1, ${JSON.stringify(src)});`;
  // -y names each descriptor's file: the flushes are told apart by path.
  execFileSync('strace', ['-f', '-qq', '-y', '-o', trace, '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2', process.execPath, '--input-type=module', '-e', script]);
  const lines = readFileSync(trace, 'utf8').split('\n');
  const real = realpathSync(root);
  const committed = lines.findIndex((l) => /\brename/.test(l) && l.includes(`"${real}/step_1"`));
  assert.ok(committed >= 0, `no rename to step_1:\n${lines.join('\n')}`);
  const flushed = (path, from, to) => lines.slice(from, to).some((l) => /\b(fsync|fdatasync)\(/.test(l) && l.includes(`<${path}>`));
  const staging = `${real}/.handoff/staging`;
  for (const file of ['adapter_model.safetensors', 'adapter_config.json', 'sub/extra.bin']) {
    assert.ok(lines.slice(0, committed).some((l) => /\bfsync\(/.test(l) && l.includes(`${staging}/`) && l.includes(`/${file}>`)), `${file} not flushed before the commit`);
  }
  for (const path of [real, staging]) assert.ok(flushed(path, committed, lines.length), `${path} not flushed after the commit:\n${lines.join('\n')}`);
});

test('an idle wait opens no STABLE in a step not there, resolves its root once, and lists it without the shim worker', { skip: spawnSync('strace', ['-V']).error ? 'strace is not installed' : false }, () => {
  const { dir, root } = fixture();
  const trace = join(dir, 'trace');
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const script = `import * as h from ${JSON.stringify(index)}; try { h.wait(${JSON.stringify(root)}, 9, { timeoutMs: 2500 }); } catch (e) { if (e.kind !== 'timed-out') throw e; }`;
  execFileSync('strace', ['-f', '-qq', '-o', trace, '-e', 'trace=openat,readlink,statx,newfstatat,lstat', process.execPath, '--input-type=module', '-e', script]);
  const lines = readFileSync(trace, 'utf8').split('\n');
  const real = realpathSync(root);
  const main = lines[0].split(' ')[0];
  const attempts = lines.filter((l) => /\b(statx|newfstatat|lstat)\(/.test(l) && l.includes(`"${real}/step_9"`)).length;
  assert.ok(attempts >= 20, `${attempts} looks at step_9`);
  // The step is missing: its STABLE is answered from that lookup, not opened.
  assert.deepEqual(lines.filter((l) => l.includes('openat(') && l.includes(`"${real}/step_9/STABLE"`)), []);
  // The root's realpath(3) once per descriptor, not per attempt.
  const resolved = lines.filter((l) => l.startsWith(`${main} `) && l.includes(`readlink("${real}"`)).length;
  assert.ok(resolved <= 4, `${resolved} readlinks of the root for ${attempts} attempts`);
  // Listed twice or more (once a second), but the shim's I/O worker opens
  // the root only for the preopen and for the root's stat.
  const elsewhere = lines.filter((l) => !l.startsWith(`${main} `) && /openat\(AT_FDCWD, "[^"]*", [^)]*O_DIRECTORY/.test(l) && l.includes(`"${real}"`));
  assert.ok(elsewhere.length <= 2, elsewhere.join('\n'));
});
