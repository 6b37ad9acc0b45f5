//! handoff's [`Storage`] and [`Platform`] over `wasi:filesystem` descriptors.
//!
//! Both WebAssembly builds of handoff run the protocol through this crate:
//! the component (`handoff-guest`, working through its host's `durability`
//! and `bulk` imports) and the plain WASI command (`handoff-command`,
//! flushing with `descriptor.sync()`). What differs between them is only
//! what the host does for them (flushes, and optionally native hashing and
//! copying), so that is the [`Offload`] parameter of [`WasiDir`].
//!
//! Everything here uses `wasip2` descriptors rather than `std::fs`: the same
//! code then runs under jco, whose `std::fs` writes fail. Directories are
//! opened with `READ` only (jco refuses `MUTATE_DIRECTORY`), and a directory
//! is reopened before it is flushed, because a preopen may be held without
//! read access (`O_PATH` in wasmtime) and jco refuses to sync a preopen.
//!
//! ```no_run
//! use handoff_wasi::{DescriptorSync, WasiPlatform, WasiDir};
//!
//! // `/root` is a preopen: `wasmtime run --dir HOST_ROOT::/root ...`.
//! let root = WasiDir::open("/root", DescriptorSync)?;
//! let steps = handoff_core::list(&root, "step_")?;
//! # let _ = (steps, WasiPlatform);
//! # Ok::<(), handoff_core::Error>(())
//! ```
#![deny(missing_docs)]

use std::io;
use std::rc::Rc;

use handoff_core::{
    BatchResult, Digest, DirEntry, Error, ErrorKind, Kind, Metadata, Platform, Storage, StorageFile,
};
use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
};

/// What a [`WasiDir`] asks of the program's host beyond `wasi:filesystem`:
/// flushes, which every build must make, and native bulk work, which a
/// build may offer. Every flush the protocol makes goes through this trait,
/// so each build decides how to flush, and nothing bypasses it.
///
/// Flush contract: `Ok(())` means what was flushed survives a crash or power
/// loss of the storage. Any error means it may not; the protocol then stops
/// the operation (it never retries a failed flush). The one tolerated
/// refusal is [`io::ErrorKind::Unsupported`] from
/// [`sync_dir`](Offload::sync_dir): the filesystem refuses directory flushes
/// (Linux's `EINVAL` on some network and FUSE filesystems), which the
/// protocol reports once as a warning.
///
/// The bulk methods have defaults that decline (`Ok(None)`, or nothing for
/// writeback): the protocol then does the same work through the
/// descriptors itself.
pub trait Offload: Clone + 'static {
    /// Make a file's data and metadata durable (`fsync`). `file` is a
    /// regular file the protocol opened or created.
    fn sync_file(&self, file: &Descriptor) -> io::Result<()>;

    /// Make a directory's entries durable: names created, renamed into or
    /// removed from it. `dir` was opened afresh, read-only, for this flush;
    /// it is never a preopen.
    fn sync_dir(&self, dir: &Descriptor) -> io::Result<()>;

    /// BLAKE3 of `file` from offset 0 to its end: bytes read and hash.
    fn hash_file(&self, file: &Descriptor) -> io::Result<Option<(u64, [u8; 32])>> {
        let _ = file;
        Ok(None)
    }

    /// BLAKE3 of the regular file at `path` beneath the preopen named
    /// `root`, opened afresh by the host: bytes read and hash. Asked only
    /// where [`hash_file`](Offload::hash_file) declined, for a file the
    /// program has open at that path (for hosts that cannot reach a
    /// descriptor's file but can open one beneath a preopen of their own).
    fn hash_path(&self, root: &str, path: &str) -> io::Result<Option<(u64, [u8; 32])>> {
        let _ = (root, path);
        Ok(None)
    }

    /// Copy all of `src` into the new, empty file `dst`: bytes copied.
    fn copy_file(&self, src: &Descriptor, dst: &Descriptor) -> io::Result<Option<u64>> {
        let _ = (src, dst);
        Ok(None)
    }

    /// Advisory: start writing `file`'s dirty data to storage now.
    fn start_writeback(&self, file: &Descriptor) {
        let _ = file;
    }

    /// Flush the regular files `paths` beneath `dir` all at once (see
    /// [`Storage::sync_files`]); `Ok(false)`: not done, nothing flushed.
    fn sync_files(&self, dir: &Descriptor, paths: &[String]) -> BatchResult<bool> {
        let _ = (dir, paths);
        Ok(false)
    }

    /// Start the writeback of and hash the regular files `paths` beneath
    /// `dir` (see [`Storage::hash_files`]).
    fn hash_files(&self, dir: &Descriptor, paths: &[String]) -> BatchResult<Option<Vec<Digest>>> {
        let _ = (dir, paths);
        Ok(None)
    }

    /// Copy `paths` from beneath `src` to new files beneath `dst`, hashing
    /// each source (see [`Storage::copy_files`]).
    fn copy_files(
        &self,
        src: &Descriptor,
        dst: &Descriptor,
        paths: &[String],
    ) -> BatchResult<Option<Vec<Digest>>> {
        let _ = (src, dst, paths);
        Ok(None)
    }

    /// Advisory: [`start_writeback`](Offload::start_writeback) for the
    /// regular file at `path` beneath the preopen named `root`. Asked right
    /// after `start_writeback`, for a file the program has open at that
    /// path; a host that can reach descriptors does only one of the two.
    fn start_writeback_path(&self, root: &str, path: &str) {
        let _ = (root, path);
    }
}

