//! The protocol against a real directory.

use std::fs;
use std::path::Path;
use std::time::Duration;

use handoff_testkit::Payload;

use crate::manifest::{MANIFEST_NAME, Manifest, STABLE_NAME};
use crate::testfs::{
    Hooked, LISTINGS, NATIVE_COPY, NativeCopy, Op, RealPlatform, ScriptPlatform, StdDir, no_hook,
};
use crate::*;

fn opts() -> WriteOptions {
    WriteOptions {
        prefix: "step_".into(),
        writer: "test".into(),
        created_ms: Some(1),
        run: 0,
    }
}

fn wait_opts(verify: Verify, timeout_ms: u64) -> WaitOptions {
    WaitOptions {
        prefix: "step_".into(),
        verify,
        timeout: Some(Duration::from_millis(timeout_ms)),
        settle: Duration::ZERO,
        poll: Duration::from_millis(5),
        pin: None,
    }
}

fn gc_opts(keep: u32) -> GcOptions {
    GcOptions {
        prefix: "step_".into(),
        keep,
        grace: Duration::from_secs(60),
        skew: Duration::ZERO,
    }
}

fn payload(dir: &Path, tag: &str) {
    Payload::new()
        .with("adapter.safetensors", format!("weights {tag}").repeat(1000))
        .with("sub/config.json", format!("{{\"tag\":\"{tag}\"}}"))
        .write_to(dir)
        .unwrap();
}

/// Set every time in the tree at `path` two hours back: what a crash that
/// long ago left (older than gc's and fsck's grace period).
fn age(path: &Path) {
    handoff_testkit::age_tree(path, Duration::from_secs(2 * 3600)).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: StdDir,
    src: StdDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("src");
    fs::create_dir(&root).unwrap();
    payload(&src, "a");
    Fixture {
        root: StdDir(root),
        src: StdDir(src),
        _tmp: tmp,
    }
}

/// A fixture whose root holds `steps`, each published.
fn published(steps: std::ops::RangeInclusive<u64>) -> Fixture {
    let f = fixture();
    for step in steps {
        f.publish(step).unwrap();
    }
    f
}

impl Fixture {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.root.0.join(rel)
    }
    fn publish(&self, step: u64) -> Result<PublishReport> {
        publish(&self.root, &self.src, &RealPlatform, step, &opts())
    }
    /// `wait` with the real clock, `verify` and a timeout of `timeout_ms`.
    fn wait_for(&self, target: Target, verify: Verify, timeout_ms: u64) -> Result<Version> {
        wait(
            &self.root,
            &RealPlatform,
            target,
            &wait_opts(verify, timeout_ms),
        )
    }
    /// Pin `step` for `holder` for `ttl_ms`.
    fn pin(&self, step: u64, holder: &str, ttl_ms: u64) -> Result<PinInfo> {
        let ttl = Duration::from_millis(ttl_ms);
        pin(&self.root, &RealPlatform, "step_", step, holder, ttl)
    }
    /// `gc` keeping `keep`, with no clock skew.
    fn gc(&self, keep: u32) -> Result<GcReport> {
        gc(&self.root, &RealPlatform, &gc_opts(keep))
    }
    /// Publish `step` as a version 1 writer did: manifest version 1, no pin
    /// directory in the step.
    fn publish_v1(&self, step: u64) {
        self.publish(step).unwrap();
        let manifest = self.path(&format!("step_{step}/{MANIFEST_NAME}"));
        let text = fs::read_to_string(&manifest).unwrap();
        fs::write(
            &manifest,
            text.replacen(r#""version":2"#, r#""version":1"#, 1),
        )
        .unwrap();
        fs::remove_dir(self.path(&format!("step_{step}/.handoff.pins"))).unwrap();
    }
    /// The file names of the version 2 pins on `step`.
    fn pins(&self, step: u64) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(&format!("step_{step}/.handoff.pins")))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[test]
fn publish_then_wait_returns_the_version() {
    let f = fixture();
    let report = f.publish(3).unwrap();
    assert_eq!(report.version.files.len(), 2);
    assert!(report.fsyncs >= 6, "{report:?}");
    assert!(f.path("step_3/STABLE").exists());
    let got = f.wait_for(Target::Step(3), Verify::Hash, 1000).unwrap();
    assert_eq!(got, report.version);
    // Staging is empty after a publish.
    assert_eq!(fs::read_dir(f.path(".handoff/staging")).unwrap().count(), 0);
}

#[test]
fn seal_in_place_matches_publish_bytes() {
    let f = fixture();
    f.publish(1).unwrap();
    payload(&f.path("step_2"), "a");
    let sealed = seal(&f.root, &RealPlatform, 2, &opts()).unwrap();
    assert_eq!(
        sealed.version.files,
        f.wait_for(Target::Step(1), Verify::Hash, 0).unwrap().files
    );
    let m1 = Manifest::parse(&fs::read(f.path("step_1").join(MANIFEST_NAME)).unwrap()).unwrap();
    let m2 = fs::read(f.path("step_2").join(MANIFEST_NAME)).unwrap();
    assert_eq!(
        Manifest { step: 2, ..m1 }.to_bytes(),
        m2,
        "same input, same bytes"
    );
}

#[test]
fn second_publish_conflicts_and_first_stays() {
    let f = fixture();
    f.publish(5).unwrap();
    let before = fs::read(f.path("step_5").join(MANIFEST_NAME)).unwrap();
    payload(&f.src.0, "b");
    // The conflict names what is in the way; retrying cannot help.
    let err = f.publish(5).unwrap_err();
    assert_error(&err, ErrorKind::Conflict, &["step_5"]);
    assert_eq!(err.path(), Some(f.root.display("step_5").as_str()));
    assert!(!err.is_retryable());
    let err = seal(&f.root, &RealPlatform, 5, &opts()).unwrap_err();
    assert_error(&err, ErrorKind::Conflict, &["step_5/STABLE"]);
    assert_eq!(
        fs::read(f.path("step_5").join(MANIFEST_NAME)).unwrap(),
        before
    );
    assert_eq!(fs::read_dir(f.path(".handoff/staging")).unwrap().count(), 0);
}

#[test]
fn seal_refuses_symlinks_before_writing_anything() {
    let f = fixture();
    payload(&f.path("step_4"), "a");
    std::os::unix::fs::symlink("/etc/passwd", f.path("step_4/sub/link")).unwrap();
    let err = seal(&f.root, &RealPlatform, 4, &opts()).unwrap_err();
    assert_error(
        &err,
        ErrorKind::InvalidInput,
        &["sub/link", "symbolic link"],
    );
    assert!(!f.path("step_4/STABLE").exists());
    assert!(!f.path("step_4").join(MANIFEST_NAME).exists());
}

