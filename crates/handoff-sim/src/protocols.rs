//! The protocols under test, behind one small trait: handoff itself, and two
//! reference protocols that must fail, so the checker is shown able to fail.
//!
//! - `handoff`: `handoff_core`'s publish/seal, wait/latest/list, and (when
//!   core has them) pin/unpin/gc/fsck.
//! - `naive` ([`Naive`]): what trainers did before handoff (prime-rl): write the files in
//!   `step_N/`, touch `STABLE`, no fsync; the reader polls for `STABLE` and
//!   loads whatever the directory holds.
//! - `stable-reader` ([`StableReader`]): handoff's writer with the naive reader, which trusts
//!   `STABLE` without a manifest.
//! - `handoff-v1`: handoff as released in v1, whose pin re-checked `STABLE`
//!   with a `stat` (which a node's cache may answer) after writing the pin.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use handoff_core::layout::{MANIFEST_TMP_PREFIX, is_protocol_name, join, parse_step, step_name};
use handoff_core::manifest::{MANIFEST_NAME, STABLE_NAME};
use handoff_core::{
    Error, ErrorKind, FsckOptions, GcOptions, Kind, PinRequest, Platform, StepState, Storage,
    StorageFile, Target, Verify, WaitOptions, WriteOptions,
};

use crate::model::{Model, SimPlatform};

/// The step directory prefix every scenario uses.
pub const PREFIX: &str = "step_";

/// Payload files by path relative to the step directory.
pub type Files = BTreeMap<String, Vec<u8>>;

/// What a writer wrote (or means to write) as one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The step.
    pub step: u64,
    /// The writer id.
    pub writer: String,
    /// The payload.
    pub files: Files,
}

impl Written {
    /// A small payload: two files, one in a subdirectory, a few bytes each,
    /// naming the step and the writer so two versions never compare equal.
    pub fn new(step: u64, writer: &str) -> Written {
        let files = Files::from([
            (
                "adapter_config.json".to_string(),
                format!("{{\"step\":{step},\"by\":\"{writer}\"}}").into_bytes(),
            ),
            (
                "weights/adapter.safetensors".to_string(),
                format!("W{step}:{writer}:0123456789").into_bytes(),
            ),
        ]);
        Written {
            step,
            writer: writer.to_string(),
            files,
        }
    }

    /// The step directory's name.
    pub fn dir(&self) -> String {
        step_name(PREFIX, self.step)
    }

    /// A separate, durable storage holding just the payload: publish's source.
    pub fn source(&self) -> Model {
        let source = Model::new(&SimPlatform::new(0, 0));
        self.write_in(&source, "")
            .expect("writing a payload into an empty model");
        source.sync_all();
        source
    }

    /// Write the payload under `dir` (created first unless it is the root),
    /// creating subdirectories, without any fsync: what a trainer does before
    /// `seal`, and all the naive writer does.
    pub fn write_in<S: Storage>(&self, fs: &S, dir: &str) -> io::Result<()> {
        if !dir.is_empty() {
            fs.create_dir(dir)?;
        }
        for (path, data) in &self.files {
            let mut parent = dir.to_string();
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().expect("non-empty payload path");
            for part in parts {
                parent = join(&parent, part);
                if fs.stat(&parent)?.is_none() {
                    fs.create_dir(&parent)?;
                }
            }
            let mut file = fs.create_new(&join(&parent, name))?;
            file.write_at(data, 0)?;
        }
        Ok(())
    }
}

/// What a reader got.
#[derive(Clone, Debug)]
pub enum Read {
    /// The reader accepted a version and loaded these files.
    Got {
        /// The step it accepted.
        step: u64,
        /// The writer id, when the protocol records one.
        writer: Option<String>,
        /// The files as loaded.
        files: Files,
    },
    /// The reader found nothing to accept (timed out, or refused what it
    /// found with an error).
    Absent(String),
}

/// Retention parameters for [`Protocol::gc`].
#[derive(Clone, Copy, Debug)]
pub struct GcParams {
    /// Keep the newest `keep` committed steps.
    pub keep: u32,
    /// Abandoned staging older than this is removed.
    pub grace_ms: u64,
    /// A pin counts until its expiry plus this.
    pub skew_ms: u64,
}

