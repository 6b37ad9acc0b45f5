//! What handoff's tests, model checker, benchmarks and demo share, so each
//! stops carrying its own copy:
//!
//! - [`Rng`]: a seeded splitmix64 generator; the same seed gives the same
//!   sequence on every machine, so a printed seed replays.
//! - [`Payload`] and [`write_random`]: folders of files to publish, small and
//!   held in memory for checking, or large and streamed; [`age_tree`] makes
//!   one look long abandoned.
//! - [`proc`]: the `handoff` binary under test, child processes with a
//!   deadline, and failures that carry the child's stderr.
//!
//! It depends on no handoff crate, so any of them can use it.
//!
//! ```
//! use handoff_testkit::{Payload, Rng};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut rng = Rng::new(7);
//! let payload = Payload::new()
//!     .with("adapter_model.safetensors", rng.bytes(4096))
//!     .with("sub/adapter_config.json", "{}");
//! payload.write_to(dir.path()).unwrap();
//! assert_eq!(payload.check(dir.path()), Ok(()));
//! ```

#![deny(missing_docs)]

mod payload;
pub mod proc;
mod rng;

pub use payload::{Payload, age_tree, write_random};
pub use rng::{Rng, mix};

/// Make a FIFO (named pipe) at `path`: a special file whose open for
/// reading blocks until a writer comes, for tests of what readers refuse.
pub fn mkfifo(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
