//! The writer's side: `seal` (in place) and `publish` (staged).

use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{
    HANDOFF_DIR, MANIFEST_TMP_PREFIX, SEAL_CLAIM_NAME, SEAL_CLAIM_TMP_PREFIX, SEAL_CLAIM_WRITER,
    STAGING_DIR, STEP_PINS_NAME, check_prefix, is_protocol_name, manifest_tmp_name, run_step,
    seal_claim_tmp_name, staging_name, step_name,
};
use crate::manifest::{FileEntry, MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, STABLE_NAME, hex};
use crate::retain::{Claim, claim_pins};
use crate::runs::check_run;
use crate::storage::{Digest, Kind, Platform, Storage, StorageFile, join, open_file, write_all_at};
use crate::tree::{BATCH, Flusher, ensure_dir, hash_file, read_chunks, remove_tree};
use crate::types::{PublishReport, Version, WriteOptions};

/// Seal a payload already written in `<prefix><step>/`.
///
/// Order, and the crash or race each point prevents:
/// 0. claim the step: rename a directory holding the writer id to
///    `.handoff.seal`, which fails if a claim is there. Of two sealers
///    exactly one renames; the other gets a conflict having left nothing. A sealer whose own claim is there
///    (same writer id: it died and runs again) takes it over. Then list the
///    directory: a `STABLE` there means another sealer committed the step
///    and released its claim before ours.
/// 1. hash every payload file (the storage may start writing it out), then
///    fsync every payload file, then every payload directory (deepest
///    first): the data and names must be durable before anything vouches
///    for them.
/// 2. write the manifest to a name of this attempt's own, fsync it, rename
///    it into place: a crash never leaves a half-written manifest under the
///    real name, and only the claim's holder ever renames onto it.
/// 3. fsync the step directory: the manifest's name is durable before `STABLE`.
/// 4. create `STABLE` exclusively and fsync it; fsync the step directory again:
///    the sentinel's name is durable.
/// 5. fsync the root: the step directory's own name is durable, so a version
///    reported as sealed survives a crash. Then the claim is removed.
pub fn seal<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    step: u64,
    options: &WriteOptions,
) -> Result<PublishReport> {
    let (step, dir) = written_step(fs, step, options)?;
    match fs
        .stat(&dir)
        .map_err(|e| Error::io("inspect", &fs.display(&dir), &e))?
    {
        None => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no step directory {}: write the payload there first, or use publish",
                    fs.display(&dir)
                ),
            ));
        }
        Some(m) if m.kind != Kind::Dir => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a directory", fs.display(&dir)),
            ));
        }
        Some(_) => {}
    }
    let stable = join(&dir, STABLE_NAME);
    if fs
        .stat(&stable)
        .map_err(|e| Error::io("inspect", &fs.display(&stable), &e))?
        .is_some()
    {
        return Err(sealed_already(fs, step, &stable));
    }
    let mut flush = Flusher::new(fs);
    claim_seal(&mut flush, platform, &dir, step, &options.writer)?;
    let result = seal_claimed(&mut flush, platform, &dir, step, options);
    // Committed or not, the claim has done its work: a failed seal leaves
    // nothing that stops a retry, by this writer or another.
    release_claim(fs, &join(&dir, SEAL_CLAIM_NAME));
    let manifest = result?;
    Ok(report(fs, &dir, manifest, flush))
}

/// The number and directory of step `step` of the writer's run, once the
/// writer is found to write for the newest run begun.
fn written_step<S: Storage>(fs: &S, step: u64, options: &WriteOptions) -> Result<(u64, String)> {
    check_prefix(&options.prefix)?;
    check_writer(&options.writer)?;
    let step = run_step(options.run, step)?;
    check_run(fs, options.run, step)?;
    Ok((step, step_name(&options.prefix, step)))
}

/// The longest writer id: it is recorded in the manifest and in a seal
/// claim, and compared when a sealer takes its own claim over.
pub const MAX_WRITER_BYTES: usize = 4096;

/// Check a writer id before anything is written: a longer one would make
/// a manifest (or a claim) that readers (or a sealer taking it over) refuse.
pub fn check_writer(writer: &str) -> Result<()> {
    if writer.len() <= MAX_WRITER_BYTES {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!(
            "invalid writer id: it is {} bytes, more than the {MAX_WRITER_BYTES} a writer id may have",
            writer.len()
        ),
    ))
}

