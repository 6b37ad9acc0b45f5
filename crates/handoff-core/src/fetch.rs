//! The reader's local copy: `fetch` a committed step from the shared root
//! into a local root, verified, so that a server loads it from local disk
//! and the shared step is held only while it is copied.
//!
//! The local root is a handoff root like any other: the copy is staged and
//! committed by the same path as `publish` ([`stage_and_commit`]), with the
//! shared step's manifest byte for byte and the shared step's number, so
//! `wait`, `gc` and `fsck` work on it, and steps of a newer run order after
//! an older run's there as they do in the shared root.

use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{FETCH_ROOT_MARKER, HANDOFF_DIR, check_prefix, step_name};
use crate::manifest::{FileEntry, Manifest, hex};
use crate::read::{check_root, wait};
use crate::retain::{check_holder, pin, unpin};
use crate::storage::{Platform, Storage, StorageFile, join, open_file, write_all_at};
use crate::tree::{Flusher, ensure_dir, hash_file, read_chunks};
use crate::types::{
    FetchOptions, FetchReport, PinRequest, Target, Verify, Version, WaitOptions, millis,
};
use crate::validate::{Rejected, check, is_absent, read_manifest_bytes};
use crate::write::{commit_manifest, stage_and_commit};

/// Wait for `target` in `shared` as [`wait`] does, pinned for
/// `options.holder`; copy the step into `local` unless `local` already
/// holds it, committed with the same manifest; release the pin.
///
/// Each file is copied into `local`'s staging and the copy (what a server
/// will load) is hashed and checked against the manifest before it is
/// flushed. A copy that does not match is made again from a freshly opened
/// source for `options.settle`, then is an integrity error naming the
/// shared file; nothing is committed locally then, and the staging copy is
/// removed. The pin is released whatever happened (best effort: a release
/// that fails is a warning, or is added to the error, and the pin expires
/// after its ttl).
///
/// Runs: the local step has the shared step's number, which orders a newer
/// run's steps after an older run's, so a local root never mixes them up.
/// The local root has no runs of its own, and none is checked there.
pub fn fetch<S: Storage, L: Storage, P: Platform>(
    shared: &S,
    local: &L,
    platform: &P,
    target: Target,
    options: &FetchOptions,
) -> Result<FetchReport> {
    check_prefix(&options.prefix)?;
    check_holder(&options.holder)?;
    check_root(local, "local root")?;
    let waited = WaitOptions {
        prefix: options.prefix.clone(),
        // The copy checks every hash; the wait only needs the step whole.
        verify: Verify::Size,
        timeout: options.timeout,
        settle: options.settle,
        poll: options.poll,
        pin: Some(PinRequest {
            holder: options.holder.clone(),
            ttl: options.ttl,
        }),
    };
    let version = wait(shared, platform, target, &waited)?;
    let mut held = Held {
        step: version.step,
        since_ms: platform.now_ms(),
    };
    let copied = copy_pinned(shared, local, platform, &version, options, &mut held);
    let released = unpin(shared, &options.prefix, version.step, &options.holder);
    match (copied, released) {
        (Ok(report), Ok(())) => Ok(report),
        (Ok(mut report), Err(e)) => {
            report.warnings.push(format!(
                "the pin of {} on step {} was not released ({}): it expires after its ttl",
                options.holder,
                version.step,
                e.message()
            ));
            Ok(report)
        }
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(e)) => {
            let message = format!(
                "{}; releasing the pin of {} on step {} failed too ({}): it expires after its ttl",
                err.message(),
                options.holder,
                version.step,
                e.message()
            );
            let path = err.path().map(str::to_string);
            let retryable = err.is_retryable();
            Err(Error::from_parts(err.kind(), message, path, retryable))
        }
    }
}

/// The pin a fetch holds on the shared step, renewed between files once
/// half its ttl has passed, so a copy longer than the ttl stays protected
/// (one file must take less than half the ttl).
struct Held {
    step: u64,
    since_ms: u64,
}

impl Held {
    fn renew_if_due<S: Storage, P: Platform>(
        &mut self,
        shared: &S,
        platform: &P,
        options: &FetchOptions,
    ) -> Result<()> {
        let now = platform.now_ms();
        if now.saturating_sub(self.since_ms) < millis(options.ttl) / 2 {
            return Ok(());
        }
        pin(
            shared,
            platform,
            &options.prefix,
            self.step,
            &options.holder,
            options.ttl,
        )
        .map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the pin on step {} could not be renewed during the copy: {}",
                    self.step,
                    e.message()
                ),
            )
        })?;
        self.since_ms = now;
        Ok(())
    }
}

