// The `handoff:protocol/bulk` import for Node.
//
// Node has no BLAKE3 and no fd-level copy_file_range or sync_file_range, so
// this host does none of the calls: `supported` answers the empty set and the
// component hashes and copies through WASI itself, with the same results.
// Should a call come anyway, `hash-file`, `hash-path` and `copy-file` answer
// `unsupported` and `start-writeback` and `start-writeback-path` (advisory)
// do nothing.
//
// `hash-path` (hashing a file the host opens by name, as the Python host
// does) is not done either, nor `start-writeback-path` (Node has no
// sync_file_range): Node has no BLAKE3, and the npm packages are
// BLAKE3 compiled to wasm (the same 128-bit SIMD the component hashes with,
// so no gain to measure) or a native addon (a platform binary this package,
// whose one dependency is pure JavaScript, would then have to bring).

const unsupported = { tag: 'err', val: { tag: 'unsupported' } };

export const bulk = {
  /** None of the calls: the component makes none of them. */
  supported() {
    return {
      hashFile: false,
      copyFile: false,
      startWriteback: false,
      hashFiles: false,
      copyFiles: false,
      hashPath: false,
      startWritebackPath: false,
    };
  },
  hashFile(_file) {
    return unsupported;
  },
  hashPath(_root, _path) {
    return unsupported;
  },
  copyFile(_src, _dst) {
    return unsupported;
  },
  startWriteback(_file) {},
  hashFiles(_dir, _paths) {
    return unsupported;
  },
  copyFiles(_src, _dst, _paths) {
    return unsupported;
  },
  startWritebackPath(_root, _path) {},
};