/// Steps 1–5 of [`seal`], holding the claim.
fn seal_claimed<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    step: u64,
    options: &WriteOptions,
) -> Result<Manifest> {
    let fs = flush.fs;
    // Another sealer may have committed the step and released its claim
    // between our look for `STABLE` and our claim. Look again, by a listing:
    // the server answers it, where a look-up may come from this node's
    // cache of the first look.
    let listed = fs
        .read_dir(dir)
        .map_err(|e| Error::io("list", &fs.display(dir), &e))?;
    if listed.iter().any(|e| e.name == STABLE_NAME) {
        return Err(sealed_already(fs, step, &join(dir, STABLE_NAME)));
    }
    // Refuse links, special files and an empty payload before anything is
    // written.
    let (files, dirs) = walk_payload(fs, dir, Reserved::Skip)?;
    if files.is_empty() {
        let shown = fs.display(dir);
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("nothing to seal: {shown} holds no payload file"),
        )
        .at(shown));
    }
    // Hash every file while the storage writes it out, and only then flush
    // them all: a flush started earlier would wait for the whole payload's
    // writeback (ext4 commits its journal after every file's ordered data)
    // before the hashing could go on.
    let mut modified = Vec::with_capacity(files.len());
    for rel in &files {
        modified.push(modified_ms(fs, &join(dir, rel))?);
    }
    let entries = hash_payload(fs, dir, &files)?;
    flush.files(dir, &files)?;
    // A writer still at work would leave a manifest that vouches for bytes
    // the file no longer holds: refuse while nothing is committed.
    for (entry, before) in entries.iter().zip(modified) {
        unchanged(fs, &join(dir, &entry.path), entry.size, before)?;
    }
    // A newer run begun while we hashed supersedes us: the last look before
    // the commit (publish looks again before its rename instead).
    check_run(fs, options.run, step)?;
    let manifest = commit_dir(flush, platform, dir, &dirs, step, options, entries)?;
    if let Err(err) = flush.dir("") {
        return Err(withdraw(fs, dir, err).0);
    }
    if let Err(err) = check_run(fs, options.run, step) {
        return Err(superseded(fs, dir, err).0);
    }
    Ok(manifest)
}

/// Start the writeback of each of `files` under `dir` and hash it: in
/// batches where the storage does many files at once, else one by one.
fn hash_payload<S: Storage>(fs: &S, dir: &str, files: &[String]) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::with_capacity(files.len());
    for batch in files.chunks(BATCH) {
        let digests = fs.hash_files(dir, batch).map_err(|e| {
            let path = join(dir, &batch[e.index]);
            Error::io("hash", &fs.display(&path), &e.error)
        })?;
        let Some(digests) = digests else {
            for rel in batch {
                let path = join(dir, rel);
                let mut file =
                    open_file(fs, &path).map_err(|e| Error::io("open", &fs.display(&path), &e))?;
                file.start_writeback();
                let (size, blake3) = hash_file(fs, &mut file, &path)?;
                entries.push(FileEntry {
                    path: rel.clone(),
                    size,
                    blake3,
                });
            }
            continue;
        };
        entries.extend(listed(batch, digests));
    }
    Ok(entries)
}

/// The manifest entries of `files` from a batch call's sizes and hashes.
fn listed(files: &[String], digests: Vec<Digest>) -> impl Iterator<Item = FileEntry> + '_ {
    files
        .iter()
        .zip(digests)
        .map(|(rel, (size, hash))| FileEntry {
            path: rel.clone(),
            size,
            blake3: hex(&blake3::Hash::from_bytes(hash)),
        })
}

/// A newer run was begun before this writer's commit point, though after
/// its last look: take the step back, as after a failed flush, so that no
/// writer is told it committed a step of a run superseded before that. (A
/// run begun after the commit point may be taken for one begun before;
/// that only withdraws a step its writer is told was superseded.)
fn superseded<S: Storage>(fs: &S, dir: &str, err: Error) -> (Error, bool) {
    let (err, withdrawn) = withdraw(fs, dir, err);
    let path = err.path().map(str::to_string);
    // Retrying cannot help a superseded writer.
    let err = Error::from_parts(err.kind(), err.message().to_string(), path, false);
    (err, withdrawn)
}