#[test]
fn publish_refuses_names_the_protocol_reserves_at_the_top_of_the_source() {
    // A top-level `STABLE`, manifest, pin folder or seal claim in the source
    // would stand for the protocol's own in the new step, or be dropped.
    for name in [STABLE_NAME, MANIFEST_NAME, ".handoff.pins", ".handoff.seal"] {
        let f = fixture();
        if name.ends_with("pins") || name.ends_with("seal") {
            fs::create_dir(f.src.0.join(name)).unwrap();
        } else {
            fs::write(f.src.0.join(name), b"x").unwrap();
        }
        let err = f.publish(1).unwrap_err();
        assert_error(&err, ErrorKind::InvalidInput, &[name, "reserves"]);
        assert_eq!(err.path(), Some(f.src.display(name).as_str()));
        assert!(!f.path("step_1").exists(), "{name}: nothing published");
        let staged = fs::read_dir(f.path(".handoff/staging")).map_or(0, |d| d.count());
        assert_eq!(staged, 0, "{name}: nothing staged");
    }
    // Deeper down they are payload like any other name.
    let f = fixture();
    fs::write(f.src.0.join("sub").join(STABLE_NAME), b"x").unwrap();
    fs::write(f.src.0.join("sub").join(MANIFEST_NAME), b"{}").unwrap();
    let report = f.publish(1).unwrap();
    assert_eq!(report.version.files.len(), 4);
}

#[test]
fn a_writer_id_too_long_is_refused_before_anything_is_written() {
    let f = fixture();
    payload(&f.path("step_2"), "a");
    let long = WriteOptions::new("w".repeat(crate::write::MAX_WRITER_BYTES + 1));
    let err = publish(&f.root, &f.src, &RealPlatform, 1, &long).unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["writer id", "4097 bytes"]);
    let err = seal(&f.root, &RealPlatform, 2, &long).unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["writer id", "4097 bytes"]);
    assert!(!f.path("step_1").exists());
    assert!(!f.path(".handoff/staging").exists());
    assert!(!f.path("step_2/.handoff.seal").exists());
    assert!(!f.path("step_2").join(MANIFEST_NAME).exists());
    // The longest allowed id publishes, and readers accept it.
    let longest = WriteOptions::new("w".repeat(crate::write::MAX_WRITER_BYTES));
    publish(&f.root, &f.src, &RealPlatform, 1, &longest).unwrap();
    let version = f.wait_for(Target::Step(1), Verify::Size, 0).unwrap();
    assert_eq!(version.writer.len(), crate::write::MAX_WRITER_BYTES);
}

/// That `err` is of `kind` and its message names every one of `needles`.
#[track_caller]
fn assert_error(err: &Error, kind: ErrorKind, needles: &[&str]) {
    assert_eq!(err.kind(), kind, "{err}");
    for needle in needles {
        assert!(err.message().contains(needle), "{needle:?} not in {err}");
    }
}

/// The message of the integrity error `result` must be.
#[track_caller]
fn integrity_error<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Err(e) if e.kind() == ErrorKind::Integrity => e.message().to_string(),
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

#[test]
fn truncated_payload_is_an_integrity_error_naming_the_file() {
    let f = fixture();
    f.publish(1).unwrap();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(f.path("step_1/adapter.safetensors"))
        .unwrap();
    file.set_len(10).unwrap();
    let m = integrity_error(f.wait_for(Target::Step(1), Verify::Size, 100));
    assert!(
        m.contains("adapter.safetensors") && m.contains("short: 10 bytes"),
        "{m}"
    );
}

#[test]
fn same_size_corruption_needs_hash_verify() {
    let f = fixture();
    f.publish(1).unwrap();
    let path = f.path("step_1/sub/config.json");
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert!(f.wait_for(Target::Step(1), Verify::Size, 0).is_ok());
    let m = integrity_error(f.wait_for(Target::Step(1), Verify::Hash, 0));
    assert!(m.contains("config.json") && m.contains("hash"), "{m}");
}

#[test]
fn unsafe_manifest_paths_fail_at_once() {
    let f = fixture();
    f.publish(1).unwrap();
    let path = f.path("step_1").join(MANIFEST_NAME);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("sub/config.json", "../../etc/passwd");
    fs::write(&path, text).unwrap();
    let m = integrity_error(f.wait_for(Target::Step(1), Verify::Size, 60_000));
    assert!(m.contains("unsafe path"), "{m}");
}

#[test]
fn a_step_never_committed_times_out() {
    let f = fixture();
    payload(&f.path("step_9"), "a"); // written, never sealed
    let err = f.wait_for(Target::Step(9), Verify::Size, 50).unwrap_err();
    assert_error(&err, ErrorKind::TimedOut, &["step_9/STABLE"]);
}

#[test]
fn latest_skips_incomplete_corrupt_and_stray() {
    let f = fixture();
    f.publish(1).unwrap();
    f.publish(2).unwrap();
    payload(&f.path("step_7"), "x"); // incomplete
    fs::create_dir(f.path("step_007")).unwrap(); // stray
    fs::write(f.path("step_8"), "a file").unwrap(); // stray
    fs::remove_file(f.path("step_2/sub/config.json")).unwrap(); // corrupt
    let got = latest(&f.root, "step_", Verify::Size).unwrap().unwrap();
    assert_eq!(got.step, 1);
    let states: Vec<_> = list(&f.root, "step_")
        .unwrap()
        .iter()
        .map(|i| (i.step, i.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, StepState::Committed),
            (2, StepState::Committed),
            (7, StepState::Incomplete)
        ]
    );
    let after = f.wait_for(Target::After(0), Verify::Size, 0).unwrap();
    assert_eq!(after.step, 1);
}

