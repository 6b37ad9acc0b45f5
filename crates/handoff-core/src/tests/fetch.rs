//! Fetch: a verified copy of a shared step in a local root, committed by
//! the staged path, with the shared step pinned only while it is copied.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::{age, assert_error, fixture, opts, published};
use crate::layout::{FETCH_ROOT_MARKER, RUN_SPAN, STAGING_DIR, STEP_PINS_NAME};
use crate::manifest::{MANIFEST_NAME, STABLE_NAME};
use crate::testfs::{NATIVE_COPY, NativeCopy, ON_OPEN, RealPlatform, ScriptPlatform, StdDir};
use crate::*;

const PAYLOAD: &str = "adapter.safetensors";

fn fetch_opts(settle_ms: u64) -> FetchOptions {
    FetchOptions {
        timeout: Some(Duration::from_millis(500)),
        settle: Duration::from_millis(settle_ms),
        poll: Duration::from_millis(5),
        ..FetchOptions::new("fetcher")
    }
}

/// Fetch `target` from the fixture's root into `local`, with the real
/// clock and a settle time of `settle_ms`.
fn fetch_into(
    f: &super::Fixture,
    local: &StdDir,
    target: Target,
    settle_ms: u64,
) -> Result<FetchReport> {
    fetch(
        &f.root,
        local,
        &RealPlatform,
        target,
        &fetch_opts(settle_ms),
    )
}

/// A local root beside the fixture's.
fn local_root(f: &super::Fixture) -> StdDir {
    let dir = f.root.0.parent().unwrap().join("local");
    fs::create_dir_all(&dir).unwrap();
    StdDir(dir)
}

/// The pins on shared `step`.
fn pins(f: &super::Fixture, step: u64) -> Vec<String> {
    names(&f.path(&format!("step_{step}/{STEP_PINS_NAME}")))
}

