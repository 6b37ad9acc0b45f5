//! The writer's side: `seal` (in place) and `publish` (staged).

use std::io;

use crate::error::{Error, Result};
use crate::layout::{
    HANDOFF_DIR, MANIFEST_TMP_NAME, STAGING_DIR, STEP_PINS_NAME, check_prefix, step_name,
};
use crate::manifest::{FileEntry, MANIFEST_NAME, Manifest, STABLE_NAME, hex};
use crate::read::Version;
use crate::storage::{Clock, Kind, Storage, StorageFile, join, write_all_at};

/// Streaming buffer size for copying and hashing.
pub(crate) const CHUNK: usize = 1 << 20;

/// Options shared by the writing operations.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Step directory prefix, `step_` by default.
    pub prefix: String,
    /// Writer id recorded in the manifest.
    pub writer: String,
    /// Creation time to record; `None` records the current time.
    pub created_ms: Option<u64>,
}

/// What a writing operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// The committed version.
    pub version: Version,
    /// Flushes issued (files and directories).
    pub syncs: u32,
    /// Conditions that did not stop the operation, such as a filesystem
    /// that refuses directory flushes.
    pub warnings: Vec<String>,
}

/// Issues flushes, counts them, and latches the one tolerated refusal.
///
/// A failed flush is an error and ends the operation: after a failed fsync the
/// kernel may have dropped the dirty pages, so retrying proves nothing.
pub(crate) struct Flusher<'a, S: Storage> {
    pub(crate) fs: &'a S,
    pub(crate) syncs: u32,
    pub(crate) warnings: Vec<String>,
    dir_sync_refused: bool,
}

impl<'a, S: Storage> Flusher<'a, S> {
    pub(crate) fn new(fs: &'a S) -> Self {
        Flusher {
            fs,
            syncs: 0,
            warnings: Vec::new(),
            dir_sync_refused: false,
        }
    }

    pub(crate) fn file(&mut self, file: &mut S::File, path: &str) -> Result<()> {
        file.sync().map_err(|e| {
            Error::Durability(format!("failed to fsync {}: {e}", self.fs.display(path)))
        })?;
        self.syncs += 1;
        Ok(())
    }

    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        match self.fs.sync_dir(path) {
            Ok(()) => {
                self.syncs += 1;
                Ok(())
            }
            // Some filesystems refuse directory fsync outright; there is no
            // stronger flush to be had, so say so once and keep the order.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                if !self.dir_sync_refused {
                    self.dir_sync_refused = true;
                    self.warnings.push(format!(
                        "directory fsync unsupported on {}: {e}",
                        self.fs.display(path)
                    ));
                }
                Ok(())
            }
            Err(e) => Err(Error::Durability(format!(
                "failed to fsync directory {}: {e}",
                self.fs.display(path)
            ))),
        }
    }
}

