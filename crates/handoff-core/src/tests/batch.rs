//! Payloads hashed, copied and flushed through a storage's batch calls
//! (a host with threads): the same manifests as file by file, every file
//! flushed before the manifest, and a failed file named.

use std::fs;
use std::path::Path;

use super::{assert_error, fixture, opts, payload};
use crate::manifest::{MANIFEST_NAME, STABLE_NAME};
use crate::testfs::{BATCH_LOG, BATCHES, ON_FILE_SYNC, RealPlatform};
use crate::*;

/// Run `f` with this thread's test storages doing batch calls, and return
/// what it gave and the batch calls made.
fn batched<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    BATCHES.set(true);
    BATCH_LOG.with(|log| log.borrow_mut().clear());
    let result = f();
    BATCHES.set(false);
    ON_FILE_SYNC.with(|hook| *hook.borrow_mut() = None);
    (result, BATCH_LOG.with(|log| log.take()))
}

/// `n` files under three folders, more than one batch's worth for a
/// large `n`.
fn many_files(dir: &Path, n: usize) {
    for i in 0..n {
        let folder = dir.join(format!("d{}", i % 3));
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join(format!("f{i}")), i.to_string()).unwrap();
    }
}

fn manifest_of(root: &Path, step: u64) -> Vec<u8> {
    fs::read(root.join(format!("step_{step}")).join(MANIFEST_NAME)).unwrap()
}

#[test]
fn batches_write_the_same_manifests_as_one_file_at_a_time() {
    let f = fixture();
    many_files(&f.src.0, 2500);
    f.publish(1).unwrap();
    let (published, calls) = batched(|| f.publish(2));
    published.unwrap();
    // 2500 files and the small payload: three batches each way.
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("copy ")).count(),
        3,
        "{calls:?}"
    );
    let one_by_one = Manifest::parse(&manifest_of(&f.root.0, 1)).unwrap();
    assert_eq!(
        Manifest {
            step: 2,
            ..one_by_one
        }
        .to_bytes(),
        manifest_of(&f.root.0, 2)
    );

    for step in [3, 4] {
        let dir = f.path(&format!("step_{step}"));
        payload(&dir, "a");
        many_files(&dir, 2500);
    }
    seal(&f.root, &RealPlatform, 3, &opts()).unwrap();
    let (sealed, calls) = batched(|| seal(&f.root, &RealPlatform, 4, &opts()));
    sealed.unwrap();
    assert!(calls.iter().any(|c| c.starts_with("hash ")), "{calls:?}");
    let one_by_one = Manifest::parse(&manifest_of(&f.root.0, 3)).unwrap();
    assert_eq!(
        Manifest {
            step: 4,
            ..one_by_one
        }
        .to_bytes(),
        manifest_of(&f.root.0, 4)
    );
}

#[test]
fn every_batch_is_flushed_before_the_manifest_is_written() {
    let f = fixture();
    many_files(&f.src.0, 2100);
    let (published, calls) = batched(|| f.publish(1));
    let report = published.unwrap();
    let manifest = calls.iter().position(|c| c == "manifest").unwrap();
    let synced: usize = calls[..manifest]
        .iter()
        .filter_map(|c| c.strip_prefix("sync "))
        .map(|c| c.rsplit_once(' ').unwrap().1.parse::<usize>().unwrap())
        .sum();
    assert_eq!(synced, 2100 + 2, "every payload file: {calls:?}");
    assert!(report.fsyncs >= 2102);

    let dir = f.path("step_2");
    payload(&dir, "a");
    let (sealed, calls) = batched(|| seal(&f.root, &RealPlatform, 2, &opts()));
    sealed.unwrap();
    let manifest = calls.iter().position(|c| c == "manifest").unwrap();
    assert!(
        calls[..manifest]
            .iter()
            .any(|c| c.starts_with("sync step_2 ")),
        "{calls:?}"
    );
}

#[test]
fn a_failed_flush_in_a_batch_names_the_file_and_commits_nothing() {
    let f = fixture();
    many_files(&f.src.0, 30);
    let (published, _) = batched(|| {
        ON_FILE_SYNC.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(|path: &Path| {
                if path.ends_with("d1/f7") {
                    Err(std::io::Error::other("EIO"))
                } else {
                    Ok(())
                }
            }))
        });
        f.publish(1)
    });
    let err = published.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Durability,
        &["failed to fsync", "d1/f7", "EIO"],
    );
    assert!(!f.path("step_1").exists(), "nothing committed");

    let dir = f.path("step_2");
    many_files(&dir, 30);
    let (sealed, _) = batched(|| {
        ON_FILE_SYNC.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(|path: &Path| {
                if path.ends_with("d2/f29") {
                    Err(std::io::Error::other("EIO"))
                } else {
                    Ok(())
                }
            }))
        });
        seal(&f.root, &RealPlatform, 2, &opts())
    });
    assert_error(
        &sealed.unwrap_err(),
        ErrorKind::Durability,
        &["step_2/d2/f29", "EIO"],
    );
    assert!(!dir.join(STABLE_NAME).exists());
    assert!(!dir.join(MANIFEST_NAME).exists());
}
