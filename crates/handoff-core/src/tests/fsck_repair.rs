//! fsck --repair removes only on definite evidence, seen twice a settle
//! period apart, in a tree older than the grace period, and never a pinned
//! step. Trees are made old by setting their times back (see [`age`]); the
//! settle period passes at once on a [`ScriptPlatform`].

use std::fs;
use std::io;

use super::{age, fixture, payload, published};
use crate::manifest::MANIFEST_NAME;
use crate::testfs::{ON_OPEN, ScriptPlatform};
use crate::*;

const HOUR_MS: u64 = 3_600_000;

/// `fsck --repair` with the default grace and settle, whose settle sleep
/// passes at once.
fn repair(f: &super::Fixture, platform: &ScriptPlatform) -> Vec<FsckEntry> {
    fsck(&f.root, platform, "step_", true).unwrap()
}

#[track_caller]
fn entry<'a>(entries: &'a [FsckEntry], name: &str) -> &'a FsckEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in {entries:?}"))
}

/// Asserts that `name` was left, with `why` in its detail.
#[track_caller]
fn assert_left(f: &super::Fixture, entries: &[FsckEntry], name: &str, why: &str) {
    let e = entry(entries, name);
    assert_eq!(e.action, None, "{e:?}");
    assert!(
        e.detail.as_deref().is_some_and(|d| d.contains(why)),
        "{e:?} should say {why:?}"
    );
    assert!(f.path(name).exists(), "{name} was removed");
}

#[track_caller]
fn assert_removed(f: &super::Fixture, entries: &[FsckEntry], name: &str) {
    assert_eq!(
        entry(entries, name).action.as_deref(),
        Some("removed"),
        "{entries:?}"
    );
    assert!(!f.path(name).exists(), "{name} is left");
}

/// Make this thread's opens of a path ending in one of `failing`'s suffixes
/// fail with its errno.
fn fail_open(failing: Vec<(String, i32)>) {
    ON_OPEN.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move |path: &str| {
            match failing.iter().find(|(suffix, _)| path.ends_with(suffix)) {
                Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Ok(()),
            }
        }))
    });
}

#[test]
fn repair_leaves_a_step_it_cannot_read() {
    // EIO from a soft NFS mount, EACCES: errors, not evidence of damage.
    const EIO: i32 = 5;
    const EACCES: i32 = 13;
    let f = published(1..=3);
    age(&f.root.0);
    fail_open(vec![
        (format!("step_1/{MANIFEST_NAME}"), EIO),
        ("step_2/adapter.safetensors".to_string(), EACCES),
    ]);
    let entries = repair(&f, &ScriptPlatform::new());
    ON_OPEN.with(|hook| *hook.borrow_mut() = None);
    assert_left(&f, &entries, "step_1", "os error 5");
    assert_left(&f, &entries, "step_2", "os error 13");
    assert_eq!(entry(&entries, "step_1").state, StepState::Corrupt);
    for step in [1, 2] {
        assert!(f.path(&format!("step_{step}/STABLE")).exists());
        f.wait_for(Target::Step(step), Verify::Hash, 0).unwrap();
    }
}

#[test]
fn repair_never_removes_a_pinned_step() {
    let f = fixture();
    f.publish(1).unwrap();
    f.publish_v1(2);
    f.publish(3).unwrap();
    for step in [1, 2] {
        f.pin(step, "srv", 10 * HOUR_MS).unwrap();
        fs::write(
            f.path(&format!("step_{step}/adapter.safetensors")),
            b"short",
        )
        .unwrap();
    }
    age(&f.root.0);
    let entries = repair(&f, &ScriptPlatform::new());
    for name in ["step_1", "step_2"] {
        assert_left(&f, &entries, name, "pinned");
        assert!(f.path(&format!("{name}/STABLE")).exists());
    }
}

#[test]
fn repair_removes_an_incomplete_step_only_once_it_is_old() {
    let f = published(1..=1);
    payload(&f.path("step_2"), "x"); // a crashed in-place writer
    age(&f.path("step_2"));
    payload(&f.path("step_3"), "x"); // an in-place writer at work
    let entries = repair(&f, &ScriptPlatform::new());
    assert_removed(&f, &entries, "step_2");
    assert_left(&f, &entries, "step_3", "grace");
}

#[test]
fn repair_removes_a_wrong_size_step_only_if_still_wrong_after_settling() {
    let f = published(1..=3);
    let lagging = f.path("step_1/adapter.safetensors");
    let whole = fs::read(&lagging).unwrap();
    fs::write(&lagging, b"short").unwrap();
    fs::write(f.path("step_2/adapter.safetensors"), b"short").unwrap();
    // Read whole and wrong: no view's lag explains it.
    fs::write(f.path(&format!("step_3/{MANIFEST_NAME}")), b"{}").unwrap();
    age(&f.root.0);
    // By the second look, step 1 is whole again (as a lagging view catches
    // up), and nothing in it is younger.
    let platform = ScriptPlatform::new();
    platform.at(1, move || {
        fs::write(&lagging, whole).unwrap();
        age(&lagging);
    });
    let entries = repair(&f, &platform);
    assert_left(&f, &entries, "step_1", "settle");
    f.wait_for(Target::Step(1), Verify::Hash, 0).unwrap();
    assert_removed(&f, &entries, "step_2");
    assert_removed(&f, &entries, "step_3");
}

#[test]
fn repair_removes_only_abandoned_staging() {
    let f = published(1..=1);
    payload(&f.path(".handoff/staging/step_2.0001"), "x");
    age(&f.path(".handoff/staging/step_2.0001"));
    payload(&f.path(".handoff/staging/step_3.0002"), "x"); // a publisher at work
    let entries = repair(&f, &ScriptPlatform::new());
    assert_removed(&f, &entries, ".handoff/staging/step_2.0001");
    assert_left(&f, &entries, ".handoff/staging/step_3.0002", "grace");
}