/// The conflict of sealing a step whose `STABLE` exists.
fn sealed_already<S: Storage>(fs: &S, step: u64, stable: &str) -> Error {
    let shown = fs.display(stable);
    Error::new(
        ErrorKind::Conflict,
        format!("step {step} is already sealed: {shown} exists; left as is"),
    )
    .at(shown)
}

/// The longest writer id a claim is compared against; a longer file is not
/// one a sealer wrote.
const MAX_CLAIM_BYTES: u64 = 64 * 1024;

/// Step 0 of [`seal`]: claim `dir` for `writer`, or take over the claim a
/// sealer with the same writer id left when it died (removing its
/// temporary manifests, which only a holder of the claim writes).
///
/// The claim is a directory holding a file with the writer id, prepared
/// under a name of this attempt's own and renamed into place whole: a
/// rename onto a directory that is not empty fails, so of two sealers
/// exactly one renames, and a claim is never seen without its writer id,
/// even after a power loss. (An empty `.handoff.seal` is a released claim
/// whose release was cut short: the rename replaces it.)
fn claim_seal<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    step: u64,
    writer: &str,
) -> Result<()> {
    let fs = flush.fs;
    let claim = join(dir, SEAL_CLAIM_NAME);
    let shown = fs.display(&claim);
    // A claim released while we looked at it (its sealer finished or gave
    // up) is tried for again; a few times, as a sealer is quick to release.
    for _ in 0..8 {
        if try_claim(flush, platform, dir, writer)? {
            return Ok(());
        }
        let holder = match read_claim(fs, &claim)? {
            Holder::Released => continue,
            Holder::Unreadable => None,
            Holder::Writer(holder) if holder == writer => {
                take_over(fs, dir, writer)?;
                return Ok(());
            }
            Holder::Writer(holder) => Some(holder),
        };
        let whose = match holder {
            Some(holder) => format!(
                "by writer {holder:?} ({shown} exists); if that seal died, seal again \
                 with --writer {holder:?} to take it over, or remove {shown}"
            ),
            None => format!("by another sealer ({shown} exists); if none is running, remove it"),
        };
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("step {step} is being sealed {whose}; left as is"),
        )
        .at(shown));
    }
    Err(Error::new(
        ErrorKind::Conflict,
        format!("step {step} is being sealed: {shown} came and went while we tried to claim it"),
    )
    .at(shown)
    .retryable(true))
}

/// Prepare a claim for `writer` and rename it into place: whether it was
/// (`false`: a claim is there).
fn try_claim<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    writer: &str,
) -> Result<bool> {
    let fs = flush.fs;
    let claim = join(dir, SEAL_CLAIM_NAME);
    let mine = join(dir, &seal_claim_tmp_name(platform.random_u64()));
    let prepared = (|| {
        fs.create_dir(&mine)
            .map_err(|e| Error::io("create", &fs.display(&mine), &e))?;
        let id = join(&mine, SEAL_CLAIM_WRITER);
        let mut file = fs
            .create_new(&id)
            .map_err(|e| Error::io("create", &fs.display(&id), &e))?;
        write_all_at(&mut file, writer.as_bytes(), 0)
            .map_err(|e| Error::io("write", &fs.display(&id), &e))?;
        flush.file(&mut file, &id)?;
        flush.dir(&mine)
    })();
    let renamed = prepared.and_then(|()| match fs.rename(&mine, &claim) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists
                    | io::ErrorKind::DirectoryNotEmpty
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io("rename claim to", &fs.display(&claim), &e)),
    });
    if renamed != Ok(true) {
        release_claim(fs, &mine);
    }
    renamed
}

/// Take over `writer`'s own claim on `dir`, left by a seal that died:
/// remove the temporary manifests and prepared claims it left.
fn take_over<S: Storage>(fs: &S, dir: &str, writer: &str) -> Result<()> {
    for entry in fs
        .read_dir(dir)
        .map_err(|e| Error::io("list", &fs.display(dir), &e))?
    {
        let path = join(dir, &entry.name);
        if entry.name.starts_with(MANIFEST_TMP_PREFIX) {
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove", &fs.display(&path), &e))?;
        } else if entry.name.starts_with(SEAL_CLAIM_TMP_PREFIX)
            && matches!(read_claim(fs, &path)?, Holder::Writer(w) if w == writer)
        {
            release_claim(fs, &path);
        }
    }
    Ok(())
}