/// The part of [`fetch`] that holds the pin.
fn copy_pinned<S: Storage, L: Storage, P: Platform>(
    shared: &S,
    local: &L,
    platform: &P,
    version: &Version,
    options: &FetchOptions,
    held: &mut Held,
) -> Result<FetchReport> {
    let step = version.step;
    let dir = step_name(&options.prefix, step);
    let (bytes, manifest) = read_manifest_bytes(shared, &dir).map_err(rejection)?;
    if manifest.step != step || manifest.files != version.files {
        let shown = shared.display(&dir);
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("the manifest of {shown} changed after it was validated; nothing was fetched"),
        )
        .at(shown)
        .retryable(true));
    }
    let source = shared.display(&dir);
    let unchanged = |local_version: Version| FetchReport {
        version: local_version,
        source: source.clone(),
        copied: false,
        bytes_copied: 0,
        fsyncs: 0,
        fsync_ms: 0.0,
        warnings: version.warnings.clone(),
    };
    if let Some(there) = fetched(local, &options.prefix, step, &bytes)? {
        return Ok(unchanged(there));
    }
    let dirs = payload_dirs(&manifest);
    let mut flush = Flusher::new(local);
    mark_fetch_root(&mut flush)?;
    let already = || {
        let shown = local.display(&dir);
        Error::new(
            ErrorKind::Conflict,
            format!("{shown} appeared while step {step} was fetched; left as is"),
        )
        .at(shown)
    };
    let staged = stage_and_commit(
        &mut flush,
        platform,
        &dir,
        None,
        "fetch",
        &already,
        |flush, staging| {
            for sub in &dirs {
                let path = join(staging, sub);
                local
                    .create_dir(&path)
                    .map_err(|e| Error::io("create", &local.display(&path), &e))?;
            }
            let mut total = 0u64;
            for entry in &manifest.files {
                held.renew_if_due(shared, platform, options)?;
                let from = join(&dir, &entry.path);
                let to = join(staging, &entry.path);
                copy_verified(shared, &from, entry, flush, &to, platform, options)?;
                total += entry.size;
            }
            commit_manifest(flush, platform, staging, &dirs, &bytes)?;
            Ok(total)
        },
    );
    let bytes_copied = match staged {
        Ok(total) => total,
        // Another fetch into the same local root committed the same step
        // first: its copy is as good as ours.
        Err(err) if err.kind() == ErrorKind::Conflict => {
            return match fetched(local, &options.prefix, step, &bytes)? {
                Some(there) => Ok(unchanged(there)),
                None => Err(err),
            };
        }
        Err(err) => return Err(err),
    };
    let mut warnings = version.warnings.clone();
    warnings.append(&mut flush.warnings);
    Ok(FetchReport {
        version: Version::from_manifest(local.display(&dir), manifest),
        source,
        copied: true,
        bytes_copied,
        fsyncs: flush.fsyncs,
        fsync_ms: 0.0,
        warnings,
    })
}

/// The local copy of `step`, if `local` holds it committed, whole (sizes)
/// and with the shared manifest's `bytes`. Sizes, not hashes: the copy was
/// hash-checked when it was written and flushed before its `STABLE`, and
/// hashing a whole checkpoint again on every fetch of a step already there
/// (each poll of `watch --to`) would cost what the copy cost. A step there
/// that is anything else is left as is: a conflict, or the integrity error
/// of a local copy that no longer validates.
fn fetched<L: Storage>(
    local: &L,
    prefix: &str,
    step: u64,
    bytes: &[u8],
) -> Result<Option<Version>> {
    let dir = step_name(prefix, step);
    let shown = local.display(&dir);
    let present = local
        .stat(&dir)
        .map_err(|e| Error::io("inspect", &shown, &e))?
        .is_some();
    if !present {
        return Ok(None);
    }
    let conflict = |why: String| {
        Err(Error::new(ErrorKind::Conflict, format!("{shown} {why}; left as is")).at(shown.clone()))
    };
    match check(local, prefix, step, Verify::Size) {
        Ok(there) => match read_manifest_bytes(local, &dir) {
            Ok((local_bytes, _)) if local_bytes == bytes => Ok(Some(there)),
            Ok(_) => conflict(format!(
                "holds another step {step}: its manifest differs from the shared one \
                 (remove it to fetch again)"
            )),
            Err(rejected) => Err(rejection(rejected)),
        },
        Err(Rejected::NotCommitted(_)) => conflict(
            "exists but is not committed (written by something else, or left by a crash: \
             `handoff fsck --repair` on the local root)"
                .to_string(),
        ),
        Err(Rejected::Mismatch(e) | Rejected::Unsafe(e)) => Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "the local copy {shown} does not validate ({}); left as is: remove it to \
                 fetch again",
                e.message()
            ),
        )
        .at(e.path().unwrap_or(&shown).to_string())),
        Err(Rejected::Failed(e)) => Err(e),
    }
}

/// Mark `local` as a fetch's local root: its staging directories are then
/// taken for abandoned after [`FETCH_STAGING_GRACE`](crate::layout::FETCH_STAGING_GRACE)
/// (retain.rs). Not flushed: a marker lost in a crash only leaves staging
/// for the longer grace of a shared root.
fn mark_fetch_root<L: Storage>(flush: &mut Flusher<'_, L>) -> Result<()> {
    let fs = flush.fs;
    ensure_dir(flush, HANDOFF_DIR, "")?;
    match fs.create_new(FETCH_ROOT_MARKER) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", &fs.display(FETCH_ROOT_MARKER), &e)),
    }
}

