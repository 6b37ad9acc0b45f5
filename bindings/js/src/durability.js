// The `handoff:protocol/durability` import for Node.
//
// The component hands over a borrowed `wasi:filesystem` descriptor; under
// jco that is the preview2-shim's own `Descriptor` object, whose `sync()`
// runs fsync(2) on its file descriptor in the shim's I/O worker. So this
// host flushes for real and never answers `unsupported`.

/** Flushes done through this import since the process started (for tests). */
export const stats = { file: 0, directory: 0 };

export const durability = {
  /** fsync a file; `failed` with the error code when it fails. */
  syncFile(file) {
    stats.file++;
    return flush(file, false);
  },
  /**
   * fsync a directory. The component opens the directory itself before
   * asking (a shim preopen is a path, not a descriptor, and cannot be
   * synced); EINVAL from the filesystem is `refused`, as the WIT asks.
   */
  syncDirectory(dir) {
    stats.directory++;
    return flush(dir, true);
  },
  /**
   * Flush many files from a few threads at once: not done here (the shim
   * flushes one descriptor at a time in its I/O worker), so the component
   * opens and flushes each file itself through `syncFile`.
   */
  syncFiles(_dir, _paths) {
    return { tag: 'err', val: { tag: 'unsupported' } };
  },
};

function flush(descriptor, isDirectory) {
  try {
    descriptor.sync();
    return { tag: 'ok' };
  } catch (e) {
    // The shim throws a wasi:filesystem error-code string such as 'io'.
    const code = typeof e === 'string' ? e : e?.payload ?? e?.message ?? String(e);
    if (isDirectory && (code === 'invalid' || code === 'unsupported')) {
      return { tag: 'err', val: { tag: 'refused', val: `directory fsync refused by the filesystem (${code})` } };
    }
    return { tag: 'err', val: { tag: 'failed', val: `fsync failed: ${code}` } };
  }
}
