//! Hostile inputs: a special file where a regular file should be is refused
//! unopened (an open of a FIFO would block for good), only a regular file
//! `STABLE` commits, and one unreadable step does not hide older ones.

use std::fs;
use std::io;
use std::sync::mpsc;
use std::time::Duration;

use handoff_testkit::mkfifo;

use super::{Fixture, assert_error, hooked, integrity_error, published};
use crate::testfs::{Op, RealPlatform};
use crate::*;

/// Run `f` on a thread and fail if it has not returned within 20 s: what
/// these tests guard against is a call that never returns.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("blocked: the call did not return within 20 s")
}

/// Steps 1 and 2 published, with `rel` of step 2 replaced by a FIFO.
fn fifo_in_step_2(rel: &str) -> Fixture {
    let f = published(1..=2);
    let path = f.path(&format!("step_2/{rel}"));
    fs::remove_file(&path).unwrap();
    mkfifo(&path).unwrap();
    f
}

#[test]
fn a_fifo_payload_file_is_an_integrity_error_not_a_hang() {
    let why = bounded(|| {
        let f = fifo_in_step_2("adapter.safetensors");
        integrity_error(f.wait_for(Target::Step(2), Verify::Size, 100))
    });
    assert!(
        why.contains("step_2/adapter.safetensors is a FIFO, not a regular file"),
        "{why}"
    );
}

#[test]
fn fsck_refuses_a_fifo_manifest_without_opening_it() {
    let entries = bounded(|| {
        let f = fifo_in_step_2(MANIFEST);
        fsck(&f.root, &RealPlatform, "step_", false).unwrap()
    });
    let step_2 = entries.iter().find(|e| e.name == "step_2").unwrap();
    assert_eq!(step_2.state, StepState::Corrupt);
    let detail = step_2.detail.as_deref().unwrap();
    assert!(
        detail.contains("handoff.manifest.json is a FIFO"),
        "{detail}"
    );
}

#[test]
fn pin_refuses_a_fifo_stable_without_opening_it() {
    let err = bounded(|| pin_step(&fifo_in_step_2("STABLE"), 2).unwrap_err());
    // Not committed, so not found, as pinning any uncommitted step is.
    assert_error(
        &err,
        ErrorKind::NotFound,
        &["step_2/STABLE is a FIFO, not a regular file"],
    );
}

const MANIFEST: &str = "handoff.manifest.json";

fn pin_step(f: &Fixture, step: u64) -> Result<PinInfo> {
    pin(
        &f.root,
        &RealPlatform,
        "step_",
        step,
        "h",
        Duration::from_secs(60),
    )
}

#[test]
fn wait_latest_skips_a_step_with_a_fifo_manifest_and_says_so() {
    let v = bounded(|| {
        let f = fifo_in_step_2(MANIFEST);
        f.wait_for(Target::Latest, Verify::Size, 100).unwrap()
    });
    assert_eq!(v.step, 1);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(
        v.warnings[0].contains("step 2 skipped")
            && v.warnings[0].contains("step_2/handoff.manifest.json is a FIFO"),
        "{:?}",
        v.warnings
    );
}

#[test]
fn a_stable_that_is_a_directory_does_not_commit() {
    let f = published(1..=2);
    fs::remove_file(f.path("step_2/STABLE")).unwrap();
    fs::create_dir(f.path("step_2/STABLE")).unwrap();
    let latest = f.wait_for(Target::Latest, Verify::Size, 100).unwrap();
    assert_eq!(latest.step, 1);
    let err = f.wait_for(Target::Step(2), Verify::Size, 50).unwrap_err();
    assert_error(
        &err,
        ErrorKind::TimedOut,
        &["step_2/STABLE is a directory, not a regular file"],
    );
    let steps = list(&f.root, "step_").unwrap();
    assert_eq!(steps[1].state, StepState::Incomplete, "{steps:?}");
    let entries = fsck(&f.root, &RealPlatform, "step_", false).unwrap();
    let step_2 = entries.iter().find(|e| e.name == "step_2").unwrap();
    assert_eq!(step_2.state, StepState::Incomplete);
    assert!(
        step_2
            .detail
            .as_deref()
            .unwrap()
            .contains("STABLE is a directory"),
        "{step_2:?}"
    );
    // gc's keep count: step 2 is not the newest committed step, step 1 is.
    let report = f.gc(1).unwrap();
    assert_eq!(report.kept, vec![1], "{report:?}");
    assert!(f.path("step_1").exists());
}

/// An `EIO` from every look at `step_2/STABLE`: a step that cannot be read.
fn eio_on_stable_2(op: Op, path: &str) -> Option<io::Error> {
    let looks = matches!(op, Op::Open | Op::Stat);
    (looks && path == "step_2/STABLE").then(|| io::Error::from_raw_os_error(5))
}

#[test]
fn wait_latest_and_after_skip_an_unreadable_step_with_a_warning() {
    let options = super::wait_opts(Verify::Size, 100);
    // The newest step for --latest, the next one for --after.
    for (steps, target, found) in [(2, Target::Latest, 1), (3, Target::After(1), 3)] {
        let f = published(1..=steps);
        let fs = hooked(&f, eio_on_stable_2);
        let v = wait(&fs, &RealPlatform, target, &options).unwrap();
        assert_eq!(v.step, found, "{target:?}");
        assert!(
            v.warnings.iter().any(|w| w.contains("step 2 skipped")
                && w.contains("step_2/STABLE")
                && w.contains("Input/output error")),
            "{target:?}: {:?}",
            v.warnings
        );
    }
    // Asked for by number, it cannot be skipped.
    let f = published(1..=2);
    let fs = hooked(&f, eio_on_stable_2);
    let err = wait(&fs, &RealPlatform, Target::Step(2), &options).unwrap_err();
    assert_error(&err, ErrorKind::Io, &["step_2/STABLE"]);
}

#[test]
fn ls_and_fsck_go_on_past_an_unreadable_step() {
    let f = published(1..=3);
    let fs = hooked(&f, eio_on_stable_2);
    let steps = list(&fs, "step_").unwrap();
    let states: Vec<_> = steps.iter().map(|s| s.state).collect();
    use StepState::{Committed, Corrupt};
    assert_eq!(states, [Committed, Corrupt, Committed]);
    let detail = steps[1].detail.as_deref().unwrap();
    assert!(detail.contains("step_2/STABLE"), "{detail}");
    let entries = fsck(&fs, &RealPlatform, "step_", false).unwrap();
    let step_2 = entries.iter().find(|e| e.name == "step_2").unwrap();
    assert_eq!(step_2.state, Corrupt);
    assert!(
        step_2.detail.as_deref().unwrap().contains("step_2/STABLE"),
        "{step_2:?}"
    );
}

#[test]
fn the_protocol_opens_files_to_read_only_through_open_file() {
    let sources = [
        ("backend.rs", include_str!("../backend.rs")),
        ("read.rs", include_str!("../read.rs")),
        ("retain.rs", include_str!("../retain.rs")),
        ("runs.rs", include_str!("../runs.rs")),
        ("tree.rs", include_str!("../tree.rs")),
        ("validate.rs", include_str!("../validate.rs")),
        ("write.rs", include_str!("../write.rs")),
    ];
    for (name, source) in sources {
        assert!(
            !source.contains(".open("),
            "{name} calls Storage::open directly: use storage::open_file"
        );
    }
    let storage = include_str!("../storage.rs");
    assert_eq!(storage.matches(".open(").count(), 1, "open_file alone");
}
