//! Runs: `begin` numbers a new run above everything there, writers of older
//! runs are refused, and every reader finds the newest run's steps after
//! every older step.

use std::fs;

use super::{assert_error, fixture, flush_normally, opts, published};
use crate::layout::{RUN_SPAN, run_step};
use crate::testfs::{Op, RealPlatform};
use crate::*;

fn run(run: u64) -> WriteOptions {
    WriteOptions { run, ..opts() }
}

fn publish_in(f: &super::Fixture, g: u64, step: u64) -> Result<PublishReport> {
    publish(&f.root, &f.src, &RealPlatform, step, &run(g))
}

#[test]
fn begin_numbers_a_run_above_every_run_and_step_there() {
    let f = published(1..=3);
    assert_eq!(begin(&f.root, "step_").unwrap(), 1);
    assert_eq!(begin(&f.root, "step_").unwrap(), 2);
    // A step numbered as of a later run than any begun (by a writer that
    // knows nothing of runs) is still superseded by the next run.
    let g = published(1..=1);
    g.publish(5 * RUN_SPAN + 7).unwrap();
    assert_eq!(begin(&g.root, "step_").unwrap(), 6);
}

#[test]
fn a_step_of_a_run_is_numbered_after_every_step_of_older_runs() {
    let f = published(1..=3);
    let g = begin(&f.root, "step_").unwrap();
    let report = publish_in(&f, g, 2).unwrap();
    assert_eq!(report.version.step, RUN_SPAN + 2);
    assert_eq!(report.version.run, 1);
    assert!(report.version.path.ends_with("step_1000000000002"));
    // Run 0 is the step itself; a step of a run must fit below RUN_SPAN.
    assert_eq!(run_step(0, 5 * RUN_SPAN).unwrap(), 5 * RUN_SPAN);
    let err = publish_in(&f, g, RUN_SPAN).unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["below"]);
}

#[test]
fn writers_of_an_older_run_are_superseded_and_unbegun_runs_refused() {
    let f = published(1..=3);
    assert_eq!(begin(&f.root, "step_").unwrap(), 1);
    let err = publish_in(&f, 0, 4).unwrap_err();
    assert_error(&err, ErrorKind::Conflict, &["superseded", "run 1"]);
    fs::create_dir(f.path("step_4")).unwrap();
    super::payload(&f.path("step_4"), "a");
    let err = seal(&f.root, &RealPlatform, 4, &run(0)).unwrap_err();
    assert_error(&err, ErrorKind::Conflict, &["superseded"]);
    assert!(!f.path("step_4/STABLE").exists());
    let err = publish_in(&f, 2, 1).unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["run 2 was never begun"]);
    publish_in(&f, 1, 1).unwrap();
}

#[test]
fn a_run_begun_while_a_publisher_copies_supersedes_it_before_its_commit() {
    let f = published(1..=1);
    let root = f.root.0.clone();
    let mut begun = false;
    crate::testfs::ON_DIR_SYNC.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move |path: &str| {
            if !begun && path.starts_with(".handoff/staging/") {
                begun = true;
                let root = crate::testfs::StdDir(root.clone());
                // Another process: a thread of its own has no hook.
                std::thread::spawn(move || begin(&root, "step_"))
                    .join()
                    .unwrap()
                    .unwrap();
            }
            Ok(())
        }))
    });
    let err = f.publish(2).unwrap_err();
    flush_normally();
    assert_error(&err, ErrorKind::Conflict, &["superseded"]);
    assert!(!f.path("step_2").exists());
    assert_eq!(fs::read_dir(f.path(".handoff/staging")).unwrap().count(), 0);
}

#[test]
fn every_reader_finds_the_newest_runs_step_after_every_older_one() {
    let f = published(1..=10);
    // Before the new run commits anything, the old run's steps are still
    // the newest there are.
    let g = begin(&f.root, "step_").unwrap();
    let next = f.wait_for(Target::After(7), Verify::Size, 1000).unwrap();
    assert_eq!(next.step, 8);
    publish_in(&f, g, 5).unwrap();
    publish_in(&f, g, 6).unwrap();
    let latest = f.wait_for(Target::Latest, Verify::Size, 1000).unwrap();
    assert_eq!((latest.run, latest.step), (1, RUN_SPAN + 6));
    // A watcher at step 7 of run 0 moves to the new run's first step, not
    // to step 8 of the superseded run.
    let next = f.wait_for(Target::After(7), Verify::Size, 1000).unwrap();
    assert_eq!(next.step, RUN_SPAN + 5);
    // A reader that knows only STABLE takes the highest number with one.
    let stable_only = fs::read_dir(&f.root.0)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let n: u64 = name.strip_prefix("step_")?.parse().ok()?;
            f.path(&name).join("STABLE").exists().then_some(n)
        })
        .max();
    assert_eq!(stable_only, Some(RUN_SPAN + 6));
}

#[test]
fn a_reader_that_cannot_list_handoff_still_waits_by_committed_steps() {
    let f = published(1..=2);
    // A reader with no access to `.handoff` (another user's, mode 0700).
    let denied = super::hooked(&f, |op, path: &str| {
        (op == Op::List && path == ".handoff")
            .then(|| std::io::Error::from(std::io::ErrorKind::PermissionDenied))
    });
    let options = WaitOptions {
        timeout: Some(std::time::Duration::from_secs(5)),
        ..super::wait_opts(Verify::Size, 0)
    };
    let next = wait(&denied, &RealPlatform, Target::After(1), &options).unwrap();
    assert_eq!(next.step, 2);
}

#[test]
fn gc_orders_steps_by_run_then_step() {
    let f = published(1..=10);
    let g = begin(&f.root, "step_").unwrap();
    publish_in(&f, g, 1).unwrap();
    publish_in(&f, g, 2).unwrap();
    let report = f.gc(2).unwrap();
    assert_eq!(report.kept, [RUN_SPAN + 1, RUN_SPAN + 2]);
    assert_eq!(report.removed, (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_manifest_of_another_run_than_its_number_says_is_refused() {
    let f = fixture();
    begin(&f.root, "step_").unwrap();
    publish_in(&f, 1, 3).unwrap();
    // Moved under a run-0 number, its manifest's step no longer matches;
    // with the step fixed up too, its run does not.
    fs::rename(f.path("step_1000000000003"), f.path("step_2000000000003")).unwrap();
    let path = f
        .path("step_2000000000003")
        .join(crate::manifest::MANIFEST_NAME);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("1000000000003", "2000000000003")).unwrap();
    let err = f
        .wait_for(Target::Step(2 * RUN_SPAN + 3), Verify::Size, 100)
        .unwrap_err();
    assert_error(&err, ErrorKind::Integrity, &["says run 1", "run 2"]);
}
