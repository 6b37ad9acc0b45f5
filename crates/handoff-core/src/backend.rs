//! Where the protocol runs, as a program that names roots by path calls it.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::types::{
    FetchOptions, FetchReport, FsckEntry, GcOptions, GcReport, PinInfo, PublishReport, StepInfo,
    Target, Verify, Version, WaitOptions, WriteOptions,
};

/// The protocol's operations on a root given by its path: what the
/// embedding runtime (`handoff-runtime`, the component in wasmtime) and the
/// WASI command (this crate, run over WASI descriptors) each provide, and what
/// the command line (`handoff-cli`) is written against. The values are this
/// crate's; the error is the provider's own, with the protocol's outcome in
/// it where there is one ([`protocol_error`](Backend::protocol_error)).
pub trait Backend {
    /// A failed operation.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The protocol's outcome inside a failure, if it is one (`None`: the
    /// provider's own failure, such as a component that trapped).
    fn protocol_error(error: &Self::Error) -> Option<&Error>;

    /// The protocol outcome's kind, if the failure is one.
    fn kind(error: &Self::Error) -> Option<ErrorKind> {
        Self::protocol_error(error).map(Error::kind)
    }

    /// The failure's kind as the CLI's messages and `--json` name it: the
    /// protocol outcome's ([`ErrorKind::as_str`]), or the provider's own for
    /// a failure that is not one (the runtime's `bad-component`,
    /// `deadline-exceeded`, ...); `other` where neither applies.
    fn kind_name(error: &Self::Error) -> &'static str {
        Self::kind(error).map_or("other", ErrorKind::as_str)
    }

    /// The file or directory a failure concerns, where there is one.
    fn path(error: &Self::Error) -> Option<String> {
        Self::protocol_error(error).and_then(|e| e.path().map(str::to_string))
    }

    /// The writer id to record when none is given.
    fn default_writer(&self) -> String;

    /// Copy the payload under `source` into staging under `root`, seal it
    /// and rename it to its step ([`publish`](crate::publish)).
    fn publish(
        &self,
        root: &Path,
        step: u64,
        source: &Path,
        options: &WriteOptions,
    ) -> Result<PublishReport, Self::Error>;

    /// Seal a payload already written in its step directory, in place
    /// ([`seal`](crate::seal)).
    fn seal(
        &self,
        root: &Path,
        step: u64,
        options: &WriteOptions,
    ) -> Result<PublishReport, Self::Error>;

    /// Begin a new run on `root`: its number ([`begin`](crate::begin)).
    fn begin(&self, root: &Path, prefix: &str) -> Result<u64, Self::Error>;

    /// Wait until `target` is committed and validates ([`wait`](crate::wait)).
    fn wait(
        &self,
        root: &Path,
        target: Target,
        options: &WaitOptions,
    ) -> Result<Version, Self::Error>;

    /// Wait for `target` under `root`, pinned, and copy it, verified, into
    /// the local root `to` ([`fetch`](crate::fetch)). `to` must not be
    /// `root`, inside it or contain it; a provider may create it.
    fn fetch(
        &self,
        root: &Path,
        to: &Path,
        target: Target,
        options: &FetchOptions,
    ) -> Result<FetchReport, Self::Error>;

    /// The highest committed step that validates, in one attempt
    /// ([`latest`](crate::latest)).
    fn latest(
        &self,
        root: &Path,
        prefix: &str,
        verify: Verify,
    ) -> Result<Option<Version>, Self::Error>;

    /// Every step directory with its state ([`list`](crate::list)).
    fn list(&self, root: &Path, prefix: &str) -> Result<Vec<StepInfo>, Self::Error>;

    /// Pin a committed step for `holder` for `ttl`; pinning again renews
    /// the pin ([`pin`](crate::pin)).
    fn pin(
        &self,
        root: &Path,
        prefix: &str,
        step: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<PinInfo, Self::Error>;

    /// Release `holder`'s pin on `step` ([`unpin`](crate::unpin)).
    fn unpin(&self, root: &Path, prefix: &str, step: u64, holder: &str) -> Result<(), Self::Error>;

    /// Remove old unpinned steps and abandoned staging ([`gc`](crate::gc)).
    fn gc(&self, root: &Path, options: &GcOptions) -> Result<GcReport, Self::Error>;

    /// Classify every entry of the root; with `repair`, finish or undo what a
    /// crash left ([`fsck`](crate::fsck)).
    fn fsck(&self, root: &Path, prefix: &str, repair: bool) -> Result<Vec<FsckEntry>, Self::Error>;
}