/// An operation the checker drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Seal a payload written in place (crash at every call).
    Seal,
    /// Publish a payload (crash at every call).
    Publish,
    /// Two publishers of one step, interleaved at every call.
    PublishRace,
    /// Two sealers of one step written in place, interleaved at every call.
    SealRace,
    /// A trainer restarted in a new run republishes a step while the old
    /// trainer still publishes, interleaved at every call.
    RunRace,
    /// A reader on a lagging node while a version is published.
    ReadLagging,
    /// A reader on a lagging node while a version is sealed in place.
    ReadLaggingSeal,
    /// Pin a step (crash at every call).
    Pin,
    /// A long-lived reader waits for the latest step with a pin, then
    /// unpins the step it served before (crash at every call).
    WaitPin,
    /// Unpin a step (crash at every call).
    Unpin,
    /// Garbage-collect old steps (crash at every call).
    Gc,
    /// A reader pins the step gc is removing, interleaved at every call.
    GcPinRace,
    /// Two gcs at once, interleaved at every call.
    GcRace,
    /// `fsck --repair` of a root a crash left untidy (crash at every call).
    FsckRepair,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Operation; 14] = [
        Operation::Seal,
        Operation::Publish,
        Operation::PublishRace,
        Operation::SealRace,
        Operation::RunRace,
        Operation::ReadLagging,
        Operation::ReadLaggingSeal,
        Operation::Pin,
        Operation::WaitPin,
        Operation::Unpin,
        Operation::Gc,
        Operation::GcPinRace,
        Operation::GcRace,
        Operation::FsckRepair,
    ];

    /// The name used in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Seal => "seal",
            Operation::Publish => "publish",
            Operation::PublishRace => "publish-race",
            Operation::SealRace => "seal-race",
            Operation::RunRace => "run-race",
            Operation::ReadLagging => "read-lagging",
            Operation::ReadLaggingSeal => "read-lagging-seal",
            Operation::Pin => "pin",
            Operation::WaitPin => "wait-pin",
            Operation::Unpin => "unpin",
            Operation::Gc => "gc",
            Operation::GcPinRace => "gc-pin-race",
            Operation::GcRace => "gc-race",
            Operation::FsckRepair => "fsck-repair",
        }
    }

    /// The operation called `name`.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A pin to take: [`Protocol::pin`]'s arguments.
#[derive(Clone, Copy, Debug)]
pub struct Pin<'a> {
    /// The step to pin.
    pub step: u64,
    /// Who holds the pin.
    pub holder: &'a str,
    /// How long the pin lasts.
    pub ttl_ms: u64,
}

