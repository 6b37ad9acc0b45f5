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
// Both resolve the path as the shim does, with two differences in cost
// only. Each descriptor's base directory is resolved with realpath(3) once,
// on its first use, not at every call: the shim resolves a descriptor's path
// once already, when it opens it, and a link placed later on the path it
// found is followed all the same, by the kernel (links beneath the root are
// looked at every time). And the resolution's lstat of each segment is an
// answer in itself: a path whose resolution met a missing entry is not
// stat-ed again (the same lstat would say the same), nor opened when the
// missing entry is a directory on the way: the open's walk would look that
// directory up as the lstat did. On the Linux NFS client only the last name
// of an open is looked up with the open's intent (which an open of a
// missing last name, an in-place writer's STABLE, still gets here); that is
// read from the client's code, not shown on the NFS lane, which runs the
// CLI. A wait also lists the root once a second, which drops a cached
// negative entry of the step's directory.
//
// "Ours" are the descriptors that src/index.js hands the component (one per
// preopen) and every descriptor opened from them; a WeakMap holds each one's
// host path. Other users of the shim in the process are untouched.
import { closeSync, constants, lstatSync, openSync, opendirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { posix as hostPath } from 'node:path';
import { platform } from 'node:process';

/** Host path of each descriptor of ours, as the shim holds it. */
const paths = new WeakMap();
/** What the shim and jco's glue dispose of resources with. */
const dispose = Symbol.dispose || Symbol.for('dispose');
/** realpath(3) of each one's host path, once it was needed. */
const realPaths = new WeakMap();
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
export function fastOpen({ Descriptor, DirectoryEntryStream }) {
  if (platform === 'win32' || patched.has(Descriptor)) return;
  patched.add(Descriptor);
  const shimOpenAt = Descriptor.prototype.openAt;
  const directory = directories(Descriptor, DirectoryEntryStream);
  Descriptor.prototype.openAt = function openAt(pathFlags, path, openFlags, descriptorFlags) {
    if (!paths.has(this)) return shimOpenAt.call(twinOf(this), pathFlags, path, openFlags, descriptorFlags);
    const fullPath = quiet(probe, this, pathFlags, path, openFlags, descriptorFlags);
    if (typeof fullPath === 'object' && fullPath !== null) return fullPath; // the error, as a WIT result
    if (fullPath !== null && openFlags.directory) {
      // A directory opened to read: the shim's descriptor (an open in its
      // worker) only when a call needs one.
      const opened = directory(() => shimOpenAt.call(twinOf(this), pathFlags, path, openFlags, descriptorFlags));
      paths.set(opened, fullPath);
      return opened;
    }
    const opened = shimOpenAt.call(twinOf(this), pathFlags, path, openFlags, descriptorFlags);
    // The path the shim gives the new descriptor (resolved again just now,
    // so taken from the same resolution as the shim's when nothing moved).
    if (fullPath !== null) paths.set(opened, fullPath);
    else track(opened, this, pathFlags, path);
    return opened;
  };
  const shimStatAt = Descriptor.prototype.statAt;
  Descriptor.prototype.statAt = function statAt(pathFlags, path) {
    const stat = paths.has(this) ? quiet(statOf, this, pathFlags, path) : undefined;
    return stat ?? shimStatAt.call(twinOf(this), pathFlags, path);
  };
}

/** How each directory of ours without a shim descriptor yet opens one: its `twin`. */
const twins = new WeakMap();

/** The shim's descriptor for `descriptor`: itself, or its twin (opened now if not yet). */
function twinOf(descriptor) {
  const twin = twins.get(descriptor);
  if (twin === undefined) return descriptor;
  if (twin.opened === null) twin.opened = twin.open();
  return twin.opened;
}

/**
 * The maker of directories opened to read, for the shim's `Descriptor`.
 *
 * The shim opens every descriptor in its I/O worker, and closes it there: two
 * synchronous round trips, ~1.5 ms of the calling thread's CPU (and the
 * worker's) for the listing an idle `wait` makes of its root once a second,
 * when the listing itself does not use that descriptor (the shim lists a
 * directory by its path, with opendir(3)). Here a directory that a read-only
 * open found (`probe` opened it in the calling thread) is at first only its
 * path: its listing is made as the shim makes it, its `statAt` and
 * `openAt` are the ones above, and any other call (stat, sync, the calls that
 * change the directory) is the shim's, on the shim's descriptor opened on the
 * first such call with the same arguments as the component's open. Those
 * calls are all by path in the shim but for stat, sync and the like, whose
 * descriptor then names the directory found at that path when first needed,
 * not at the component's open: the same directory unless it was replaced
 * meanwhile.
 */
function directories(Descriptor, DirectoryEntryStream) {
  const shimReadDirectory = Descriptor.prototype.readDirectory;
  // Objects whose prototypes are the shim's, as jco's glue checks
  // (instanceof), with the methods defined here; no shim constructor runs.
  const Entries = Object.create(DirectoryEntryStream.prototype, {
    readDirectoryEntry: {
      value: function readDirectoryEntry() {
        let entry;
        try {
          entry = this.dir.readSync();
        } catch (e) {
          throw ANSWERED[e?.code] ?? 'io';
        }
        return entry === null ? undefined : { name: entry.name, type: typeOf(entry) };
      },
    },
    [dispose]: {
      value: function drop() {
        const dir = this.dir;
        this.dir = null;
        dir?.closeSync();
      },
    },
  });
  const methods = {
    readDirectory: {
      value: function readDirectory() {
        let dir;
        try {
          dir = opendirSync(paths.get(this));
        } catch {
          return shimReadDirectory.call(twinOf(this)); // the shim's answer to what went wrong
        }
        const entries = Object.create(Entries);
        entries.dir = dir;
        return entries;
      },
    },
    [dispose]: {
      value: function drop() {
        const twin = twins.get(this);
        twins.delete(this);
        twin?.opened?.[dispose]();
      },
    },
  };
  for (const name of Object.getOwnPropertyNames(Descriptor.prototype)) {
    const shimMethod = Descriptor.prototype[name];
    // statAt and openAt are inherited: the ones above, which call the
    // shim's on the twin.
    if (name === 'constructor' || name === 'statAt' || name === 'openAt' || name in methods || typeof shimMethod !== 'function') continue;
    methods[name] = {
      value: function (...args) {
        // A descriptor among the arguments (renameAt's, linkAt's,
        // isSameObject's) is the shim's too.
        return shimMethod.apply(twinOf(this), args.map(twinOf));
      },
    };
  }
  const Directory = Object.create(Descriptor.prototype, methods);
  return (open) => {
    const directory = Object.create(Directory);
    twins.set(directory, { open, opened: null });
    return directory;
  };
}

/**
 * Remember `descriptor` (opened by the shim on `path` of the preopen
 * `hostPreopen`) as ours. Its host path is the one the shim resolved.
 */
export function trackPreopen(descriptor, hostPreopen, pathFlags, path) {
  if (platform === 'win32') return;
  const preopen = hostPreopen.endsWith('/') ? hostPreopen.slice(0, -1) || '/' : hostPreopen;
  try {
    paths.set(descriptor, quiet(fullPathOf, realpathSync.native(preopen), path, pathFlags.symlinkFollow));
  } catch {
    // Not ours, then: the shim handles every open on it.
  }
}

/** Remember `descriptor` (opened by the shim on `path` of our `parent`) as ours. */
function track(descriptor, parent, pathFlags, path) {
  try {
    paths.set(descriptor, quiet(fullPathOf, realPathOf(parent), path, pathFlags.symlinkFollow));
  } catch {
    // Not ours, then: the shim handles every open on it.
  }
}

/** The realpath(3) of a descriptor of ours: its base for the resolution. Throws where realpath fails. */
function realPathOf(descriptor) {
  let real = realPaths.get(descriptor);
  if (real === undefined) {
    real = realpathSync.native(paths.get(descriptor));
    realPaths.set(descriptor, real);
  }
  return real;
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
function statOf(descriptor, pathFlags, path) {
  let fullPath;
  try {
    fullPath = fullPathOf(realPathOf(descriptor), path, pathFlags.symlinkFollow);
  } catch {
    return undefined; // the shim's resolution throws the same
  }
  if (missing !== NONE) return FAILED.ENOENT; // its lstat just said so
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
function probe(descriptor, pathFlags, path, openFlags, descriptorFlags) {
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
    fullPath = fullPathOf(realPathOf(descriptor), path, pathFlags.symlinkFollow);
  } catch {
    return null; // the shim's resolution throws the same
  }
  if (missing === DIRECTORY) return FAILED.ENOENT;
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

/** What the last resolution met missing: nothing, the last name, or a directory on the way. */
const NONE = 0;
const LAST = 1;
const DIRECTORY = 2;
let missing = NONE;

/**
 * The host path the shim opens for `subpath` under the directory whose
 * realpath(3) is `baseResolved` (a preopen, or a descriptor opened from one):
 * its `Descriptor#getFullPath` (preview2-shim 0.26.1,
 * dist/nodejs/filesystem.js), for POSIX hosts. Throws where it throws. Sets
 * `missing`.
 */
function fullPathOf(baseResolved, subpath, followFinalSymlink) {
  missing = NONE;
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
      missing = pending.length === 0 ? LAST : DIRECTORY;
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