/// Seal a payload already written in `<prefix><step>/`.
///
/// Order, and the crash each point prevents:
/// 1. hash every payload file (the storage may start writing it out), then
///    fsync every payload file, then every payload directory (deepest
///    first): the data and names must be durable before anything vouches
///    for them.
/// 2. write the manifest to a temporary name, fsync it, rename it into place:
///    a crash never leaves a half-written manifest under the real name.
/// 3. fsync the step directory: the manifest's name is durable before `STABLE`.
/// 4. create `STABLE` exclusively and fsync it; fsync the step directory again:
///    the sentinel's name is durable.
/// 5. fsync the root: the step directory's own name is durable, so a version
///    reported as sealed survives a crash.
pub fn seal<S: Storage, C: Clock>(
    fs: &S,
    clock: &C,
    step: u64,
    options: &WriteOptions,
) -> Result<PublishReport> {
    check_prefix(&options.prefix)?;
    let dir = step_name(&options.prefix, step);
    match fs
        .stat(&dir)
        .map_err(|e| Error::io("inspect", &fs.display(&dir), &e))?
    {
        None => {
            return Err(Error::NotFound(format!(
                "no step directory {}: write the payload there first, or use publish",
                fs.display(&dir)
            )));
        }
        Some(m) if m.kind != Kind::Dir => {
            return Err(Error::InvalidInput(format!(
                "{} is not a directory",
                fs.display(&dir)
            )));
        }
        Some(_) => {}
    }
    let stable = join(&dir, STABLE_NAME);
    if fs
        .stat(&stable)
        .map_err(|e| Error::io("inspect", &fs.display(&stable), &e))?
        .is_some()
    {
        return Err(Error::Conflict(format!(
            "step {step} is already sealed: {} exists; left as is",
            fs.display(&stable)
        )));
    }

    // Refuse links and special files before anything is written.
    let (files, dirs) = walk_payload(fs, &dir)?;
    // Hash every file while the storage writes it out, and only then flush
    // them all: a flush started earlier would wait for the whole payload's
    // writeback (ext4 commits its journal after every file's ordered data)
    // before the hashing could go on.
    let mut entries = Vec::with_capacity(files.len());
    for rel in &files {
        let path = join(&dir, rel);
        let mut file = fs
            .open(&path)
            .map_err(|e| Error::io("open", &fs.display(&path), &e))?;
        file.start_writeback();
        let (size, blake3) = hash_file(fs, &mut file, &path)?;
        entries.push(FileEntry {
            path: rel.clone(),
            size,
            blake3,
        });
    }
    let mut flush = Flusher::new(fs);
    for rel in &files {
        let path = join(&dir, rel);
        let mut file = fs
            .open(&path)
            .map_err(|e| Error::io("open", &fs.display(&path), &e))?;
        flush.file(&mut file, &path)?;
    }
    for sub in dirs.iter().rev() {
        flush.dir(&join(&dir, sub))?;
    }
    let manifest = Manifest::new(
        step,
        &options.writer,
        options.created_ms.unwrap_or_else(|| clock.now_ms()),
        entries,
    );
    commit_dir(&mut flush, &dir, &manifest)?;
    flush.dir("")?;
    Ok(report(fs, &dir, manifest, flush))
}

/// Copy the payload of `source` into staging, seal it there, and rename it to
/// `<prefix><step>` in `fs`. The rename is the commit: before it nothing is
/// visible under the step's name; it fails if the step exists (the writer
/// fence), and then the existing version is untouched.
pub fn publish<S: Storage, Src: Storage, C: Clock>(
    fs: &S,
    source: &Src,
    clock: &C,
    step: u64,
    options: &WriteOptions,
) -> Result<PublishReport> {
    check_prefix(&options.prefix)?;
    let dir = step_name(&options.prefix, step);
    let already = || {
        Error::Conflict(format!(
            "step {step} is already published at {}; left as is",
            fs.display(&dir)
        ))
    };
    // Fail fast; the rename below is what actually fences.
    if fs
        .stat(&dir)
        .map_err(|e| Error::io("inspect", &fs.display(&dir), &e))?
        .is_some()
    {
        return Err(already());
    }
    let (files, dirs) = walk_payload(source, "")?;
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "source {} holds no files to publish",
            source.display("")
        )));
    }

    let mut flush = Flusher::new(fs);
    ensure_dir(&mut flush, HANDOFF_DIR, "")?;
    ensure_dir(&mut flush, STAGING_DIR, HANDOFF_DIR)?;
    let staging = join(STAGING_DIR, &format!("{dir}.{:016x}", clock.random_u64()));
    fs.create_dir(&staging)
        .map_err(|e| Error::io("create", &fs.display(&staging), &e))?;

    let result = (|| {
        for sub in &dirs {
            let path = join(&staging, sub);
            fs.create_dir(&path)
                .map_err(|e| Error::io("create", &fs.display(&path), &e))?;
        }
        let mut entries = Vec::with_capacity(files.len());
        for rel in &files {
            entries.push(copy_file(source, rel, &mut flush, &join(&staging, rel))?);
        }
        for sub in dirs.iter().rev() {
            flush.dir(&join(&staging, sub))?;
        }
        let manifest = Manifest::new(
            step,
            &options.writer,
            options.created_ms.unwrap_or_else(|| clock.now_ms()),
            entries,
        );
        commit_dir(&mut flush, &staging, &manifest)?;
        match fs.rename(&staging, &dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                return Err(already());
            }
            Err(e) => return Err(Error::io("rename staging into", &fs.display(&dir), &e)),
        }
        // The rename is durable only once the root is flushed.
        flush.dir("")?;
        Ok(manifest)
    })();
    match result {
        Ok(manifest) => Ok(report(fs, &dir, manifest, flush)),
        Err(err) => {
            // Nothing under the step's name was created; the staging copy is
            // ours alone, so remove it (gc would otherwise, after its grace).
            let _ = remove_tree(fs, &staging);
            Err(err)
        }
    }
}

