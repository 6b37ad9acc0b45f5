// The `handoff:protocol/bulk` import for Node.
//
// Node has no BLAKE3 and no fd-level copy_file_range or sync_file_range, so
// this host does none of the calls: `supported` answers the empty set and the
// component hashes and copies through WASI itself, with the same results.
// Should a call come anyway, `hash-file` and `copy-file` answer `unsupported`
// and `start-writeback` (advisory) does nothing.

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
    };
  },
  hashFile(_file) {
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
};