#[test]
fn a_native_copy_records_the_same_manifest_and_a_bad_one_is_caught() {
    let publish_with = |copy: NativeCopy| {
        let f = fixture();
        NATIVE_COPY.with(|c| c.set(copy));
        let report = f.publish(1);
        NATIVE_COPY.with(|c| c.set(NativeCopy::Off));
        let manifest = fs::read_to_string(f.path("step_1").join(MANIFEST_NAME)).unwrap();
        (f, report.unwrap(), manifest)
    };
    let (_, buffered, buffered_manifest) = publish_with(NativeCopy::Off);
    let (_, native, native_manifest) = publish_with(NativeCopy::On);
    assert_eq!(native.version.files, buffered.version.files);
    assert_eq!(native_manifest, buffered_manifest);
    // The manifest vouches for the source, not for what the copy holds.
    let (f, _, bad_manifest) = publish_with(NativeCopy::Corrupting);
    assert_eq!(bad_manifest, buffered_manifest);
    let err = f.wait_for(Target::Step(1), Verify::Hash, 50).unwrap_err();
    assert_error(&err, ErrorKind::Integrity, &["adapter.safetensors"]);
}

/// Wait for `target` on a simulated clock while `write` runs at `at_ms`:
/// when the wait returned, and how often the reader listed a directory.
fn timed_wait(
    f: &Fixture,
    target: Target,
    at_ms: u64,
    write: impl FnOnce(&StdDir, &StdDir) + 'static,
) -> (Version, u64, u32) {
    let platform = ScriptPlatform::new();
    let (root, src) = (StdDir(f.root.0.clone()), StdDir(f.src.0.clone()));
    platform.at(at_ms, move || {
        // The writer's own listings are not the reader's.
        let before = LISTINGS.with(|n| n.get());
        write(&root, &src);
        LISTINGS.with(|n| n.set(before));
    });
    LISTINGS.with(|n| n.set(0));
    let options = WaitOptions {
        poll: Duration::from_millis(10),
        ..wait_opts(Verify::Size, 10_000)
    };
    let version = wait(&f.root, &platform, target, &options).unwrap();
    (version, platform.now_ms(), LISTINGS.with(|n| n.get()))
}

/// Wait for `target` while `write` makes step 2 at 2.5 s: the wait must
/// return step 2 at its first poll after that. How often the reader listed a
/// directory.
fn listings_until_step_2_lands(
    f: &Fixture,
    target: Target,
    write: impl FnOnce(&StdDir, &StdDir) + 'static,
) -> u32 {
    let (version, found_at, listings) = timed_wait(f, target, 2500, write);
    assert_eq!(version.step, 2);
    assert!((2500..=2510).contains(&found_at), "found at {found_at} ms");
    listings
}

/// Seal step 2, written in place beforehand.
fn seal_step_2(root: &StdDir, _src: &StdDir) {
    seal(root, &RealPlatform, 2, &opts()).unwrap();
}

/// Wait for the step after 1 while `step` is published at 50 ms.
fn wait_after_one_for(step: u64) -> (u64, u32) {
    let f = fixture();
    f.publish(1).unwrap();
    let (version, found_at, listings) = timed_wait(&f, Target::After(1), 50, move |root, src| {
        publish(root, src, &RealPlatform, step, &opts()).unwrap();
    });
    assert_eq!(version.step, step);
    (found_at, listings)
}

#[test]
fn waiting_after_n_looks_up_n_plus_1_and_lists_the_root_once_a_second() {
    // The next step is seen at the first poll after it appears, without
    // listing the root again; `.handoff` is listed once it is found, for a
    // newer run that would supersede it.
    let (found_at, listings) = wait_after_one_for(2);
    assert!((50..=60).contains(&found_at), "found at {found_at} ms");
    assert_eq!(
        listings, 2,
        "the root on the first attempt, .handoff at the end"
    );
    // A skipped step is still found, by the listing a second later.
    let (found_at, listings) = wait_after_one_for(3);
    let list_every = crate::read::LIST_EVERY_MS;
    assert!(
        (list_every..=list_every + 10).contains(&found_at),
        "found at {found_at} ms"
    );
    assert_eq!(listings, 2, "the first attempt and one second later");
}

#[test]
fn waiting_after_n_and_for_the_latest_list_a_step_sealed_in_place() {
    // As for `wait --step`: the payload is there before STABLE, so a reader
    // may hold a failed look-up of its STABLE that only a listing of the
    // step clears.
    let f = fixture();
    f.publish(1).unwrap();
    payload(&f.path("step_2"), "x");
    let listings = listings_until_step_2_lands(&f, Target::After(1), seal_step_2);
    assert_eq!(
        listings, 7,
        "root and step at 0, 1 and 2 seconds, and .handoff at the end"
    );

    let f = fixture();
    payload(&f.path("step_2"), "x");
    let listings = listings_until_step_2_lands(&f, Target::Latest, seal_step_2);
    // Not the root on every 10 ms attempt: on the Linux NFS client that held
    // up the writer's own open of the root.
    assert_eq!(listings, 6, "root and step at 0, 1 and 2 seconds");
}

#[test]
fn waiting_for_step_n_lists_the_root_at_most_once_a_second() {
    // The listing makes an NFS client drop a cached failed look-up of
    // step_N; one a second bounds its cost on a root with many entries.
    let f = fixture();
    let listings = listings_until_step_2_lands(&f, Target::Step(2), |root, src| {
        publish(root, src, &RealPlatform, 2, &opts()).unwrap();
    });
    assert_eq!(listings, 3, "at 0, 1 and 2 seconds");
}

#[test]
fn waiting_for_a_step_sealed_in_place_also_lists_the_step() {
    // The payload is there before STABLE: a reader that looked for STABLE
    // early may hold that failed look-up, which only a listing of the step
    // itself clears. Root and step, once a second.
    let f = fixture();
    payload(&f.path("step_2"), "x");
    let listings = listings_until_step_2_lands(&f, Target::Step(2), seal_step_2);
    assert_eq!(listings, 6, "root and step at 0, 1 and 2 seconds");
}

/// Asserts that `fsck --repair` acts on an entry whose name ends with `suffix`.
#[track_caller]
fn assert_repaired(f: &Fixture, suffix: &str) {
    let entries = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.name.ends_with(suffix) && e.action.is_some()),
        "{entries:?}"
    );
}

#[test]
fn gc_keeps_newest_and_pinned_and_removes_stable_first() {
    let f = published(1..=5);
    f.pin(2, "reader-1", 60_000).unwrap();
    let report = f.gc(2).unwrap();
    assert_eq!(report.removed, [1, 3]);
    assert_eq!(report.kept, [4, 5]);
    assert_eq!(report.pinned, [2]);
    assert!(f.path("step_2/STABLE").exists());
    assert_eq!(fs::read_dir(f.path(".handoff/trash")).unwrap().count(), 0);
    unpin(&f.root, "step_", 2, "reader-1").unwrap();
    assert!(matches!(
        unpin(&f.root, "step_", 2, "reader-1"),
        Err(e) if e.kind() == ErrorKind::NotFound
    ));
    assert_eq!(f.gc(2).unwrap().removed, [2]);
    assert!(matches!(
        f.gc(0),
        Err(e) if e.kind() == ErrorKind::InvalidInput
    ));
}

