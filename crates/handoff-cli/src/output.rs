//! What the CLI prints: the text lines, the `--json` objects (the core's
//! types through serde, plus what only the CLI measures), and a failure with
//! its exit code.

use std::time::Duration;

use handoff_core::{
    Error, ErrorKind, FsckEntry, GcReport, PinInfo, PublishReport, StepInfo, Version,
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

/// The documented exit code of a failure of `kind` (`None`: not a protocol
/// outcome).
pub fn exit_code(kind: Option<ErrorKind>) -> u8 {
    match kind {
        Some(ErrorKind::TimedOut) => 3,
        Some(ErrorKind::Integrity) => 4,
        Some(ErrorKind::Conflict) => 5,
        _ => 1,
    }
}

/// The exit code of a gc that went on past what it could not remove
/// (`GcReport::failed` not empty), after printing its report.
pub const GC_INCOMPLETE: u8 = 6;

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

/// A failure's class as messages and `--json` name it: the kind
/// (`timed-out`, `conflict`, ...) or `other`.
pub fn class(kind: Option<ErrorKind>) -> &'static str {
    kind.map_or("other", ErrorKind::as_str)
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
/// and, with `--keep`, `"gc"`.
#[derive(Serialize)]
struct Written<'a> {
    #[serde(flatten)]
    version: Shown<'a>,
    fsyncs: u64,
    fsync_ms: f64,
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    gc: Option<&'a GcReport>,
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
                fsyncs: report.fsyncs,
                fsync_ms: round3(report.fsync_ms),
                warnings: &report.warnings,
                gc,
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
    /// "invalid":[..],"failed":[{"name","error":{"kind","message","path","retryable"}}]}`.
    pub(crate) fn gc(&self, report: &GcReport) -> anyhow::Result<()> {
        if self.json {
            return self.json(report);
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

    /// Any failure: `handoff: error (conflict): ...` on stderr and, with
    /// `--json`, `{"error":{"class":"conflict","exit_code":5,"message":"...",
    /// "path":...,"retryable":false}}` on stdout, so the class survives a
    /// runtime that cannot pass the exit code on. `path` and `retryable` are
    /// the protocol error's (null and false for any other failure).
    pub(crate) fn failure(&self, protocol: Option<&Error>, message: &str) {
        let kind = protocol.map(Error::kind);
        if self.json {
            let _ = self.json(&failure_json(protocol, message));
        }
        match kind {
            None => eprintln!("handoff: error: {message}"),
            Some(kind) => eprintln!("handoff: error ({kind}): {message}"),
        }
    }
}

/// The JSON of a failure (serde_json's maps are sorted: this is the
/// documented order of the keys).
fn failure_json(protocol: Option<&Error>, message: &str) -> serde_json::Value {
    let kind = protocol.map(Error::kind);
    json!({
        "error": {
            "class": class(kind),
            "exit_code": exit_code(kind),
            "message": message,
            "path": protocol.and_then(Error::path),
            "retryable": protocol.is_some_and(Error::is_retryable),
        }
    })
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
            fsyncs: report.fsyncs,
            fsync_ms: round3(report.fsync_ms),
            warnings: &report.warnings,
            gc: None,
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
    fn failures_carry_the_protocol_errors_kind_path_and_retry() {
        let timed_out = Error::new(ErrorKind::TimedOut, "late").at("/r/step_3/STABLE");
        assert_eq!(
            failure_json(Some(&timed_out), "failed: late").to_string(),
            r#"{"error":{"class":"timed-out","exit_code":3,"message":"failed: late","path":"/r/step_3/STABLE","retryable":true}}"#
        );
        assert_eq!(
            failure_json(None, "trap").to_string(),
            r#"{"error":{"class":"other","exit_code":1,"message":"trap","path":null,"retryable":false}}"#
        );
    }

    #[test]
    fn exit_codes_and_classes_follow_the_kind() {
        assert_eq!(exit_code(Some(ErrorKind::TimedOut)), 3);
        assert_eq!(exit_code(Some(ErrorKind::Integrity)), 4);
        assert_eq!(exit_code(Some(ErrorKind::Conflict)), 5);
        assert_eq!(exit_code(Some(ErrorKind::NotFound)), 1);
        assert_eq!(exit_code(None), 1);
        assert_eq!(class(Some(ErrorKind::TimedOut)), "timed-out");
        assert_eq!(class(None), "other");
    }
}
