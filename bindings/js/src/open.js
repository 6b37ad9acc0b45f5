// `descriptor.open-at` for the opens that fail, without the shim's I/O
// worker, and `descriptor.stat-at` without an Error object per missing path.
//
// The shim runs every open in its I/O worker: a synchronous round trip
// (postMessage, then Atomics.wait until the worker answers) even when the
// open fails. An idle `wait` opens `<step>/STABLE` on every attempt (an open,
// not only a stat: on NFS an open revalidates what a stat may answer from
// the attribute cache), and that open fails until the step is committed: the
// round trip was most of the worker's share of an idle wait's CPU.
//
// Here a read-only open (no create, truncate or exclusive) on a descriptor of
// ours is first done in the calling thread, with the flags the shim would use,
// on the host path the shim would resolve. If that open(2) fails with an
// error about the path, the error is the answer, with the shim's error code.
// If it succeeds, the file is closed at once and the shim's own `openAt`
// runs, so the component still gets a descriptor owned by the shim's worker
// (a file that exists is opened twice: once here, once there). Anything
// unusual (a path the resolution refuses, another error) goes to the shim.
//
// `stat-at` on our descriptors does what the shim's does (in the calling
// thread too), with differences in cost only: a missing path (the usual
// answer of an idle wait's attempts) makes no Error in the path resolution
// nor in the stat, other errors get no stack trace, and the base directory is
// resolved with one realpath(3) instead of the shim's walk in JavaScript (the
// same canonical path). Both calls return a path error to jco's glue as a WIT
// result instead of throwing it (`FAILED`), so no exception unwinds through
// the glue either; only the failing open(2) itself still makes an Error.
//
// "Ours" are the descriptors that src/index.js hands the component (one per
// preopen) and every descriptor opened from them; a WeakMap holds each one's
// host path. Other users of the shim in the process are untouched.
import { closeSync, constants, lstatSync, openSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { posix as hostPath } from 'node:path';
import { platform } from 'node:process';

/** Host path of each descriptor of ours, as the shim holds it. */
const paths = new WeakMap();
const patched = new WeakSet();
const MAX_SYMLINKS = 40; // the shim's
/** lstat/stat options: undefined for a missing path, instead of an ENOENT Error. */
const NO_THROW_IF_MISSING = { throwIfNoEntry: false };
const STAT_OPTIONS = { bigint: true, throwIfNoEntry: false };

/**
 * Errors of open(2) that concern the path itself and are answered here,
 * with the shim's error code for each (its convertFsError). Any other error
 * is left to the shim's open, which reports what it gets.
 */
const ANSWERED = {
  ENOENT: 'no-entry',
  ENOTDIR: 'not-directory',
  ELOOP: 'loop',
  EACCES: 'access',
  ENAMETOOLONG: 'name-too-long',
};

/**
 * The same, as the WIT `result` that `statAt` and `openAt` return for them
 * instead of throwing the code: jco's glue for both takes a returned
 * `{ tag: 'err', val }` as the error, exactly as it takes a thrown code
 * (scripts/transpile.mjs fails the build if it no longer does), and an idle
 * wait's two missing paths per attempt then cost no exception unwinding
 * through the glue.
 */
const FAILED = Object.assign(Object.create(null), Object.fromEntries(Object.entries(ANSWERED).map(([errno, code]) => [errno, Object.freeze({ tag: 'err', val: code })])));

/**
 * Make `openAt` and `statAt` of `Descriptor` (the shim's class) work as
 * above on our descriptors, once per class; on any other descriptor they are
 * the shim's. Not on Windows, where the shim resolves paths differently.
 */
export function fastOpen(Descriptor) {
  if (platform === 'win32' || patched.has(Descriptor)) return;
  patched.add(Descriptor);
  const shimOpenAt = Descriptor.prototype.openAt;
  Descriptor.prototype.openAt = function openAt(pathFlags, path, openFlags, descriptorFlags) {
    const base = paths.get(this);
    if (base === undefined) return shimOpenAt.call(this, pathFlags, path, openFlags, descriptorFlags);
    const fullPath = quiet(probe, base, pathFlags, path, openFlags, descriptorFlags);
    if (typeof fullPath === 'object' && fullPath !== null) return fullPath; // the error, as a WIT result
    const opened = shimOpenAt.call(this, pathFlags, path, openFlags, descriptorFlags);
    // The path the shim gives the new descriptor (resolved again just now,
    // so taken from the same resolution as the shim's when nothing moved).
    if (fullPath !== null) paths.set(opened, fullPath);
    else track(opened, base, pathFlags, path);
    return opened;
  };
  const shimStatAt = Descriptor.prototype.statAt;
  Descriptor.prototype.statAt = function statAt(pathFlags, path) {
    const base = paths.get(this);
    const stat = base === undefined ? undefined : quiet(statOf, base, pathFlags, path);
    return stat ?? shimStatAt.call(this, pathFlags, path);
  };
}

/**
 * Remember `descriptor` (opened by the shim on `path` of the preopen
 * `hostPreopen`) as ours. Its host path is the one the shim resolved.
 */
export function trackPreopen(descriptor, hostPreopen, pathFlags, path) {
  const preopen = hostPreopen.endsWith('/') ? hostPreopen.slice(0, -1) || '/' : hostPreopen;
  track(descriptor, preopen, pathFlags, path);
}

function track(descriptor, base, pathFlags, path) {
  if (platform === 'win32') return;
  try {
    paths.set(descriptor, quiet(fullPathOf, base, path, pathFlags.symlinkFollow));
  } catch {
    // Not ours, then: the shim handles every open on it.
  }
}

/**
 * Run `f(...args)` with no stack traces captured for the errors made
 * meanwhile: every one is caught here, in this file, and none reaches the
 * caller (it becomes a WASI error code, or the shim's call redoes the work
 * and makes its own).
 */
function quiet(f, a, b, c, d, e) {
  const limit = Error.stackTraceLimit;
  try {
    Error.stackTraceLimit = 0;
  } catch {
    return f(a, b, c, d, e); // frozen: the same, with stack traces
  }
  try {
    return f(a, b, c, d, e);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * The shim's `statAt` (preview2-shim 0.26.1) for a descriptor of ours:
 * returns its result, its error code for an error about the path as a WIT
 * result (`FAILED`), or undefined for the shim to decide.
 */
function statOf(base, pathFlags, path) {
  let fullPath;
  try {
    fullPath = fullPathOf(base, path, pathFlags.symlinkFollow);
  } catch {
    return undefined; // the shim's resolution throws the same
  }
  let stats;
  try {
    stats = (pathFlags.symlinkFollow ? statSync : lstatSync)(fullPath, STAT_OPTIONS);
  } catch (e) {
    return (typeof e?.code === 'string' && FAILED[e.code]) || undefined;
  }
  if (stats === undefined) return FAILED.ENOENT; // throwIfNoEntry: false
  return {
    type: typeOf(stats),
    linkCount: stats.nlink,
    size: stats.size,
    dataAccessTimestamp: dateTime(stats.atimeNs),
    dataModificationTimestamp: dateTime(stats.mtimeNs),
    statusChangeTimestamp: dateTime(stats.ctimeNs),
  };
}

/** The shim's `lookupType`. */
function typeOf(stats) {
  if (stats.isFile()) return 'regular-file';
  if (stats.isSocket()) return 'socket';
  if (stats.isSymbolicLink()) return 'symbolic-link';
  if (stats.isFIFO()) return 'fifo';
  if (stats.isDirectory()) return 'directory';
  if (stats.isCharacterDevice()) return 'character-device';
  if (stats.isBlockDevice()) return 'block-device';
  return 'unknown';
}

/** The shim's `nsToDateTime`. */
function dateTime(ns) {
  return { seconds: ns / 1_000_000_000n, nanoseconds: Number(ns % 1_000_000_000n) };
}

/**
 * Open `path` as the shim would, in this thread, and close it. Returns the
 * shim's error code for an error about the path as a WIT result (`FAILED`),
 * the host path on success, or null when the shim is to decide alone.
 */
function probe(base, pathFlags, path, openFlags, descriptorFlags) {
  const readOnly =
    descriptorFlags.read &&
    !descriptorFlags.write &&
    !descriptorFlags.fileIntegritySync &&
    !descriptorFlags.dataIntegritySync &&
    !descriptorFlags.requestedWriteSync &&
    !descriptorFlags.mutateDirectory &&
    !openFlags.create &&
    !openFlags.exclusive &&
    !openFlags.truncate;
  if (!readOnly) return null;
  let fullPath;
  try {
    fullPath = fullPathOf(base, path, pathFlags.symlinkFollow);
  } catch {
    return null; // the shim's resolution throws the same
  }
  let flags = constants.O_RDONLY;
  if (openFlags.directory) flags |= constants.O_DIRECTORY;
  if (!pathFlags.symlinkFollow) flags |= constants.O_NOFOLLOW;
  let fd;
  try {
    fd = openSync(fullPath.endsWith('/') ? fullPath.slice(0, -1) : fullPath, flags);
  } catch (e) {
    return (typeof e?.code === 'string' && FAILED[e.code]) || null;
  }
  closeSync(fd);
  return fullPath;
}

/**
 * The host path the shim opens for `subpath` under `base` (a preopen's host
 * path, or the path of a descriptor opened from one): its
 * `Descriptor#getFullPath` (preview2-shim 0.26.1, dist/nodejs/filesystem.js),
 * for POSIX hosts. Throws where it throws.
 */
function fullPathOf(base, subpath, followFinalSymlink) {
  if (subpath.includes('\\')) subpath = subpath.replace(/\\/g, '/');
  if (subpath.includes('//')) subpath = subpath.replace(/\/\/+/g, '/');
  if (subpath.startsWith('/')) throw 'not-permitted';
  const trailingSlash = subpath.endsWith('/');
  const segments = [];
  for (const segment of subpath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      if (segments.pop() === undefined) throw 'not-permitted';
    } else {
      segments.push(segment);
    }
  }
  // One realpath(3) where the shim walks the path in JavaScript: the same
  // canonical path, and any failure leaves the call to the shim.
  const baseResolved = realpathSync.native(base);
  let current = baseResolved;
  let pending = segments;
  let followedSymlinks = 0;
  while (pending.length > 0) {
    const segment = pending.shift();
    // hostPath.join(current, segment), by concatenation: `current` is
    // absolute and normalized, `segment` a plain name (no '/', '.' or '..').
    const candidate = child(current, segment);
    // A missing entry is the usual answer here: no Error object for it.
    const stats = lstatSync(candidate, NO_THROW_IF_MISSING);
    if (stats === undefined) {
      // hostPath.join(candidate, ...pending), as above.
      const unresolved = pending.length === 0 ? candidate : `${candidate}/${pending.join('/')}`;
      return trailingSlash ? `${unresolved}/` : unresolved;
    }
    const isFinal = pending.length === 0;
    if (!stats.isSymbolicLink() || (isFinal && !followFinalSymlink && !trailingSlash)) {
      current = candidate;
      continue;
    }
    if (++followedSymlinks > MAX_SYMLINKS) throw 'loop';
    const target = readlinkSync(candidate);
    if (hostPath.isAbsolute(target)) throw 'not-permitted';
    const relativeCurrent = hostPath.relative(baseResolved, current);
    const targetSegments = relativeCurrent ? relativeCurrent.split(hostPath.sep) : [];
    for (const targetSegment of target.replace(/\\/g, '/').split('/')) {
      if (targetSegment === '' || targetSegment === '.') continue;
      if (targetSegment === '..') {
        if (targetSegments.pop() === undefined) throw 'not-permitted';
      } else {
        targetSegments.push(targetSegment);
      }
    }
    pending = [...targetSegments, ...pending];
    current = baseResolved;
  }
  return trailingSlash && current !== baseResolved ? `${current}/` : current;
}

/** hostPath.join(dir, name) for an absolute, normalized `dir` and a plain `name`. */
function child(dir, name) {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