#[test]
fn expired_pins_do_not_hold_and_malformed_pins_do() {
    let f = published(1..=3);
    f.pin(1, "old", 0).unwrap();
    fs::create_dir(f.path("step_2/.handoff.pins/weird")).unwrap(); // a pin that is a directory
    let report = f.gc(1).unwrap();
    assert_eq!(report.removed, [1]);
    assert_eq!(report.pinned, [2]);
    assert_repaired(&f, "step_2/.handoff.pins/weird");
    assert_eq!(f.gc(1).unwrap().removed, [2]);
}

#[test]
fn version_1_pins_still_hold_their_steps() {
    let f = fixture();
    for step in 1..=3 {
        f.publish_v1(step);
    }
    f.publish(4).unwrap();
    // A version 1 step is pinned the version 1 way, where version 1 gc and
    // readers look for it.
    f.pin(1, "srv", 60_000).unwrap();
    assert!(f.path(".handoff/pins/step_1/srv").exists());
    f.pin(2, "old", 0).unwrap();
    fs::create_dir_all(f.path(".handoff/pins/step_3/weird")).unwrap();
    let report = f.gc(1).unwrap();
    assert_eq!(report.removed, [2]);
    assert_eq!(report.pinned, [1, 3]);
    assert_repaired(&f, "step_3/weird");
    unpin(&f.root, "step_", 1, "srv").unwrap();
    assert_eq!(f.gc(1).unwrap().removed, [1, 3]);
    assert!(f.wait_for(Target::Latest, Verify::Hash, 0).is_ok());
}

#[test]
fn gc_claims_a_step_by_removing_its_pin_directory_and_no_pin_gets_in_after() {
    let f = fixture();
    f.publish(1).unwrap();
    f.publish(2).unwrap();
    assert!(
        f.path("step_1/.handoff.pins").is_dir(),
        "made before STABLE"
    );
    // A gc that claimed step 1 and died before unpublishing it.
    fs::remove_dir(f.path("step_1/.handoff.pins")).unwrap();
    let err = f.pin(1, "late", 60_000).unwrap_err();
    assert_error(&err, ErrorKind::NotFound, &["claimed"]);
    assert!(
        !f.path("step_1/.handoff.pins").exists(),
        "the pin made nothing"
    );
    let dry = fsck(&f.root, &RealPlatform, "step_", false).unwrap();
    assert!(
        dry.iter()
            .any(|e| e.name == "step_1"
                && e.detail.as_deref().is_some_and(|d| d.contains("claimed"))),
        "{dry:?}"
    );
    // The next gc finishes it, although the newest one is kept anyway.
    assert_eq!(f.gc(1).unwrap().removed, [1]);
    assert!(!f.path("step_1").exists());
    // fsck --repair leaves a claimed step to gc, as every committed step.
    f.publish(3).unwrap();
    fs::remove_dir(f.path("step_2/.handoff.pins")).unwrap();
    let repaired = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    assert!(
        repaired
            .iter()
            .any(|e| e.name == "step_2" && e.action.is_none()),
        "{repaired:?}"
    );
    assert!(f.path("step_2/STABLE").exists());
}

#[test]
fn pinning_again_renews_and_expiry_follows_the_server_stamp() {
    let f = fixture();
    f.publish(1).unwrap();
    f.publish(2).unwrap();
    let first = f.pin(1, "srv", 60_000).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let renewed = f.pin(1, "srv", 60_000).unwrap();
    assert!(renewed.expires_ms > first.expires_ms);
    assert_eq!(f.pins(1).len(), 1, "the older pin went: {:?}", f.pins(1));
    assert!(f.pins(1)[0].starts_with("srv+60000+"));
    // The pin's age is the server's stamp on its file, not anything the
    // pinner wrote: stamped two minutes ago, a one-minute pin has expired.
    let pin_file = f.path(&format!("step_1/.handoff.pins/{}", f.pins(1)[0]));
    let ago = |secs| std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    let stamp = |path: std::path::PathBuf, when| {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap()
    };
    stamp(f.path("step_1/STABLE"), ago(600)); // committed ten minutes ago
    stamp(pin_file, ago(120));
    assert_eq!(f.gc(1).unwrap().removed, [1]);
}

#[test]
fn a_pin_stamped_before_its_step_was_committed_holds() {
    // What an NFSv4 exclusive create shows for a moment: the create's
    // verifier in the file's times, here a time long before the step.
    let f = fixture();
    f.publish(1).unwrap();
    f.publish(2).unwrap();
    f.pin(1, "srv", 1000).unwrap();
    let pin_file = f.path(&format!("step_1/.handoff.pins/{}", f.pins(1)[0]));
    let verifier_like = std::time::UNIX_EPOCH + std::time::Duration::from_secs(700_000_000);
    fs::File::options()
        .write(true)
        .open(&pin_file)
        .unwrap()
        .set_modified(verifier_like)
        .unwrap();
    assert_eq!(f.gc(1).unwrap().pinned, [1]);
    assert!(pin_file.exists());
}

#[test]
fn gc_reads_the_clock_from_a_file_and_removes_only_old_clock_files() {
    let f = fixture();
    f.publish(1).unwrap();
    fs::create_dir_all(f.path(".handoff")).unwrap();
    let (old, fresh) = (f.path(".handoff/clock.old"), f.path(".handoff/clock.fresh"));
    fs::write(&old, "").unwrap();
    fs::write(&fresh, "").unwrap();
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
        .unwrap();
    f.gc(1).unwrap();
    assert!(!old.exists(), "a crashed gc's clock file is removed");
    assert!(fresh.exists(), "another gc's may be in use");
    let left: Vec<_> = fs::read_dir(f.path(".handoff"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("clock."))
        .collect();
    assert_eq!(left, ["clock.fresh"], "gc removed its own");
}

#[test]
fn a_payload_cannot_take_the_pin_directory_name() {
    let f = fixture();
    payload(&f.path("step_1"), "x");
    fs::write(f.path("step_1/.handoff.pins"), "mine").unwrap();
    let err = seal(&f.root, &RealPlatform, 1, &opts()).unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["step_1/.handoff.pins"]);
    assert!(!f.path("step_1/STABLE").exists());
    assert_eq!(fs::read(f.path("step_1/.handoff.pins")).unwrap(), b"mine");
    // An empty one a crashed seal left is taken over.
    fs::remove_file(f.path("step_1/.handoff.pins")).unwrap();
    fs::create_dir(f.path("step_1/.handoff.pins")).unwrap();
    seal(&f.root, &RealPlatform, 1, &opts()).unwrap();
    f.pin(1, "srv", 1000).unwrap();
}

