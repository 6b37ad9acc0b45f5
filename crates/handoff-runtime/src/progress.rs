//! Progress of the host's own hashing and copying (the `bulk` import), for
//! an embedder that shows it.

use std::fmt;
use std::sync::Arc;

/// What the host is doing to one payload file for the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkWork {
    /// Reading it to compute its BLAKE3 hash (`seal`, `publish`,
    /// `wait --verify hash`).
    Hashing,
    /// Copying it into staging (`publish`).
    Copying,
}

/// Watches the bulk import's work file by file (a batch of files worked on
/// together counts as one piece of work, of all their bytes), for example
/// to draw a progress bar. Called between chunks of at most 64 MiB, on the
/// thread running the call or, for a batch, on the host's batch threads
/// (hence `Sync`), so it should return quickly. Work the component does
/// itself (with bulk off) is not reported.
pub trait Progress: Send + Sync {
    /// Work on a file (or a batch of files) of `len` bytes begins.
    fn start(&self, work: BulkWork, len: u64);
    /// `done` bytes of it are through.
    fn advance(&self, done: u64);
    /// The file is done, or its work stopped early.
    fn finish(&self);
}

/// The embedder's [`Progress`], kept by the builder and the runtime.
#[derive(Clone)]
pub(crate) struct Hook(pub(crate) Arc<dyn Progress>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// One file's work, reported to the hook if there is one; `finish` is
/// called however the work ends.
pub(crate) struct Meter<'a>(Option<&'a dyn Progress>);

impl<'a> Meter<'a> {
    pub(crate) fn start(hook: Option<&'a Hook>, work: BulkWork, len: u64) -> Meter<'a> {
        let progress = hook.map(|h| &*h.0);
        if let Some(p) = progress {
            p.start(work, len);
        }
        Meter(progress)
    }

    pub(crate) fn advance(&self, done: u64) {
        if let Some(p) = self.0 {
            p.advance(done);
        }
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.finish();
        }
    }
}