/// A step for a writer to commit, and how.
#[derive(Clone, Copy, Debug)]
pub enum Commit<'a> {
    /// Stage the payload and rename it into place.
    Publish(&'a Written),
    /// Seal a payload a trainer already wrote in place.
    Seal(&'a Written),
}

/// A protocol: a writer, a reader, and optionally retention.
///
/// Every method is handoff's own unless a protocol says otherwise. The
/// retention methods (pin, wait-pin, unpin, gc, fsck) return `None` unless
/// [`Protocol::RETAINS`]; the checker then reports the operation as not
/// checked.
pub trait Protocol: Copy + Send + Sync + 'static {
    /// The name in the report.
    const NAME: &'static str;
    /// Whether this is a reference protocol that must show a violation.
    const REFERENCE: bool;
    /// The operations the report checks for this protocol.
    const OPERATIONS: &'static [Operation];
    /// Whether the protocol has handoff's retention operations.
    const RETAINS: bool = false;
    /// Whether the reader, and the listing, trust `STABLE` alone, with no
    /// manifest: the naive reader's [`Protocol::read`] and
    /// [`Protocol::committed`].
    const TRUSTS_STABLE: bool = false;

    /// Publish a step, or seal one a trainer already wrote in place.
    fn write<S: Storage>(&self, fs: &S, clock: &SimPlatform, commit: Commit) -> Result<(), Error> {
        let (Commit::Publish(written) | Commit::Seal(written)) = commit;
        let options = WriteOptions {
            prefix: PREFIX.to_string(),
            writer: written.writer.clone(),
            created_ms: None,
            run: 0,
        };
        match commit {
            Commit::Publish(_) => {
                let source = written.source();
                handoff_core::publish(fs, &source, clock, written.step, &options).map(|_| ())
            }
            Commit::Seal(_) => handoff_core::seal(fs, clock, written.step, &options).map(|_| ()),
        }
    }

    /// Wait for `target` for up to `timeout_ms` and load it.
    fn read<S: Storage>(
        &self,
        fs: &S,
        clock: &SimPlatform,
        target: Target,
        timeout_ms: u64,
    ) -> Read {
        if Self::TRUSTS_STABLE {
            return naive_read(fs, clock, target, timeout_ms);
        }
        // Size checks only, the default: the harness compares the bytes
        // itself, so a weak check that lets a bad version through shows up.
        match handoff_core::wait(fs, clock, target, &wait_options(timeout_ms, None)) {
            Ok(version) => {
                let dir = step_name(PREFIX, version.step);
                let mut files = Files::new();
                for entry in &version.files {
                    if let Ok(data) = read_file(fs, &join(&dir, &entry.path)) {
                        files.insert(entry.path.clone(), data);
                    }
                }
                Read::Got {
                    step: version.step,
                    writer: Some(version.writer),
                    files,
                }
            }
            Err(e) => Read::Absent(e.to_string()),
        }
    }

    /// The steps the protocol's listing calls committed.
    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String> {
        if Self::TRUSTS_STABLE {
            return naive_committed(fs);
        }
        let steps = handoff_core::list(fs, PREFIX).map_err(|e| e.to_string())?;
        Ok(steps
            .into_iter()
            .filter(|s| s.state == StepState::Committed)
            .map(|s| s.step)
            .collect())
    }

    /// A restarted trainer: begin a run, then publish `written` (its payload
    /// as step `step` of that run, so `written.step` must be the run's
    /// numbering of it, `run * RUN_SPAN + step`).
    fn restart<S: Storage>(
        &self,
        fs: &S,
        clock: &SimPlatform,
        step: u64,
        written: &Written,
    ) -> Option<Result<(), Error>> {
        Self::RETAINS.then(|| {
            let run = handoff_core::begin(fs, PREFIX)?;
            let options = WriteOptions {
                prefix: PREFIX.to_string(),
                writer: written.writer.clone(),
                created_ms: None,
                run,
            };
            handoff_core::publish(fs, &written.source(), clock, step, &options).map(|_| ())
        })
    }

    /// The step a watcher that has seen `after` is handed next, at once.
    fn next_after<S: Storage>(&self, fs: &S, clock: &SimPlatform, after: u64) -> Option<u64> {
        handoff_core::wait(fs, clock, Target::After(after), &wait_options(0, None))
            .ok()
            .map(|v| v.step)
    }

    /// Take `pin`.
    fn pin<S: Storage>(&self, fs: &S, clock: &SimPlatform, pin: Pin) -> Option<Result<(), Error>> {
        Self::RETAINS.then(|| {
            handoff_core::pin(fs, clock, PREFIX, pin.step, pin.holder, ms(pin.ttl_ms)).map(|_| ())
        })
    }

    /// Wait for `target` and pin it for `holder` (its other pins stay); the
    /// step returned.
    fn wait_pin<S: Storage>(
        &self,
        fs: &S,
        clock: &SimPlatform,
        target: Target,
        holder: &str,
        ttl_ms: u64,
    ) -> Option<Result<u64, Error>> {
        let pin = PinRequest {
            holder: holder.to_string(),
            ttl: ms(ttl_ms),
        };
        Self::RETAINS.then(|| {
            handoff_core::wait(fs, clock, target, &wait_options(100, Some(pin))).map(|v| v.step)
        })
    }

    /// Release `holder`'s pin on `step`.
    fn unpin<S: Storage>(
        &self,
        fs: &S,
        _clock: &SimPlatform,
        step: u64,
        holder: &str,
    ) -> Option<Result<(), Error>> {
        Self::RETAINS.then(|| handoff_core::unpin(fs, PREFIX, step, holder))
    }

    /// Remove old unpinned steps; the steps removed.
    fn gc<S: Storage>(
        &self,
        fs: &S,
        clock: &SimPlatform,
        params: GcParams,
    ) -> Option<Result<Vec<u64>, Error>> {
        let options = GcOptions {
            prefix: PREFIX.to_string(),
            keep: params.keep,
            grace: ms(params.grace_ms),
            skew: ms(params.skew_ms),
        };
        Self::RETAINS.then(|| handoff_core::gc(fs, clock, &options).map(|report| report.removed))
    }

    /// `fsck --repair`; how many entries it acted on.
    fn fsck_repair<S: Storage>(&self, fs: &S, clock: &SimPlatform) -> Option<Result<usize, Error>> {
        Self::RETAINS.then(|| {
            let options = FsckOptions {
                grace: ms(FSCK_GRACE_MS),
                settle: ms(SETTLE_MS),
            };
            handoff_core::fsck_with(fs, clock, PREFIX, true, &options)
                .map(|entries| entries.iter().filter(|e| e.action.is_some()).count())
        })
    }
}