#[test]
fn pins_need_a_committed_step_and_a_sane_holder() {
    let f = fixture();
    payload(&f.path("step_1"), "a");
    assert!(matches!(
        f.pin(1, "r", 1000),
        Err(e) if e.kind() == ErrorKind::NotFound
    ));
    assert!(matches!(
        f.pin(2, "r", 1000),
        Err(e) if e.kind() == ErrorKind::NotFound
    ));
    f.publish(3).unwrap();
    for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(
                f.pin(3, bad, 1000),
                Err(e) if e.kind() == ErrorKind::InvalidInput
            ),
            "{bad}"
        );
    }
}

#[test]
fn wait_with_pin_keeps_the_previous_pin_until_the_reader_unpins_it() {
    let f = fixture();
    f.publish(1).unwrap();
    let mut o = wait_opts(Verify::Size, 0);
    o.pin = Some(PinRequest {
        holder: "srv".into(),
        ttl: Duration::from_secs(60),
    });
    assert_eq!(
        wait(&f.root, &RealPlatform, Target::Latest, &o)
            .unwrap()
            .step,
        1
    );
    f.publish(2).unwrap();
    assert_eq!(
        wait(&f.root, &RealPlatform, Target::Latest, &o)
            .unwrap()
            .step,
        2
    );
    // The reader still serves step 1 until it has switched over.
    assert_eq!(f.pins(2).len(), 1);
    assert_eq!(f.pins(1).len(), 1);
    let report = f.gc(1).unwrap();
    assert_eq!(report.pinned, [1]);
    assert!(f.path("step_1/STABLE").exists());

    // Switched over: the hand-over ends with its unpin, and gc may go on.
    unpin(&f.root, "step_", 1, "srv").unwrap();
    let report = f.gc(1).unwrap();
    assert_eq!(report.removed, [1]);
}

#[test]
fn fsck_repair_settles_crash_leftovers_and_is_idempotent() {
    let f = fixture();
    f.publish(1).unwrap();
    f.publish(2).unwrap();
    payload(&f.path("step_3"), "x"); // crashed in-place writer
    payload(&f.path(".handoff/staging/step_4.0000"), "x"); // crashed publisher
    payload(&f.path(".handoff/trash/step_0.0000"), "x"); // crashed gc
    fs::remove_file(f.path("step_2/adapter.safetensors")).unwrap(); // damage
    fs::write(f.path("notes.txt"), "mine").unwrap();
    // The crashes were long ago; repair's settle period passes at once.
    age(&f.root.0);
    let platform = ScriptPlatform::new();
    let first = fsck(&f.root, &platform, "step_", true).unwrap();
    let state = |name: &str| first.iter().find(|e| e.name == name).map(|e| e.state);
    assert_eq!(state("step_1"), Some(StepState::Committed));
    assert_eq!(state("step_2"), Some(StepState::Corrupt));
    assert_eq!(state("step_3"), Some(StepState::Incomplete));
    assert_eq!(
        state(".handoff/staging/step_4.0000"),
        Some(StepState::Staging)
    );
    assert_eq!(state(".handoff/trash/step_0.0000"), Some(StepState::Trash));
    assert_eq!(state("notes.txt"), Some(StepState::Stray));
    let second = fsck(&f.root, &platform, "step_", true).unwrap();
    let names: Vec<_> = second
        .iter()
        .map(|e| (e.name.as_str(), e.state, e.action.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            ("notes.txt", StepState::Stray, false),
            ("step_1", StepState::Committed, false)
        ]
    );
    assert_eq!(fsck(&f.root, &platform, "step_", true).unwrap(), second);
}

#[test]
fn gc_removes_abandoned_staging_only() {
    let f = fixture();
    f.publish(1).unwrap();
    payload(&f.path(".handoff/staging/step_2.fresh"), "x");
    let mut o = gc_opts(1);
    assert!(
        gc(&f.root, &RealPlatform, &o)
            .unwrap()
            .staging_removed
            .is_empty()
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    o.grace = Duration::from_millis(10);
    assert_eq!(
        gc(&f.root, &RealPlatform, &o).unwrap().staging_removed,
        ["step_2.fresh"]
    );
}

#[test]
fn gc_and_fsck_of_one_prefix_leave_another_prefixs_staging() {
    let f = fixture();
    f.publish(1).unwrap();
    let theirs = "ckpt_2.00000000000000aa";
    payload(&f.path(&format!(".handoff/staging/{theirs}")), "x");
    age(&f.path(&format!(".handoff/staging/{theirs}")));
    let mut o = gc_opts(1);
    o.grace = Duration::from_millis(10);
    assert!(
        gc(&f.root, &RealPlatform, &o)
            .unwrap()
            .staging_removed
            .is_empty()
    );
    let found = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    assert!(found.iter().all(|e| !e.name.contains(theirs)), "{found:?}");
    assert!(f.path(&format!(".handoff/staging/{theirs}")).exists());
    // Its own prefix's gc removes it.
    o.prefix = "ckpt_".into();
    assert_eq!(
        gc(&f.root, &RealPlatform, &o).unwrap().staging_removed,
        [theirs]
    );
}

#[test]
fn fsck_republishes_a_pinned_version_1_step_an_interrupted_gc_unpublished() {
    let f = fixture();
    f.publish_v1(1);
    f.publish_v1(2);
    f.pin(1, "reader", 60_000).unwrap();
    // gc removed STABLE, a reader pinned meanwhile, gc died before putting it back.
    fs::remove_file(f.path("step_1/STABLE")).unwrap();
    let dry = fsck(&f.root, &RealPlatform, "step_", false).unwrap();
    assert_eq!(dry[0].state, StepState::Incomplete);
    assert!(f.path("step_1").exists());
    let repaired = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    assert_eq!(repaired[0].action.as_deref(), Some("republished"));
    assert!(f.path("step_1/STABLE").exists());
    assert!(f.wait_for(Target::Step(1), Verify::Hash, 0).is_ok());
    // Without the pin, the same state is removed.
    unpin(&f.root, "step_", 2, "reader").unwrap_err();
    fs::remove_file(f.path("step_1/STABLE")).unwrap();
    unpin(&f.root, "step_", 1, "reader").unwrap();
    age(&f.root.0);
    fsck(&f.root, &ScriptPlatform::new(), "step_", true).unwrap();
    assert!(!f.path("step_1").exists());
}

#[test]
fn seal_refuses_an_empty_payload() {
    let f = fixture();
    fs::create_dir_all(f.path("step_1/empty")).unwrap();
    let err = seal(&f.root, &RealPlatform, 1, &opts()).unwrap_err();
    assert_error(
        &err,
        ErrorKind::InvalidInput,
        &["nothing to seal", "step_1"],
    );
    assert!(!f.path("step_1/STABLE").exists());
    assert!(!f.path("step_1").join(MANIFEST_NAME).exists());
}

#[test]
fn a_manifest_that_breaks_a_rule_fails_at_once_not_after_settle() {
    let f = published(1..=1);
    // Valid JSON, written so by a writer: duplicate entries are permanent.
    let path = f.path("step_1").join(MANIFEST_NAME);
    let mut manifest = Manifest::parse(&fs::read(&path).unwrap()).unwrap();
    manifest.files.push(manifest.files[0].clone());
    manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    fs::write(&path, manifest.to_bytes()).unwrap();
    let platform = ScriptPlatform::new();
    let options = WaitOptions {
        timeout: Some(Duration::from_secs(600)),
        settle: Duration::from_secs(60),
        ..wait_opts(Verify::Size, 0)
    };
    let err = wait(&f.root, &platform, Target::Step(1), &options).unwrap_err();
    assert_error(&err, ErrorKind::Integrity, &["duplicate entry"]);
    assert!(!err.is_retryable());
    assert_eq!(platform.now_ms(), 0, "it waited out the settle time");
}

/// Fail this thread's flushes of the directory `failing` (`""`: the root),
/// first running `then` on the storage.
fn fail_dir_sync(failing: &'static str, mut then: impl FnMut() + 'static) {
    crate::testfs::ON_DIR_SYNC.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move |path: &str| {
            if path != failing {
                return Ok(());
            }
            then();
            Err(std::io::Error::other(
                "injected: the disk refused the flush",
            ))
        }))
    });
}

