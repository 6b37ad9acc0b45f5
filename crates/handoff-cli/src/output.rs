//! What the CLI prints: the text lines, the `--json` objects (the core's
//! types through serde, plus what only the CLI measures), and a failure with
//! its exit code.

use std::io::Write as _;
use std::time::Duration;

use handoff_core::{
    Backend, FetchReport, FsckEntry, GcReport, PinInfo, PublishReport, StepInfo, Version,
};
use serde::Serialize;
use serde_json::json;

/// `println!` that returns an error when stdout is gone (`handoff ls | head`)
/// instead of panicking; [`report`](crate::report) then ends the program
/// quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// Every kind of failure, by its stable name as messages and `--json` give
/// it, with its exit code: the protocol's outcomes (`ErrorKind::as_str`),
/// the runtime's own failures, and the command line's.
pub const KINDS: &[(&str, u8)] = &[
    (kind::USAGE, 2),
    ("timed-out", 3),
    (kind::DEADLINE_EXCEEDED, 3),
    ("integrity", 4),
    ("conflict", 5),
    (kind::GC_INCOMPLETE, 6),
    ("not-found", 1),
    ("invalid-input", 1),
    ("durability", 1),
    ("io", 1),
    ("bad-component", 1),
    ("trap", 1),
    ("memory-exceeded", 1),
    ("setup", 1),
    (kind::OTHER, 1),
];

/// The names of the failure kinds the command line itself reports.
pub mod kind {
    /// A flag or argument that cannot be used (exit 2).
    pub const USAGE: &str = "usage";
    /// A call stopped at its time limit, `--deadline` (exit 3).
    pub const DEADLINE_EXCEEDED: &str = "deadline-exceeded";
    /// A gc that printed its report and could not remove everything (exit 6).
    pub const GC_INCOMPLETE: &str = "gc-incomplete";
    /// Anything without a kind of its own (exit 1).
    pub const OTHER: &str = "other";
}

/// The documented exit code of a failure of `kind` ([`KINDS`]; 1 for a
/// name not listed).
pub fn exit_code(kind: &str) -> u8 {
    KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .map_or(1, |&(_, code)| code)
}

/// A failure as the command line reports it: on stderr
/// `handoff: error (KIND): MESSAGE`, with `--json` also one object on stdout,
/// `{"error":{"exit_code":5,"kind":"conflict","message":"...","path":"/r/step_7","retryable":false}}`
/// (`path` null where no file is concerned), and the exit code of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its stable name ([`KINDS`]).
    pub kind: &'static str,
    /// What failed and why, naming the file concerned.
    pub message: String,
    /// The file or directory concerned, where there is one.
    pub path: Option<String>,
    /// Whether the same call may succeed later with nothing changed.
    pub retryable: bool,
}

impl Failure {
    /// A failure of `kind` (one of [`KINDS`]) concerning no particular file.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            path: None,
            retryable: false,
        }
    }

    /// The same failure, concerning `path`.
    pub fn at(mut self, path: impl Into<String>) -> Failure {
        self.path = Some(path.into());
        self
    }

    /// Its exit code.
    pub fn exit_code(&self) -> u8 {
        exit_code(self.kind)
    }

    /// Its `--json` object.
    pub fn json(&self) -> serde_json::Value {
        // serde_json's maps are sorted: this is the documented key order.
        json!({
            "error": {
                "exit_code": self.exit_code(),
                "kind": self.kind,
                "message": self.message,
                "path": self.path,
                "retryable": self.retryable,
            }
        })
    }

    /// Print it (stderr, and with `json` stdout) and return its exit code.
    pub fn report(&self, json: bool) -> u8 {
        if json {
            // A reader of stdout that went away must not stop the report.
            let _ = writeln!(std::io::stdout(), "{}", self.json());
        }
        self.report_text()
    }

    /// Print it on stderr only (its JSON, if any, is already out) and return
    /// its exit code.
    fn report_text(&self) -> u8 {
        match self.kind {
            kind::OTHER => eprintln!("handoff: error: {}", self.message),
            kind => eprintln!("handoff: error ({kind}): {}", self.message),
        }
        self.exit_code()
    }
}

