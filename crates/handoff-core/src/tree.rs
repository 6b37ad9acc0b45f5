//! Tree helpers under every operation: flushing with a count, creating a
//! directory durably, hashing a file as a stream, removing a tree.

use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::hex;
use crate::storage::{BatchError, Kind, Storage, StorageFile, join, open_file};

/// Streaming buffer size for copying and hashing.
pub(crate) const CHUNK: usize = 1 << 20;

/// Most files handed to one batch call of [`Storage`]: bounds a call the
/// host cannot interrupt between files' time checks, and its lists.
pub(crate) const BATCH: usize = 1024;

/// Issues flushes, counts them, and latches the one tolerated refusal.
///
/// A failed flush is an error and ends the operation: after a failed fsync the
/// kernel may have dropped the dirty pages, so retrying proves nothing.
pub(crate) struct Flusher<'a, S: Storage> {
    pub(crate) fs: &'a S,
    pub(crate) fsyncs: u64,
    pub(crate) warnings: Vec<String>,
    dir_sync_refused: bool,
}

impl<'a, S: Storage> Flusher<'a, S> {
    pub(crate) fn new(fs: &'a S) -> Self {
        Flusher {
            fs,
            fsyncs: 0,
            warnings: Vec::new(),
            dir_sync_refused: false,
        }
    }

    pub(crate) fn file(&mut self, file: &mut S::File, path: &str) -> Result<()> {
        file.sync().map_err(|e| {
            Error::new(
                ErrorKind::Durability,
                format!("failed to fsync {}: {e}", self.fs.display(path)),
            )
        })?;
        self.fsyncs += 1;
        Ok(())
    }

    /// Flush the regular files `paths` under `dir`: in batches where the
    /// storage flushes many at once, else each through an open of its own.
    pub(crate) fn files(&mut self, dir: &str, paths: &[String]) -> Result<()> {
        let fs = self.fs;
        let failed = |path: &str, e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Durability,
                format!("failed to fsync {}: {e}", fs.display(path)),
            )
        };
        for batch in paths.chunks(BATCH) {
            match fs.sync_files(dir, batch) {
                Ok(true) => self.fsyncs += batch.len() as u64,
                Ok(false) => {
                    for rel in batch {
                        let path = join(dir, rel);
                        let mut file = open_file(fs, &path).map_err(|e| failed(&path, &e))?;
                        self.file(&mut file, &path)?;
                    }
                }
                Err(BatchError { index, error }) => {
                    return Err(failed(&join(dir, &batch[index]), &error));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        match self.fs.sync_dir(path) {
            Ok(()) => {
                self.fsyncs += 1;
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
            Err(e) => Err(Error::new(
                ErrorKind::Durability,
                format!("failed to fsync directory {}: {e}", self.fs.display(path)),
            )),
        }
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
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{} exists and is not a directory", fs.display(path)),
                    ));
                }
                Err(e) => return Err(Error::io("inspect", &fs.display(path), &e)),
            },
            Err(e) => return Err(Error::io("create", &fs.display(path), &e)),
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "{} keeps disappearing while being created",
            fs.display(path)
        ),
    ))
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
    let size = read_chunks(file, &fs.display(path), |chunk, _| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok((size, hex(&hasher.finalize())))
}

/// Read `file` from its start in chunks of [`CHUNK`], handing each to
/// `each` with its offset; the bytes read. `shown` names the file in errors.
pub(crate) fn read_chunks<F: StorageFile>(
    file: &mut F,
    shown: &str,
    mut each: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| Error::io("read", shown, &e))?;
        if n == 0 {
            return Ok(offset);
        }
        each(&buf[..n], offset)?;
        offset += n as u64;
    }
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
