// handoff for Node: publish, wait for and retain model-weight versions on a
// shared filesystem.
//
// Runs the same WebAssembly component as the `handoff` CLI, transpiled by
// jco at build time (gen/), with WASI from @bytecodealliance/preview2-shim.
// Each call sees only the directories it needs (the root, and the source of
// a publish), preopened at their canonical absolute paths so the
// component's messages name real paths. Calls are synchronous and block the
// thread (a `wait` included): run them in a worker_thread to keep an event
// loop free.
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';
import { instantiate } from '../gen/handoff.js';
import { bulk } from './bulk.js';
import { durability } from './durability.js';

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

/**
 * Any handoff failure. `kind` is the WIT `error-kind` (or `root`, `source`,
 * `component` for failures found outside the component); `exitCode` is the
 * CLI's exit code for the same failure; `path` is the file or directory
 * concerned, or null; `retryable` says whether the same call may succeed
 * later with nothing changed. `options` is Error's (`cause`) plus `path` and
 * `retryable`.
 */
export class HandoffError extends Error {
  exitCode = 1;
  constructor(message, kind = 'io', options = {}) {
    super(message, options);
    this.name = new.target.name;
    this.kind = kind;
    this.path = options.path ?? null;
    this.retryable = options.retryable ?? false;
  }
}
/** The deadline passed and the step was never committed (CLI exit 3). */
export class TimedOutError extends HandoffError {
  name = 'TimeoutError';
  exitCode = 3;
  code = 'ETIMEDOUT';
}
/** Committed, but a file is missing, short, differs from its hash, or the
 * manifest is unsafe; retried for `settleMs` first (CLI exit 4). */
export class IntegrityError extends HandoffError {
  exitCode = 4;
}
/** The step is already published, or another writer is at it; what is there is intact (CLI exit 5). */
export class ConflictError extends HandoffError {
  exitCode = 5;
}
/** A step, pin or path the call names does not exist. */
export class NotFoundError extends HandoffError {}
/** The arguments are invalid (a bad prefix, holder, source entry). */
export class InvalidInputError extends HandoffError {}
/** A flush failed; nothing was announced. Do not retry the same publish. */
export class DurabilityError extends HandoffError {}
/** The component could not be loaded, or trapped. */
export class ComponentError extends HandoffError {
  constructor(message, kind = 'component', options = {}) {
    super(message, kind, options);
  }
}

const BY_KIND = {
  'timed-out': TimedOutError,
  integrity: IntegrityError,
  conflict: ConflictError,
  'not-found': NotFoundError,
  'invalid-input': InvalidInputError,
  durability: DurabilityError,
  io: HandoffError,
};

/** `<hostname>:<pid>`, the CLI's default writer id. */
export function defaultWriterId() {
  return `${hostname() || 'localhost'}:${process.pid}`;
}

/**
 * Copy the payload under `source` into `<root>/.handoff/staging/`, seal it
 * there and rename it to `<root>/<prefix><step>`. Once this returns, the
 * version is durable and visible; on error nothing is visible and earlier
 * versions are untouched. A step that already exists throws ConflictError
 * and is left as it is. With `keep`, gc runs afterwards.
 */
export function publish(root, step, source, { writer, createdMs, prefix = DEFAULT_PREFIX, keep, run = 0 } = {}) {
  const rootPath = dir(root, 'root');
  const sourcePath = dir(source, 'source');
  const overlapping = overlap(rootPath, sourcePath);
  if (overlapping) throw new HandoffError(`source ${source}: ${overlapping}`, 'source', { path: sourcePath });
  const report = call('publish', [rootPath, sourcePath], [rootPath, u64(step, 'step'), sourcePath, writeOptions(writer, createdMs, prefix, run)]);
  return afterWrite(rootPath, report, prefix, keep, 'published');
}

/**
 * Seal a payload already written in `<root>/<prefix><step>/`: flush every
 * file, write the manifest, create `STABLE` (readers that only look for it
 * keep working), flush the step directory and the root. Durable once this
 * returns; a step that already has `STABLE` throws ConflictError.
 */
export function seal(root, step, { writer, createdMs, prefix = DEFAULT_PREFIX, keep, run = 0 } = {}) {
  const rootPath = dir(root, 'root');
  const report = call('seal', [rootPath], [rootPath, u64(step, 'step'), writeOptions(writer, createdMs, prefix, run)]);
  return afterWrite(rootPath, report, prefix, keep, 'sealed');
}

/**
 * Begin a new run on `root`, for a trainer restarted from an earlier
 * checkpoint, and return its number: pass it as `run` to every publish or
 * seal of the restarted trainer. Writers of older runs are refused from then
 * on (ConflictError, "superseded"), and step n of the run is the step
 * numbered run * 10**12 + n, after every step of older runs.
 */
