//! The values the protocol's operations take and return, and their defaults.
//!
//! These are the protocol's one set of types: the component converts them to
//! and from the WIT records, the runtime returns them, and the CLI prints
//! them through serde. A default lives here once; the CLI, the runtime and
//! the bindings take it from here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use crate::manifest::FileEntry;
use crate::manifest::Manifest;

/// The step directory prefix unless one is given.
pub const DEFAULT_PREFIX: &str = "step_";

/// A committed version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The step number (for a step of run `g` > 0, `g * RUN_SPAN + n`:
    /// [`layout::run_step`](crate::layout::run_step)).
    pub step: u64,
    /// The run the step belongs to (0 unless a writer began one).
    pub run: u64,
    /// The step directory, as the storage displays it (inside the component:
    /// the guest path, which the runtime makes the host's canonical path).
    pub path: String,
    /// Writer id from the manifest.
    pub writer: String,
    /// Creation time from the manifest, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Payload files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Newer steps a reader passed over because it could not read or
    /// accept them (a special file, a read error, a bad manifest), each
    /// naming the path and what was found. Empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Version {
    pub(crate) fn from_manifest(path: String, manifest: Manifest) -> Version {
        Version {
            step: manifest.step,
            run: manifest.run,
            path,
            writer: manifest.writer,
            created_ms: manifest.created,
            files: manifest.files,
            warnings: Vec::new(),
        }
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// How much a reader checks before accepting a version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Every listed file exists with the listed size.
    #[default]
    Size,
    /// As `Size`, and every file's BLAKE3 hash matches.
    Hash,
}

/// Which version to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Exactly this step.
    Step(u64),
    /// The highest step that validates.
    Latest,
    /// The lowest step above this one that validates: what a watcher that
    /// has seen this step waits for next.
    After(u64),
}

/// A pin a wait takes on the version it returns, before returning it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRequest {
    /// Who holds the pin ([`check_holder`](crate::check_holder)).
    pub holder: String,
    /// How long it lasts.
    pub ttl: Duration,
}

impl PinRequest {
    /// How long a pin lasts unless a ttl is given: long enough to load a
    /// large checkpoint, short enough that a crashed reader's pin does not
    /// hold a step for long.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
}

/// Options of [`wait`](crate::wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// What to check before accepting a version.
    pub verify: Verify,
    /// Give up after this long; `None` waits without limit.
    pub timeout: Option<Duration>,
    /// How long a committed step that does not validate yet is retried
    /// before it is an integrity error (a lagging cache on a shared
    /// filesystem).
    pub settle: Duration,
    /// Longest pause between two attempts; the pause starts short and grows
    /// to this, with jitter.
    pub poll: Duration,
    /// Pin the version before returning it. The holder's pins on other
    /// steps stay: a reader still serving the previous version releases it
    /// (`unpin`) once it has switched over, never before.
    pub pin: Option<PinRequest>,
}

impl WaitOptions {
    /// How long a committed step that does not validate is retried unless
    /// told otherwise: NFS attribute caches hold for up to 30 s by default.
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);
    /// The longest pause between attempts unless told otherwise.
    pub const DEFAULT_POLL: Duration = Duration::from_millis(100);
}

impl Default for WaitOptions {
    /// Prefix `step_`, size checks, no timeout, the default settle and poll,
    /// no pin.
    fn default() -> Self {
        WaitOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            verify: Verify::Size,
            timeout: None,
            settle: WaitOptions::DEFAULT_SETTLE,
            poll: WaitOptions::DEFAULT_POLL,
            pin: None,
        }
    }
}

/// Options of [`fetch`](crate::fetch): the wait for the shared step, and
/// the pin that holds it while it is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Step directory prefix, in the shared root and the local one.
    pub prefix: String,
    /// Give up waiting for the shared step after this long; `None` waits
    /// without limit. The copy itself is not limited by it.
    pub timeout: Option<Duration>,
    /// How long a shared step that does not validate yet, or a file whose
    /// copy does not match the manifest, is retried before it is an
    /// integrity error (a lagging cache on a shared filesystem).
    pub settle: Duration,
    /// Longest pause between two attempts.
    pub poll: Duration,
    /// Who holds the pin on the shared step while it is copied
    /// ([`check_holder`](crate::check_holder)).
    pub holder: String,
    /// How long that pin lasts; it is renewed between files once half of it
    /// has passed.
    pub ttl: Duration,
}