/// Flush with `wasi:filesystem`'s own `descriptor.sync()`, which hosts
/// implement with `fsync(2)` (wasmtime) or `fs.fsyncSync` (jco), and do all
/// bulk work in the program.
#[derive(Clone, Copy, Debug, Default)]
pub struct DescriptorSync;

impl Offload for DescriptorSync {
    fn sync_file(&self, file: &Descriptor) -> io::Result<()> {
        file.sync().map_err(error)
    }

    fn sync_dir(&self, dir: &Descriptor) -> io::Result<()> {
        match dir.sync() {
            Ok(()) => Ok(()),
            Err(ErrorCode::Invalid | ErrorCode::Unsupported) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the filesystem refuses directory fsync",
            )),
            Err(code) => Err(error(code)),
        }
    }
}

/// A directory the program was given: a preopen, or a directory beneath one.
pub struct WasiDir<H: Offload = DescriptorSync> {
    base: Descriptor,
    /// The directory's guest path, for messages.
    shown: String,
    /// The name of the preopen it is beneath, and its path beneath that
    /// (`""` for the preopen itself): where [`Offload::hash_path`] finds
    /// its files.
    preopen: Rc<str>,
    beneath: String,
    host: H,
}

impl<H: Offload> WasiDir<H> {
    /// Open `path`, the guest path of a preopen or of a directory beneath
    /// one, flushing and copying through `host`. The longest matching
    /// preopen wins.
    ///
    /// A path beneath no preopen is `not-found`; a `..` component is refused
    /// as `invalid-input` before anything is opened (it could only lead out
    /// of the preopen, which the runtime refuses as well). The rest is opened
    /// without following symbolic links.
    pub fn open(path: &str, host: H) -> handoff_core::Result<WasiDir<H>> {
        let wanted = path.trim_end_matches('/');
        let wanted = if wanted.is_empty() && path.starts_with('/') {
            "/"
        } else {
            wanted
        };
        let mut best: Option<(Descriptor, String, String)> = None;
        for (descriptor, name) in preopens::get_directories() {
            let Some(rest) = beneath(&name, wanted) else {
                continue;
            };
            if best.as_ref().is_none_or(|(_, n, _)| name.len() > n.len()) {
                best = Some((descriptor, name, rest));
            }
        }
        let Some((preopen, preopen_name, rest)) = best else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no directory {path}: it is not beneath a directory this program was \
                     given (a preopen)"
                ),
            )
            .at(path));
        };
        let mut parts = Vec::new();
        for part in rest.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "refusing {path}: `..` would lead out of the directories this \
                             program was given"
                        ),
                    )
                    .at(path));
                }
                part => parts.push(part),
            }
        }
        // Even the preopen itself is opened afresh: jco answers `invalid` to
        // `stat` and `sync` on a preopen descriptor.
        let beneath = parts.join("/");
        let rest = if parts.is_empty() { "." } else { &beneath };
        let base = preopen
            .open_at(
                PathFlags::empty(),
                rest,
                OpenFlags::DIRECTORY,
                DescriptorFlags::READ,
            )
            .map_err(|code| {
                let e = error(code);
                let (kind, message) = match e.kind() {
                    io::ErrorKind::NotFound => {
                        (ErrorKind::NotFound, format!("no directory {path}: {e}"))
                    }
                    _ => (
                        ErrorKind::Io,
                        format!("failed to open directory {path}: {e}"),
                    ),
                };
                Error::new(kind, message).at(path)
            })?;
        Ok(WasiDir {
            base,
            shown: wanted.to_string(),
            preopen: preopen_name.into(),
            beneath,
            host,
        })
    }

    fn open_dir(&self, path: &str) -> io::Result<Descriptor> {
        let path = if path.is_empty() { "." } else { path };
        self.base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::DIRECTORY,
                DescriptorFlags::READ,
            )
            .map_err(error)
    }

    /// A file of this directory opened at `path`.
    fn file(&self, file: Descriptor, path: &str) -> WasiFile<H> {
        let beneath = if self.beneath.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.beneath)
        };
        WasiFile {
            file,
            preopen: Rc::clone(&self.preopen),
            beneath,
            host: self.host.clone(),
        }
    }
}