/// The failure `err` is, from what its chain holds: a usage error, a gc that
/// could not remove everything, or the backend's failure (its kind, file
/// and retry); `other` for anything else. The one mapping from an error to
/// an exit code and a JSON object.
pub fn failure<B: Backend>(err: &anyhow::Error) -> Failure {
    let message = format!("{err:#}");
    for cause in err.chain() {
        if cause.is::<Usage>() {
            return Failure::new(kind::USAGE, message);
        }
        if cause.is::<GcIncomplete>() {
            return Failure::new(kind::GC_INCOMPLETE, message);
        }
        if let Some(e) = cause.downcast_ref::<B::Error>() {
            return Failure {
                kind: B::kind_name(e),
                message,
                path: B::path(e),
                retryable: B::protocol_error(e).is_some_and(handoff_core::Error::is_retryable),
            };
        }
    }
    Failure::new(kind::OTHER, message)
}

/// Print `err` as [`failure`] says and return its exit code. A gc's
/// failures are already on stdout, with `--json` inside its report's
/// `"error"`.
pub(crate) fn report_failure<B: Backend>(err: &anyhow::Error, json: bool) -> u8 {
    let failure = failure::<B>(err);
    match failure.kind {
        kind::GC_INCOMPLETE => failure.report_text(),
        _ => failure.report(json),
    }
}

/// A flag or argument that cannot be used, found after parsing (a
/// combination of flags, or a flag that does not apply): exit 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A command line clap refused (or `--help`, `--version`): print what clap
/// says, with `--json` among `args` also the usage failure as JSON on
/// stdout, and return the exit code (2; 0 for help and version).
pub fn usage_error(err: &clap::Error, args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let code = u8::try_from(err.exit_code()).unwrap_or(2);
    let _ = err.print();
    if code == 0 {
        return 0;
    }
    let json = args
        .into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if json {
        let failure = Failure::new(kind::USAGE, clap_message(err));
        let _ = writeln!(std::io::stdout(), "{}", failure.json());
    }
    code
}

/// clap's message without its `error: ` and its usage and help lines, on
/// one line.
fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let text = text.split("\n\n").next().unwrap_or_default();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A gc, alone or after `publish`/`seal --keep`, that printed its report
/// and could not remove this many entries: the report names each, with why.
#[derive(Debug)]
pub(crate) struct GcIncomplete(pub(crate) usize);

impl std::fmt::Display for GcIncomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = match self.0 {
            1 => "1 entry",
            _ => &format!("{} entries", self.0),
        };
        write!(
            f,
            "gc could not remove {entries}; it removed what it could, and its report \
             names each with why"
        )
    }
}

impl std::error::Error for GcIncomplete {}

/// `Err(GcIncomplete)` when the printed gc `report` lists failures.
pub(crate) fn gc_outcome(report: Option<&GcReport>) -> anyhow::Result<()> {
    match report.map_or(0, |r| r.failed.len()) {
        0 => Ok(()),
        n => Err(GcIncomplete(n).into()),
    }
}

/// The `"error"` a gc report printed as JSON carries when the gc could not
/// remove everything: the failure [`report`](crate::report) then exits 6
/// with.
fn gc_error(report: Option<&GcReport>) -> Option<serde_json::Value> {
    let err = gc_outcome(report).err()?;
    let mut object = Failure::new(kind::GC_INCOMPLETE, format!("{err:#}")).json();
    Some(object["error"].take())
}

/// A version as `publish`, `seal`, `wait` and `watch` print it:
/// `{"step","path","writer","created_ms","files":[..],"bytes","elapsed_ms"}`.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    version: &'a Version,
    bytes: u64,
    elapsed_ms: f64,
}

impl<'a> Shown<'a> {
    fn new(version: &'a Version, elapsed: Duration) -> Self {
        Shown {
            version,
            bytes: version.bytes(),
            elapsed_ms: round3(elapsed.as_secs_f64() * 1000.0),
        }
    }
}

/// `publish` and `seal`: the version, then `"fsyncs","fsync_ms","warnings"`
/// and, with `--keep`, `"gc"` (and `"error"` if that gc could not remove
/// everything).
#[derive(Serialize)]
struct Written<'a> {
    #[serde(flatten)]
    version: Shown<'a>,
    #[serde(flatten)]
    done: Done<'a>,
}

