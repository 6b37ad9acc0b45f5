//! A `Storage` over a real directory with `std::fs`, for the unit tests.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::{DirEntry, Kind, Metadata, Platform, Storage, StorageFile};

pub struct StdDir(pub PathBuf);

/// What a call of this thread on a path does first: `Err` fails the call.
pub type PathHook = Box<dyn FnMut(&str) -> io::Result<()>>;

/// What a batch flush of this thread does first with each file's path.
pub type FileHook = Box<dyn FnMut(&std::path::Path) -> io::Result<()>>;

thread_local! {
    /// Directory listings made by this thread through any [`StdDir`].
    pub static LISTINGS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Runs before every directory flush of this thread, with the path.
    pub static ON_DIR_SYNC: std::cell::RefCell<Option<PathHook>> =
        const { std::cell::RefCell::new(None) };
    /// Runs before every open for reading of this thread, with the path.
    pub static ON_OPEN: std::cell::RefCell<Option<PathHook>> =
        const { std::cell::RefCell::new(None) };
    /// Runs before each file a batch flushes, with its path.
    pub static ON_FILE_SYNC: std::cell::RefCell<Option<FileHook>> =
        const { std::cell::RefCell::new(None) };
    /// Whether this thread's [`StdDir`]s do the batch calls of [`Storage`]
    /// (one file after another), or decline them as the default does.
    pub static BATCHES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The batch calls made, in order: `"<call> <dir> <files>"`; and
    /// `"manifest"` when a manifest is created, to see what came first.
    pub static BATCH_LOG: std::cell::RefCell<Vec<String>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn logged(line: String) {
    BATCH_LOG.with(|log| log.borrow_mut().push(line));
}

/// Run `each` on every one of `paths` under `dir`, stopping at the first
/// failure, which names its index.
fn each_file<T>(
    dir: &StdDir,
    base: &str,
    paths: &[String],
    mut each: impl FnMut(PathBuf) -> io::Result<T>,
) -> crate::BatchResult<Vec<T>> {
    paths
        .iter()
        .enumerate()
        .map(|(index, rel)| {
            each(dir.path(&crate::storage::join(base, rel)))
                .map_err(|error| crate::BatchError { index, error })
        })
        .collect()
}

/// Open `path` for reading: regular files only, no final symbolic link.
fn open_regular(path: &std::path::Path) -> io::Result<fs::File> {
    if !fs::symlink_metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    fs::File::open(path)
}

fn kind(t: fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            Kind::Fifo
        } else if t.is_char_device() {
            Kind::CharDevice
        } else if t.is_block_device() {
            Kind::BlockDevice
        } else if t.is_socket() {
            Kind::Socket
        } else {
            Kind::Other
        }
    }
}

impl StdDir {
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.0.clone()
        } else {
            self.0.join(rel)
        }
    }
}

impl Storage for StdDir {
    type File = fs::File;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        match fs::symlink_metadata(self.path(path)) {
            Ok(m) => Ok(Some(Metadata {
                kind: kind(m.file_type()),
                size: m.len(),
                modified_ms: m
                    .modified()?
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        LISTINGS.with(|n| n.set(n.get() + 1));
        fs::read_dir(self.path(path))?
            .map(|e| {
                let e = e?;
                Ok(DirEntry {
                    name: e.file_name().into_string().unwrap(),
                    kind: kind(e.file_type()?),
                })
            })
            .collect()
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        fs::create_dir(self.path(path))
    }

    fn open(&self, path: &str) -> io::Result<fs::File> {
        ON_OPEN.with(|hook| hook.borrow_mut().as_mut().map_or(Ok(()), |h| h(path)))?;
        if fs::symlink_metadata(self.path(path))?
            .file_type()
            .is_symlink()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link",
            ));
        }
        let file = fs::File::open(self.path(path))?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    fn create_new(&self, path: &str) -> io::Result<fs::File> {
        if BATCHES.get() && path.contains(crate::manifest::MANIFEST_NAME) {
            logged("manifest".to_string());
        }
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(path))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.path(path))
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        fs::remove_dir(self.path(path))
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        ON_DIR_SYNC.with(|hook| hook.borrow_mut().as_mut().map_or(Ok(()), |h| h(path)))?;
        fs::File::open(self.path(path))?.sync_all()
    }

    fn display(&self, path: &str) -> String {
        self.path(path).display().to_string()
    }

    fn hash_files(
        &self,
        dir: &str,
        paths: &[String],
    ) -> crate::BatchResult<Option<Vec<crate::Digest>>> {
        if !BATCHES.get() {
            return Ok(None);
        }
        logged(format!("hash {dir} {}", paths.len()));
        each_file(self, dir, paths, |path| {
            let data = fs::read(open_regular(&path).map(|_| path)?)?;
            Ok((data.len() as u64, *blake3::hash(&data).as_bytes()))
        })
        .map(Some)
    }

    fn copy_files(
        &self,
        source: &dyn std::any::Any,
        from: &str,
        to: &str,
        paths: &[String],
    ) -> crate::BatchResult<Option<Vec<crate::Digest>>> {
        let Some(source) = source.downcast_ref::<StdDir>() else {
            return Ok(None);
        };
        if !BATCHES.get() {
            return Ok(None);
        }
        logged(format!("copy {to} {}", paths.len()));
        each_file(source, from, paths, |path| {
            let data = fs::read(open_regular(&path).map(|_| &path)?)?;
            let rel = path
                .strip_prefix(source.path(from))
                .map_err(io::Error::other)?;
            fs::File::create_new(self.path(to).join(rel))?.write_all_at(&data, 0)?;
            Ok((data.len() as u64, *blake3::hash(&data).as_bytes()))
        })
        .map(Some)
    }

    fn sync_files(&self, dir: &str, paths: &[String]) -> crate::BatchResult<bool> {
        if !BATCHES.get() {
            return Ok(false);
        }
        logged(format!("sync {dir} {}", paths.len()));
        each_file(self, dir, paths, |path| {
            ON_FILE_SYNC.with(|hook| hook.borrow_mut().as_mut().map_or(Ok(()), |h| h(&path)))?;
            open_regular(&path)?.sync_all()
        })
        .map(|_| true)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StorageFile for fs::File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, offset)
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
    fn copy_from(&mut self, src: &mut dyn StorageFile) -> io::Result<Option<u64>> {
        let Some(src) = src.as_any().and_then(|a| a.downcast_mut::<fs::File>()) else {
            return Ok(None);
        };
        match NATIVE_COPY.with(|c| c.get()) {
            NativeCopy::Off => Ok(None),
            NativeCopy::On => io::copy(src, self).map(Some),
            NativeCopy::Corrupting => {
                let copied = io::copy(src, self)?;
                FileExt::write_at(self, b"?", 0)?;
                Ok(Some(copied))
            }
        }
    }
    fn as_any(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

/// Whether files of a [`StdDir`] copy "natively" (with `io::copy`), as a
/// host's `copy_file_range` does: the core's other publish path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeCopy {
    Off,
    On,
    /// Copies, then spoils the copy's first byte: a kernel copy gone wrong.
    Corrupting,
}