impl FetchOptions {
    /// Prefix `step_`, no timeout, the default settle, poll and ttl.
    pub fn new(holder: impl Into<String>) -> FetchOptions {
        FetchOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: None,
            settle: WaitOptions::DEFAULT_SETTLE,
            poll: WaitOptions::DEFAULT_POLL,
            holder: holder.into(),
            ttl: PinRequest::DEFAULT_TTL,
        }
    }
}

/// What [`fetch`](crate::fetch) did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FetchReport {
    /// The local copy: `path` is the step directory in the local root.
    pub version: Version,
    /// The shared step directory it was copied from.
    pub source: String,
    /// Whether anything was copied: `false` when the local root already
    /// held the step, committed, with the same manifest.
    pub copied: bool,
    /// Payload bytes copied (and hashed).
    pub bytes_copied: u64,
    /// Flushes made in the local root (a host that makes them counts
    /// every one it made, the pin's on the shared root included).
    pub fsyncs: u64,
    /// Their total time in milliseconds, as the host measured it (0 where
    /// nobody timed them).
    pub fsync_ms: f64,
    /// Conditions that did not stop the fetch, such as a pin that could
    /// not be released.
    pub warnings: Vec<String>,
}

/// Where a step directory stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// `STABLE` and a valid manifest are present.
    Committed,
    /// No `STABLE`: being written in place, or left by a crash.
    Incomplete,
    /// `STABLE` present but the manifest is missing or invalid, or the
    /// payload does not match it.
    Corrupt,
    /// Being written under `.handoff/staging/`.
    Staging,
    /// Being deleted under `.handoff/trash/`.
    Trash,
    /// A name in the root that the protocol does not own.
    Stray,
}

impl StepState {
    /// The state's name, as the WIT, the CLI's output and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Committed => "committed",
            StepState::Incomplete => "incomplete",
            StepState::Corrupt => "corrupt",
            StepState::Staging => "staging",
            StepState::Trash => "trash",
            StepState::Stray => "stray",
        }
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so table columns (`{:<10}`) line up.
        f.pad(self.as_str())
    }
}

/// One entry of [`list`](crate::list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    /// The step number.
    pub step: u64,
    /// The step directory, as the storage displays it.
    pub path: String,
    /// Its state (from the manifest and `STABLE` alone; payload not opened).
    pub state: StepState,
    /// Files in the manifest, 0 without one.
    pub files: u32,
    /// Bytes in the manifest, 0 without one.
    pub bytes: u64,
    /// Why a step is `Corrupt`: what could not be read or accepted, naming
    /// the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Options of [`publish`](crate::publish) and [`seal`](crate::seal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// Writer id recorded in the manifest, so a reader can tell one run's
    /// steps from another's.
    pub writer: String,
    /// Creation time to record, milliseconds since the Unix epoch; `None`
    /// records the current time. Lets two writers produce identical
    /// manifests for the same input.
    pub created_ms: Option<u64>,
    /// The run the writer writes for (`handoff begin`); 0, the default, is
    /// the run of a root where none was begun. A writer of a run older than
    /// the root's newest is refused as superseded.
    pub run: u64,
}

impl WriteOptions {
    /// Prefix `step_`, this writer id, the current time, run 0.
    pub fn new(writer: impl Into<String>) -> WriteOptions {
        WriteOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            writer: writer.into(),
            created_ms: None,
            run: 0,
        }
    }
}

/// What [`publish`](crate::publish) or [`seal`](crate::seal) did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PublishReport {
    /// The committed version.
    pub version: Version,
    /// Flushes made (files and directories). The protocol counts the ones it
    /// asks for; a host that makes them counts the ones it made.
    pub fsyncs: u64,
    /// Their total time in milliseconds, as the host that made them measured
    /// it (0 where nobody timed them).
    pub fsync_ms: f64,
    /// Conditions that did not stop the operation, such as a filesystem
    /// that refuses directory flushes.
    pub warnings: Vec<String>,
}

