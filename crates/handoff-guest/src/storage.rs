//! The component's host: flushes through the `durability` import, falling
//! back to `descriptor.sync()` where the host cannot flush a descriptor
//! itself, and hashing, copying and writeback through the `bulk` import,
//! falling back to doing the work in the component where the host declines.
//! A host that cannot reach descriptors may still hash and start writeback
//! by path (`hash-path`, `start-writeback-path`): each file knows the
//! preopen and path it was opened at.
//! The storage itself is `handoff-wasi`'s [`WasiDir`](handoff_wasi::WasiDir).

use std::io;
use std::sync::OnceLock;

use handoff_wasi::{DescriptorSync, Offload};
use wasip2::filesystem::types::Descriptor;

use handoff_core::{BatchResult, Digest};

use crate::bindings::handoff::protocol::bulk::{self, BatchError, BulkError, BulkSupport};
use crate::bindings::handoff::protocol::durability::{
    self, BatchSyncError, FileFailure, SyncError,
};

/// The host's `durability` and `bulk` interfaces as an [`Offload`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Imports;

impl Offload for Imports {
    fn sync_file(&self, file: &Descriptor) -> io::Result<()> {
        match durability::sync_file(file) {
            Ok(()) => Ok(()),
            // A host that cannot reach the descriptor (wasmtime-py) says so;
            // WASI's own sync is the next best flush.
            Err(SyncError::Unsupported) => DescriptorSync.sync_file(file),
            Err(SyncError::Refused(why) | SyncError::Failed(why)) => Err(io::Error::other(why)),
        }
    }

    fn sync_dir(&self, dir: &Descriptor) -> io::Result<()> {
        match durability::sync_directory(dir) {
            Ok(()) => Ok(()),
            Err(SyncError::Unsupported) => DescriptorSync.sync_dir(dir),
            Err(SyncError::Refused(why)) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
            Err(SyncError::Failed(why)) => Err(io::Error::other(why)),
        }
    }

    fn hash_file(&self, file: &Descriptor) -> io::Result<Option<(u64, [u8; 32])>> {
        if !supported(BulkSupport::HASH_FILE) {
            return Ok(None);
        }
        hashed(bulk::hash_file(file), "hash-file")
    }

    fn hash_path(&self, root: &str, path: &str) -> io::Result<Option<(u64, [u8; 32])>> {
        if !supported(BulkSupport::HASH_PATH) {
            return Ok(None);
        }
        hashed(bulk::hash_path(root, path), "hash-path")
    }

    fn copy_file(&self, src: &Descriptor, dst: &Descriptor) -> io::Result<Option<u64>> {
        if !supported(BulkSupport::COPY_FILE) {
            return Ok(None);
        }
        bulk::copy_file(src, dst).map(Some).or_else(declined)
    }

    fn start_writeback(&self, file: &Descriptor) {
        if supported(BulkSupport::START_WRITEBACK) {
            bulk::start_writeback(file);
        }
    }

    fn start_writeback_path(&self, root: &str, path: &str) {
        if !supported(BulkSupport::START_WRITEBACK) && supported(BulkSupport::START_WRITEBACK_PATH)
        {
            bulk::start_writeback_path(root, path);
        }
    }

    fn sync_files(&self, dir: &Descriptor, paths: &[String]) -> BatchResult<bool> {
        match durability::sync_files(dir, paths) {
            Ok(()) => Ok(true),
            Err(BatchSyncError::Unsupported) => Ok(false),
            Err(BatchSyncError::Failed(failure)) => Err(batch_error(failure, paths.len())),
        }
    }

    fn hash_files(&self, dir: &Descriptor, paths: &[String]) -> BatchResult<Option<Vec<Digest>>> {
        if !supported(BulkSupport::HASH_FILES) {
            return Ok(None);
        }
        digests(bulk::hash_files(dir, paths), paths, "hash-files")
    }

    fn copy_files(
        &self,
        src: &Descriptor,
        dst: &Descriptor,
        paths: &[String],
    ) -> BatchResult<Option<Vec<Digest>>> {
        if !supported(BulkSupport::COPY_FILES) {
            return Ok(None);
        }
        digests(bulk::copy_files(src, dst, paths), paths, "copy-files")
    }
}

/// A batch call's answer as sizes and hashes, one per path, or where it
/// stopped.
fn digests(
    answer: Result<Vec<(u64, Vec<u8>)>, BatchError>,
    paths: &[String],
    call: &str,
) -> BatchResult<Option<Vec<Digest>>> {
    let listed = match answer {
        Ok(listed) => listed,
        Err(BatchError::Unsupported) => return Ok(None),
        Err(BatchError::Failed(failure)) => return Err(batch_error(failure, paths.len())),
    };
    let wrong = |index: usize, why: String| handoff_core::BatchError {
        index,
        error: io::Error::other(format!("the host's {call} {why}")),
    };
    if listed.len() != paths.len() {
        let why = format!(
            "answered {} results for {} files",
            listed.len(),
            paths.len()
        );
        return Err(wrong(0, why));
    }
    listed
        .into_iter()
        .enumerate()
        .map(
            |(index, (size, hash))| match <[u8; 32]>::try_from(hash.as_slice()) {
                Ok(hash) => Ok((size, hash)),
                Err(_) => Err(wrong(
                    index,
                    format!("returned {} bytes, not a 32-byte BLAKE3 hash", hash.len()),
                )),
            },
        )
        .collect::<BatchResult<Vec<Digest>>>()
        .map(Some)
}

/// The host's failure at one file of a batch of `len`. An index out of the
/// batch is the host's error, and is reported at the first file.
fn batch_error(failure: FileFailure, len: usize) -> handoff_core::BatchError {
    let index = usize::try_from(failure.index).unwrap_or(usize::MAX);
    if index < len {
        return handoff_core::BatchError {
            index,
            error: io::Error::other(failure.reason),
        };
    }
    handoff_core::BatchError {
        index: 0,
        error: io::Error::other(format!(
            "{} (the host named file {} of a batch of {len})",
            failure.reason, failure.index
        )),
    }
}

/// Whether the host does `call`, asked once per instance.
fn supported(call: BulkSupport) -> bool {
    static SUPPORT: OnceLock<BulkSupport> = OnceLock::new();
    SUPPORT.get_or_init(bulk::supported).contains(call)
}

/// What a host's hash call answered, its hash checked for length.
fn hashed(
    answer: Result<(u64, Vec<u8>), BulkError>,
    call: &str,
) -> io::Result<Option<(u64, [u8; 32])>> {
    match answer {
        Ok((size, hash)) => match <[u8; 32]>::try_from(hash.as_slice()) {
            Ok(hash) => Ok(Some((size, hash))),
            Err(_) => Err(io::Error::other(format!(
                "the host's {call} returned {} bytes, not a 32-byte BLAKE3 hash",
                hash.len()
            ))),
        },
        Err(e) => declined(e),
    }
}

/// `unsupported` lets the component do the work; `failed` stops it.
fn declined<T>(error: BulkError) -> io::Result<Option<T>> {
    match error {
        BulkError::Unsupported => Ok(None),
        BulkError::Failed(why) => Err(io::Error::other(why)),
    }
}

/// A root or source directory of the component.
pub type WasiDir = handoff_wasi::WasiDir<Imports>;