thread_local! {
    pub static NATIVE_COPY: std::cell::Cell<NativeCopy> = const { std::cell::Cell::new(NativeCopy::Off) };
}

/// Something to do at a simulated time.
type Scheduled = (u64, Box<dyn FnOnce()>);

/// Simulated time: a sleep advances it at once and first runs every action
/// scheduled up to the new time.
pub struct ScriptPlatform {
    now: std::cell::Cell<u64>,
    actions: std::cell::RefCell<Vec<Scheduled>>,
}

impl ScriptPlatform {
    pub fn new() -> ScriptPlatform {
        ScriptPlatform {
            now: std::cell::Cell::new(0),
            actions: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Run `action` when the simulated time reaches `at_ms`.
    pub fn at(&self, at_ms: u64, action: impl FnOnce() + 'static) {
        self.actions.borrow_mut().push((at_ms, Box::new(action)));
    }
}

impl Platform for ScriptPlatform {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn sleep_ms(&self, ms: u64) {
        let until = self.now.get() + ms;
        let due: Vec<_> = {
            let mut actions = self.actions.borrow_mut();
            let (due, later) = actions.drain(..).partition(|(at, _)| *at <= until);
            *actions = later;
            due
        };
        for (_, action) in due {
            action();
        }
        self.now.set(until);
    }
    fn random_u64(&self) -> u64 {
        0
    }
}

pub struct RealPlatform;

impl Platform for RealPlatform {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }
    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    fn random_u64(&self) -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::Instant::now())
    }
}

/// What a [`Hooked`] storage lets a test see and fail: opens and changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Stat,
    List,
    Open,
    CreateDir,
    CreateNew,
    Rename,
    RemoveFile,
    RemoveDir,
}

/// A [`StdDir`] whose opens and changes first ask `before(op, path)`, which
/// may fail them, and once done call `after(op, path)`. A rename's path is
/// its source.
pub struct Hooked<B, A = fn(Op, &str)> {
    pub inner: StdDir,
    pub before: B,
    pub after: A,
}

/// An `after` hook that does nothing.
pub fn no_hook(_: Op, _: &str) {}

impl<B: Fn(Op, &str) -> Option<io::Error>, A: Fn(Op, &str)> Hooked<B, A> {
    fn hooked<T>(&self, op: Op, path: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        if let Some(err) = (self.before)(op, path) {
            return Err(err);
        }
        let done = f()?;
        (self.after)(op, path);
        Ok(done)
    }
}

impl<B: Fn(Op, &str) -> Option<io::Error>, A: Fn(Op, &str)> Storage for Hooked<B, A> {
    type File = fs::File;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        // Asked before, like the rest; `after` is for changes and opens.
        match (self.before)(Op::Stat, path) {
            Some(err) => Err(err),
            None => self.inner.stat(path),
        }
    }
    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.hooked(Op::List, path, || self.inner.read_dir(path))
    }
    fn create_dir(&self, path: &str) -> io::Result<()> {
        self.hooked(Op::CreateDir, path, || self.inner.create_dir(path))
    }
    fn open(&self, path: &str) -> io::Result<fs::File> {
        self.hooked(Op::Open, path, || self.inner.open(path))
    }
    fn create_new(&self, path: &str) -> io::Result<fs::File> {
        self.hooked(Op::CreateNew, path, || self.inner.create_new(path))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.hooked(Op::Rename, from, || self.inner.rename(from, to))
    }
    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.hooked(Op::RemoveFile, path, || self.inner.remove_file(path))
    }
    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.hooked(Op::RemoveDir, path, || self.inner.remove_dir(path))
    }
    fn sync_dir(&self, path: &str) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn display(&self, path: &str) -> String {
        self.inner.display(path)
    }
}
