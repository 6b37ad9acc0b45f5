//! The storage trait: every filesystem effect the protocol has goes through it,
//! so the same protocol code runs on a real directory (inside the component), on
//! a model of a crashing disk (the simulation), or on anything else.
//!
//! Paths are relative to the storage's root, `/`-separated, without `.` or `..`
//! components; the empty path names the root itself.

use std::any::Any;
use std::io;

/// What kind of object a path names. Symbolic links are reported as such and
/// never followed by the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A named pipe: opening it for reading blocks until a writer comes.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix domain socket.
    Socket,
    /// Anything else, or a special file the storage cannot name: WASI
    /// (wasmtime-wasi) reports FIFOs and sockets as of unknown type.
    Other,
}

impl Kind {
    /// What an object of this kind is, for a message: "a FIFO".
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
            Kind::Other => "a special file (a FIFO or a socket)",
        }
    }
}

/// The error of [`open_file`] on something that is not a regular file: its
/// `io::Error` carries this, so that [`Error::io`](crate::Error) reports an
/// integrity error saying what was found.
#[derive(Debug)]
pub(crate) struct NotRegular(pub(crate) Kind);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it is {}, not a regular file", self.0.describe())
    }
}

impl std::error::Error for NotRegular {}

/// What was found instead of a regular file, if `e` is [`open_file`]'s
/// refusal.
pub(crate) fn not_regular(e: &io::Error) -> Option<Kind> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NotRegular>())
        .map(|n| n.0)
}

/// Open the regular file `path` for reading: the only way the protocol
/// opens anything to read. Its kind is looked at first, without following
/// a symbolic link, and anything but a regular file is refused unopened
/// (see [`not_regular`]): opening a FIFO blocks until a writer comes, and
/// a blocked open is a host call no deadline can interrupt.
///
/// Nothing there is still left to [`Storage::open`] to find: on NFS a
/// look-up may answer "absent" from a cache that an open revalidates. A
/// swap to a special file between the look and the open is not excluded
/// here; the CLI's watchdog bounds that window (docs/PROTOCOL.md).
pub(crate) fn open_file<S: Storage + ?Sized>(fs: &S, path: &str) -> io::Result<S::File> {
    match fs.stat(path)? {
        Some(meta) if meta.kind != Kind::File => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            NotRegular(meta.kind),
        )),
        _ => fs.open(path),
    }
}

/// Metadata of a path, as `lstat` would give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The object's kind.
    pub kind: Kind,
    /// Size in bytes (files only; unspecified otherwise).
    pub size: u64,
    /// Last data modification, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (a single path component).
    pub name: String,
    /// The entry's kind, without following symbolic links.
    pub kind: Kind,
}

/// A directory tree the protocol reads and writes.
///
/// Durability contract, which the simulation models and the protocol relies
/// on: file data is durable only after [`StorageFile::sync`] of that file; a
/// directory entry (created by [`create_dir`](Storage::create_dir) or
/// [`create_new`](Storage::create_new), changed by [`rename`](Storage::rename)
/// or [`remove_file`](Storage::remove_file)/[`remove_dir`](Storage::remove_dir))
/// is durable only after [`sync_dir`](Storage::sync_dir) of its parent; a rename
/// is atomic.
pub trait Storage {
    /// An open file.
    type File: StorageFile;

    /// Metadata of `path` without following a final symbolic link; `Ok(None)`
    /// when nothing is there.
    fn stat(&self, path: &str) -> io::Result<Option<Metadata>>;

    /// The entries of directory `path`, in no particular order, without `.`
    /// and `..`.
    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>>;

    /// Create directory `path`; fails with `AlreadyExists` if anything is there.
    fn create_dir(&self, path: &str) -> io::Result<()>;

    /// Open the regular file `path` for reading. A symbolic link is not
    /// followed (the open fails). The protocol calls it only through
    /// [`open_file`], which refuses anything but a regular file first; an
    /// implementation that can open without blocking (`O_NONBLOCK`) should.
    fn open(&self, path: &str) -> io::Result<Self::File>;

    /// Create the regular file `path` for writing; fails with
    /// `AlreadyExists` if anything is there.
    fn create_new(&self, path: &str) -> io::Result<Self::File>;

    /// Rename `from` to `to` atomically. Renaming a directory onto a non-empty
    /// directory fails (`DirectoryNotEmpty` or `AlreadyExists`): that failure is
    /// the protocol's writer fence.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Remove the file (or symbolic link) `path`.
    fn remove_file(&self, path: &str) -> io::Result<()>;

    /// Remove the empty directory `path`.
    fn remove_dir(&self, path: &str) -> io::Result<()>;