/// Steps 2–4 of [`seal`]: manifest, then `STABLE`, each made durable.
fn commit_dir<S: Storage>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    manifest: &Manifest,
) -> Result<()> {
    let fs = flush.fs;
    let tmp = join(dir, MANIFEST_TMP_NAME);
    // A leftover from a crashed seal is ours to replace.
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &fs.display(&tmp), &e)),
    }
    let mut file = fs
        .create_new(&tmp)
        .map_err(|e| Error::io("create", &fs.display(&tmp), &e))?;
    write_all_at(&mut file, &manifest.to_bytes(), 0)
        .map_err(|e| Error::io("write", &fs.display(&tmp), &e))?;
    flush.file(&mut file, &tmp)?;
    drop(file);
    let path = join(dir, MANIFEST_NAME);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename manifest to", &fs.display(&path), &e))?;
    // The pin directory exists before the step is committed and goes only
    // when gc claims the step, so "no pin directory" means "claimed" (see
    // retain.rs). A crashed seal may have left it, empty.
    let pins = join(dir, STEP_PINS_NAME);
    match fs.create_dir(&pins) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs.stat(&pins) {
            Ok(Some(m)) if m.kind == Kind::Dir => {}
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{} is in the way: the name is handoff's pin directory",
                    fs.display(&pins)
                )));
            }
        },
        Err(e) => return Err(Error::io("create", &fs.display(&pins), &e)),
    }
    // The manifest's and the pin directory's names must be durable before
    // STABLE vouches for them.
    flush.dir(dir)?;

    let stable = join(dir, STABLE_NAME);
    let mut file = fs.create_new(&stable).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::Conflict(format!(
            "{} appeared while sealing; left as is",
            fs.display(&stable)
        )),
        _ => Error::io("create", &fs.display(&stable), &e),
    })?;
    flush.file(&mut file, &stable)?;
    flush.dir(dir)
}

fn report<S: Storage>(
    fs: &S,
    dir: &str,
    manifest: Manifest,
    flush: Flusher<'_, S>,
) -> PublishReport {
    PublishReport {
        version: Version::from_manifest(fs.display(dir), manifest),
        syncs: flush.syncs,
        warnings: flush.warnings,
    }
}

/// Create `path` if missing, making its name durable in `parent`.
pub(crate) fn ensure_dir<S: Storage>(
    flush: &mut Flusher<'_, S>,
    path: &str,
    parent: &str,
) -> Result<()> {
    let fs = flush.fs;
    // A directory seen as existing can vanish before the stat (the last pin of
    // a step released by another reader): create it again.
    for _ in 0..8 {
        match fs.create_dir(path) {
            Ok(()) => return flush.dir(parent),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs.stat(path) {
                Ok(Some(m)) if m.kind == Kind::Dir => return Ok(()),
                Ok(None) => continue,
                Ok(Some(_)) => {
                    return Err(Error::Io(format!(
                        "{} exists and is not a directory",
                        fs.display(path)
                    )));
                }
                Err(e) => return Err(Error::io("inspect", &fs.display(path), &e)),
            },
            Err(e) => return Err(Error::io("create", &fs.display(path), &e)),
        }
    }
    Err(Error::Io(format!(
        "{} keeps disappearing while being created",
        fs.display(path)
    )))
}