/// A reader's hold on a step.
/// (Also the content of a version 1 pin file.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinInfo {
    /// The pinned step.
    pub step: u64,
    /// Who holds it.
    pub holder: String,
    /// Expiry, milliseconds since the Unix epoch: by the file server's clock
    /// (the time it stamped on the pin) on a version 2 step, by the
    /// pinner's on a version 1 step.
    pub expires_ms: u64,
}

/// Options of [`gc`](crate::gc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// Keep the newest `keep` committed steps; at least 1.
    pub keep: u32,
    /// Staging directories untouched for longer than this are abandoned and
    /// removed.
    pub grace: Duration,
    /// Allowance for clocks that differ between nodes: a pin counts until
    /// its expiry plus this.
    pub skew: Duration,
}

impl GcOptions {
    /// How long a staging directory may sit untouched before gc takes it
    /// for abandoned, unless told otherwise.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
    /// The clock-skew allowance of gc and fsck unless told otherwise.
    pub const DEFAULT_SKEW: Duration = Duration::from_secs(120);

    /// Keep the newest `keep` steps, with prefix `step_` and the default
    /// grace and skew.
    pub fn keep(keep: u32) -> GcOptions {
        GcOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            keep,
            grace: GcOptions::DEFAULT_GRACE,
            skew: GcOptions::DEFAULT_SKEW,
        }
    }
}

/// Options of [`fsck_with`](crate::fsck_with): the evidence its repair
/// needs before it removes a step or a staging directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckOptions {
    /// Only a tree nothing in which changed for this long, by the server's
    /// clock, is taken for abandoned: a younger one may be a writer's at
    /// work.
    pub grace: Duration,
    /// A step found broken is looked at again this much later, and removed
    /// only if it still is: a node's view of a changing tree lags.
    pub settle: Duration,
}

impl Default for FsckOptions {
    /// gc's default grace period and a reader's default settle time.
    fn default() -> Self {
        FsckOptions {
            grace: GcOptions::DEFAULT_GRACE,
            settle: WaitOptions::DEFAULT_SETTLE,
        }
    }
}

/// What [`gc`](crate::gc) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Steps removed.
    pub removed: Vec<u64>,
    /// Committed steps kept as the newest `keep`.
    pub kept: Vec<u64>,
    /// Steps beyond `keep` held by an unexpired pin.
    pub pinned: Vec<u64>,
    /// Abandoned staging directories removed.
    pub staging_removed: Vec<String>,
    /// Committed steps that do not validate (a reader would refuse them),
    /// newer than the oldest step kept: not counted toward `keep`, and left
    /// alone.
    pub invalid: Vec<u64>,
    /// What gc should have removed (or checked) but could not, each with
    /// why; gc went on with the rest. Empty when it did everything.
    pub failed: Vec<GcFailure>,
}

/// Something [`gc`](crate::gc) should have removed but could not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcFailure {
    /// The entry, relative to the root: `step_3`,
    /// `.handoff/staging/step_4.<random>`, `.handoff/trash/..`.
    pub name: String,
    /// Why: `{"kind","message","path","retryable"}` in JSON.
    #[serde(serialize_with = "error_json")]
    pub error: Error,
}

/// An error as the WIT `error` record spells it.
fn error_json<S: serde::Serializer>(error: &Error, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut record = s.serialize_struct("Error", 4)?;
    record.serialize_field("kind", error.kind().as_str())?;
    record.serialize_field("message", error.message())?;
    record.serialize_field("path", &error.path())?;
    record.serialize_field("retryable", &error.is_retryable())?;
    record.end()
}

/// One entry of [`fsck`](crate::fsck).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsckEntry {
    /// The entry's path relative to the root.
    pub name: String,
    /// What it is.
    pub state: StepState,
    /// What was found, for anything but a healthy committed step.
    pub detail: Option<String>,
    /// What repair did to it, if anything.
    pub action: Option<String>,
}

/// Whole milliseconds of `d`, saturating: what the WIT's `u64` durations
/// and the [`Platform`](crate::Platform) count in.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_state_displays_as_it_serializes() {
        for state in [
            StepState::Committed,
            StepState::Incomplete,
            StepState::Corrupt,
            StepState::Staging,
            StepState::Trash,
            StepState::Stray,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
        }
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