/// How long a committed step that does not validate is retried before it is
/// an integrity error.
pub const SETTLE_MS: u64 = 30;

/// How long nothing in a tree must have changed before fsck --repair takes
/// it for abandoned: less than the second between a crash and its recovery
/// in every scenario, so that repair finds all a crash left.
pub const FSCK_GRACE_MS: u64 = 500;

/// A reader's options: size checks, polls every 10 ms.
fn wait_options(timeout_ms: u64, pin: Option<PinRequest>) -> WaitOptions {
    WaitOptions {
        prefix: PREFIX.to_string(),
        verify: Verify::Size,
        timeout: Some(ms(timeout_ms)),
        settle: ms(SETTLE_MS),
        poll: ms(10),
        pin,
    }
}

/// Model milliseconds as the core's durations.
fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The error of a protocol that has no in-place seal.
fn no_seal(name: &str, step: u64) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{name} has no seal of step {step}"),
    )
}

/// The handoff protocol, as `handoff_core` implements it: every default of
/// [`Protocol`].
#[derive(Clone, Copy, Debug)]
pub struct Handoff;

impl Protocol for Handoff {
    const NAME: &'static str = "handoff";
    const REFERENCE: bool = false;
    const OPERATIONS: &'static [Operation] = &Operation::ALL;
    const RETAINS: bool = true;
}

/// Read a whole file.
fn read_file<S: Storage>(fs: &S, path: &str) -> io::Result<Vec<u8>> {
    let mut file = fs.open(path)?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = file.read_at(&mut buf, data.len() as u64)?;
        if n == 0 {
            return Ok(data);
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// The naive reader: poll for `STABLE`, then load every file the directory
/// lists (a loader that meets a missing file loads what it could).
fn naive_read<S: Storage>(fs: &S, clock: &SimPlatform, target: Target, timeout_ms: u64) -> Read {
    let deadline = clock.now_ms() + timeout_ms;
    loop {
        let step = match target {
            Target::Step(step) => Some(step).filter(|&s| has_stable(fs, s)),
            Target::Latest => step_dirs(fs).into_iter().rev().find(|&s| has_stable(fs, s)),
            Target::After(after) => step_dirs(fs)
                .into_iter()
                .find(|&s| s > after && has_stable(fs, s)),
        };
        if let Some(step) = step {
            return Read::Got {
                step,
                writer: None,
                files: naive_load(fs, &step_name(PREFIX, step)),
            };
        }
        if clock.now_ms() >= deadline {
            return Read::Absent(format!("no {STABLE_NAME} within {timeout_ms} ms"));
        }
        clock.sleep_ms(5);
    }
}

/// The step directories of the root, ascending.
fn step_dirs<S: Storage>(fs: &S) -> Vec<u64> {
    let mut steps: Vec<u64> = fs
        .read_dir("")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| parse_step(PREFIX, &e.name))
        .collect();
    steps.sort_unstable();
    steps
}

fn has_stable<S: Storage>(fs: &S, step: u64) -> bool {
    let stable = join(&step_name(PREFIX, step), STABLE_NAME);
    matches!(fs.stat(&stable), Ok(Some(_)))
}

/// Every file under `dir` but the sentinel (and handoff's own manifest, which
/// this reader knows nothing about).
fn naive_load<S: Storage>(fs: &S, dir: &str) -> Files {
    let mut files = Files::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        for entry in fs.read_dir(&join(dir, &rel)).unwrap_or_default() {
            let child = join(&rel, &entry.name);
            if rel.is_empty() && is_protocol_name(&entry.name) {
                continue;
            }
            match entry.kind {
                Kind::Dir => pending.push(child),
                _ => {
                    if let Ok(data) = read_file(fs, &join(dir, &child)) {
                        files.insert(child, data);
                    }
                }
            }
        }
    }
    files
}