/// Remove the seal claim (or prepared claim) `claim`: its writer file, then
/// the directory. Best effort: what is left is an empty claim, which the
/// next sealer's rename replaces.
fn release_claim<S: Storage>(fs: &S, claim: &str) {
    let _ = fs.remove_file(&join(claim, SEAL_CLAIM_WRITER));
    let _ = fs.remove_dir(claim);
}

/// Whose a seal claim is.
enum Holder {
    /// The writer id in it.
    Writer(String),
    /// None a sealer wrote (too large, or not UTF-8).
    Unreadable,
    /// It is gone: its sealer finished or gave up.
    Released,
}

/// Whose the seal claim `claim` is.
fn read_claim<S: Storage>(fs: &S, claim: &str) -> Result<Holder> {
    let path = join(claim, SEAL_CLAIM_WRITER);
    let shown = fs.display(&path);
    // A failure to read a claim that is gone meanwhile (NFS answers a read
    // of a file another node removed with an error) is a released claim.
    let failed = |doing: &str, e: io::Error| match fs.stat(claim) {
        Ok(None) => Ok(Holder::Released),
        _ if e.kind() == io::ErrorKind::NotFound => Ok(Holder::Released),
        _ => Err(Error::io(doing, &shown, &e)),
    };
    let mut file = match open_file(fs, &path) {
        Ok(file) => file,
        Err(e) => return failed("open", e),
    };
    let size = match file.size() {
        Ok(size) => size,
        Err(e) => return failed("inspect", e),
    };
    if size > MAX_CLAIM_BYTES {
        return Ok(Holder::Unreadable);
    }
    let mut bytes = vec![0; size as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return failed("read", e),
        }
    }
    bytes.truncate(filled);
    Ok(String::from_utf8(bytes).map_or(Holder::Unreadable, Holder::Writer))
}

/// The modification time of `path`, by the storage's clock.
fn modified_ms<S: Storage>(fs: &S, path: &str) -> Result<Option<u64>> {
    let meta = fs
        .stat(path)
        .map_err(|e| Error::io("inspect", &fs.display(path), &e))?;
    Ok(meta.map(|m| m.modified_ms))
}

/// That the file at `path` still has the `size` hashed and the modification
/// time seen before hashing.
fn unchanged<S: Storage>(fs: &S, path: &str, size: u64, modified: Option<u64>) -> Result<()> {
    let now = fs
        .stat(path)
        .map_err(|e| Error::io("inspect", &fs.display(path), &e))?;
    let changed = match now {
        Some(m) if m.size == size && Some(m.modified_ms) == modified => return Ok(()),
        Some(m) if m.size != size => format!("{size} bytes hashed, now {} bytes", m.size),
        Some(_) => "rewritten after it was hashed".to_string(),
        None => "removed".to_string(),
    };
    let shown = fs.display(path);
    Err(Error::new(
        ErrorKind::Io,
        format!("{shown} changed while it was sealed ({changed}); nothing was committed"),
    )
    .at(shown)
    .retryable(true))
}