    /// Make the entries of directory `path` durable (`fsync` of the
    /// directory). `Unsupported` means the filesystem refuses directory
    /// flushes; any other error means the entries may not be durable.
    fn sync_dir(&self, path: &str) -> io::Result<()>;

    /// How `path` should be named in a message: the full path the user knows.
    fn display(&self, path: &str) -> String;

    /// Batch form of opening each regular file of `paths` (relative to
    /// `dir`), starting its writeback and hashing it: the sizes and hashes,
    /// in order. For a storage that does many files at once faster than one
    /// by one (a host with threads); `Ok(None)`, the default, means it does
    /// not, and the protocol does each file itself.
    fn hash_files(&self, dir: &str, paths: &[String]) -> BatchResult<Option<Vec<Digest>>> {
        let _ = (dir, paths);
        Ok(None)
    }

    /// Batch form of creating `to/p` and copying `from/p` of `source` into
    /// it, for each `p` of `paths`, then hashing the source file: the sizes
    /// and hashes, in order. Nothing is flushed. `source` is the other
    /// storage (see [`as_any`](Storage::as_any)); `Ok(None)`, the default,
    /// means this storage cannot copy from it in batches.
    fn copy_files(
        &self,
        source: &dyn Any,
        from: &str,
        to: &str,
        paths: &[String],
    ) -> BatchResult<Option<Vec<Digest>>> {
        let _ = (source, from, to, paths);
        Ok(None)
    }

    /// Batch form of opening each regular file of `paths` (relative to
    /// `dir`) and flushing it ([`StorageFile::sync`]); returns once all are
    /// durable. `Ok(false)`, the default, means the storage does not, and
    /// the protocol flushes each file itself.
    fn sync_files(&self, dir: &str, paths: &[String]) -> BatchResult<bool> {
        let _ = (dir, paths);
        Ok(false)
    }

    /// This storage as [`Any`], so that [`copy_files`](Storage::copy_files)
    /// can recognise a storage of its own kind. `None`, the default, for
    /// storages that do not copy in batches.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}

/// A file's size and BLAKE3 hash.
pub type Digest = (u64, [u8; 32]);

/// The result of a batch call of [`Storage`].
pub type BatchResult<T> = Result<T, BatchError>;

/// Where a batch call of [`Storage`] stopped: the index of the file in the
/// paths it was given, and why.
#[derive(Debug)]
pub struct BatchError {
    /// The file's index in the call's `paths`.
    pub index: usize,
    /// What went wrong with it.
    pub error: io::Error,
}

/// An open file of a [`Storage`].
pub trait StorageFile {
    /// Read into `buf` from `offset`; 0 at end of file.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Write `buf` at `offset`, returning how much was written.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// The file's current size, read afresh (not from a cache of this handle).
    fn size(&mut self) -> io::Result<u64>;

    /// Make the file's data and metadata durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;

    /// The BLAKE3 hash of the whole file, computed by the storage itself
    /// where it can do that faster than reading the file through
    /// [`read_at`](StorageFile::read_at): the bytes hashed and the hash.
    /// `Ok(None)`, the default, means it cannot, and the protocol reads and
    /// hashes the file itself.
    fn hash(&mut self) -> io::Result<Option<(u64, [u8; 32])>> {
        Ok(None)
    }

    /// Fill this new, empty file with all of `src` (from offset 0 to its
    /// end) natively, and return the bytes copied. `Ok(None)`, the default,
    /// means this storage cannot copy from `src` (typically because `src`
    /// is not one of its own files, see [`as_any`](StorageFile::as_any)),
    /// and the protocol copies through `read_at` / `write_at`. Nothing is
    /// flushed.
    fn copy_from(&mut self, src: &mut dyn StorageFile) -> io::Result<Option<u64>> {
        let _ = src;
        Ok(None)
    }

    /// Advisory: start writing the file's dirty data to storage now, so that
    /// a later [`sync`](StorageFile::sync) has less to wait for. The default
    /// does nothing.
    fn start_writeback(&mut self) {}

    /// This file as [`Any`], so that [`copy_from`](StorageFile::copy_from)
    /// can recognise a file of its own storage. `None`, the default, for
    /// storages that do not copy natively.
    fn as_any(&mut self) -> Option<&mut dyn Any> {
        None
    }
}

/// What the protocol takes from where it runs, besides storage: the time, a
/// pause, and random numbers. Kept out of [`Storage`] so a model can control
/// them.
pub trait Platform {
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Pause the caller for `ms` milliseconds.
    fn sleep_ms(&self, ms: u64);

    /// A random number, for unique staging names and backoff jitter.
    fn random_u64(&self) -> u64;
}

pub(crate) use crate::layout::join;

/// Write all of `buf` at `offset`.
pub(crate) fn write_all_at<F: StorageFile>(
    file: &mut F,
    mut buf: &[u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.write_at(buf, offset)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}