fn flush_normally() {
    crate::testfs::ON_DIR_SYNC.with(|hook| *hook.borrow_mut() = None);
}

#[test]
fn a_seal_whose_last_flush_fails_withdraws_the_step_and_a_retry_seals_it() {
    let f = fixture();
    payload(&f.path("step_1"), "a");
    fail_dir_sync("", || {});
    let err = seal(&f.root, &RealPlatform, 1, &opts()).unwrap_err();
    flush_normally();
    assert_error(&err, ErrorKind::Durability, &["withdrawn"]);
    assert!(err.is_retryable());
    assert!(
        !f.path("step_1/STABLE").exists(),
        "reported failed, left committed"
    );
    let sealed = seal(&f.root, &RealPlatform, 1, &opts()).unwrap();
    assert_eq!(sealed.version.step, 1);
}

#[test]
fn a_publish_whose_root_flush_fails_withdraws_the_step_and_a_retry_publishes_it() {
    let f = published(1..=1);
    fail_dir_sync("", || {});
    let err = f.publish(2).unwrap_err();
    flush_normally();
    assert_error(&err, ErrorKind::Durability, &["withdrawn"]);
    assert!(!f.path("step_2").exists(), "reported failed, left visible");
    assert_eq!(fs::read_dir(f.path(".handoff/staging")).unwrap().count(), 0);
    f.publish(2).unwrap();
}

#[test]
fn a_step_pinned_before_its_failed_flush_is_not_withdrawn() {
    let f = published(1..=1);
    // A reader pins step 2 in the moment between the rename and the failed
    // flush: it holds a committed step, which must not go from under it.
    let pin = f.path("step_2/.handoff.pins/reader+60000+0000000000000001");
    fail_dir_sync("", move || {
        fs::write(&pin, b"").unwrap();
    });
    let err = f.publish(2).unwrap_err();
    flush_normally();
    assert_error(&err, ErrorKind::Durability, &["pinned it first"]);
    assert!(f.path("step_2/STABLE").exists());
    assert_eq!(f.pins(2).len(), 1);
}

#[test]
fn gc_keeps_the_newest_valid_step_whatever_newer_steps_fail_to_validate() {
    let f = published(1..=2);
    // A STABLE-only writer's step, and one whose manifest is gone bad.
    fs::create_dir(f.path("step_3")).unwrap();
    fs::write(f.path("step_3/STABLE"), b"").unwrap();
    f.publish(4).unwrap();
    fs::write(f.path("step_4").join(MANIFEST_NAME), b"{}").unwrap();
    let report = f.gc(1).unwrap();
    assert_eq!(report.kept, [2]);
    assert_eq!(report.removed, [1]);
    assert_eq!(report.invalid, [3, 4]);
    assert!(f.path("step_2/STABLE").exists() && f.path("step_3").exists());
    f.wait_for(Target::Latest, Verify::Hash, 1000).unwrap();
}

#[test]
fn gc_leaves_names_that_are_not_the_protocols_alone() {
    let f = published(1..=2);
    // What an NFS client leaves for a file deleted while open, until it is
    // closed: removing it would pull it from under whoever holds it open.
    fs::write(f.path(".nfs0000000000d2a7f100000001"), b"open elsewhere").unwrap();
    assert_eq!(f.gc(1).unwrap().removed, [1]);
    assert!(f.path(".nfs0000000000d2a7f100000001").exists());
}

fn writer(name: &str) -> WriteOptions {
    WriteOptions {
        writer: name.into(),
        ..opts()
    }
}

/// The writer id in the manifest of `step`.
fn manifest_writer(f: &Fixture, step: u64) -> String {
    let path = f.path(&format!("step_{step}")).join(MANIFEST_NAME);
    Manifest::parse(&fs::read(path).unwrap()).unwrap().writer
}