/// What is left of `wanted` beneath the preopen `name`, if it is beneath it.
fn beneath(name: &str, wanted: &str) -> Option<String> {
    let name = name.trim_end_matches('/');
    if wanted == name || (wanted == "/" && name.is_empty()) {
        Some(String::new())
    } else if name.is_empty() {
        // The preopen is "/": everything absolute is beneath it.
        wanted.strip_prefix('/').map(str::to_string)
    } else {
        wanted
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string)
    }
}

impl<H: Offload> Storage for WasiDir<H> {
    type File = WasiFile<H>;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        let stat = if path.is_empty() {
            self.base.stat()
        } else {
            self.base.stat_at(PathFlags::empty(), path)
        };
        match stat {
            Ok(stat) => Ok(Some(Metadata {
                kind: kind(stat.type_),
                size: stat.size,
                modified_ms: stat
                    .data_modification_timestamp
                    .map(|t| t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000)
                    .unwrap_or(0),
            })),
            Err(ErrorCode::NoEntry) => Ok(None),
            Err(code) => Err(error(code)),
        }
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let dir = self.open_dir(path)?;
        let stream = dir.read_directory().map_err(error)?;
        let mut entries = Vec::new();
        loop {
            let entry = match stream.read_directory_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                // The host stats each entry as it lists; one removed meanwhile
                // (gc moving a step to trash) is simply no longer there.
                Err(ErrorCode::NoEntry) => continue,
                Err(code) => return Err(error(code)),
            };
            let kind = match entry.type_ {
                // Some filesystems do not say; ask without following links.
                DescriptorType::Unknown => dir
                    .stat_at(PathFlags::empty(), &entry.name)
                    .map(|s| kind(s.type_))
                    .unwrap_or(Kind::Other),
                other => kind(other),
            };
            entries.push(DirEntry {
                name: entry.name,
                kind,
            });
        }
        Ok(entries)
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        self.base.create_directory_at(path).map_err(error)
    }

    fn open(&self, path: &str) -> io::Result<WasiFile<H>> {
        let file = self
            .base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .map_err(error)?;
        // open-at without symlink-follow still opens a directory; the
        // protocol wants regular files only.
        match file.get_type() {
            Ok(DescriptorType::RegularFile) => Ok(self.file(file, path)),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.display(path)),
            )),
            Err(code) => Err(error(code)),
        }
    }

    fn create_new(&self, path: &str) -> io::Result<WasiFile<H>> {
        self.base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            )
            .map(|file| self.file(file, path))
            .map_err(error)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.base.rename_at(from, &self.base, to).map_err(error)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.base.unlink_file_at(path).map_err(error)
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.base.remove_directory_at(path).map_err(error)
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        // Open afresh: a preopen may be held without read access (O_PATH),
        // and jco refuses to sync a preopen.
        let dir = self.open_dir(path)?;
        self.host.sync_dir(&dir)
    }

    fn sync_files(&self, dir: &str, paths: &[String]) -> BatchResult<bool> {
        let dir = self.open_dir(dir).map_err(at_first)?;
        self.host.sync_files(&dir, paths)
    }

    fn hash_files(&self, dir: &str, paths: &[String]) -> BatchResult<Option<Vec<Digest>>> {
        let dir = self.open_dir(dir).map_err(at_first)?;
        self.host.hash_files(&dir, paths)
    }

    fn copy_files(
        &self,
        source: &dyn std::any::Any,
        from: &str,
        to: &str,
        paths: &[String],
    ) -> BatchResult<Option<Vec<Digest>>> {
        // Only a directory of this same build is a descriptor the host can
        // reach.
        let Some(source) = source.downcast_ref::<WasiDir<H>>() else {
            return Ok(None);
        };
        let src = source.open_dir(from).map_err(at_first)?;
        let dst = self.open_dir(to).map_err(at_first)?;
        self.host.copy_files(&src, &dst, paths)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn display(&self, path: &str) -> String {
        match (self.shown.as_str(), path) {
            (base, "") => base.to_string(),
            ("", rel) => rel.to_string(),
            ("/", rel) => format!("/{rel}"),
            (base, rel) => format!("{base}/{rel}"),
        }
    }
}