/// Copy the payload of `source` into staging, seal it there, and rename it to
/// `<prefix><step>` in `fs`. The rename is the commit: before it nothing is
/// visible under the step's name; it fails if the step exists (the writer
/// fence), and then the existing version is untouched.
pub fn publish<S: Storage, Src: Storage, P: Platform>(
    fs: &S,
    source: &Src,
    platform: &P,
    step: u64,
    options: &WriteOptions,
) -> Result<PublishReport> {
    let (step, dir) = written_step(fs, step, options)?;
    let already = || {
        let shown = fs.display(&dir);
        let what = match fs.stat(&join(&dir, STABLE_NAME)) {
            Ok(Some(_)) => format!("step {step} is already published at {shown}"),
            _ => format!(
                "step {step} already exists at {shown}, not yet committed (another \
                 writer is at work there, or died before committing it)"
            ),
        };
        Error::new(ErrorKind::Conflict, format!("{what}; left as is")).at(shown)
    };
    // Fail fast; the rename below is what actually fences.
    if fs
        .stat(&dir)
        .map_err(|e| Error::io("inspect", &fs.display(&dir), &e))?
        .is_some()
    {
        return Err(already());
    }
    let (files, dirs) = walk_payload(source, "", Reserved::Refuse)?;
    if files.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("source {} holds no files to publish", source.display("")),
        ));
    }

    let mut flush = Flusher::new(fs);
    let manifest = stage_and_commit(
        &mut flush,
        platform,
        &dir,
        Some((options.run, step)),
        "publish",
        &already,
        |flush, staging| {
            for sub in &dirs {
                let path = join(staging, sub);
                fs.create_dir(&path)
                    .map_err(|e| Error::io("create", &fs.display(&path), &e))?;
            }
            let entries = copy_payload(source, &files, flush, staging)?;
            commit_dir(flush, platform, staging, &dirs, step, options, entries)
        },
    )?;
    Ok(report(fs, &dir, manifest, flush))
}

/// The staged path of [`publish`], shared with a fetch to a local root:
/// create `.handoff/staging/<dir>.<random>`, let `fill` write and seal the
/// step there (payload, then [`commit_dir`] or [`commit_manifest`]), then
/// rename it to `dir` and flush the root. The rename is the commit point.
///
/// With `run` (the writer's run, and the step), the run is checked against the root's newest run
/// just before the rename and once more after it (a newer run begun
/// meanwhile supersedes the writer). `verb` names the operation in the
/// message of a staging directory taken by gc; `already` is the error of a
/// step found in place. On any error the staging copy is removed and
/// nothing is left under `dir`.
pub(crate) fn stage_and_commit<S: Storage, P: Platform, T>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    run: Option<(u64, u64)>,
    verb: &str,
    already: &dyn Fn() -> Error,
    fill: impl FnOnce(&mut Flusher<'_, S>, &str) -> Result<T>,
) -> Result<T> {
    let fs = flush.fs;
    let check = |fs: &S| match run {
        Some((run, step)) => check_run(fs, run, step),
        None => Ok(()),
    };
    ensure_dir(flush, HANDOFF_DIR, "")?;
    ensure_dir(flush, STAGING_DIR, HANDOFF_DIR)?;
    let staging = staging_name(dir, platform.random_u64());
    fs.create_dir(&staging)
        .map_err(|e| Error::io("create", &fs.display(&staging), &e))?;

    let result = (|| {
        let filled = fill(flush, &staging)?;
        // The last look before the commit point: a newer run begun while we
        // copied supersedes us.
        check(fs)?;
        // A rename replaces an empty directory, such as one an in-place
        // writer made for this step while we copied: look again, by a
        // listing (this node may answer a look-up from its cache of the
        // first look), just before the rename. A crash leaves nothing under
        // the step's name, so a publish run again after one can succeed.
        let there = match fs.read_dir("") {
            Ok(root) => root.iter().any(|entry| entry.name == dir),
            // A root the host cannot list whole (a name that is not UTF-8,
            // which WASI refuses) still has the step looked up.
            Err(_) => fs
                .stat(dir)
                .map_err(|e| Error::io("inspect", &fs.display(dir), &e))?
                .is_some(),
        };
        if there {
            return Err(already());
        }
        match fs.rename(&staging, dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                return Err(already());
            }
            Err(e) => return Err(Error::io("rename staging into", &fs.display(dir), &e)),
        }
        // The rename is durable once the root is flushed (F4), or on
        // CephFS, whose client ties it to the source directory, staging.
        if let Err(err) = flush.dir("").and_then(|()| flush.dir(STAGING_DIR)) {
            let (err, withdrawn) = withdraw(fs, dir, err);
            if withdrawn {
                // Back under staging, which the error path below removes.
                let _ = fs.rename(dir, &staging);
            }
            return Err(err);
        }
        if let Err(err) = check(fs) {
            let (err, withdrawn) = superseded(fs, dir, err);
            if withdrawn {
                let _ = fs.rename(dir, &staging);
            }
            return Err(err);
        }
        Ok(filled)
    })();
    result.map_err(|err| {
        // Nothing under the step's name was created; the staging copy is
        // ours alone, so remove it (gc would otherwise, after its grace).
        let err = staging_taken(fs, &staging, err, verb);
        let _ = remove_tree(fs, &staging);
        err
    })
}