/// List a payload tree: files and directories relative to `dir`, sorted, with
/// parents before children. At the top level the protocol's own files (and
/// its pin directory) are skipped. Anything but a regular file or a directory is refused.
pub(crate) fn walk_payload<S: Storage>(fs: &S, dir: &str) -> Result<(Vec<String>, Vec<String>)> {
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
            if rel.is_empty()
                && matches!(
                    entry.name.as_str(),
                    MANIFEST_NAME | STABLE_NAME | MANIFEST_TMP_NAME | STEP_PINS_NAME
                )
            {
                continue;
            }
            let child = join(&rel, &entry.name);
            match entry.kind {
                Kind::File => files.push(child),
                Kind::Dir => {
                    dirs.push(child.clone());
                    pending.push(child);
                }
                Kind::Symlink => {
                    return Err(Error::InvalidInput(format!(
                        "{} is a symbolic link: handoff publishes regular files only, \
                         replace it with the file it points to",
                        fs.display(&join(dir, &child))
                    )));
                }
                Kind::Other => {
                    return Err(Error::InvalidInput(format!(
                        "{} is not a regular file or directory",
                        fs.display(&join(dir, &child))
                    )));
                }
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Stream a file through BLAKE3: its size and hash, never the whole file in
/// memory.
pub(crate) fn hash_file<S: Storage>(
    fs: &S,
    file: &mut S::File,
    path: &str,
) -> Result<(u64, String)> {
    if let Some((size, hash)) = file
        .hash()
        .map_err(|e| Error::io("hash", &fs.display(path), &e))?
    {
        return Ok((size, hex(&blake3::Hash::from_bytes(hash))));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| Error::io("read", &fs.display(path), &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok((offset, hex(&hasher.finalize())))
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
    let mut input = source
        .open(rel)
        .map_err(|e| Error::io("open", &source.display(rel), &e))?;
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
                return Err(Error::Io(format!(
                    "{} changed while it was published: {copied} bytes copied, \
                     then {size} bytes hashed",
                    source.display(rel)
                )));
            }
            (size, blake3)
        }
        None => {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; CHUNK];
            let mut offset = 0u64;
            loop {
                let n = input
                    .read_at(&mut buf, offset)
                    .map_err(|e| Error::io("read", &source.display(rel), &e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                write_all_at(&mut output, &buf[..n], offset)
                    .map_err(|e| Error::io("write", &fs.display(to), &e))?;
                offset += n as u64;
            }
            (offset, hex(&hasher.finalize()))
        }
    };
    flush.file(&mut output, to)?;
    Ok(FileEntry {
        path: rel.to_string(),
        size,
        blake3,
    })
}

/// Remove a tree bottom-up. Used only on directories the protocol owns
/// (its own staging copy, trash). Anything already gone counts as removed:
/// two gcs, or gc and fsck, may sweep the same trash.
pub(crate) fn remove_tree<S: Storage>(fs: &S, path: &str) -> io::Result<()> {
    let gone_ok = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    match fs.stat(path)? {
        None => return Ok(()),
        Some(m) if m.kind != Kind::Dir => return gone_ok(fs.remove_file(path)),
        Some(_) => {}
    }
    let entries = match fs.read_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let child = join(path, &entry.name);
        if entry.kind == Kind::Dir {
            remove_tree(fs, &child)?;
        } else {
            gone_ok(fs.remove_file(&child))?;
        }
    }
    gone_ok(fs.remove_dir(path))
}
