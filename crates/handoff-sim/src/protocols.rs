//! The protocols under test, behind one small trait: handoff itself, and two
//! reference protocols that must fail, so the checker is shown able to fail.
//!
//! - `handoff`: `handoff_core`'s publish/seal, wait/latest/list, and (when
//!   core has them) pin/unpin/gc/fsck.
//! - `naive`: what trainers did before handoff (prime-rl): write the files in
//!   `step_N/`, touch `STABLE`, no fsync; the reader polls for `STABLE` and
//!   loads whatever the directory holds.
//! - `stable-reader`: handoff's writer with the naive reader, which trusts
//!   `STABLE` without a manifest.
//! - `handoff-v1`: handoff as released in v1, whose pin re-checked `STABLE`
//!   with a `stat` (which a node's cache may answer) after writing the pin.

use std::collections::BTreeMap;
use std::io;

use handoff_core::layout::{MANIFEST_TMP_NAME, join, parse_step, step_name};
use handoff_core::manifest::{MANIFEST_NAME, STABLE_NAME};
use handoff_core::{
    Clock, Error, GcOptions, Kind, PinRequest, StepState, Storage, StorageFile, Target, Verify,
    WaitOptions, WriteOptions,
};

use crate::model::{Model, SimClock};

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
        let source = Model::new(&SimClock::new(0, 0));
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
    pub const ALL: [Operation; 12] = [
        Operation::Seal,
        Operation::Publish,
        Operation::PublishRace,
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

/// A protocol: a writer, a reader, and optionally retention.
///
/// Retention methods return `None` when the protocol has no such operation;
/// the checker then reports the operation as not checked.
pub trait Protocol: Copy + Send + Sync + 'static {
    /// The name in the report.
    fn name(&self) -> &'static str;

    /// Whether this is a reference protocol that must show a violation.
    fn reference(&self) -> bool;

    /// The operations the report checks for this protocol.
    fn operations(&self) -> Vec<Operation>;

    /// Publish `written` as its step.
    fn publish<S: Storage>(&self, fs: &S, clock: &SimClock, written: &Written)
    -> Result<(), Error>;

    /// Seal `written`, already written in place by a trainer.
    fn seal<S: Storage>(&self, fs: &S, clock: &SimClock, written: &Written) -> Result<(), Error> {
        let _ = (fs, clock);
        Err(Error::InvalidInput(format!(
            "{} has no seal of step {}",
            self.name(),
            written.step
        )))
    }

    /// Wait for `target` for up to `timeout_ms` and load it.
    fn read<S: Storage>(&self, fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read;

    /// The steps the protocol's listing calls committed.
    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String>;

    /// Pin `step` for `holder`.
    fn pin<S: Storage>(
        &self,
        _fs: &S,
        _clock: &SimClock,
        _step: u64,
        _holder: &str,
        _ttl_ms: u64,
    ) -> Option<Result<(), Error>> {
        None
    }

    /// Wait for `target` and pin it for `holder` (its other pins stay); the
    /// step returned.
    fn wait_pin<S: Storage>(
        &self,
        _fs: &S,
        _clock: &SimClock,
        _target: Target,
        _holder: &str,
        _ttl_ms: u64,
    ) -> Option<Result<u64, Error>> {
        None
    }

    /// Release `holder`'s pin on `step`.
    fn unpin<S: Storage>(
        &self,
        _fs: &S,
        _clock: &SimClock,
        _step: u64,
        _holder: &str,
    ) -> Option<Result<(), Error>> {
        None
    }

    /// Remove old unpinned steps; the steps removed.
    fn gc<S: Storage>(
        &self,
        _fs: &S,
        _clock: &SimClock,
        _params: GcParams,
    ) -> Option<Result<Vec<u64>, Error>> {
        None
    }

    /// `fsck --repair`; how many entries it acted on.
    fn fsck_repair<S: Storage>(&self, _fs: &S, _clock: &SimClock) -> Option<Result<usize, Error>> {
        None
    }
}

/// How long a committed step that does not validate is retried before it is
/// an integrity error.
pub const SETTLE_MS: u64 = 30;

/// The handoff protocol, as `handoff_core` implements it.
#[derive(Clone, Copy, Debug)]
pub struct Handoff;

fn write_options(writer: &str) -> WriteOptions {
    WriteOptions {
        prefix: PREFIX.to_string(),
        writer: writer.to_string(),
        created_ms: None,
    }
}

impl Protocol for Handoff {
    fn name(&self) -> &'static str {
        "handoff"
    }

    fn reference(&self) -> bool {
        false
    }

    fn operations(&self) -> Vec<Operation> {
        Operation::ALL.to_vec()
    }

    fn publish<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        written: &Written,
    ) -> Result<(), Error> {
        let source = written.source();
        handoff_core::publish(
            fs,
            &source,
            clock,
            written.step,
            &write_options(&written.writer),
        )
        .map(|_| ())
    }

    fn seal<S: Storage>(&self, fs: &S, clock: &SimClock, written: &Written) -> Result<(), Error> {
        handoff_core::seal(fs, clock, written.step, &write_options(&written.writer)).map(|_| ())
    }

    fn read<S: Storage>(&self, fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read {
        // Size checks only, the default: the harness compares the bytes
        // itself, so a weak check that lets a bad version through shows up.
        let options = WaitOptions {
            prefix: PREFIX.to_string(),
            verify: Verify::Size,
            timeout_ms: Some(timeout_ms),
            settle_ms: SETTLE_MS,
            poll_ms: 10,
            pin: None,
        };
        match handoff_core::wait(fs, clock, target, &options) {
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

    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String> {
        let steps = handoff_core::list(fs, PREFIX).map_err(|e| e.to_string())?;
        Ok(steps
            .into_iter()
            .filter(|s| s.state == StepState::Committed)
            .map(|s| s.step)
            .collect())
    }

    fn pin<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        step: u64,
        holder: &str,
        ttl_ms: u64,
    ) -> Option<Result<(), Error>> {
        Some(handoff_core::pin(fs, clock, PREFIX, step, holder, ttl_ms).map(|_| ()))
    }

    fn wait_pin<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        target: Target,
        holder: &str,
        ttl_ms: u64,
    ) -> Option<Result<u64, Error>> {
        let options = WaitOptions {
            prefix: PREFIX.to_string(),
            verify: Verify::Size,
            timeout_ms: Some(100),
            settle_ms: SETTLE_MS,
            poll_ms: 10,
            pin: Some(PinRequest {
                holder: holder.to_string(),
                ttl_ms,
            }),
        };
        Some(handoff_core::wait(fs, clock, target, &options).map(|v| v.step))
    }

    fn unpin<S: Storage>(
        &self,
        fs: &S,
        _clock: &SimClock,
        step: u64,
        holder: &str,
    ) -> Option<Result<(), Error>> {
        Some(handoff_core::unpin(fs, PREFIX, step, holder))
    }

    fn gc<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        params: GcParams,
    ) -> Option<Result<Vec<u64>, Error>> {
        let options = GcOptions {
            prefix: PREFIX.to_string(),
            keep: params.keep,
            grace_ms: params.grace_ms,
            skew_ms: params.skew_ms,
        };
        Some(handoff_core::gc(fs, clock, &options).map(|report| report.removed))
    }

    fn fsck_repair<S: Storage>(&self, fs: &S, clock: &SimClock) -> Option<Result<usize, Error>> {
        Some(
            handoff_core::fsck(fs, clock, PREFIX, true)
                .map(|entries| entries.iter().filter(|e| e.action.is_some()).count()),
        )
    }
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
fn naive_read<S: Storage>(fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read {
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
            if rel.is_empty()
                && matches!(
                    entry.name.as_str(),
                    STABLE_NAME | MANIFEST_NAME | MANIFEST_TMP_NAME
                )
            {
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

/// prime-rl's protocol before handoff: files in place, then `STABLE`, no
/// fsync at all. Must fail: a crash loses a "published" step, or keeps
/// `STABLE` without the data; a lagging reader sees `STABLE` first.
#[derive(Clone, Copy, Debug)]
pub struct Naive;

impl Protocol for Naive {
    fn name(&self) -> &'static str {
        "naive"
    }

    fn reference(&self) -> bool {
        true
    }

    fn operations(&self) -> Vec<Operation> {
        vec![Operation::Publish, Operation::ReadLagging]
    }

    fn publish<S: Storage>(
        &self,
        fs: &S,
        _clock: &SimClock,
        written: &Written,
    ) -> Result<(), Error> {
        let io = |e: io::Error| Error::Io(e.to_string());
        written.write_in(fs, &written.dir()).map_err(io)?;
        fs.create_new(&join(&written.dir(), STABLE_NAME))
            .map_err(io)?;
        Ok(())
    }

    fn read<S: Storage>(&self, fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read {
        naive_read(fs, clock, target, timeout_ms)
    }

    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String> {
        naive_committed(fs)
    }
}

/// handoff's writer with a reader that trusts `STABLE` and ignores the
/// manifest. Must fail on a lagging node, where `STABLE` can be visible
/// before the data.
#[derive(Clone, Copy, Debug)]
pub struct StableReader;

impl Protocol for StableReader {
    fn name(&self) -> &'static str {
        "stable-reader"
    }

    fn reference(&self) -> bool {
        true
    }

    fn operations(&self) -> Vec<Operation> {
        vec![Operation::Publish, Operation::ReadLagging]
    }

    fn publish<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        written: &Written,
    ) -> Result<(), Error> {
        Handoff.publish(fs, clock, written)
    }

    fn read<S: Storage>(&self, fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read {
        naive_read(fs, clock, target, timeout_ms)
    }

    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String> {
        naive_committed(fs)
    }
}

/// handoff as released in v1: everything is `handoff_core`'s but the pin,
/// which re-checks `STABLE` with a `stat` after writing the pin file. Must
/// fail the gc/pin race on a node whose cache still shows the `STABLE` that
/// gc on another node removed: the pin returns Ok and gc deletes the step.
#[derive(Clone, Copy, Debug)]
pub struct HandoffV1;

impl Protocol for HandoffV1 {
    fn name(&self) -> &'static str {
        "handoff-v1"
    }

    fn reference(&self) -> bool {
        true
    }

    fn operations(&self) -> Vec<Operation> {
        vec![Operation::Pin, Operation::GcPinRace]
    }

    fn publish<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        written: &Written,
    ) -> Result<(), Error> {
        Handoff.publish(fs, clock, written)?;
        as_version_1(fs, &written.dir()).map_err(|e| {
            Error::Io(format!(
                "cannot make {} a version 1 step: {e}",
                written.dir()
            ))
        })
    }

    fn read<S: Storage>(&self, fs: &S, clock: &SimClock, target: Target, timeout_ms: u64) -> Read {
        Handoff.read(fs, clock, target, timeout_ms)
    }

    fn committed<S: Storage>(&self, fs: &S) -> Result<Vec<u64>, String> {
        Handoff.committed(fs)
    }

    fn pin<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        step: u64,
        holder: &str,
        ttl_ms: u64,
    ) -> Option<Result<(), Error>> {
        Some(pin_v1(fs, clock, step, holder, ttl_ms))
    }

    fn unpin<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        step: u64,
        holder: &str,
    ) -> Option<Result<(), Error>> {
        Handoff.unpin(fs, clock, step, holder)
    }

    fn gc<S: Storage>(
        &self,
        fs: &S,
        clock: &SimClock,
        params: GcParams,
    ) -> Option<Result<Vec<u64>, Error>> {
        Handoff.gc(fs, clock, params)
    }

    fn fsck_repair<S: Storage>(&self, fs: &S, clock: &SimClock) -> Option<Result<usize, Error>> {
        Handoff.fsck_repair(fs, clock)
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
    let tmp = join(dir, MANIFEST_TMP_NAME);
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
fn pin_v1<S: Storage>(
    fs: &S,
    clock: &SimClock,
    step: u64,
    holder: &str,
    ttl_ms: u64,
) -> Result<(), Error> {
    let failed = |what: &str, path: &str, e: io::Error| {
        let msg = format!("failed to {what} {}: {e}", fs.display(path));
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound(msg)
        } else {
            Error::Io(msg)
        }
    };
    // The step must be committed and whole: one look, as a reader's.
    let once = WaitOptions {
        prefix: PREFIX.to_string(),
        verify: Verify::Size,
        timeout_ms: Some(0),
        settle_ms: 0,
        poll_ms: 1,
        pin: None,
    };
    match handoff_core::wait(fs, clock, Target::Step(step), &once) {
        Ok(_) => {}
        Err(Error::TimedOut(why) | Error::Integrity(why) | Error::NotFound(why)) => {
            return Err(Error::NotFound(format!("cannot pin step {step}: {why}")));
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
            Err(Error::NotFound(format!(
                "cannot pin step {step}: it was removed while pinning: no {}",
                fs.display(&stable)
            )))
        }
        Err(e) => Err(failed("inspect", &stable, e)),
    }
}