/// The names in directory `dir`.
fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn staging_left(local: &StdDir) -> Vec<String> {
    match fs::read_dir(local.0.join(STAGING_DIR)) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn on_open(hook: impl FnMut(&str) -> std::io::Result<()> + 'static) {
    ON_OPEN.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
}

fn open_normally() {
    ON_OPEN.with(|h| *h.borrow_mut() = None);
}

/// Rewrite a file with other bytes of the same size: what a size check
/// cannot see.
fn spoil(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_fetched_step_is_committed_locally_with_the_shared_manifest_byte_for_byte() {
    for native in [NativeCopy::Off, NativeCopy::On] {
        NATIVE_COPY.with(|n| n.set(native));
        let f = published(1..=2);
        let local = local_root(&f);
        let report = fetch_into(&f, &local, Target::Latest, 0).unwrap();
        NATIVE_COPY.with(|n| n.set(NativeCopy::Off));
        assert!(report.copied);
        assert_eq!(report.version.step, 2);
        assert_eq!(report.version.path, local.display("step_2"));
        assert_eq!(report.source, f.root.display("step_2"));
        assert_eq!(report.bytes_copied, report.version.bytes());
        assert!(report.fsyncs > 0);
        let shared = f.path("step_2");
        let copy = local.0.join("step_2");
        for name in [MANIFEST_NAME, PAYLOAD, "sub/config.json"] {
            assert_eq!(
                fs::read(shared.join(name)).unwrap(),
                fs::read(copy.join(name)).unwrap()
            );
        }
        assert!(copy.join(STABLE_NAME).is_file());
        // The local root is a root: a reader waits on it, hashes and all.
        let there = wait(
            &local,
            &RealPlatform,
            Target::Latest,
            &super::wait_opts(Verify::Hash, 100),
        )
        .unwrap();
        assert_eq!(there.files, report.version.files);
        assert!(staging_left(&local).is_empty());
        assert!(local.0.join(FETCH_ROOT_MARKER).exists());
    }
}

#[test]
fn a_step_already_fetched_is_not_copied_again() {
    let f = published(1..=1);
    let local = local_root(&f);
    let first = fetch_into(&f, &local, Target::Step(1), 0).unwrap();
    assert!(first.copied);
    let copied = local.0.join("step_1").join(PAYLOAD);
    let before = fs::metadata(&copied).unwrap().modified().unwrap();
    let again = fetch_into(&f, &local, Target::Step(1), 0).unwrap();
    assert!(!again.copied);
    assert_eq!(again.bytes_copied, 0);
    assert_eq!(again.version, first.version);
    assert_eq!(fs::metadata(&copied).unwrap().modified().unwrap(), before);
    assert!(pins(&f, 1).is_empty());
    // A local copy that no longer validates is reported, not replaced.
    fs::write(&copied, b"short").unwrap();
    let err = fetch_into(&f, &local, Target::Step(1), 0).unwrap_err();
    assert_error(&err, ErrorKind::Integrity, &["the local copy", "remove it"]);
    assert_eq!(fs::read(&copied).unwrap(), b"short");
}

#[test]
fn a_local_step_of_another_manifest_is_a_conflict_left_as_is() {
    let f = published(1..=1);
    let other = fixture();
    let local = local_root(&other);
    // The same step number, written by another writer at another time.
    publish(
        &local,
        &f.src,
        &RealPlatform,
        1,
        &WriteOptions {
            created_ms: Some(2),
            ..opts()
        },
    )
    .unwrap();
    let err = fetch_into(&f, &local, Target::Step(1), 0).unwrap_err();
    assert_error(
        &err,
        ErrorKind::Conflict,
        &["manifest differs", "left as is"],
    );
    assert!(pins(&f, 1).is_empty());
}

#[test]
fn a_copy_that_does_not_match_is_retried_then_an_integrity_error_naming_the_shared_file() {
    for native in [NativeCopy::Off, NativeCopy::On] {
        let f = published(1..=1);
        let local = local_root(&f);
        let shared_file = f.path("step_1").join(PAYLOAD);
        spoil(&shared_file);
        let opens = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = opens.clone();
        on_open(move |path| {
            if path.ends_with(PAYLOAD) {
                counted.set(counted.get() + 1);
            }
            Ok(())
        });
        NATIVE_COPY.with(|n| n.set(native));
        let err = fetch_into(&f, &local, Target::Step(1), 50).unwrap_err();
        NATIVE_COPY.with(|n| n.set(NativeCopy::Off));
        open_normally();
        assert_error(
            &err,
            ErrorKind::Integrity,
            &["does not match its hash", "nothing was committed"],
        );
        assert_eq!(
            err.path(),
            Some(f.root.display(&format!("step_1/{PAYLOAD}")).as_str())
        );
        assert!(
            opens.get() > 1,
            "retried from a fresh open: {} opens",
            opens.get()
        );
        // Nothing committed, nothing left, the pin released.
        assert!(!local.0.join("step_1").exists());
        assert!(
            staging_left(&local).is_empty(),
            "{:?}",
            staging_left(&local)
        );
        assert!(pins(&f, 1).is_empty());
    }
}

#[test]
fn a_copy_gone_wrong_is_caught_by_hashing_the_copy() {
    // The kernel's copy spoils a byte: the source is fine, the copy is
    // what a server would load.
    let f = published(1..=1);
    let local = local_root(&f);
    NATIVE_COPY.with(|n| n.set(NativeCopy::Corrupting));
    let err = fetch_into(&f, &local, Target::Step(1), 20).unwrap_err();
    NATIVE_COPY.with(|n| n.set(NativeCopy::Off));
    assert_error(&err, ErrorKind::Integrity, &["does not match its hash"]);
    assert!(!local.0.join("step_1").exists());
}

#[test]
fn a_mismatch_that_settles_within_the_settle_time_is_fetched() {
    let f = published(1..=1);
    let local = local_root(&f);
    let shared_file = f.path("step_1").join(PAYLOAD);
    let good = fs::read(&shared_file).unwrap();
    spoil(&shared_file);
    // The source is right again 40 ms (simulated) into the retries: a
    // lagging cache catching up.
    let platform = ScriptPlatform::new();
    let restore = shared_file.clone();
    platform.at(40, move || fs::write(restore, good).unwrap());
    let report = fetch(
        &f.root,
        &local,
        &platform,
        Target::Step(1),
        &fetch_opts(1000),
    )
    .unwrap();
    assert!(report.copied);
    assert!(local.0.join("step_1").join(STABLE_NAME).exists());
}

#[test]
fn the_pin_is_held_while_copying_and_released_after() {
    let f = published(1..=1);
    let local = local_root(&f);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let record = seen.clone();
    let pin_dir = f.path(&format!("step_1/{STEP_PINS_NAME}"));
    on_open(move |path| {
        if path.ends_with(PAYLOAD) {
            record.borrow_mut().push(names(&pin_dir));
        }
        Ok(())
    });
    let report = fetch_into(&f, &local, Target::Step(1), 0);
    open_normally();
    report.unwrap();
    // The wait opens the file to check it, before it pins; the copy's
    // open comes last, with the pin in place.
    let seen = seen.borrow();
    let copying = seen.last().unwrap();
    assert!(copying.iter().any(|p| p.starts_with("fetcher")), "{seen:?}");
    // gc of the shared root during the copy would have found it pinned;
    // after, it is free to go.
    assert!(pins(&f, 1).is_empty());
}

#[test]
fn the_pin_is_released_after_a_failure() {
    let f = published(1..=1);
    let local = local_root(&f);
    on_open(|path| {
        if path.ends_with(PAYLOAD) {
            Err(std::io::Error::other("injected read failure"))
        } else {
            Ok(())
        }
    });
    let err = fetch_into(&f, &local, Target::Step(1), 0);
    open_normally();
    let err = err.unwrap_err();
    assert!(err.message().contains("injected read failure"), "{err}");
    assert!(pins(&f, 1).is_empty());
    assert!(!local.0.join("step_1").exists());
}

#[test]
fn local_copies_order_runs_as_the_shared_root_does() {
    let f = published(1..=3);
    let local = local_root(&f);
    fetch_into(&f, &local, Target::Step(3), 0).unwrap();
    let g = begin(&f.root, "step_").unwrap();
    publish(
        &f.root,
        &f.src,
        &RealPlatform,
        1,
        &WriteOptions { run: g, ..opts() },
    )
    .unwrap();
    // The new run's first step comes after the old run's step 3, shared
    // and local alike, with no run begun on the local root.
    let report = fetch_into(&f, &local, Target::After(3), 0).unwrap();
    assert_eq!(report.version.step, g * RUN_SPAN + 1);
    assert_eq!(report.version.run, g);
    // An old run's step fetched later does not become the local latest.
    fetch_into(&f, &local, Target::Step(2), 0).unwrap();
    let latest = latest(&local, "step_", Verify::Size).unwrap().unwrap();
    assert_eq!(latest.step, g * RUN_SPAN + 1);
}

#[test]
fn fsck_repair_removes_a_dead_fetch_staging_after_the_fetch_grace() {
    let f = published(1..=1);
    let local = local_root(&f);
    fetch_into(&f, &local, Target::Step(1), 0).unwrap();
    // What a fetch killed mid-copy leaves, two minutes ago: older than a
    // fetch root's grace, far younger than a shared root's hour.
    let staging = local.0.join(STAGING_DIR).join("step_2.00000000000000ab");
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join(PAYLOAD), b"partial").unwrap();
    handoff_testkit::age_tree(&staging, Duration::from_secs(120)).unwrap();
    let shared_staging = f.path(STAGING_DIR).join("step_2.00000000000000ab");
    fs::create_dir_all(&shared_staging).unwrap();
    handoff_testkit::age_tree(&shared_staging, Duration::from_secs(120)).unwrap();

    let entries = fsck(&local, &RealPlatform, "step_", true).unwrap();
    let repaired = entries
        .iter()
        .find(|e| e.state == StepState::Staging)
        .unwrap();
    assert_eq!(repaired.action.as_deref(), Some("removed"), "{repaired:?}");
    assert!(!staging.exists());
    assert!(local.0.join("step_1").join(STABLE_NAME).exists());
    // A shared root keeps its grace: a publisher may be at work.
    let entries = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    let left = entries
        .iter()
        .find(|e| e.state == StepState::Staging)
        .unwrap();
    assert_eq!(left.action, None, "{left:?}");
    assert!(shared_staging.exists());
    // gc of the local root takes it too.
    fs::create_dir_all(&staging).unwrap();
    handoff_testkit::age_tree(&staging, Duration::from_secs(120)).unwrap();
    let report = gc(&local, &RealPlatform, &GcOptions::keep(1)).unwrap();
    assert_eq!(report.staging_removed.len(), 1, "{report:?}");
    // Long abandoned, it goes from either.
    age(&shared_staging);
    let entries = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action.as_deref() == Some("removed"))
    );
}