/// A publish that stalled longer than gc's grace period finds its staging
/// directory gone (gc claimed it for abandoned): say so, rather than only
/// "not found".
fn staging_taken<S: Storage>(fs: &S, staging: &str, err: Error, verb: &str) -> Error {
    if err.kind() != ErrorKind::NotFound || !matches!(fs.stat(staging), Ok(None)) {
        return err;
    }
    let shown = fs.display(staging);
    Error::new(
        ErrorKind::Io,
        format!(
            "{}; {shown} is gone: gc takes a staging directory in which nothing changed for \
             longer than its grace period, and this {verb} stalled that long. Nothing was \
             committed: {verb} again",
            err.message()
        ),
    )
    .at(shown)
    .retryable(true)
}

/// The end of step 1 of [`seal`] (the payload's directories, deepest first),
/// then steps 2–4: the manifest of `entries`, then `STABLE`, each made
/// durable.
fn commit_dir<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    payload_dirs: &[String],
    step: u64,
    options: &WriteOptions,
    entries: Vec<FileEntry>,
) -> Result<Manifest> {
    let created = options.created_ms.unwrap_or_else(|| platform.now_ms());
    let manifest = Manifest {
        run: options.run,
        ..Manifest::new(step, &options.writer, created, entries)
    };
    let bytes = manifest.to_bytes();
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        // Readers refuse it unread: committing it would publish a step no
        // one can load.
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the manifest of step {step} would be {} bytes, more than the \
                 {MAX_MANIFEST_BYTES} a reader accepts: split the payload into fewer files",
                bytes.len()
            ),
        ));
    }
    commit_manifest(flush, platform, dir, payload_dirs, &bytes)?;
    Ok(manifest)
}

/// Steps 1 (the payload's directories, deepest first) to 4 of [`seal`]
/// with the manifest's `bytes` as given: a fetch installs the shared
/// step's manifest byte for byte.
pub(crate) fn commit_manifest<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    dir: &str,
    payload_dirs: &[String],
    bytes: &[u8],
) -> Result<()> {
    for sub in payload_dirs.iter().rev() {
        flush.dir(&join(dir, sub))?;
    }
    let fs = flush.fs;
    let tmp = join(dir, &manifest_tmp_name(platform.random_u64()));
    let path = join(dir, MANIFEST_NAME);
    let installed = (|| {
        let mut file = fs
            .create_new(&tmp)
            .map_err(|e| Error::io("create", &fs.display(&tmp), &e))?;
        write_all_at(&mut file, bytes, 0).map_err(|e| Error::io("write", &fs.display(&tmp), &e))?;
        flush.file(&mut file, &tmp)?;
        drop(file);
        fs.rename(&tmp, &path)
            .map_err(|e| Error::io("rename manifest to", &fs.display(&path), &e))
    })();
    if let Err(err) = installed {
        let _ = fs.remove_file(&tmp);
        return Err(err);
    }
    // The pin directory exists before the step is committed and goes only
    // when gc claims the step, so "no pin directory" means "claimed" (see
    // retain.rs). A crashed seal may have left it, empty.
    let pins = join(dir, STEP_PINS_NAME);
    match fs.create_dir(&pins) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs.stat(&pins) {
            Ok(Some(m)) if m.kind == Kind::Dir => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} is in the way: the name is handoff's pin directory",
                        fs.display(&pins)
                    ),
                ));
            }
        },
        Err(e) => return Err(Error::io("create", &fs.display(&pins), &e)),
    }
    // The manifest's and the pin directory's names must be durable before
    // STABLE vouches for them.
    flush.dir(dir)?;

    let stable = join(dir, STABLE_NAME);
    let mut file = fs.create_new(&stable).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => {
            let shown = fs.display(&stable);
            Error::new(
                ErrorKind::Conflict,
                format!("{shown} appeared while sealing; left as is"),
            )
            .at(shown)
        }
        _ => Error::io("create", &fs.display(&stable), &e),
    })?;
    if let Err(err) = flush.file(&mut file, &stable).and_then(|()| flush.dir(dir)) {
        return Err(withdraw(fs, dir, err).0);
    }
    Ok(())
}