/// The names in `step_N/` that only a sealer at work puts there.
fn seal_leftovers(f: &Fixture, step: u64) -> Vec<String> {
    fs::read_dir(f.path(&format!("step_{step}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.starts_with(".handoff.manifest.json.tmp") || name.starts_with(".handoff.seal")
        })
        .collect()
}

#[test]
fn of_two_sealers_of_one_step_one_wins_with_its_own_manifest() {
    // The rival runs whole at each directory flush of the first in turn.
    for at in 0..4 {
        let f = fixture();
        payload(&f.path("step_2"), "a");
        let root = f.root.0.clone();
        let rival = std::rc::Rc::new(std::cell::RefCell::new(None));
        let (out, mut flushes) = (rival.clone(), 0);
        crate::testfs::ON_DIR_SYNC.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |_: &str| {
                if flushes == at {
                    let root = root.clone();
                    // Another process: a thread of its own has no hook.
                    let result = std::thread::spawn(move || {
                        seal(&StdDir(root), &RealPlatform, 2, &writer("rival"))
                    })
                    .join()
                    .unwrap();
                    *out.borrow_mut() = Some(result);
                }
                flushes += 1;
                Ok(())
            }))
        });
        let first = seal(&f.root, &RealPlatform, 2, &writer("first"));
        flush_normally();
        let second = rival.take().expect("the rival ran");
        let winner = match (&first, &second) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) if e.kind() == ErrorKind::Conflict => {
                if first.is_ok() { "first" } else { "rival" }
            }
            _ => panic!("flush {at}: exactly one must win: {first:?} / {second:?}"),
        };
        let loser = first.as_ref().err().or(second.as_ref().err()).unwrap();
        assert_error(loser, ErrorKind::Conflict, &["step 2"]);
        assert_sealed_by(&f, 2, winner);
    }
}

/// That `step` is committed with `writer`'s manifest, validates, and holds
/// nothing a sealer leaves while at work.
#[track_caller]
fn assert_sealed_by(f: &Fixture, step: u64, writer: &str) {
    assert_eq!(manifest_writer(f, step), writer);
    let left = seal_leftovers(f, step);
    assert!(left.is_empty(), "{left:?}");
    f.wait_for(Target::Step(step), Verify::Hash, 1000).unwrap();
}

/// Step 2 written in place and claimed by a sealer writing as `holder`.
fn claimed_by(holder: &str) -> Fixture {
    let f = fixture();
    payload(&f.path("step_2"), "a");
    fs::create_dir(f.path("step_2/.handoff.seal")).unwrap();
    fs::write(f.path("step_2/.handoff.seal/writer"), holder).unwrap();
    f
}

#[test]
fn a_sealer_finding_another_writers_claim_changes_nothing() {
    let f = claimed_by("trainer-7");
    let before: Vec<_> = fs::read_dir(f.path("step_2")).unwrap().collect();
    let err = seal(&f.root, &RealPlatform, 2, &writer("other")).unwrap_err();
    assert_error(
        &err,
        ErrorKind::Conflict,
        &["being sealed", "\"trainer-7\"", "--writer", ".handoff.seal"],
    );
    let after: Vec<_> = fs::read_dir(f.path("step_2")).unwrap().collect();
    assert_eq!(before.len(), after.len());
    assert!(!f.path("step_2").join(MANIFEST_NAME).exists());
    assert!(f.path("step_2/.handoff.seal").exists(), "not the loser's");
}

#[test]
fn a_sealer_that_died_takes_over_its_own_claim_when_run_again() {
    // What a seal killed after installing its manifest leaves: its claim,
    // a temporary manifest, a manifest without STABLE.
    let f = claimed_by("trainer-7");
    fs::write(
        f.path("step_2/.handoff.manifest.json.tmp.00000000000000ab"),
        "",
    )
    .unwrap();
    fs::write(f.path("step_2").join(MANIFEST_NAME), "{\"half\":").unwrap();
    seal(&f.root, &RealPlatform, 2, &writer("trainer-7")).unwrap();
    assert_sealed_by(&f, 2, "trainer-7");
}

#[test]
fn a_failed_seal_releases_its_claim() {
    let f = fixture();
    fs::create_dir_all(f.path("step_1/empty")).unwrap();
    seal(&f.root, &RealPlatform, 1, &writer("a")).unwrap_err();
    assert!(seal_leftovers(&f, 1).is_empty());
    payload(&f.path("step_1"), "a");
    assert_eq!(
        seal(&f.root, &RealPlatform, 1, &writer("b"))
            .unwrap()
            .version
            .writer,
        "b"
    );
}

#[test]
fn publish_never_replaces_a_directory_an_in_place_writer_just_made() {
    let f = published(1..=1);
    // The in-place writer makes step_2 after publish looked and found
    // nothing there, while publish stages its copy.
    let step_2 = f.path("step_2");
    crate::testfs::ON_DIR_SYNC.with(|hook| {
        let mut made = false;
        *hook.borrow_mut() = Some(Box::new(move |path: &str| {
            if !made && path.starts_with(".handoff/staging/") {
                fs::create_dir(&step_2).unwrap();
                made = true;
            }
            Ok(())
        }))
    });
    let err = f.publish(2).unwrap_err();
    flush_normally();
    assert_error(&err, ErrorKind::Conflict, &["step_2", "not yet committed"]);
    assert!(f.path("step_2").is_dir() && !f.path("step_2/STABLE").exists());
    assert_eq!(fs::read_dir(f.path(".handoff/staging")).unwrap().count(), 0);
}

/// The fixture's root as a [`Hooked`] storage that asks `before` first.
fn hooked<B: Fn(Op, &str) -> Option<std::io::Error>>(f: &Fixture, before: B) -> Hooked<B> {
    Hooked {
        inner: StdDir(f.root.0.clone()),
        before,
        after: no_hook,
    }
}