/// The end of a write's or a fetch's report: its flushes, its warnings
/// and, with `--keep`, the gc after it.
#[derive(Serialize)]
struct Done<'a> {
    fsyncs: u64,
    fsync_ms: f64,
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    gc: Option<&'a GcReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl<'a> Done<'a> {
    fn new(fsyncs: u64, fsync_ms: f64, warnings: &'a [String], gc: Option<&'a GcReport>) -> Self {
        Done {
            fsyncs,
            fsync_ms: round3(fsync_ms),
            warnings,
            gc,
            error: gc_error(gc),
        }
    }
}

/// `fetch` and `watch --to`: the local version (`path` is the local step),
/// then `"source","copied","bytes_copied","fsyncs","fsync_ms","warnings"`
/// and, with `--keep`, `"gc"` (and `"error"` if that gc could not remove
/// everything).
#[derive(Serialize)]
struct Fetched<'a> {
    #[serde(flatten)]
    version: Shown<'a>,
    source: &'a str,
    copied: bool,
    bytes_copied: u64,
    #[serde(flatten)]
    done: Done<'a>,
}

/// Prints to stdout, as text or as one JSON object a call.
pub(crate) struct Printer {
    pub(crate) json: bool,
}

impl Printer {
    fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        out!("{}", serde_json::to_string(value)?);
        Ok(())
    }

    pub(crate) fn written(
        &self,
        verb: &str,
        report: &PublishReport,
        elapsed: Duration,
        gc: Option<&GcReport>,
    ) -> anyhow::Result<()> {
        if self.json {
            return self.json(&Written {
                version: Shown::new(&report.version, elapsed),
                done: Done::new(report.fsyncs, report.fsync_ms, &report.warnings, gc),
            });
        }
        for warning in &report.warnings {
            eprintln!("handoff: warning: {warning}");
        }
        let v = &report.version;
        out!(
            "{verb} step {} at {}: {} files, {} bytes, {} fsyncs ({:.1} ms) in {:.1} ms",
            v.step,
            v.path,
            v.files.len(),
            v.bytes(),
            report.fsyncs,
            report.fsync_ms,
            elapsed.as_secs_f64() * 1000.0
        );
        if let Some(gc) = gc {
            self.gc_text(gc)?;
        }
        Ok(())
    }

    /// A step `fetch` (or `watch --to`) copied, or found already there,
    /// `elapsed` after it began; the text says how long only for `fetch`
    /// (`with_elapsed`).
    pub(crate) fn fetched(
        &self,
        report: &FetchReport,
        elapsed: Duration,
        with_elapsed: bool,
        gc: Option<&GcReport>,
    ) -> anyhow::Result<()> {
        if self.json {
            self.json(&Fetched {
                version: Shown::new(&report.version, elapsed),
                source: &report.source,
                copied: report.copied,
                bytes_copied: report.bytes_copied,
                done: Done::new(report.fsyncs, report.fsync_ms, &report.warnings, gc),
            })?;
        } else {
            for warning in &report.warnings {
                eprintln!("handoff: warning: {warning}");
            }
            let v = &report.version;
            let how = match report.copied {
                true => format!(
                    "fetched from {}: {} files, {} bytes, {} fsyncs",
                    report.source,
                    v.files.len(),
                    report.bytes_copied,
                    report.fsyncs
                ),
                false => format!(
                    "already fetched from {}: {} files, {} bytes, nothing copied",
                    report.source,
                    v.files.len(),
                    v.bytes()
                ),
            };
            let after = match with_elapsed {
                true => format!(", after {:.1} ms", elapsed.as_secs_f64() * 1000.0),
                false => String::new(),
            };
            out!("step {} ready at {} ({how}){after}", v.step, v.path);
            if let Some(gc) = gc {
                self.gc_text(gc)?;
            }
        }
        // A pipe would hold the line back; a watcher's consumer needs it now.
        std::io::Write::flush(&mut std::io::stdout())?;
        Ok(())
    }

    /// A version `wait` or `watch` returned `elapsed` after it began looking;
    /// the text says how long only for `wait` (`with_elapsed`).
    pub(crate) fn ready(
        &self,
        version: &Version,
        elapsed: Duration,
        with_elapsed: bool,
    ) -> anyhow::Result<()> {
        if self.json {
            self.json(&Shown::new(version, elapsed))?;
        } else {
            for warning in &version.warnings {
                eprintln!("handoff: warning: {warning}");
            }
            let after = match with_elapsed {
                true => format!(", after {:.1} ms", elapsed.as_secs_f64() * 1000.0),
                false => String::new(),
            };
            out!(
                "step {} ready at {}: {} files, {} bytes{after}",
                version.step,
                version.path,
                version.files.len(),
                version.bytes()
            );
        }
        // A pipe would hold the line back; a watcher's consumer needs it now.
        std::io::Write::flush(&mut std::io::stdout())?;
        Ok(())
    }

    /// `ls`: `{"steps":[{"step","path","state","files","bytes"}]}`, and
    /// `"detail"` on a step that could not be read or accepted.
    pub(crate) fn steps(&self, steps: &[StepInfo]) -> anyhow::Result<()> {
        if self.json {
            return self.json(&json!({ "steps": steps }));
        }
        for detail in steps.iter().filter_map(|s| s.detail.as_ref()) {
            eprintln!("handoff: warning: {detail}");
        }
        out!(
            "{:<24} {:<10} {:>5} {:>14}",
            "NAME",
            "STATE",
            "FILES",
            "BYTES"
        );
        for s in steps {
            let name = s.path.rsplit('/').next().unwrap_or(&s.path);
            out!("{name:<24} {:<10} {:>5} {:>14}", s.state, s.files, s.bytes);
        }
        Ok(())
    }

    /// `pin`: `{"step","holder","expires_ms"}`.
    pub(crate) fn pinned(&self, pin: &PinInfo, ttl: Duration) -> anyhow::Result<()> {
        if self.json {
            return self.json(pin);
        }
        out!(
            "pinned step {} for {} for {}",
            pin.step,
            pin.holder,
            crate::duration::format(ttl)
        );
        Ok(())
    }

    /// `begin`: `{"run":G}`.
    pub(crate) fn begun(&self, run: u64) -> anyhow::Result<()> {
        if self.json {
            return self.json(&serde_json::json!({ "run": run }));
        }
        out!("{run}");
        Ok(())
    }

    /// `unpin`: `{"step","holder","released":true}`.
    pub(crate) fn released(&self, step: u64, holder: &str) -> anyhow::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Released<'a> {
                step: u64,
                holder: &'a str,
                released: bool,
            }
            let released = true;
            return self.json(&Released {
                step,
                holder,
                released,
            });
        }
        out!("released {holder}'s pin on step {step}");
        Ok(())
    }

    /// `gc`: `{"removed":[..],"kept":[..],"pinned":[..],"staging_removed":[..],
    /// "invalid":[..],"failed":[{"name","error":{"kind","message","path","retryable"}}]}`,
    /// and when `failed` is not empty the gc-incomplete failure as `"error"`.
    pub(crate) fn gc(&self, report: &GcReport) -> anyhow::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Gc<'a> {
                #[serde(flatten)]
                report: &'a GcReport,
                #[serde(skip_serializing_if = "Option::is_none")]
                error: Option<serde_json::Value>,
            }
            let error = gc_error(Some(report));
            return self.json(&Gc { report, error });
        }
        self.gc_text(report)
    }

    fn gc_text(&self, report: &GcReport) -> anyhow::Result<()> {
        let list = |steps: &[u64]| {
            steps
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        out!(
            "gc: removed [{}], kept [{}], pinned [{}], staging removed {}",
            list(&report.removed),
            list(&report.kept),
            list(&report.pinned),
            report.staging_removed.len()
        );
        if !report.invalid.is_empty() {
            out!(
                "gc: left [{}]: committed but not valid, so not counted toward --keep",
                list(&report.invalid)
            );
        }
        for failure in &report.failed {
            out!(
                "gc: could not remove {} ({}): {}",
                failure.name,
                failure.error.kind(),
                failure.error
            );
        }
        Ok(())
    }

    /// `fsck`: `{"entries":[{"name","state","detail","action"}]}`, `detail`
    /// and `action` null when there is nothing to say.
    pub(crate) fn entries(&self, entries: &[FsckEntry]) -> anyhow::Result<()> {
        if self.json {
            return self.json(&json!({ "entries": entries }));
        }
        for e in entries {
            let mut line = format!("{:<32} {}", e.name, e.state);
            if let Some(detail) = &e.detail {
                line.push_str(&format!(": {detail}"));
            }
            if let Some(action) = &e.action {
                line.push_str(&format!(" [{action}]"));
            }
            out!("{line}");
        }
        Ok(())
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_core::{FileEntry, StepState};

    fn version() -> Version {
        Version {
            step: 7,
            run: 0,
            path: "/r/step_7".into(),
            writer: "w".into(),
            created_ms: 1,
            files: vec![FileEntry {
                path: "a".into(),
                size: 3,
                blake3: "00".into(),
            }],
            warnings: vec![],
        }
    }

    #[test]
    fn write_output_has_the_documented_keys_in_order() {
        let report = PublishReport {
            version: version(),
            fsyncs: 9,
            fsync_ms: 1.23456,
            warnings: vec![],
        };
        let json = serde_json::to_string(&Written {
            version: Shown::new(&report.version, Duration::from_millis(5)),
            done: Done::new(report.fsyncs, report.fsync_ms, &report.warnings, None),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"step":7,"run":0,"path":"/r/step_7","writer":"w","created_ms":1,"files":[{"path":"a","size":3,"blake3":"00"}],"bytes":3,"elapsed_ms":5.0,"fsyncs":9,"fsync_ms":1.235,"warnings":[]}"#
        );
    }

    #[test]
    fn fsck_keeps_null_details() {
        let entry = FsckEntry {
            name: "step_1".into(),
            state: StepState::Committed,
            detail: None,
            action: None,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"name":"step_1","state":"committed","detail":null,"action":null}"#
        );
    }

    #[test]
    fn failures_are_one_object_with_kind_code_message_path_and_retry() {
        let failure = Failure {
            retryable: true,
            ..Failure::new("timed-out", "failed: late").at("/r/step_3/STABLE")
        };
        assert_eq!(
            failure.json().to_string(),
            r#"{"error":{"exit_code":3,"kind":"timed-out","message":"failed: late","path":"/r/step_3/STABLE","retryable":true}}"#
        );
        assert_eq!(
            Failure::new(kind::OTHER, "trap").json().to_string(),
            r#"{"error":{"exit_code":1,"kind":"other","message":"trap","path":null,"retryable":false}}"#
        );
    }

    #[test]
    fn exit_codes_follow_the_kind() {
        assert_eq!(exit_code("usage"), 2);
        assert_eq!(exit_code("timed-out"), 3);
        assert_eq!(exit_code("deadline-exceeded"), 3);
        assert_eq!(exit_code("integrity"), 4);
        assert_eq!(exit_code("conflict"), 5);
        assert_eq!(exit_code("gc-incomplete"), 6);
        assert_eq!(exit_code("not-found"), 1);
        assert_eq!(exit_code("no-such-kind"), 1);
        // Every protocol kind is listed.
        use handoff_core::ErrorKind as K;
        for k in [
            K::TimedOut,
            K::Integrity,
            K::Conflict,
            K::NotFound,
            K::InvalidInput,
            K::Durability,
            K::Io,
        ] {
            assert!(KINDS.iter().any(|(name, _)| *name == k.as_str()), "{k}");
        }
    }

    #[test]
    fn a_gc_report_that_could_not_remove_everything_carries_the_error() {
        let mut report = GcReport::default();
        assert_eq!(gc_error(Some(&report)), None);
        report.failed.push(handoff_core::GcFailure {
            name: "step_1".into(),
            error: handoff_core::Error::new(handoff_core::ErrorKind::Io, "busy"),
        });
        let error = gc_error(Some(&report)).unwrap();
        assert_eq!(error["kind"], "gc-incomplete");
        assert_eq!(error["exit_code"], 6);
    }

    #[test]
    fn clap_messages_lose_their_usage_lines() {
        use clap::{Arg, Command};
        let err = Command::new("t")
            .arg(Arg::new("n").long("n").required(true))
            .try_get_matches_from(["t"])
            .unwrap_err();
        assert_eq!(
            clap_message(&err),
            "the following required arguments were not provided: --n <n>"
        );
    }
}