/// A batch call's directory could not be opened: reported at its first
/// file, which names where it failed.
fn at_first(error: io::Error) -> handoff_core::BatchError {
    handoff_core::BatchError { index: 0, error }
}

/// An open file of a [`WasiDir`].
pub struct WasiFile<H: Offload = DescriptorSync> {
    file: Descriptor,
    /// The preopen it was opened beneath, and the path it was opened at
    /// beneath that.
    preopen: Rc<str>,
    beneath: String,
    host: H,
}

impl<H: Offload> StorageFile for WasiFile<H> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (data, _eof) = self.file.read(buf.len() as u64, offset).map_err(error)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let n = self.file.write(buf, offset).map_err(error)?;
        Ok(n as usize)
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.file.stat().map_err(error)?.size)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.host.sync_file(&self.file)
    }

    fn hash(&mut self) -> io::Result<Option<(u64, [u8; 32])>> {
        match self.host.hash_file(&self.file)? {
            Some(hashed) => Ok(Some(hashed)),
            None => self.host.hash_path(&self.preopen, &self.beneath),
        }
    }

    fn copy_from(&mut self, src: &mut dyn StorageFile) -> io::Result<Option<u64>> {
        // Only a file of this same build is a descriptor the host can reach.
        match src
            .as_any()
            .and_then(|src| src.downcast_mut::<WasiFile<H>>())
        {
            Some(src) => self.host.copy_file(&src.file, &self.file),
            None => Ok(None),
        }
    }

    fn start_writeback(&mut self) {
        self.host.start_writeback(&self.file);
        self.host.start_writeback_path(&self.preopen, &self.beneath);
    }

    fn as_any(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

/// Time and randomness from WASI: `wall-clock`, `monotonic-clock` and
/// `random`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasiPlatform;

impl Platform for WasiPlatform {
    fn now_ms(&self) -> u64 {
        let now = wasip2::clocks::wall_clock::now();
        now.seconds * 1000 + u64::from(now.nanoseconds) / 1_000_000
    }

    fn sleep_ms(&self, ms: u64) {
        wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }

    fn random_u64(&self) -> u64 {
        wasip2::random::random::get_random_u64()
    }
}

fn kind(t: DescriptorType) -> Kind {
    match t {
        DescriptorType::RegularFile => Kind::File,
        DescriptorType::Directory => Kind::Dir,
        DescriptorType::SymbolicLink => Kind::Symlink,
        DescriptorType::Fifo => Kind::Fifo,
        DescriptorType::CharacterDevice => Kind::CharDevice,
        DescriptorType::BlockDevice => Kind::BlockDevice,
        DescriptorType::Socket => Kind::Socket,
        _ => Kind::Other,
    }
}

/// A WASI error code as an `io::Error` whose kind the core understands and
/// whose message is the cause in plain words with its POSIX name, e.g.
/// `read-only file system (EROFS)` ([`cause`]).
pub fn error(code: ErrorCode) -> io::Error {
    let (kind, cause) = cause(code);
    match cause {
        Some(cause) => io::Error::new(kind, cause),
        None => io::Error::new(kind, code.message()),
    }
}

/// The `io::ErrorKind` of a WASI error code, and the words messages give
/// it: what happened, then the POSIX name in parentheses, the part a host
/// may look at to say more (a host that maps an errno WASI has no code for
/// to `io` leaves `I/O error (EIO)`). `None`: the code's own description.
pub fn cause(code: ErrorCode) -> (io::ErrorKind, Option<&'static str>) {
    use io::ErrorKind as K;
    match code {
        ErrorCode::NoEntry => (K::NotFound, Some("no such file or directory (ENOENT)")),
        ErrorCode::Exist => (K::AlreadyExists, Some("already exists (EEXIST)")),
        ErrorCode::NotEmpty => (
            K::DirectoryNotEmpty,
            Some("directory not empty (ENOTEMPTY)"),
        ),
        ErrorCode::NotDirectory => (K::NotADirectory, Some("not a directory (ENOTDIR)")),
        ErrorCode::IsDirectory => (K::IsADirectory, Some("is a directory (EISDIR)")),
        ErrorCode::Access => (K::PermissionDenied, Some("permission denied (EACCES)")),
        ErrorCode::NotPermitted => (K::PermissionDenied, Some("operation not permitted (EPERM)")),
        ErrorCode::ReadOnly => (K::ReadOnlyFilesystem, Some("read-only file system (EROFS)")),
        ErrorCode::Invalid => (K::InvalidInput, Some("invalid argument (EINVAL)")),
        ErrorCode::Unsupported => (K::Unsupported, Some("not supported (ENOTSUP)")),
        ErrorCode::InsufficientSpace => (K::StorageFull, Some("no space left on device (ENOSPC)")),
        ErrorCode::Quota => (K::QuotaExceeded, Some("disk quota exceeded (EDQUOT)")),
        ErrorCode::FileTooLarge => (K::FileTooLarge, Some("file too large (EFBIG)")),
        ErrorCode::Io => (K::Other, Some("I/O error (EIO)")),
        ErrorCode::IllegalByteSequence => (
            K::InvalidData,
            Some("a name that is not valid UTF-8 (EILSEQ)"),
        ),
        ErrorCode::Loop => (K::Other, Some("too many levels of symbolic links (ELOOP)")),
        ErrorCode::NameTooLong => (
            K::InvalidFilename,
            Some("file name too long (ENAMETOOLONG)"),
        ),
        ErrorCode::Busy => (K::ResourceBusy, Some("device or resource busy (EBUSY)")),
        ErrorCode::Interrupted => (K::Interrupted, Some("interrupted (EINTR)")),
        ErrorCode::WouldBlock => (K::WouldBlock, Some("would block (EAGAIN)")),
        ErrorCode::CrossDevice => (K::CrossesDevices, Some("cross-device link (EXDEV)")),
        _ => (K::Other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_say_what_happened_and_name_the_errno() {
        let read_only = error(ErrorCode::ReadOnly);
        assert_eq!(read_only.kind(), io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(read_only.to_string(), "read-only file system (EROFS)");
        assert_eq!(
            error(ErrorCode::Access).to_string(),
            "permission denied (EACCES)"
        );
        assert_eq!(
            error(ErrorCode::NotPermitted).to_string(),
            "operation not permitted (EPERM)"
        );
        let full = error(ErrorCode::InsufficientSpace);
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(full.to_string(), "no space left on device (ENOSPC)");
        assert_eq!(error(ErrorCode::Io).to_string(), "I/O error (EIO)");
        assert!(
            error(ErrorCode::IllegalByteSequence)
                .to_string()
                .ends_with("(EILSEQ)")
        );
        assert_eq!(error(ErrorCode::NoEntry).kind(), io::ErrorKind::NotFound);
        // A code with no words of its own keeps WASI's description.
        assert_eq!(
            error(ErrorCode::Pipe).to_string(),
            ErrorCode::Pipe.message()
        );
    }

    #[test]
    fn paths_beneath_a_preopen() {
        assert_eq!(beneath("/root", "/root").as_deref(), Some(""));
        assert_eq!(beneath("/root/", "/root").as_deref(), Some(""));
        assert_eq!(beneath("/root", "/root/a/b").as_deref(), Some("a/b"));
        assert_eq!(beneath("/root", "/rootx"), None);
        assert_eq!(beneath("/", "/etc").as_deref(), Some("etc"));
        assert_eq!(beneath("/", "/").as_deref(), Some(""));
        assert_eq!(beneath("/", "relative"), None);
        assert_eq!(beneath(".", "./sub").as_deref(), Some("sub"));
        assert_eq!(beneath("/src", "/root"), None);
    }
}