/// After a flush failed once the step's `STABLE` existed: readers may
/// already accept a step the writer is about to report as failed. Take it
/// back (remove `STABLE`) so that nothing reported as failed stays committed
/// and a retry can succeed, unless a reader has pinned it meanwhile: gc's
/// claim (removing the pin directory, refused while a pin is in it) decides,
/// and the claimed pin directory is put back for the retry. Whether it was
/// withdrawn, and the error saying so.
fn withdraw<S: Storage>(fs: &S, dir: &str, err: Error) -> (Error, bool) {
    let pins = join(dir, STEP_PINS_NAME);
    let stable = join(dir, STABLE_NAME);
    let outcome = match claim_pins(fs, &pins) {
        Ok(Claim::Claimed) => match fs.remove_file(&stable) {
            Ok(()) => {
                // Best effort: the flush that failed may fail again.
                let _ = fs.create_dir(&pins);
                let _ = fs.sync_dir(dir);
                Ok(())
            }
            Err(e) => Err(format!("removing {} failed too: {e}", fs.display(&stable))),
        },
        Ok(Claim::Pinned) => Err("a reader pinned it first, so it stays committed".to_string()),
        Ok(Claim::Taken) => Err("another process claimed it meanwhile".to_string()),
        Err(claiming) => Err(format!("and withdrawing it failed: {claiming}")),
    };
    let (why, withdrawn) = match outcome {
        Ok(()) => (
            "the step was withdrawn: nothing is committed".to_string(),
            true,
        ),
        Err(why) => (why, false),
    };
    let message = format!("{}; {why}", err.message());
    let path = err.path().map(str::to_string);
    let err = Error::from_parts(err.kind(), message, path, withdrawn);
    (err, withdrawn)
}

fn report<S: Storage>(
    fs: &S,
    dir: &str,
    manifest: Manifest,
    flush: Flusher<'_, S>,
) -> PublishReport {
    PublishReport {
        version: Version::from_manifest(fs.display(dir), manifest),
        fsyncs: flush.fsyncs,
        fsync_ms: 0.0,
        warnings: flush.warnings,
    }
}

/// What [`walk_payload`] does with a top-level name the protocol reserves
/// (`STABLE`, the manifest, the pin folder, a seal's claim).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Leave it out: the tree is a step folder, where those are the
    /// protocol's own.
    Skip,
    /// Refuse the payload: the tree is a publish source, where such a file
    /// would be dropped or, copied, would stand for the protocol's own.
    Refuse,
}