fn failed_names(report: &GcReport) -> Vec<&str> {
    report.failed.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn gc_frees_space_on_a_full_filesystem() {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    for full in [StorageFull, QuotaExceeded] {
        let f = published(1..=3);
        f.pin(2, "reader", 60_000).unwrap();
        // What a publisher that died left.
        payload(&f.path(".handoff/staging/step_9.dead"), "x");
        std::thread::sleep(Duration::from_millis(20));
        let mut o = gc_opts(1);
        o.grace = Duration::from_millis(1);
        // No room for a clock file or the trash directory: nothing can be
        // created, everything can be removed.
        let root = f.root.0.clone();
        let no_room = hooked(&f, move |op, path| {
            let new = matches!(op, Op::CreateDir | Op::CreateNew) && !root.join(path).exists();
            new.then(|| std::io::Error::from(full))
        });
        let report = gc(&no_room, &RealPlatform, &o).unwrap();
        assert_eq!(report.removed, [1], "{full:?}");
        assert_eq!(
            report.pinned,
            [2],
            "the pin still holds on this node's clock"
        );
        assert_eq!(report.kept, [3]);
        assert!(!f.path("step_1").exists());
        assert!(!f.path(".handoff/trash").exists(), "removed in place");
        // Staging cannot be claimed without the trash, and is not deleted in
        // place under a publisher that may still be at work: reported, left.
        assert!(f.path(".handoff/staging/step_9.dead").exists());
        assert_eq!(failed_names(&report), [".handoff/staging/step_9.dead"]);
        // With room again, the next gc claims it.
        let report = gc(&f.root, &RealPlatform, &o).unwrap();
        assert_eq!(report.staging_removed, ["step_9.dead"]);
        assert!(report.failed.is_empty(), "{report:?}");
        f.wait_for(Target::Step(3), Verify::Hash, 1000).unwrap();
    }
}

#[test]
fn gc_goes_on_past_a_step_it_cannot_remove_and_reports_it() {
    let f = published(1..=4);
    payload(&f.path(".handoff/staging/step_9.dead"), "x");
    std::thread::sleep(Duration::from_millis(20));
    let mut o = gc_opts(1);
    o.grace = Duration::from_millis(1);
    let refusing = hooked(&f, |op, path| {
        (op == Op::RemoveDir && path == "step_2/.handoff.pins")
            .then(|| std::io::Error::other("injected: the server refused"))
    });
    let report = gc(&refusing, &RealPlatform, &o).unwrap();
    assert_eq!(report.removed, [1, 3]);
    assert_eq!(report.kept, [4]);
    assert_eq!(report.staging_removed, ["step_9.dead"]);
    assert_eq!(failed_names(&report), ["step_2"]);
    let err = &report.failed[0].error;
    assert_error(err, ErrorKind::Io, &["step_2/.handoff.pins", "injected"]);
    // Not claimed, still committed: the next gc removes it.
    assert!(f.path("step_2/STABLE").exists());
    let report = f.gc(1).unwrap();
    assert_eq!((report.removed, report.failed), (vec![2], vec![]));
}

#[test]
fn a_publisher_that_stalls_past_the_grace_fails_cleanly_when_gc_takes_its_staging() {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    let f = published(1..=1);
    let src = f.src.0.parent().unwrap().join("flat");
    Payload::new()
        .with("a", "weights a".repeat(1000))
        .with("b", "weights b".repeat(1000))
        .write_to(&src)
        .unwrap();
    // The publisher stalls before it copies `b` (a node paused, a huge file
    // hashed): `a` is in staging, and nothing in it changes for the grace.
    let (stalled_tx, stalled) = channel::<()>();
    let (go, go_rx) = channel::<()>();
    let gate: Mutex<Option<(Sender<()>, Receiver<()>)>> = Mutex::new(Some((stalled_tx, go_rx)));
    let source = Hooked {
        inner: StdDir(src),
        before: move |op: Op, path: &str| {
            let gate = (op == Op::Open && path == "b").then(|| gate.lock().unwrap().take());
            if let Some((stalled, go)) = gate.flatten() {
                stalled.send(()).unwrap();
                go.recv().unwrap();
            }
            None
        },
        after: no_hook,
    };
    let root = f.root.0.clone();
    let publisher =
        std::thread::spawn(move || publish(&StdDir(root), &source, &RealPlatform, 2, &opts()));
    stalled.recv().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // gc's first change to the staging directory lets the publisher go on,
    // and waits for it to finish.
    let published = std::cell::RefCell::new(None);
    let publisher = std::cell::RefCell::new(Some(publisher));
    let gc_fs = Hooked {
        inner: StdDir(f.root.0.clone()),
        before: |_: Op, _: &str| None,
        after: |op: Op, path: &str| {
            let changed = !matches!(op, Op::Open | Op::List);
            let first = changed && path.starts_with(".handoff/staging/");
            if let Some(publisher) = first.then(|| publisher.take()).flatten() {
                go.send(()).unwrap();
                *published.borrow_mut() = Some(publisher.join().unwrap());
            }
        },
    };
    let mut o = gc_opts(1);
    o.grace = Duration::from_millis(1);
    let report = gc(&gc_fs, &RealPlatform, &o).unwrap();
    assert_eq!(report.staging_removed.len(), 1, "{report:?}");
    let published = published
        .into_inner()
        .expect("gc never touched the staging");
    // Nothing half-deleted was committed: the publisher failed, and said why.
    if published.is_ok() {
        let a = f.path("step_2/a").exists();
        let checked = f.wait_for(Target::Step(2), Verify::Size, 100);
        panic!(
            "a publish whose staging gc was deleting committed step 2: `a` there: {a}; {checked:?}"
        );
    }
    let err = published.unwrap_err();
    assert_error(&err, ErrorKind::Io, &["gone", "grace"]);
    assert!(err.is_retryable());
    assert!(!f.path("step_2").exists());
    assert!(f.gc(1).unwrap().failed.is_empty());
}

/// fsck --repair's rules of evidence.
mod fsck_repair;

/// Runs: a restarted trainer's timeline supersedes the one before it.
mod runs;

/// Fetch: a verified local copy, the shared step pinned while it is copied.
mod fetch;

/// Generated hostile inputs for the parsers and the path checks.
mod fuzz;
/// Special files, a STABLE that is no file, unreadable steps.
mod hostile;

/// Payloads hashed, copied and flushed through a storage's batch calls.
mod batch;

#[test]
fn repair_with_one_prefix_leaves_another_prefixs_pins() {
    let f = published(1..=1);
    // A version 1 pin of prefix `ckpt_`, and a file that is no pin
    // directory of any prefix.
    fs::create_dir_all(f.path(".handoff/pins/ckpt_3")).unwrap();
    fs::write(f.path(".handoff/pins/ckpt_3/reader"), "{}").unwrap();
    fs::write(f.path(".handoff/pins/junk"), "").unwrap();
    let entries = fsck(&f.root, &RealPlatform, "step_", true).unwrap();
    let other = entries
        .iter()
        .find(|e| e.name == ".handoff/pins/ckpt_3")
        .unwrap();
    assert_eq!(other.action, None, "{other:?}");
    assert!(f.path(".handoff/pins/ckpt_3/reader").exists());
    let junk = entries
        .iter()
        .find(|e| e.name == ".handoff/pins/junk")
        .unwrap();
    assert_eq!(junk.action.as_deref(), Some("removed"), "{junk:?}");
}
