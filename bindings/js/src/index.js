// handoff for Node: publish, wait for and retain model-weight versions on a
// shared filesystem.
//
// Runs the same WebAssembly component as the `handoff` CLI, transpiled by
// jco at build time (gen/), with WASI from @bytecodealliance/preview2-shim.
// Each call sees only the directories it needs (the root, and the source of
// a publish), preopened at their canonical absolute paths so the
// component's messages name real paths. These calls are synchronous and
// block the thread (a `wait` included); `promises` (src/promises.js) has the
// same calls run in worker threads.
import { mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';
import { instantiate } from '../gen/handoff.js';
import * as check from './args.js';
import { bulk } from './bulk.js';
import { monotonicClock } from './clock.js';
import { fastOpen, trackPreopen } from './open.js';
import { random } from './random.js';
import { durability } from './durability.js';
import { ComponentError, HandoffError, UsageError, errorOf } from './errors.js';

export {
  ComponentError,
  ConflictError,
  DeadlineExceededError,
  DurabilityError,
  HandoffError,
  IntegrityError,
  InvalidInputError,
  NotFoundError,
  TimedOutError,
  UsageError,
} from './errors.js';
export * as promises from './promises.js';

// The protocol core's defaults (crates/handoff-core/src/types.rs), in
// milliseconds; tests/defaults.rs checks that they match.
/** Prefix of step directory names. */
export const DEFAULT_PREFIX = 'step_';
/** How long `wait` retries a committed step that does not validate yet. */
export const DEFAULT_SETTLE_MS = 30_000;
/** The first interval between `wait`'s attempts. */
export const DEFAULT_POLL_MS = 100;
/** How long a pin holds a step. */
export const DEFAULT_TTL_MS = 600_000;
/** How long `gc` leaves an untouched staging directory. */
export const DEFAULT_GRACE_MS = 3_600_000;
/** The clock-skew allowance `gc` adds to a pin's expiry. */
export const DEFAULT_SKEW_MS = 120_000;

/** `<hostname>:<pid>`, the CLI's default writer id. */
export function defaultWriterId() {
  return `${hostname() || 'localhost'}:${process.pid}`;
}

const WRITE_OPTIONS = ['writer', 'createdMs', 'prefix', 'keep', 'run'];
const WAIT_OPTIONS = ['step', 'latest', 'after', 'timeoutMs', 'verify', 'settleMs', 'pollMs', 'pin', 'ttlMs', 'prefix'];
const FETCH_OPTIONS = ['step', 'latest', 'after', 'to', 'keep', 'timeoutMs', 'settleMs', 'pollMs', 'holder', 'ttlMs', 'prefix'];

/**
 * Copy the payload under `source` into `<root>/.handoff/staging/`, seal it
 * there and rename it to `<root>/<prefix><step>`. Once this returns, the
 * version is durable and visible; on error nothing is visible and earlier
 * versions are untouched. A step that already exists throws ConflictError
 * and is left as it is. With `keep`, gc runs afterwards.
 */
export function publish(root, step, source, options) {
  check.noStray([...arguments], 4, 'publish(root, step, source, options)');
  const w = writeArgs(step, options, 'publish');
  const rootPath = dir(root, 'root');
  const sourcePath = dir(source, 'source');
  const overlapping = overlap(rootPath, sourcePath);
  if (overlapping) throw errorOf('invalid-input', `source ${source}: ${overlapping}`, { path: sourcePath });
  const report = call('publish', [rootPath, sourcePath], [rootPath, w.step, sourcePath, w.options]);
  return afterWrite(rootPath, report, w, 'published');
}

/**
 * Seal a payload already written in `<root>/<prefix><step>/`: flush every
 * file, write the manifest, create `STABLE` (readers that only look for it
 * keep working), flush the step directory and the root. Durable once this
 * returns; a step that already has `STABLE` throws ConflictError.
 */
export function seal(root, step, options) {
  check.noStray([...arguments], 3, 'seal(root, step, options)');
  const w = writeArgs(step, options, 'seal');
  const rootPath = dir(root, 'root');
  const report = call('seal', [rootPath], [rootPath, w.step, w.options]);
  return afterWrite(rootPath, report, w, 'sealed');
}

/**
 * Begin a new run on `root`, for a trainer restarted from an earlier
 * checkpoint, and return its number: pass it as `run` to every publish or
 * seal of the restarted trainer. Writers of older runs are refused from then
 * on (ConflictError, "superseded"), and step n of the run is the step
 * numbered run * 10**12 + n, after every step of older runs.
 */
export function begin(root, options) {
  check.noStray([...arguments], 2, 'begin(root, options)');
  const { prefix = DEFAULT_PREFIX } = check.options(options, ['prefix'], 'begin');
  check.string(prefix, 'prefix');
  const rootPath = dir(root, 'root');
  return num(call('begin', [rootPath], [rootPath, prefix]), 'run');
}

/**
 * Wait until a step is committed and validates; return it. `wait(root, 7)`,
 * `wait(root, { latest: true })` or `wait(root, { after: 6 })`. Each attempt
 * opens the step, `STABLE`, the manifest and every listed file afresh.
 * Throws TimedOutError when `timeoutMs` passes with the step never committed
 * (no timeout: wait forever), IntegrityError when it is committed but still
 * does not validate after `settleMs`. With `pin`, the version is pinned for
 * that holder for `ttlMs` before it is returned; the holder's other pins
 * stay. A reader serving an earlier version hands over: it switches to the
 * new one, then unpins the old one.
 */
export function wait(root, stepOrOptions, options) {
  const opts = targetOptions([...arguments], WAIT_OPTIONS, 'wait', '');
  const { step, latest = false, after, timeoutMs, verify = 'size', settleMs = DEFAULT_SETTLE_MS, pollMs = DEFAULT_POLL_MS, pin, ttlMs = DEFAULT_TTL_MS, prefix = DEFAULT_PREFIX } = opts;
  const target = targetOf(step, latest, after);
  const waitOptions = {
    prefix: check.string(prefix, 'prefix'),
    verify: check.verify(verify),
    timeoutMs: check.optionalMs(timeoutMs, 'timeoutMs'),
    settleMs: check.ms(settleMs, 'settleMs'),
    pollMs: check.ms(pollMs, 'pollMs'),
    pin: pin === undefined || pin === null ? undefined : { holder: check.string(pin, 'pin'), ttlMs: check.ms(ttlMs, 'ttlMs') },
  };
  const rootPath = dir(root, 'root');
  return version(call('wait', [rootPath], [rootPath, target, waitOptions]));
}

/**
 * Wait for a step of `root` as `wait` does, pinned for `holder` (default
 * `<hostname>:<pid>`) only while it is copied, and copy it into `to`, a
 * local root of its own (made if missing): `<to>/<prefix><step>` with the
 * shared manifest byte for byte and `STABLE`, durable, by the staged path of
 * publish. `fetch(root, 7, { to })`, `fetch(root, { latest: true, to })` or
 * `fetch(root, { after: 6, to })`. Each copy is hashed and checked against
 * the manifest; a mismatch is copied again for `settleMs`, then throws
 * IntegrityError with nothing committed under `to`. A step already in `to`
 * with the same manifest is not copied again. With `keep`, gc runs on `to`
 * afterwards. Load the returned `version.path`: nothing upstream can delete
 * the local copy under a server that reads it again later.
 */
export function fetch(root, stepOrOptions, options) {
  const opts = targetOptions([...arguments], FETCH_OPTIONS, 'fetch', 'to, ');
  const { step, latest = false, after, to, keep, timeoutMs, settleMs = DEFAULT_SETTLE_MS, pollMs = DEFAULT_POLL_MS, holder, ttlMs = DEFAULT_TTL_MS, prefix = DEFAULT_PREFIX } = opts;
  const target = targetOf(step, latest, after);
  const fetchOptions = {
    prefix: check.string(prefix, 'prefix'),
    timeoutMs: check.optionalMs(timeoutMs, 'timeoutMs'),
    settleMs: check.ms(settleMs, 'settleMs'),
    pollMs: check.ms(pollMs, 'pollMs'),
    holder: holder === undefined || holder === null ? defaultWriterId() : check.string(holder, 'holder'),
    ttlMs: check.ms(ttlMs, 'ttlMs'),
  };
  const kept = keep === undefined || keep === null ? null : check.keep(keep);
  const localGiven = check.path(to, 'to');
  const rootPath = dir(root, 'root');
  const toPath = localRoot(rootPath, localGiven instanceof URL ? fileURLToPath(localGiven) : localGiven);
  const r = call('fetch', [rootPath, toPath], [rootPath, toPath, target, fetchOptions]);
  const v = version(r.version);
  let gcReport = null;
  if (kept !== null) {
    try {
      gcReport = runGc(toPath, { prefix: fetchOptions.prefix, keep: kept, graceMs: BigInt(DEFAULT_GRACE_MS), skewMs: BigInt(DEFAULT_SKEW_MS) });
    } catch (e) {
      if (!(e instanceof HandoffError)) throw e;
      throw new e.constructor(`step ${v.step} was fetched to ${v.path}, but the gc of ${toPath} after it failed: ${e.message}`, e.kind, { cause: e, path: e.path, retryable: e.retryable });
    }
  }
  return {
    version: v,
    source: r.source,
    copied: r.copied,
    bytesCopied: num(r.bytesCopied, 'bytesCopied'),
    fsyncs: num(r.fsyncs, 'fsyncs'),
    warnings: r.warnings,
    gc: gcReport,
  };
}

/** The highest committed step that validates, in one attempt, or null. */
export function latest(root, options) {
  check.noStray([...arguments], 2, 'latest(root, options)');
  const { verify = 'size', prefix = DEFAULT_PREFIX } = check.options(options, ['verify', 'prefix'], 'latest');
  const args = [check.string(prefix, 'prefix'), check.verify(verify)];
  const rootPath = dir(root, 'root');
  const found = call('latest', [rootPath], [rootPath, ...args]);
  return found === undefined ? null : version(found);
}

/** Every step directory under `root`, in step order, with its state. */
export function ls(root, options) {
  check.noStray([...arguments], 2, 'ls(root, options)');
  const { prefix = DEFAULT_PREFIX } = check.options(options, ['prefix'], 'ls');
  check.string(prefix, 'prefix');
  const rootPath = dir(root, 'root');
  return call('list', [rootPath], [rootPath, prefix]).map((s) => ({
    step: num(s.step, `step of ${s.path}`),
    path: s.path,
    state: s.state,
    files: s.files,
    bytes: num(s.bytes, `bytes of ${s.path}`),
  }));
}

/** Pin a committed step for `holder` for `ttlMs` (by the file server's
 * clock); pinning again renews the pin, so a reader that loads for longer
 * than `ttlMs` pins again before it runs out. A step that is not committed,
 * or that gc has claimed for removal, throws NotFoundError. */
export function pin(root, step, holder, options) {
  check.noStray([...arguments], 4, 'pin(root, step, holder, options)');
  const { ttlMs = DEFAULT_TTL_MS, prefix = DEFAULT_PREFIX } = check.options(options, ['ttlMs', 'prefix'], 'pin');
  const args = [check.string(prefix, 'prefix'), check.u64(step, 'step'), check.string(holder, 'holder'), check.ms(ttlMs, 'ttlMs')];
  const rootPath = dir(root, 'root');
  const info = call('pin', [rootPath], [rootPath, ...args]);
  // A ttl near 2**64 ms saturates to an expiry no number holds: never, in practice.
  const expiresMs = info.expiresMs > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(info.expiresMs);
  return { step: num(info.step, 'step'), holder: info.holder, expiresMs };
}

/** Release `holder`'s pin on `step`; a missing pin throws NotFoundError. */
export function unpin(root, step, holder, options) {
  check.noStray([...arguments], 4, 'unpin(root, step, holder, options)');
  const { prefix = DEFAULT_PREFIX } = check.options(options, ['prefix'], 'unpin');
  const args = [check.string(prefix, 'prefix'), check.u64(step, 'step'), check.string(holder, 'holder')];
  const rootPath = dir(root, 'root');
  call('unpin', [rootPath], [rootPath, ...args]);
}

/** Remove committed steps beyond the newest `keep` (at least 1) that no
 * unexpired pin holds (`STABLE` first), and staging directories untouched
 * for longer than `graceMs`. A pin counts until its expiry plus `skewMs`.
 * What it cannot remove is in `failed`, each with why, and gc goes on with
 * the rest; only a failure that stops the whole run throws. */
export function gc(root, keep, options) {
  check.noStray([...arguments], 3, 'gc(root, keep, options)');
  const { graceMs = DEFAULT_GRACE_MS, skewMs = DEFAULT_SKEW_MS, prefix = DEFAULT_PREFIX } = check.options(options, ['graceMs', 'skewMs', 'prefix'], 'gc');
  const gcOptions = { prefix: check.string(prefix, 'prefix'), keep: check.keep(keep), graceMs: check.ms(graceMs, 'graceMs'), skewMs: check.ms(skewMs, 'skewMs') };
  return runGc(dir(root, 'root'), gcOptions);
}

/** Classify every entry under `root`; with `repair`, finish or undo what a
 * crash left (idempotent). Removes a step only if it is broken, seen twice
 * 30 s apart, untouched for an hour and not pinned. */
export function fsck(root, options) {
  check.noStray([...arguments], 2, 'fsck(root, options)');
  const { repair = false, prefix = DEFAULT_PREFIX } = check.options(options, ['repair', 'prefix'], 'fsck');
  const args = [check.string(prefix, 'prefix'), check.bool(repair, 'repair')];
  const rootPath = dir(root, 'root');
  return call('fsck', [rootPath], [rootPath, ...args]).map((e) => ({
    name: e.name,
    state: e.state,
    detail: e.detail ?? null,
    action: e.action ?? null,
  }));
}

// --- the component -------------------------------------------------------

/**
 * The component, instantiated once per process (instantiating the
 * transpiled component costs ~50 ms; a call, well under 1 ms), and the
 * directories the current call may see. Calls are synchronous, so one call
 * runs at a time per thread and `current` is always that call's.
 */
let protocol = null;
let current = null;
/** The linear memories of the current instance. */
let memories = [];
/** The compiled core modules, kept across instances. */
const modules = new Map();

/**
 * A call that grew the component's linear memory past this is the last one
 * of its instance. Wasm memory never shrinks, so an instance that once read
 * a 15 MiB manifest would hold ~75 MB for the rest of the process. Everyday
 * calls (a manifest of a few hundred files) stay at ~2 MiB; 16 MiB leaves
 * room for manifests of tens of thousands of files, while a new instance
 * (from the compiled modules kept in `modules`) costs ~30 ms, well below the
 * ~250 ms of a call that handles a manifest big enough to pass it.
 */
export const RELEASE_ABOVE_BYTES = 16 * 2 ** 20;

function component() {
  if (!protocol) {
    const imports = new WASIShim({ sandbox: { preopens: {}, env: {}, args: ['handoff'], enableNetwork: false } }).getImportObject();
    imports['wasi:filesystem/preopens'] = { getDirectories: () => (current ? opened(current) : []) };
    imports['handoff:protocol/durability'] = durability;
    imports['handoff:protocol/bulk'] = bulk;
    fastOpen(imports['wasi:filesystem/types']);
    for (const name of Object.keys(imports).filter((n) => n.startsWith('wasi:clocks/monotonic-clock'))) {
      imports[name] = monotonicClock(imports[name], imports['wasi:io/poll'].Pollable);
    }
    for (const name of Object.keys(imports).filter((n) => n.startsWith('wasi:random/random'))) imports[name] = random(imports[name]);
    const found = [];
    try {
      ({ protocol } = instantiate(getCoreModule, imports, (module, importObject) => {
        const instance = new WebAssembly.Instance(module, importObject);
        for (const value of Object.values(instance.exports)) if (value instanceof WebAssembly.Memory) found.push(value);
        return instance;
      }));
    } catch (e) {
      throw new ComponentError(`bad component: ${e?.message ?? e}`, 'bad-component', { cause: e });
    }
    memories = found;
  }
  return protocol;
}

/** Drop the instance (and with it, once collected, its memory); the next call makes another. */
function release() {
  protocol = null;
  memories = [];
}

/** Bytes of linear memory the current instance holds (0 with none). */
export function memoryBytes() {
  return protocol ? memories.reduce((sum, m) => sum + m.buffer.byteLength, 0) : 0;
}

/** Compile each core module of the transpiled component, once. */
function getCoreModule(name) {
  if (!modules.has(name)) modules.set(name, new WebAssembly.Module(readFileSync(new URL(`../gen/${name}`, import.meta.url))));
  return modules.get(name);
}

/**
 * The shim's preopens are paths, not open directories: `stat()` and
 * `sync()` on them fail. Hand the component a real directory descriptor
 * opened on each preopen instead, afresh on every request, since the
 * component owns (and closes) the descriptors it is handed. Each is
 * tracked by src/open.js, which answers the component's failing opens and
 * its stats on it (and on what it opens) in this thread.
 */
function opened(preopens) {
  return preopens.getDirectories().map(([d, path]) => {
    const flags = { symlinkFollow: false };
    const descriptor = d.openAt(flags, '.', { directory: true }, { read: true });
    trackPreopen(descriptor, path, flags, '.'); // guest path = host path
    return [descriptor, path];
  });
}

/** The HandoffError subclass for the WIT `error` record. */
function errorFrom(err) {
  return errorOf(err.kind, err.message, { path: err.path ?? null, retryable: err.retryable });
}

/** Call export `name`, with only `dirs` preopened (guest path = host path). */
function call(name, dirs, args) {
  const exports = component();
  const sandbox = { preopens: Object.fromEntries(dirs.map((d) => [d, d])) };
  current = new WASIShim({ sandbox }).getImportObject()['wasi:filesystem/preopens'];
  try {
    return exports[name](...args);
  } catch (e) {
    // jco throws the WIT `error` record ({kind, message, path, retryable}),
    // or a ComponentError wrapping it as `payload`, depending on its version.
    const err = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
    if (err && typeof err.kind === 'string' && typeof err.message === 'string' && typeof err.retryable === 'boolean') {
      throw errorFrom(err);
    }
    release(); // a trapped instance cannot be used again
    throw new ComponentError(`component trapped: ${e?.message ?? e}`, 'trap', { cause: e });
  } finally {
    current = null;
    if (memoryBytes() > RELEASE_ABOVE_BYTES) release();
  }
}

// --- values --------------------------------------------------------------

/** The step and write options of publish or seal, all checked before anything is written. */
function writeArgs(step, options, call) {
  const { writer, createdMs, prefix = DEFAULT_PREFIX, keep, run = 0 } = check.options(options, WRITE_OPTIONS, call);
  const w = {
    step: check.u64(step, 'step'),
    options: {
      prefix: check.string(prefix, 'prefix'),
      writer: writer === undefined || writer === null ? defaultWriterId() : check.string(writer, 'writer'),
      createdMs: createdMs === undefined || createdMs === null ? undefined : check.u64(createdMs, 'createdMs'),
      run: check.u64(run, 'run'),
    },
    keep: keep === undefined || keep === null ? null : check.keep(keep),
  };
  // The report gives the step and time as numbers: one that a number cannot
  // hold would fail after the write, so refuse it first.
  const { run: r, createdMs: created } = w.options;
  const numbered = r === 0n ? w.step : r * 1_000_000_000_000n + w.step;
  if (numbered <= check.U64_MAX) unsafe(numbered, r === 0n ? 'step' : `step (${w.step} of run ${r})`, ': nothing was written');
  if (created !== undefined) unsafe(created, 'createdMs', ': nothing was written');
  return w;
}

function afterWrite(rootPath, report, w, verb) {
  const v = version(report.version);
  let gcReport = null;
  if (w.keep !== null) {
    try {
      gcReport = runGc(rootPath, { prefix: w.options.prefix, keep: w.keep, graceMs: BigInt(DEFAULT_GRACE_MS), skewMs: BigInt(DEFAULT_SKEW_MS) });
    } catch (e) {
      if (!(e instanceof HandoffError)) throw e;
      throw new e.constructor(`step ${v.step} was ${verb}, but the gc after it failed: ${e.message}`, e.kind, { cause: e, path: e.path, retryable: e.retryable });
    }
  }
  return { version: v, fsyncs: num(report.fsyncs, 'fsyncs'), warnings: report.warnings, gc: gcReport };
}

function runGc(rootPath, gcOptions) {
  const r = call('gc', [rootPath], [rootPath, gcOptions]);
  const steps = (list, field) => [...list].map((s, i) => num(s, `${field}[${i}]`));
  return {
    removed: steps(r.removed, 'removed'),
    kept: steps(r.kept, 'kept'),
    pinned: steps(r.pinned, 'pinned'),
    stagingRemoved: r.stagingRemoved,
    invalid: steps(r.invalid, 'invalid'),
    failed: r.failed.map((f) => ({ name: f.name, error: errorFrom(f.error) })),
  };
}

function version(v) {
  const files = v.files.map((f) => ({ path: f.path, size: num(f.size, `size of ${f.path} in ${v.path}`), blake3: f.blake3 }));
  // Summed as bigints: the total of sizes that are each safe may not be.
  const bytes = v.files.reduce((sum, f) => sum + BigInt(f.size), 0n);
  return {
    step: num(v.step, `step of ${v.path}`),
    run: num(v.run, `run of ${v.path}`),
    path: v.path,
    writer: v.writer,
    createdMs: num(v.createdMs, `createdMs of ${v.path}`),
    files,
    bytes: num(bytes, `bytes of ${v.path}`),
  };
}

/** The canonical absolute path of an existing directory. */
function dir(path, what) {
  const given = check.path(path, what);
  const shown = given instanceof URL ? fileURLToPath(given) : given;
  let canonical;
  try {
    canonical = realpathSync(given);
  } catch (e) {
    throw errorOf(e?.code === 'ENOENT' ? 'not-found' : e?.code === 'ENOTDIR' ? 'invalid-input' : 'io', `${what} ${shown}: ${reason(e)}`, { path: shown });
  }
  if (!statSync(canonical).isDirectory()) throw errorOf('invalid-input', `${what} ${shown}: not a directory`, { path: canonical });
  return canonical;
}

/**
 * The options of a call taken as `(root, step, options)` or as
 * `(root, { step | latest | after, ...options })`, checked against `known`.
 */
function targetOptions(args, known, name, required) {
  const [, stepOrOptions, options] = args;
  if (typeof stepOrOptions === 'object' && stepOrOptions !== null) {
    check.noStray(args, 2, `${name}(root, { step | latest | after, ${required}...options })`);
    return check.options(stepOrOptions, known, name);
  }
  check.noStray(args, 3, `${name}(root, step, { ${required}...options })`);
  const rest = check.options(options, known.filter((o) => !['step', 'latest', 'after'].includes(o)), `${name}(root, step, options)`);
  return { ...rest, step: stepOrOptions };
}

/** The WIT target of exactly one of `step`, `latest` or `after`. */
function targetOf(step, latest, after) {
  check.bool(latest, 'latest');
  const chosen = [step !== undefined, latest, after !== undefined].filter(Boolean).length;
  if (chosen !== 1) throw new UsageError('give exactly one of step, latest: true or after');
  return step !== undefined ? { tag: 'step', val: check.u64(step, 'step') } : latest ? { tag: 'latest' } : { tag: 'after', val: check.u64(after, 'after') };
}

/**
 * The canonical path of fetch's local root, made if missing, once it is
 * known not to be the shared root, inside it or holding it (judged by the
 * nearest existing folder, and again once it exists).
 */
function localRoot(root, to) {
  const wanted = resolve(to);
  const refuse = (path, exists) => {
    let found = relation(root, path);
    if (!exists && found === 'same') found = 'inside';
    if (!exists && found === 'contains') found = null;
    const why = "a local root is a root of its own, on the reader's disk";
    const message = {
      same: `is the shared root itself: ${why}`,
      inside: `is inside the shared root ${root}: ${why}`,
      contains: `contains the shared root ${root}: ${why}, and its gc and fsck would see the shared root's steps as strays`,
    }[found];
    if (message) throw errorOf('invalid-input', `local root ${wanted}: ${message}`, { path: wanted });
  };
  let existing = wanted;
  while (!isDir(existing)) existing = dirname(existing);
  refuse(existing, existing === wanted);
  try {
    mkdirSync(wanted, { recursive: true });
  } catch (e) {
    throw errorOf('io', `local root ${wanted}: cannot create it: ${reason(e)}`, { path: wanted });
  }
  const canonical = dir(wanted, 'local root');
  refuse(canonical, true);
  return canonical;
}

function isDir(path) {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * How a publish source overlaps the root, or null.
 */
function overlap(root, source) {
  const also = 'publish copies a payload from outside the root (to commit a step written in place, use seal)';
  return {
    same: `is the root itself: ${also}`,
    inside: `is inside the root ${root}: ${also}`,
    contains: `contains the root ${root}: publishing it would copy the root, and the copy being made, into the new step`,
  }[relation(root, source)] ?? null;
}

/**
 * 'same', 'inside' (`other` is inside `root`), 'contains' (`other` holds
 * `root`) or null. Folders are told apart by device and inode, found through
 * `..`, so a second name for a folder (a bind mount) is still seen.
 */
function relation(root, other) {
  const ident = (path) => {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };
  const ancestors = (path) => {
    const seen = new Set();
    for (;;) {
      path = join(path, '..');
      const parent = ident(path);
      if (seen.has(parent)) return seen;
      seen.add(parent);
    }
  };
  const rootId = ident(root);
  const otherId = ident(other);
  if (rootId === otherId) return 'same';
  if (ancestors(other).has(rootId)) return 'inside';
  if (ancestors(root).has(otherId)) return 'contains';
  return null;
}

function reason(e) {
  const known = { ENOENT: 'No such file or directory', ENOTDIR: 'Not a directory', EACCES: 'Permission denied' };
  return known[e?.code] ?? e?.message ?? String(e);
}

/**
 * A u64 result as a number. Steps, sizes and times are numbers in this API;
 * one above Number.MAX_SAFE_INTEGER (2**53 - 1) cannot be one exactly, and
 * throws rather than come back rounded or as a bigint.
 */
function num(value, field) {
  unsafe(value, field);
  return Number(value);
}

function unsafe(value, field, more = '') {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw errorOf(
      'unsafe-integer',
      `${field} is ${value}, above Number.MAX_SAFE_INTEGER (2**53 - 1): this package gives steps, sizes and times as numbers, and a number cannot hold it exactly${more}`,
    );
  }
}