#[test]
fn a_copy_longer_than_half_the_ttl_renews_the_pin_between_files() {
    let f = published(1..=1);
    let local = local_root(&f);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let record = seen.clone();
    let pin_dir = f.path(&format!("step_1/{STEP_PINS_NAME}"));
    // Each payload file takes 30 ms to open: the first copy alone outlasts
    // half of a 40 ms ttl.
    on_open(move |path| {
        if path.starts_with("step_1/") && !path.ends_with(MANIFEST_NAME) {
            std::thread::sleep(Duration::from_millis(30));
            record.borrow_mut().push(names(&pin_dir));
        }
        Ok(())
    });
    let options = FetchOptions {
        ttl: Duration::from_millis(40),
        ..fetch_opts(0)
    };
    let report = fetch(&f.root, &local, &RealPlatform, Target::Step(1), &options);
    open_normally();
    report.unwrap();
    // The pins seen while copying: one, then another (renewed) in its place.
    let mut pins: Vec<String> = seen.borrow().iter().flatten().cloned().collect();
    pins.dedup();
    assert!(pins.len() >= 2, "never renewed: {:?}", seen.borrow());
    assert!(
        seen.borrow().iter().all(|held| held.len() <= 1),
        "{:?}",
        seen.borrow()
    );
    assert!(self::pins(&f, 1).is_empty());
}