/// List a payload tree: files and directories relative to `dir`, sorted, with
/// parents before children. Top-level names the protocol reserves are
/// skipped or refused, as `reserved` says. Anything but a regular file or a
/// directory is refused.
pub(crate) fn walk_payload<S: Storage>(
    fs: &S,
    dir: &str,
    reserved: Reserved,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let path = join(dir, &rel);
        let mut entries = fs
            .read_dir(&path)
            .map_err(|e| Error::io("list", &fs.display(&path), &e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            if rel.is_empty() && is_protocol_name(&entry.name) {
                if reserved == Reserved::Skip {
                    continue;
                }
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: `{}` is a name handoff reserves at the top of a step, so a \
                         payload cannot hold it (to publish a copy of a committed step, \
                         leave out its STABLE and {MANIFEST_NAME})",
                        fs.display(&join(dir, &entry.name)),
                        entry.name
                    ),
                )
                .at(fs.display(&join(dir, &entry.name))));
            }
            let child = join(&rel, &entry.name);
            match entry.kind {
                Kind::File => files.push(child),
                Kind::Dir => {
                    dirs.push(child.clone());
                    pending.push(child);
                }
                other => {
                    let shown = fs.display(&join(dir, &child));
                    let message = if other == Kind::Symlink {
                        format!(
                            "{shown} is a symbolic link: handoff publishes regular files only, \
                             replace it with the file it points to"
                        )
                    } else {
                        format!(
                            "{shown} is {}, not a regular file or directory",
                            other.describe()
                        )
                    };
                    return Err(Error::new(ErrorKind::InvalidInput, message).at(shown));
                }
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Copy each of `files` from `source` to `staging` in the flusher's
/// storage, hashing each, and flush every copy: in batches where the storage
/// copies and flushes many files at once (all copied, then all flushed, so
/// that the flushes find their writeback under way), else one by one.
fn copy_payload<S: Storage, Src: Storage>(
    source: &Src,
    files: &[String],
    flush: &mut Flusher<'_, S>,
    staging: &str,
) -> Result<Vec<FileEntry>> {
    let fs = flush.fs;
    let mut entries = Vec::with_capacity(files.len());
    let mut unflushed = Vec::new();
    for batch in files.chunks(BATCH) {
        let copied = match source.as_any() {
            Some(source_any) => fs.copy_files(source_any, "", staging, batch).map_err(|e| {
                let rel = &batch[e.index];
                let what = format!("copy {} to", source.display(rel));
                Error::io(&what, &fs.display(&join(staging, rel)), &e.error)
            })?,
            None => None,
        };
        let Some(digests) = copied else {
            for rel in batch {
                entries.push(copy_file(source, rel, flush, &join(staging, rel))?);
            }
            continue;
        };
        entries.extend(listed(batch, digests));
        unflushed.extend_from_slice(batch);
    }
    flush.files(staging, &unflushed)?;
    Ok(entries)
}

/// Copy `rel` from `source` to `to` in the flusher's storage, hash it and
/// flush the copy.
///
/// Where the storage copies natively (a host doing `copy_file_range`), the
/// copy's writeback is started at once and the source is hashed while the
/// storage writes the copy out, so the later flush has little left to wait
/// for. The hash is of the source, not of the copy: a copy the kernel or
/// filesystem got wrong then fails a reader's hash check instead of being
/// vouched for. Otherwise each chunk is hashed as it passes through.
fn copy_file<S: Storage, Src: Storage>(
    source: &Src,
    rel: &str,
    flush: &mut Flusher<'_, S>,
    to: &str,
) -> Result<FileEntry> {
    let fs = flush.fs;
    let mut input =
        open_file(source, rel).map_err(|e| Error::io("open", &source.display(rel), &e))?;
    let mut output = fs
        .create_new(to)
        .map_err(|e| Error::io("create", &fs.display(to), &e))?;
    let copied = output.copy_from(&mut input).map_err(|e| {
        let what = format!("copy {} to", source.display(rel));
        Error::io(&what, &fs.display(to), &e)
    })?;
    let (size, blake3) = match copied {
        Some(copied) => {
            output.start_writeback();
            let (size, blake3) = hash_file(source, &mut input, rel)?;
            if size != copied {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} changed while it was published: {copied} bytes copied, \
                     then {size} bytes hashed",
                        source.display(rel)
                    ),
                ));
            }
            (size, blake3)
        }
        None => {
            let mut hasher = blake3::Hasher::new();
            let size = read_chunks(&mut input, &source.display(rel), |chunk, offset| {
                hasher.update(chunk);
                write_all_at(&mut output, chunk, offset)
                    .map_err(|e| Error::io("write", &fs.display(to), &e))
            })?;
            (size, hex(&hasher.finalize()))
        }
    };
    flush.file(&mut output, to)?;
    Ok(FileEntry {
        path: rel.to_string(),
        size,
        blake3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfs::{RealPlatform, StdDir};

    #[test]
    fn a_manifest_readers_would_refuse_is_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("step_1")).unwrap();
        let fs = StdDir(tmp.path().to_path_buf());
        // Long names: about 4 KiB of manifest per entry.
        let entries: Vec<FileEntry> = (0..MAX_MANIFEST_BYTES / 4000 + 1)
            .map(|i| FileEntry {
                path: format!("{i:0>4000}"),
                size: 1,
                blake3: "0".repeat(64),
            })
            .collect();
        let options = WriteOptions::new("w");
        let mut flush = Flusher::new(&fs);
        let err = commit_dir(
            &mut flush,
            &RealPlatform,
            "step_1",
            &[],
            1,
            &options,
            entries,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.message().contains("more than the"), "{err}");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("step_1"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