export function begin(root, { prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  return num(call('begin', [rootPath], [rootPath, prefix]));
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
export function wait(root, stepOrOptions, options = {}) {
  const opts = typeof stepOrOptions === 'object' && stepOrOptions !== null ? stepOrOptions : { ...options, step: stepOrOptions };
  const { step, latest = false, after, timeoutMs, verify = 'size', settleMs = DEFAULT_SETTLE_MS, pollMs = DEFAULT_POLL_MS, pin, ttlMs = DEFAULT_TTL_MS, prefix = DEFAULT_PREFIX } = opts;
  const chosen = [step !== undefined, latest === true, after !== undefined].filter(Boolean).length;
  if (chosen !== 1) throw new TypeError('give exactly one of step, latest: true or after');
  const target =
    step !== undefined ? { tag: 'step', val: u64(step, 'step') } : latest ? { tag: 'latest' } : { tag: 'after', val: u64(after, 'after') };
  const waitOptions = {
    prefix,
    verify: checkVerify(verify),
    timeoutMs: timeoutMs === undefined || timeoutMs === null ? undefined : ms(timeoutMs, 'timeoutMs'),
    settleMs: ms(settleMs, 'settleMs'),
    pollMs: ms(pollMs, 'pollMs'),
    pin: pin === undefined || pin === null ? undefined : { holder: pin, ttlMs: ms(ttlMs, 'ttlMs') },
  };
  const rootPath = dir(root, 'root');
  return version(call('wait', [rootPath], [rootPath, target, waitOptions]));
}

/** The highest committed step that validates, in one attempt, or null. */
export function latest(root, { verify = 'size', prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  const found = call('latest', [rootPath], [rootPath, prefix, checkVerify(verify)]);
  return found === undefined ? null : version(found);
}

/** Every step directory under `root`, in step order, with its state. */
export function ls(root, { prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  return call('list', [rootPath], [rootPath, prefix]).map((s) => ({
    step: num(s.step),
    path: s.path,
    state: s.state,
    files: s.files,
    bytes: num(s.bytes),
  }));
}

/** Pin a committed step for `holder` for `ttlMs` (by the file server's
 * clock); pinning again renews the pin, so a reader that loads for longer
 * than `ttlMs` pins again before it runs out. A step that is not committed,
 * or that gc has claimed for removal, throws NotFoundError. */
export function pin(root, step, holder, { ttlMs = DEFAULT_TTL_MS, prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  const info = call('pin', [rootPath], [rootPath, prefix, u64(step, 'step'), holder, ms(ttlMs, 'ttlMs')]);
  return { step: num(info.step), holder: info.holder, expiresMs: num(info.expiresMs) };
}

/** Release `holder`'s pin on `step`; a missing pin throws NotFoundError. */
export function unpin(root, step, holder, { prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  call('unpin', [rootPath], [rootPath, prefix, u64(step, 'step'), holder]);
}

/** Remove committed steps beyond the newest `keep` (at least 1) that no
 * unexpired pin holds (`STABLE` first), and staging directories untouched
 * for longer than `graceMs`. A pin counts until its expiry plus `skewMs`.
 * What it cannot remove is in `failed`, each with why, and gc goes on with
 * the rest; only a failure that stops the whole run throws. */
export function gc(root, keep, { graceMs = DEFAULT_GRACE_MS, skewMs = DEFAULT_SKEW_MS, prefix = DEFAULT_PREFIX } = {}) {
  if (!Number.isInteger(keep) || keep < 1 || keep > 0xffffffff) throw new RangeError(`keep must be an integer of at least 1, not ${keep}`);
  const rootPath = dir(root, 'root');
  const r = call('gc', [rootPath], [rootPath, { prefix, keep, graceMs: ms(graceMs, 'graceMs'), skewMs: ms(skewMs, 'skewMs') }]);
  return {
    removed: [...r.removed].map(num),
    kept: [...r.kept].map(num),
    pinned: [...r.pinned].map(num),
    stagingRemoved: r.stagingRemoved,
    invalid: [...r.invalid].map(num),
    failed: r.failed.map((f) => ({ name: f.name, error: errorFrom(f.error) })),
  };
}

/** Classify every entry under `root`; with `repair`, finish or undo what a
 * crash left (idempotent). Removes a step only if it is broken, seen twice
 * 30 s apart, untouched for an hour and not pinned. */
export function fsck(root, { repair = false, prefix = DEFAULT_PREFIX } = {}) {
  const rootPath = dir(root, 'root');
  return call('fsck', [rootPath], [rootPath, prefix, Boolean(repair)]).map((e) => ({
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

function component() {
  if (!protocol) {
    const imports = new WASIShim({ sandbox: { preopens: {}, env: {}, args: ['handoff'], enableNetwork: false } }).getImportObject();
    imports['wasi:filesystem/preopens'] = { getDirectories: () => (current ? opened(current) : []) };
    imports['handoff:protocol/durability'] = durability;
    imports['handoff:protocol/bulk'] = bulk;
    try {
      ({ protocol } = instantiate(getCoreModule, imports));
    } catch (e) {
      throw new ComponentError(`bad component: ${e?.message ?? e}`, 'component', { cause: e });
    }
  }
  return protocol;
}

/** Compile each core module of the transpiled component. */
function getCoreModule(name) {
  return new WebAssembly.Module(readFileSync(new URL(`../gen/${name}`, import.meta.url)));
}

/**
 * The shim's preopens are paths, not open directories: `stat()` and
 * `sync()` on them fail. Hand the component a real directory descriptor
 * opened on each preopen instead, afresh on every request, since the
 * component owns (and closes) the descriptors it is handed.
 */
function opened(preopens) {
  return preopens.getDirectories().map(([d, path]) => [d.openAt({ symlinkFollow: false }, '.', { directory: true }, { read: true }), path]);
}

/** The HandoffError subclass for the WIT `error` record. */
function errorFrom(err) {
  return new (BY_KIND[err.kind] ?? HandoffError)(err.message, err.kind, { path: err.path ?? null, retryable: err.retryable });
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
    protocol = null; // a trapped instance cannot be used again
    throw new ComponentError(`component trapped: ${e?.message ?? e}`, 'component', { cause: e });
  } finally {
    current = null;
  }
}

// --- values --------------------------------------------------------------

function afterWrite(rootPath, report, prefix, keep, verb) {
  const v = version(report.version);
  let gcReport = null;
  if (keep !== undefined && keep !== null) {
    try {
      gcReport = gc(rootPath, keep, { prefix });
    } catch (e) {
      if (!(e instanceof HandoffError)) throw e;
      throw new e.constructor(`step ${v.step} was ${verb}, but the gc after it failed: ${e.message}`, e.kind, { cause: e, path: e.path, retryable: e.retryable });
    }
  }
  return { version: v, fsyncs: num(report.fsyncs), warnings: report.warnings, gc: gcReport };
}

function version(v) {
  const files = v.files.map((f) => ({ path: f.path, size: num(f.size), blake3: f.blake3 }));
  return {
    step: num(v.step),
    run: num(v.run),
    path: v.path,
    writer: v.writer,
    createdMs: num(v.createdMs),
    files,
    bytes: files.reduce((sum, f) => sum + f.size, 0),
  };
}

function writeOptions(writer, createdMs, prefix, run) {
  return {
    prefix,
    writer: writer ?? defaultWriterId(),
    createdMs: createdMs === undefined || createdMs === null ? undefined : u64(createdMs, 'createdMs'),
    run: u64(run, 'run'),
  };
}

/** The canonical absolute path of an existing directory. */
function dir(path, what) {
  let canonical;
  try {
    canonical = realpathSync(String(path));
  } catch (e) {
    throw new HandoffError(`${what} ${path}: ${reason(e)}`, what, { path: String(path) });
  }
  if (!statSync(canonical).isDirectory()) throw new HandoffError(`${what} ${path}: not a directory`, what, { path: canonical });
  return canonical;
}

/**
 * How a publish source overlaps the root, or null. Folders are told apart by
 * device and inode, found through `..`, so a second name for the root (a bind
 * mount) is still seen.
 */
function overlap(root, source) {
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
  const sourceId = ident(source);
  const also = 'publish copies a payload from outside the root (to commit a step written in place, use seal)';
  if (rootId === sourceId) return `is the root itself: ${also}`;
  if (ancestors(source).has(rootId)) return `is inside the root ${root}: ${also}`;
  if (ancestors(root).has(sourceId)) return `contains the root ${root}: publishing it would copy the root, and the copy being made, into the new step`;
  return null;
}

function reason(e) {
  const known = { ENOENT: 'No such file or directory', ENOTDIR: 'Not a directory', EACCES: 'Permission denied' };
  return known[e?.code] ?? e?.message ?? String(e);
}

/** A u64 argument as the bigint jco expects. */
function u64(value, name) {
  const ok = (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) || (typeof value === 'bigint' && value >= 0n && value < 2n ** 64n);
  if (!ok) throw new RangeError(`${name} must be an integer from 0 to 2**64-1, not ${value}`);
  return BigInt(value);
}

/** A duration in milliseconds as the WIT's u64. */
function ms(value, name) {
  if (typeof value === 'bigint' && value >= 0n) return value;
  if (value === Infinity) return 2n ** 64n - 1n;
  if (typeof value !== 'number' || !(value >= 0)) throw new RangeError(`${name} must be a non-negative number of milliseconds, not ${value}`);
  return BigInt(Math.ceil(value));
}

/** A u64 result as a number; a bigint only above Number.MAX_SAFE_INTEGER. */
function num(value) {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

function checkVerify(verify) {
  if (verify !== 'size' && verify !== 'hash') throw new RangeError(`verify must be 'size' or 'hash', not ${verify}`);
  return verify;
}
