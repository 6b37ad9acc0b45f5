//! The values the runtime's operations take and return: the WIT records in
//! Rust form, serializable so a CLI can print them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bindings::{wit, wit_types};

/// The default step directory prefix.
pub const DEFAULT_PREFIX: &str = "step_";

/// One payload file of a version, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Path relative to the step directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the contents, 64 lowercase hex digits.
    pub blake3: String,
}

/// A committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The step number.
    pub step: u64,
    /// The step directory (`<root>/<prefix><step>`, with the root made
    /// absolute and canonical).
    pub path: PathBuf,
    /// Writer id recorded in the manifest.
    pub writer: String,
    /// Creation time recorded in the manifest, milliseconds since the Unix
    /// epoch.
    pub created_ms: u64,
    /// Payload files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Version {
    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// How much of a version a reader checks before accepting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Every listed file exists and has the listed size.
    #[default]
    Size,
    /// As `Size`, and every file's BLAKE3 hash matches.
    Hash,
}

/// Which version to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    /// Who holds the pin: letters, digits and `.`, `_`, `-`, `:`, `@`, at
    /// most 128 bytes, not starting with `.`.
    pub holder: String,
    /// How long the pin lasts.
    pub ttl: Duration,
}

/// Where a step stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// `STABLE` and a manifest are present.
    Committed,
    /// No `STABLE` yet: being written in place, or left by a crash.
    Incomplete,
    /// Committed, but the manifest is unreadable or does not match.
    Corrupt,
    /// A version being written under `.handoff/staging/`.
    Staging,
    /// A version being deleted under `.handoff/trash/`.
    Trash,
    /// A name in the root that the protocol does not own.
    Stray,
}

impl StepState {
    /// The state's name as it appears in JSON: `committed`, `incomplete`, ...
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

/// One entry of [`Runtime::list`](crate::Runtime::list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    /// The step number.
    pub step: u64,
    /// The step directory.
    pub path: PathBuf,
    /// Its state.
    pub state: StepState,
    /// Files listed in the manifest (0 when there is none).
    pub files: u32,
    /// Bytes listed in the manifest (0 when there is none).
    pub bytes: u64,
}

/// Options of [`Runtime::publish`](crate::Runtime::publish) and
/// [`Runtime::seal`](crate::Runtime::seal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// Writer id recorded in the manifest.
    pub writer: String,
    /// Creation time to record, milliseconds since the Unix epoch; `None`
    /// records the current time. Lets two writers produce identical
    /// manifests for the same input.
    pub created_ms: Option<u64>,
}

impl Default for WriteOptions {
    /// Prefix `step_`, writer [`default_writer_id`], the current time.
    fn default() -> Self {
        WriteOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            writer: default_writer_id(),
            created_ms: None,
        }
    }
}

/// Options of [`Runtime::wait`](crate::Runtime::wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// What to check before accepting a version.
    pub verify: Verify,
    /// Give up after this long; `None` waits without limit.
    pub timeout: Option<Duration>,
    /// How long a committed step that does not validate yet (a lagging
    /// cache) keeps being retried before it is an integrity error.
    pub settle: Duration,
    /// Longest pause between two attempts.
    pub poll: Duration,
    /// Pin the version for this holder before returning it. The holder's
    /// pins on other steps stay: release the version served before
    /// ([`Runtime::unpin`](crate::Runtime::unpin)) once switched over.
    pub pin: Option<PinRequest>,
}

impl Default for WaitOptions {
    /// Prefix `step_`, size checks, no timeout, settle 30 s, poll 100 ms,
    /// no pin.
    fn default() -> Self {
        WaitOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            verify: Verify::Size,
            timeout: None,
            settle: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            pin: None,
        }
    }
}

/// What [`Runtime::publish`](crate::Runtime::publish) or
/// [`Runtime::seal`](crate::Runtime::seal) did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishReport {
    /// The committed version.
    pub version: Version,
    /// Flushes the component requested.
    pub syncs: u32,
    /// Real `fsync` calls this host made for it.
    pub fsyncs: u64,
    /// Their total time in milliseconds.
    pub fsync_ms: f64,
    /// Things that did not stop the operation, such as "directory fsync
    /// unsupported".
    pub warnings: Vec<String>,
}

/// A reader's hold on a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinInfo {
    /// The pinned step.
    pub step: u64,
    /// Who holds the pin.
    pub holder: String,
    /// Expiry, milliseconds since the Unix epoch: by the file server's clock
    /// (the time it stamped on the pin) on a version 2 step, by this
    /// machine's on a version 1 step.
    pub expires_ms: u64,
}

/// Options of [`Runtime::gc`](crate::Runtime::gc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// Keep the newest `keep` committed steps; at least 1.
    pub keep: u32,
    /// Staging directories untouched for longer than this are removed.
    pub grace: Duration,
    /// Allowance for clocks that differ between nodes: a pin counts until
    /// its expiry plus this.
    pub skew: Duration,
}

