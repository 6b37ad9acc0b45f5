//! What `--json` prints: the JSON shapes of the CLI contract, one struct per
//! shape, so both programs print the same keys in the same order.

use std::time::Duration;

use handoff_core::{FileEntry, FsckEntry, GcReport, PinInfo, StepInfo, Version};
use serde::Serialize;

use crate::{Class, Written};

/// `publish`, `seal`, `wait` and each `watch` line:
/// `{"step","path","writer","created_ms","files":[{"path","size","blake3"}],"bytes","elapsed_ms"}`.
#[derive(Serialize)]
pub(crate) struct VersionOut<'a> {
    step: u64,
    path: &'a str,
    writer: &'a str,
    created_ms: u64,
    files: &'a [FileEntry],
    bytes: u64,
    elapsed_ms: f64,
}

impl<'a> VersionOut<'a> {
    pub(crate) fn new(v: &'a Version, elapsed: Duration) -> Self {
        VersionOut {
            step: v.step,
            path: &v.path,
            writer: &v.writer,
            created_ms: v.created_ms,
            files: &v.files,
            bytes: crate::bytes(v),
            elapsed_ms: round3(elapsed.as_secs_f64() * 1000.0),
        }
    }
}

/// `publish` and `seal`: a version, then
/// `"syncs","fsyncs","fsync_ms","warnings"` and, with `--keep`, `"gc"`.
#[derive(Serialize)]
pub(crate) struct Write<'a> {
    #[serde(flatten)]
    version: VersionOut<'a>,
    syncs: u32,
    fsyncs: u64,
    fsync_ms: f64,
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    gc: Option<Gc<'a>>,
}

impl<'a> Write<'a> {
    pub(crate) fn new(w: &'a Written, elapsed: Duration, gc: Option<&'a GcReport>) -> Self {
        Write {
            version: VersionOut::new(&w.report.version, elapsed),
            syncs: w.report.syncs,
            fsyncs: w.fsyncs,
            fsync_ms: round3(w.fsync_ms),
            warnings: &w.report.warnings,
            gc: gc.map(Gc::new),
        }
    }
}

/// `gc`: `{"removed":[..],"kept":[..],"pinned":[..],"staging_removed":[..]}`.
#[derive(Serialize)]
pub(crate) struct Gc<'a> {
    removed: &'a [u64],
    kept: &'a [u64],
    pinned: &'a [u64],
    staging_removed: &'a [String],
}

impl<'a> Gc<'a> {
    pub(crate) fn new(r: &'a GcReport) -> Self {
        Gc {
            removed: &r.removed,
            kept: &r.kept,
            pinned: &r.pinned,
            staging_removed: &r.staging_removed,
        }
    }
}

/// `ls`: `{"steps":[{"step","path","state","files","bytes"}]}`.
#[derive(Serialize)]
pub(crate) struct Steps<'a> {
    steps: Vec<Step<'a>>,
}

#[derive(Serialize)]
struct Step<'a> {
    step: u64,
    path: &'a str,
    state: &'static str,
    files: u32,
    bytes: u64,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(steps: &'a [StepInfo]) -> Self {
        Steps {
            steps: steps
                .iter()
                .map(|s| Step {
                    step: s.step,
                    path: &s.path,
                    state: s.state.as_str(),
                    files: s.files,
                    bytes: s.bytes,
                })
                .collect(),
        }
    }
}

/// `pin`: `{"step","holder","expires_ms"}`.
#[derive(Serialize)]
pub(crate) struct Pin<'a> {
    step: u64,
    holder: &'a str,
    expires_ms: u64,
}

impl<'a> Pin<'a> {
    pub(crate) fn new(p: &'a PinInfo) -> Self {
        Pin {
            step: p.step,
            holder: &p.holder,
            expires_ms: p.expires_ms,
        }
    }
}

/// `unpin`: `{"step","holder","released":true}`.
#[derive(Serialize)]
pub(crate) struct Unpinned<'a> {
    pub(crate) step: u64,
    pub(crate) holder: &'a str,
    pub(crate) released: bool,
}

/// `fsck`: `{"entries":[{"name","state","detail","action"}]}`, `detail` and
/// `action` null when there is nothing to say.
#[derive(Serialize)]
pub(crate) struct Entries<'a> {
    entries: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    state: &'static str,
    detail: Option<&'a str>,
    action: Option<&'a str>,
}

impl<'a> Entries<'a> {
    pub(crate) fn new(entries: &'a [FsckEntry]) -> Self {
        Entries {
            entries: entries
                .iter()
                .map(|e| Entry {
                    name: &e.name,
                    state: e.state.as_str(),
                    detail: e.detail.as_deref(),
                    action: e.action.as_deref(),
                })
                .collect(),
        }
    }
}

/// Any failure under `--json`:
/// `{"error":{"class":"conflict","exit_code":5,"message":"..."}}`.
#[derive(Serialize)]
pub(crate) struct Failure<'a> {
    error: FailureBody<'a>,
}

#[derive(Serialize)]
struct FailureBody<'a> {
    class: &'static str,
    exit_code: u8,
    message: &'a str,
}

impl<'a> Failure<'a> {
    pub(crate) fn new(class: Class, message: &'a str) -> Self {
        Failure {
            error: FailureBody {
                class: class.as_str(),
                exit_code: class.exit_code(),
                message,
            },
        }
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_core::StepState;

    fn version() -> Version {
        Version {
            step: 7,
            path: "/r/step_7".into(),
            writer: "w".into(),
            created_ms: 1,
            files: vec![FileEntry {
                path: "a".into(),
                size: 3,
                blake3: "00".into(),
            }],
        }
    }

    #[test]
    fn write_output_has_the_documented_keys_in_order() {
        let written = Written {
            report: handoff_core::PublishReport {
                version: version(),
                syncs: 9,
                warnings: vec![],
            },
            fsyncs: 9,
            fsync_ms: 1.23456,
        };
        let json =
            serde_json::to_string(&Write::new(&written, Duration::from_millis(5), None)).unwrap();
        assert_eq!(
            json,
            r#"{"step":7,"path":"/r/step_7","writer":"w","created_ms":1,"files":[{"path":"a","size":3,"blake3":"00"}],"bytes":3,"elapsed_ms":5.0,"syncs":9,"fsyncs":9,"fsync_ms":1.235,"warnings":[]}"#
        );
    }

    #[test]
    fn fsck_keeps_null_details() {
        let entries = [FsckEntry {
            name: "step_1".into(),
            state: StepState::Committed,
            detail: None,
            action: None,
        }];
        assert_eq!(
            serde_json::to_string(&Entries::new(&entries)).unwrap(),
            r#"{"entries":[{"name":"step_1","state":"committed","detail":null,"action":null}]}"#
        );
    }

    #[test]
    fn failure_names_class_and_code() {
        assert_eq!(
            serde_json::to_string(&Failure::new(Class::Conflict, "taken")).unwrap(),
            r#"{"error":{"class":"conflict","exit_code":5,"message":"taken"}}"#
        );
    }
}