fn naive_committed<S: Storage>(fs: &S) -> Result<Vec<u64>, String> {
    let entries = fs.read_dir("").map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .filter_map(|e| parse_step(PREFIX, &e.name))
        .filter(|&s| has_stable(fs, s))
        .collect())
}

/// The reference protocols whose reader trusts `STABLE`: it polls for the
/// sentinel and loads whatever the step directory holds, with no manifest.
///
/// - [`Naive`] is prime-rl's protocol before handoff: files in
///   place, then `STABLE`, no fsync at all. Must fail: a crash loses a
///   "published" step, or keeps `STABLE` without the data; a lagging reader
///   sees `STABLE` first.
/// - [`StableReader`] is handoff's writer with that reader.
///   Must fail on a lagging node, where `STABLE` can be visible before the
///   data.
#[derive(Clone, Copy, Debug)]
pub struct TrustsStable<const HANDOFF_WRITER: bool>;

/// `naive`: the naive writer and reader.
pub type Naive = TrustsStable<false>;

/// `stable-reader`: handoff's writer, the naive reader.
pub type StableReader = TrustsStable<true>;

impl<const HANDOFF_WRITER: bool> Protocol for TrustsStable<HANDOFF_WRITER> {
    const NAME: &'static str = if HANDOFF_WRITER {
        "stable-reader"
    } else {
        "naive"
    };
    const REFERENCE: bool = true;
    const OPERATIONS: &'static [Operation] = &[Operation::Publish, Operation::ReadLagging];
    const TRUSTS_STABLE: bool = true;

    fn write<S: Storage>(&self, fs: &S, clock: &SimPlatform, commit: Commit) -> Result<(), Error> {
        let written = match commit {
            Commit::Publish(_) if HANDOFF_WRITER => return Handoff.write(fs, clock, commit),
            Commit::Publish(written) => written,
            Commit::Seal(written) => return Err(no_seal(Self::NAME, written.step)),
        };
        let io = |e: io::Error| Error::new(ErrorKind::Io, e.to_string());
        written.write_in(fs, &written.dir()).map_err(io)?;
        fs.create_new(&join(&written.dir(), STABLE_NAME))
            .map_err(io)?;
        Ok(())
    }
}

/// handoff as released in v1: everything is `handoff_core`'s but the pin,
/// which re-checks `STABLE` with a `stat` after writing the pin file. Must
/// fail the gc/pin race on a node whose cache still shows the `STABLE` that
/// gc on another node removed: the pin returns Ok and gc deletes the step.
#[derive(Clone, Copy, Debug)]
pub struct HandoffV1;

impl Protocol for HandoffV1 {
    const NAME: &'static str = "handoff-v1";
    const REFERENCE: bool = true;
    const OPERATIONS: &'static [Operation] = &[Operation::Pin, Operation::GcPinRace];
    const RETAINS: bool = true;

    fn write<S: Storage>(&self, fs: &S, clock: &SimPlatform, commit: Commit) -> Result<(), Error> {
        let written = match commit {
            Commit::Publish(written) => written,
            Commit::Seal(written) => return Err(no_seal(Self::NAME, written.step)),
        };
        Handoff.write(fs, clock, commit)?;
        as_version_1(fs, &written.dir()).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot make {} a version 1 step: {e}", written.dir()),
            )
        })
    }

    fn pin<S: Storage>(&self, fs: &S, clock: &SimPlatform, pin: Pin) -> Option<Result<(), Error>> {
        Some(pin_v1(fs, clock, pin))
    }
}