/// The directories the manifest's files need, parents first.
fn payload_dirs(manifest: &Manifest) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for entry in &manifest.files {
        let mut at = 0;
        while let Some(slash) = entry.path[at..].find('/') {
            at += slash;
            let dir = entry.path[..at].to_string();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            at += 1;
        }
    }
    dirs.sort();
    dirs
}

/// Copy shared `from` to local `to` and check the copy against `entry`,
/// again from a freshly opened source while it does not match, for the
/// settle time; then flush it.
fn copy_verified<S: Storage, L: Storage, P: Platform>(
    shared: &S,
    from: &str,
    entry: &FileEntry,
    flush: &mut Flusher<'_, L>,
    to: &str,
    platform: &P,
    options: &FetchOptions,
) -> Result<()> {
    let fs = flush.fs;
    let mut first_mismatch: Option<u64> = None;
    let mut pause = 2u64.min(millis(options.poll).max(1));
    loop {
        match copy_once(shared, from, entry, flush, to) {
            Ok(()) => return Ok(()),
            Err(Copy::Failed(err)) => return Err(err),
            Err(Copy::Mismatch(err)) => {
                let _ = fs.remove_file(to);
                let now = platform.now_ms();
                let since = *first_mismatch.get_or_insert(now);
                if now.saturating_sub(since) >= millis(options.settle) {
                    return Err(err);
                }
                let jittered = pause / 2 + platform.random_u64() % (pause / 2 + 1);
                platform.sleep_ms(jittered.max(1));
                pause = (pause * 2).min(millis(options.poll).max(1));
            }
        }
    }
}

/// Why one copy of a file was not accepted.
enum Copy {
    /// The source, or the copy, is not what the manifest lists: retried.
    Mismatch(Error),
    /// Anything else: the fetch stops.
    Failed(Error),
}

/// One copy of shared `from` to local `to`: copied natively where the
/// storage can (the host's `copy_file_range`), else in chunks; the copy is
/// hashed (what a server will load, read back from the page cache just
/// written), checked against `entry`, then flushed.
fn copy_once<S: Storage, L: Storage>(
    shared: &S,
    from: &str,
    entry: &FileEntry,
    flush: &mut Flusher<'_, L>,
    to: &str,
) -> std::result::Result<(), Copy> {
    let fs = flush.fs;
    let shown = shared.display(from);
    let mismatch = |why: String| {
        Copy::Mismatch(
            Error::new(
                ErrorKind::Integrity,
                format!("{shown} {why}; nothing was committed to {}", fs.display("")),
            )
            .at(shown.clone())
            .retryable(true),
        )
    };
    let mut input = match open_file(shared, from) {
        Ok(file) => file,
        Err(e) if is_absent(&e) => {
            return Err(mismatch(format!(
                "is missing (manifest lists {} bytes)",
                entry.size
            )));
        }
        Err(e) => return Err(Copy::Failed(Error::io("open", &shown, &e))),
    };
    let size = input
        .size()
        .map_err(|e| Copy::Failed(Error::io("inspect", &shown, &e)))?;
    if size != entry.size {
        return Err(mismatch(format!(
            "is {size} bytes, manifest lists {}",
            entry.size
        )));
    }
    let mut output = fs
        .create_new(to)
        .map_err(|e| Copy::Failed(Error::io("create", &fs.display(to), &e)))?;
    let copy_error = |e: io::Error| {
        let what = format!("copy {shown} to");
        Copy::Failed(Error::io(&what, &fs.display(to), &e))
    };
    let copied = output.copy_from(&mut input).map_err(copy_error)?;
    let (read, blake3) = match copied {
        Some(_) => {
            output.start_writeback();
            hash_file(fs, &mut output, to).map_err(Copy::Failed)?
        }
        None => {
            // The bytes written are the bytes hashed.
            let mut hasher = blake3::Hasher::new();
            let read = read_chunks(&mut input, &shown, |chunk, offset| {
                hasher.update(chunk);
                write_all_at(&mut output, chunk, offset)
                    .map_err(|e| Error::io("write", &fs.display(to), &e))
            })
            .map_err(Copy::Failed)?;
            (read, hex(&hasher.finalize()))
        }
    };
    if read != entry.size || blake3 != entry.blake3 {
        return Err(mismatch(format!(
            "does not match its hash: copied {read} bytes with blake3 {blake3}, manifest \
             lists {} bytes with blake3 {}",
            entry.size, entry.blake3
        )));
    }
    flush.file(&mut output, to).map_err(Copy::Failed)
}

/// The error a rejected validation stands for.
fn rejection(rejected: Rejected) -> Error {
    match rejected {
        Rejected::NotCommitted(why) => Error::new(ErrorKind::NotFound, why),
        Rejected::Mismatch(e) | Rejected::Unsafe(e) | Rejected::Failed(e) => e,
    }
}