impl GcOptions {
    /// Keep the newest `keep` steps, with prefix `step_`, a grace of one
    /// hour and a clock-skew allowance of two minutes.
    pub fn keep(keep: u32) -> GcOptions {
        GcOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            keep,
            grace: Duration::from_secs(3600),
            skew: Duration::from_secs(120),
        }
    }
}

/// What [`Runtime::gc`](crate::Runtime::gc) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Steps removed.
    pub removed: Vec<u64>,
    /// Steps kept as the newest.
    pub kept: Vec<u64>,
    /// Older steps kept because a pin holds them.
    pub pinned: Vec<u64>,
    /// Abandoned staging directories removed.
    pub staging_removed: Vec<String>,
}

/// One entry of [`Runtime::fsck`](crate::Runtime::fsck).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsckEntry {
    /// The entry's name relative to the root.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// What was found, for anything but a healthy committed step.
    pub detail: Option<String>,
    /// What repair did to it, if anything.
    pub action: Option<String>,
}

/// A writer id naming this process: `<hostname>:<pid>`.
pub fn default_writer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", std::process::id())
}

/// Milliseconds of a duration as the WIT's `u64`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// Conversions between the WIT records and the public types.

impl From<wit_types::FileEntry> for FileEntry {
    fn from(f: wit_types::FileEntry) -> Self {
        FileEntry {
            path: f.path,
            size: f.size,
            blake3: f.blake3,
        }
    }
}

impl From<wit_types::Version> for Version {
    fn from(v: wit_types::Version) -> Self {
        Version {
            step: v.step,
            path: PathBuf::from(v.path),
            writer: v.writer,
            created_ms: v.created_ms,
            files: v.files.into_iter().map(FileEntry::from).collect(),
        }
    }
}

impl From<Verify> for wit_types::Verify {
    fn from(v: Verify) -> Self {
        match v {
            Verify::Size => wit_types::Verify::Size,
            Verify::Hash => wit_types::Verify::Hash,
        }
    }
}

impl From<Target> for wit_types::Target {
    fn from(t: Target) -> Self {
        match t {
            Target::Step(n) => wit_types::Target::Step(n),
            Target::Latest => wit_types::Target::Latest,
            Target::After(n) => wit_types::Target::After(n),
        }
    }
}

impl From<wit_types::StepState> for StepState {
    fn from(s: wit_types::StepState) -> Self {
        use wit_types::StepState as W;
        match s {
            W::Committed => StepState::Committed,
            W::Incomplete => StepState::Incomplete,
            W::Corrupt => StepState::Corrupt,
            W::Staging => StepState::Staging,
            W::Trash => StepState::Trash,
            W::Stray => StepState::Stray,
        }
    }
}

impl From<wit_types::StepInfo> for StepInfo {
    fn from(s: wit_types::StepInfo) -> Self {
        StepInfo {
            step: s.step,
            path: PathBuf::from(s.path),
            state: s.state.into(),
            files: s.files,
            bytes: s.bytes,
        }
    }
}

impl From<&WriteOptions> for wit_types::WriteOptions {
    fn from(o: &WriteOptions) -> Self {
        wit_types::WriteOptions {
            prefix: o.prefix.clone(),
            writer: o.writer.clone(),
            created_ms: o.created_ms,
        }
    }
}

impl From<&WaitOptions> for wit_types::WaitOptions {
    fn from(o: &WaitOptions) -> Self {
        wit_types::WaitOptions {
            prefix: o.prefix.clone(),
            verify: o.verify.into(),
            timeout_ms: o.timeout.map(millis),
            settle_ms: millis(o.settle),
            poll_ms: millis(o.poll),
            pin: o.pin.as_ref().map(|p| wit_types::PinRequest {
                holder: p.holder.clone(),
                ttl_ms: millis(p.ttl),
            }),
        }
    }
}

impl From<wit::PinInfo> for PinInfo {
    fn from(p: wit::PinInfo) -> Self {
        PinInfo {
            step: p.step,
            holder: p.holder,
            expires_ms: p.expires_ms,
        }
    }
}

impl From<&GcOptions> for wit::GcOptions {
    fn from(o: &GcOptions) -> Self {
        wit::GcOptions {
            prefix: o.prefix.clone(),
            keep: o.keep,
            grace_ms: millis(o.grace),
            skew_ms: millis(o.skew),
        }
    }
}

impl From<wit::GcReport> for GcReport {
    fn from(r: wit::GcReport) -> Self {
        GcReport {
            removed: r.removed,
            kept: r.kept,
            pinned: r.pinned,
            staging_removed: r.staging_removed,
        }
    }
}

impl From<wit::FsckEntry> for FsckEntry {
    fn from(e: wit::FsckEntry) -> Self {
        FsckEntry {
            name: e.name,
            state: e.state.into(),
            detail: e.detail,
            action: e.action,
        }
    }
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
}