/// Turn a step handoff just published into what a version 1 writer left: a
/// version 1 manifest and no pin directory in the step. handoff's gc then
/// treats it by the version 1 rules, which v1's own pin relied on.
fn as_version_1<S: Storage>(fs: &S, dir: &str) -> io::Result<()> {
    let path = join(dir, MANIFEST_NAME);
    let text = String::from_utf8(read_file(fs, &path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let v1 = text.replacen(r#""version":2"#, r#""version":1"#, 1);
    let tmp = join(dir, &format!("{MANIFEST_TMP_PREFIX}.v1"));
    let mut file = fs.create_new(&tmp)?;
    if file.write_at(v1.as_bytes(), 0)? != v1.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    file.sync()?;
    drop(file);
    fs.rename(&tmp, &path)?;
    fs.remove_dir(&join(dir, handoff_core::layout::STEP_PINS_NAME))?;
    fs.sync_dir(dir)
}

/// Where v1 kept a step's pins.
fn pin_dir_v1(step: u64) -> String {
    format!(".handoff/pins/{}", step_name(PREFIX, step))
}

/// v1's pin: check the step is committed, write
/// `.handoff/pins/step_N/<holder>` whole (temporary name, fsync, rename,
/// fsync of the directory), then `stat` `STABLE`; if it is gone, drop the
/// pin and report the step not found.
fn pin_v1<S: Storage>(fs: &S, clock: &SimPlatform, pin: Pin) -> Result<(), Error> {
    let Pin {
        step,
        holder,
        ttl_ms,
    } = pin;
    let failed = |what: &str, path: &str, e: io::Error| {
        let msg = format!("failed to {what} {}: {e}", fs.display(path));
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, msg)
        } else {
            Error::new(ErrorKind::Io, msg)
        }
    };
    // The step must be committed and whole: one look, as a reader's.
    let once = WaitOptions {
        settle: Duration::ZERO,
        poll: ms(1),
        ..wait_options(0, None)
    };
    match handoff_core::wait(fs, clock, Target::Step(step), &once) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::TimedOut | ErrorKind::Integrity | ErrorKind::NotFound
            ) =>
        {
            let why = e.message();
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("cannot pin step {step}: {why}"),
            ));
        }
        Err(e) => return Err(e),
    }
    let dir = pin_dir_v1(step);
    for (path, parent) in [
        (".handoff", ""),
        (".handoff/pins", ".handoff"),
        (dir.as_str(), ".handoff/pins"),
    ] {
        match fs.create_dir(path) {
            Ok(()) => fs
                .sync_dir(parent)
                .map_err(|e| failed("fsync", parent, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("create", path, e)),
        }
    }
    let path = join(&dir, holder);
    let tmp = join(&dir, &format!(".{holder}.{:016x}.tmp", clock.random_u64()));
    let pin = format!(
        "{{\"step\":{step},\"holder\":\"{holder}\",\"expires_ms\":{}}}",
        clock.now_ms().saturating_add(ttl_ms)
    );
    let mut file = fs.create_new(&tmp).map_err(|e| failed("create", &tmp, e))?;
    let written = file
        .write_at(pin.as_bytes(), 0)
        .and_then(|n| {
            if n == pin.len() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
            }
        })
        .map_err(|e| failed("write", &tmp, e))
        .and_then(|()| file.sync().map_err(|e| failed("fsync", &tmp, e)))
        .and_then(|()| {
            fs.rename(&tmp, &path)
                .map_err(|e| failed("rename", &tmp, e))
        })
        .and_then(|()| fs.sync_dir(&dir).map_err(|e| failed("fsync", &dir, e)));
    if let Err(e) = written {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    // The v1 re-check: a stat, which the node may answer from its cache.
    let stable = join(&step_name(PREFIX, step), STABLE_NAME);
    match fs.stat(&stable) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let _ = fs.remove_file(&path);
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot pin step {step}: it was removed while pinning: no {}",
                    fs.display(&stable)
                ),
            ))
        }
        Err(e) => Err(failed("inspect", &stable, e)),
    }
}
