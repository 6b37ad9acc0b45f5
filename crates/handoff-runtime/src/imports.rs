//! The per-call host state: the WASI context, the durability and bulk
//! imports, and the memory limit.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cap_fs_ext::OpenOptionsMaybeDirExt;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::batch::{self, BatchDir};
use crate::bindings::bulk::{self, BatchError, BulkError, BulkSupport};
use crate::bindings::durability::{self, BatchSyncError, FileFailure, SyncError};
use crate::progress::{BulkWork, Hook, Meter};

/// `EBADF` and `EINVAL`: the same numbers on Linux, macOS and the BSDs.
const EBADF: i32 = 9;
const EINVAL: i32 = 22;

/// The data of one call's `Store`.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) fsync: FsyncStats,
    writeback: Writeback,
    /// When the call's time limit passes, for host work the epoch cannot
    /// interrupt.
    deadline: Option<Instant>,
    /// Whether `bulk` work is offered to the guest.
    bulk: bool,
    /// Told how far bulk work has got.
    progress: Option<Hook>,
}

impl CallState {
    pub(crate) fn new(
        wasi: WasiCtx,
        memory_limit: usize,
        deadline: Option<Instant>,
        bulk: bool,
        progress: Option<Hook>,
    ) -> CallState {
        CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                exceeded: false,
            },
            fsync: FsyncStats::default(),
            writeback: Writeback::default(),
            deadline,
            bulk,
            progress,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Real fsyncs issued for the guest during one call. A store belongs to one
/// call on one thread, so plain counters suffice.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FsyncStats {
    pub(crate) count: u64,
    pub(crate) time: Duration,
}

impl FsyncStats {
    fn record<T>(&mut self, flush: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = flush();
        self.count += 1;
        self.time += start.elapsed();
        result
    }
}

impl durability::Host for CallState {
    fn sync_file(&mut self, file: Resource<Descriptor>) -> wasmtime::Result<Result<(), SyncError>> {
        let file = match self.table.get(&file)? {
            Descriptor::File(f) => Arc::clone(&f.file),
            Descriptor::Dir(_) => {
                return Ok(Err(SyncError::Failed(
                    "sync-file was given a directory descriptor".to_string(),
                )));
            }
        };
        let result = self.fsync.record(|| file.sync_all());
        Ok(result.map_err(|e| SyncError::Failed(e.to_string())))
    }

    fn sync_directory(
        &mut self,
        dir: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<(), SyncError>> {
        let dir = match self.table.get(&dir)? {
            Descriptor::Dir(d) => Arc::clone(&d.dir),
            Descriptor::File(_) => {
                return Ok(Err(SyncError::Failed(
                    "sync-directory was given a file descriptor".to_string(),
                )));
            }
        };
        let result = self.fsync.record(|| sync_dir(&dir));
        Ok(result.map_err(dir_sync_error))
    }

    fn sync_files(
        &mut self,
        dir: Resource<Descriptor>,
        paths: Vec<String>,
    ) -> wasmtime::Result<Result<(), BatchSyncError>> {
        let dir = match batch_dir(self.table.get(&dir)?) {
            Ok(dir) => dir,
            Err(reason) => return Ok(Err(BatchSyncError::Failed(at_first(reason)))),
        };
        let start = Instant::now();
        let result = batch::sync_files(&dir, &paths, self.deadline);
        self.fsync.count += paths.len() as u64;
        self.fsync.time += start.elapsed();
        match result {
            Ok(()) => Ok(Ok(())),
            Err((index, stopped)) => Ok(Err(BatchSyncError::Failed(failure(index, stopped)?))),
        }
    }
}

/// A batch call's directory, with what its descriptor grants.
fn batch_dir(descriptor: &Descriptor) -> Result<BatchDir, String> {
    match descriptor {
        Descriptor::Dir(d) => BatchDir::new(&d.dir, !d.perms.write_not_permitted())
            .map_err(|e| format!("cannot use the batch's directory: {e}")),
        Descriptor::File(_) => Err("a batch call was given a file descriptor".to_string()),
    }
}

fn at_first(reason: String) -> FileFailure {
    FileFailure { index: 0, reason }
}

/// The guest's report of the file a batch stopped at; running out of time
/// ends the call as an epoch interruption would.
fn failure(index: usize, stopped: Stopped) -> wasmtime::Result<FileFailure> {
    match stopped {
        Stopped::Io(e) => Ok(FileFailure {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            reason: e.to_string(),
        }),
        Stopped::OutOfTime => Err(Trap::Interrupt.into()),
    }
}

/// The sizes and hashes of a batch's files, as the guest takes them.
type Digests = Vec<(u64, Vec<u8>)>;

/// The sizes and hashes of a batch, as the guest takes them.
fn digests(
    result: Result<Vec<(u64, blake3::Hash)>, batch::Failure>,
) -> wasmtime::Result<Result<Digests, BatchError>> {
    match result {
        Ok(hashed) => Ok(Ok(hashed
            .into_iter()
            .map(|(size, hash)| (size, hash.as_bytes().to_vec()))
            .collect())),
        Err((index, stopped)) => Ok(Err(BatchError::Failed(failure(index, stopped)?))),
    }
}

/// Hashing and copying natively: BLAKE3 with the CPU's widest SIMD, copies
/// inside the kernel. None of it flushes; the guest still calls
/// `durability` for that. `hash-path` and `start-writeback-path` are for
/// hosts that cannot reach a descriptor; this one can, so it neither offers
/// nor does them.
impl bulk::Host for CallState {
    fn supported(&mut self) -> wasmtime::Result<BulkSupport> {
        Ok(if self.bulk {
            BulkSupport::HASH_FILE
                | BulkSupport::COPY_FILE
                | BulkSupport::START_WRITEBACK
                | BulkSupport::HASH_FILES
                | BulkSupport::COPY_FILES
        } else {
            BulkSupport::empty()
        })
    }

    fn hash_file(
        &mut self,
        file: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<(u64, Vec<u8>), BulkError>> {
        if !self.bulk {
            return Ok(Err(BulkError::Unsupported));
        }
        let file = match self.table.get(&file)? {
            Descriptor::File(f) => Arc::clone(&f.file),
            Descriptor::Dir(_) => return Ok(Err(not_a_file("hash-file"))),
        };
        if let Err(e) = regular(&file, "hash-file") {
            return Ok(Err(e));
        }
        let meter = Meter::start(self.progress.as_ref(), BulkWork::Hashing, file_len(&file));
        let hashed = hash_file(&file, self.deadline, &|done| meter.advance(done));
        outcome(
            hashed.map(|(size, hash)| (size, hash.as_bytes().to_vec())),
            "reading to hash",
        )
    }

    fn hash_path(
        &mut self,
        _root: String,
        _path: String,
    ) -> wasmtime::Result<Result<(u64, Vec<u8>), BulkError>> {
        Ok(Err(BulkError::Unsupported))
    }

    fn copy_file(
        &mut self,
        src: Resource<Descriptor>,
        dst: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<u64, BulkError>> {
        // Off means off, even for a component that does not ask first.
        if !self.bulk {
            return Ok(Err(BulkError::Unsupported));
        }
        let src = match self.table.get(&src)? {
            Descriptor::File(f) => Arc::clone(&f.file),
            Descriptor::Dir(_) => return Ok(Err(not_a_file("copy-file"))),
        };
        let dst = match self.table.get(&dst)? {
            // The same checks as wasi:filesystem's own `write`.
            Descriptor::File(f) if f.perms.write_not_permitted() => {
                return Ok(Err(BulkError::Failed(
                    "copy-file: the destination is in a read-only directory".to_string(),
                )));
            }
            Descriptor::File(f) => Arc::clone(&f.file),
            Descriptor::Dir(_) => return Ok(Err(not_a_file("copy-file"))),
        };
        if let Err(e) = regular(&src, "copy-file") {
            return Ok(Err(e));
        }
        let meter = Meter::start(self.progress.as_ref(), BulkWork::Copying, file_len(&src));
        // Each copied piece is written out while the next is copied, and
        // while the guest then hashes the copy: its flush has little left.
        let writeback = &mut self.writeback;
        let mut written = |offset, len| writeback.start_range(Arc::clone(&dst), offset, len);
        outcome(
            copy_file(
                &src,
                &dst,
                self.deadline,
                &|done| meter.advance(done),
                &mut written,
            ),
            "copying",
        )
    }

    fn hash_files(
        &mut self,
        dir: Resource<Descriptor>,
        paths: Vec<String>,
    ) -> wasmtime::Result<Result<Digests, BatchError>> {
        if !self.bulk {
            return Ok(Err(BatchError::Unsupported));
        }
        let dir = match batch_dir(self.table.get(&dir)?) {
            Ok(dir) => dir,
            Err(reason) => return Ok(Err(BatchError::Failed(at_first(reason)))),
        };
        digests(batch::hash_files(
            &dir,
            &paths,
            self.deadline,
            self.progress.as_ref(),
        ))
    }

    fn copy_files(
        &mut self,
        src: Resource<Descriptor>,
        dst: Resource<Descriptor>,
        paths: Vec<String>,
    ) -> wasmtime::Result<Result<Digests, BatchError>> {
        if !self.bulk {
            return Ok(Err(BatchError::Unsupported));
        }
        let (src, dst) = (self.table.get(&src)?, self.table.get(&dst)?);
        let (src, dst) = match batch_dir(src).and_then(|src| Ok((src, batch_dir(dst)?))) {
            Ok(dirs) => dirs,
            Err(reason) => return Ok(Err(BatchError::Failed(at_first(reason)))),
        };
        digests(batch::copy_files(
            &src,
            &dst,
            &paths,
            self.deadline,
            self.progress.as_ref(),
        ))
    }

    fn start_writeback_path(&mut self, _root: String, _path: String) -> wasmtime::Result<()> {
        Ok(())
    }

    fn start_writeback(&mut self, file: Resource<Descriptor>) -> wasmtime::Result<()> {
        if !self.bulk {
            return Ok(());
        }
        if let Descriptor::File(f) = self.table.get(&file)? {
            let file = Arc::clone(&f.file);
            self.writeback.start(file);
        }
        Ok(())
    }
}

/// Starts writeback off the guest's thread. Submitting a large file's dirty
/// pages blocks until the device queue has room (measured: 130 ms of a
/// 256 MiB file on this project's test machine), which inline would put
/// the writeback back in series with the hashing it is meant to overlap.
/// One worker per call, started on first use, takes files in order; it
/// keeps each file open until its writeback is submitted.
#[derive(Default)]
struct Writeback {
    queue: Option<mpsc::Sender<(Arc<File>, u64, u64)>>,
}

impl Writeback {
    /// Start writing out all of `file`.
    fn start(&mut self, file: Arc<File>) {
        self.start_range(file, 0, 0);
    }

    /// Start writing out `len` bytes of `file` from `offset` (0: to the
    /// end).
    fn start_range(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if self.queue.is_none() {
            let (queue, files) = mpsc::channel::<(Arc<File>, u64, u64)>();
            let worker = std::thread::Builder::new()
                .name("handoff-writeback".to_string())
                .spawn(move || {
                    files
                        .into_iter()
                        .for_each(|(f, offset, len)| start_writeback(&f, offset, len))
                });
            // Without a thread, it is only advice not taken.
            if worker.is_err() {
                return;
            }
            self.queue = Some(queue);
        }
        if let Some(queue) = &self.queue {
            let _ = queue.send((file, offset, len));
        }
    }
}

/// A file's size for the progress display: 0 when it cannot be read.
fn file_len(file: &File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

/// Refuse to read from `file` unless it is a regular file (`fstat`): a read
/// of a FIFO or a device can block for good, in a host call the epoch
/// deadline cannot interrupt. The guest opens only what it found to be a
/// regular file; this covers a swap between its look and its open.
fn regular(file: &File, call: &str) -> Result<(), BulkError> {
    let kind = file
        .metadata()
        .map_err(|e| BulkError::Failed(format!("{call}: cannot inspect the file: {e}")))?
        .file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(BulkError::Failed(format!(
        "{call} was given {}, not a regular file: refused unread",
        crate::describe_kind(kind)
    )))
}

fn not_a_file(call: &str) -> BulkError {
    BulkError::Failed(format!("{call} was given a directory descriptor"))
}

/// Why bulk work stopped before the end of the file.
#[derive(Debug)]
pub(crate) enum Stopped {
    Io(io::Error),
    /// The call's time limit passed. Epoch interruption cannot stop the
    /// guest while it waits in a host call, so the host checks between
    /// chunks and traps the same way.
    OutOfTime,
}

impl From<io::Error> for Stopped {
    fn from(e: io::Error) -> Stopped {
        Stopped::Io(e)
    }
}

/// An I/O failure is the guest's to report; running out of time ends the
/// call as an epoch interruption would.
fn outcome<T>(result: Result<T, Stopped>, doing: &str) -> wasmtime::Result<Result<T, BulkError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(Stopped::Io(e)) => Ok(Err(BulkError::Failed(format!("{doing}: {e}")))),
        Err(Stopped::OutOfTime) => Err(Trap::Interrupt.into()),
    }
}

pub(crate) fn in_time(deadline: Option<Instant>) -> Result<(), Stopped> {
    match deadline {
        Some(at) if Instant::now() >= at => Err(Stopped::OutOfTime),
        _ => Ok(()),
    }
}

/// Buffer for hashing and for copying where the kernel cannot.
const CHUNK: usize = 1 << 20;

/// The smallest buffer a file is hashed through.
const SMALL_CHUNK: usize = 8 << 10;

/// Most one `copy_file_range` may copy, so that the time limit is checked
/// at least every 16 MiB, and each piece's writeback starts while the next
/// is copied.
const KERNEL_CHUNK: usize = 16 << 20;

/// Files at least this large are hashed by two threads where the CPU has
/// two: one hashes BLAKE3's left subtree, the other the rest, and their
/// chaining values are merged into the root. A fetch hashes every copy it
/// makes, so this halves the part of a fetch the writeback cannot overlap.
const PARALLEL_HASH_MIN: u64 = 16 << 20;

/// BLAKE3 of `file` from offset 0 to its end: bytes read, hash.
pub(crate) fn hash_file(
    file: &File,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
) -> Result<(u64, blake3::Hash), Stopped> {
    let len = file_len(file);
    if len >= PARALLEL_HASH_MIN
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
        && let Some(hashed) = hash_halves(file, len, deadline, advance)?
    {
        return Ok(hashed);
    }
    let mut hasher = blake3::Hasher::new();
    // A buffer no larger than the file: a payload of thousands of small
    // files would otherwise spend its time clearing 1 MiB buffers.
    let buffer = usize::try_from(len).map_or(CHUNK, |len| len.clamp(SMALL_CHUNK, CHUNK));
    let read = hash_range(file, &mut hasher, 0, u64::MAX, buffer, deadline, advance)?;
    Ok((read, hasher.finalize()))
}

/// Feed `file` from `from` to `to` (or its end, if sooner) into `hasher`,
/// reporting the bytes done so far to `advance`: where it stopped.
fn hash_range(
    file: &File,
    hasher: &mut blake3::Hasher,
    from: u64,
    to: u64,
    buffer: usize,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
) -> Result<u64, Stopped> {
    let mut buf = vec![0u8; buffer];
    let mut offset = from;
    while offset < to {
        in_time(deadline)?;
        let want = usize::try_from(to - offset).map_or(buffer, |left| left.min(buffer));
        let n = match file.read_at(&mut buf[..want], offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
        advance(offset - from);
    }
    Ok(offset)
}

/// [`hash_file`] of a file of `len` bytes by two threads, or `None` when
/// that cannot be had (no thread, or a file whose size changed meanwhile:
/// then one thread hashes it as it is).
fn hash_halves(
    file: &File,
    len: u64,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
) -> Result<Option<(u64, blake3::Hash)>, Stopped> {
    use blake3::hazmat::{HasherExt, Mode, left_subtree_len, merge_subtrees_root};
    use std::sync::atomic::{AtomicU64, Ordering};
    let left = left_subtree_len(len);
    let right_done = AtomicU64::new(0);
    let halves = std::thread::scope(|scope| {
        let right = std::thread::Builder::new()
            .name("handoff-hash".to_string())
            .spawn_scoped(scope, || {
                let mut hasher = blake3::Hasher::new();
                hasher.set_input_offset(left);
                let end = hash_range(file, &mut hasher, left, len, CHUNK, deadline, &|done| {
                    right_done.store(done, Ordering::Relaxed)
                })?;
                Ok::<_, Stopped>((end, hasher))
            });
        let Ok(right) = right else {
            return Ok::<_, Stopped>(None);
        };
        let mut hasher = blake3::Hasher::new();
        let left_end = hash_range(file, &mut hasher, 0, left, CHUNK, deadline, &|done| {
            advance(done + right_done.load(Ordering::Relaxed))
        });
        let right = right
            .join()
            .map_err(|_| Stopped::from(io::Error::other("the hashing thread panicked")))?;
        Ok(Some((left_end?, hasher, right?)))
    })?;
    let Some((left_end, left_hasher, (right_end, right_hasher))) = halves else {
        return Ok(None);
    };
    // The whole file as it was when read: both halves read to their ends,
    // and nothing after them.
    let mut probe = [0u8; 1];
    let grew = file.read_at(&mut probe, len).map_err(Stopped::from)? > 0;
    if left_end != left || right_end != len || grew {
        return Ok(None);
    }
    advance(len);
    let root = merge_subtrees_root(
        &left_hasher.finalize_non_root(),
        &right_hasher.finalize_non_root(),
        Mode::Hash,
    );
    Ok(Some((len, root)))
}

/// Copy all of `src` into `dst` at offset 0: bytes copied. The kernel
/// copies where it can (`copy_file_range`, without the data passing
/// through this process); otherwise, or from where it stopped, a
/// read/write loop does.
pub(crate) fn copy_file(
    src: &File,
    dst: &File,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
    written: &mut dyn FnMut(u64, u64),
) -> Result<u64, Stopped> {
    match kernel_copy(src, dst, deadline, advance, written)? {
        Copied::ToEnd(copied) => Ok(copied),
        Copied::Declined(copied) => copy_from(src, dst, copied, deadline, advance),
    }
}

/// How far the kernel copied.
enum Copied {
    /// To the end of the file: this many bytes.
    ToEnd(u64),
    /// This many bytes, then it declined to copy the rest.
    Declined(u64),
}

/// Copy `src` into `dst` from `offset` to the end through a buffer: the
/// total bytes copied.
fn copy_from(
    src: &File,
    dst: &File,
    mut offset: u64,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
) -> Result<u64, Stopped> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        in_time(deadline)?;
        let n = match src.read_at(&mut buf, offset) {
            Ok(0) => return Ok(offset),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        dst.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
        advance(offset);
    }
}

/// Copy with `copy_file_range(2)` at explicit offsets (the descriptors'
/// own positions are left alone) until end of file, or until the kernel
/// declines for this pair of files. Each piece copied is handed to
/// `written` (offset, length).
#[cfg(target_os = "linux")]
fn kernel_copy(
    src: &File,
    dst: &File,
    deadline: Option<Instant>,
    advance: &dyn Fn(u64),
    written: &mut dyn FnMut(u64, u64),
) -> Result<Copied, Stopped> {
    use std::os::fd::AsRawFd;
    let mut offset: i64 = 0;
    loop {
        in_time(deadline)?;
        let (mut from, mut to) = (offset, offset);
        // SAFETY: two open descriptors kept alive by the borrows, and
        // offsets owned by this frame.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut from,
                dst.as_raw_fd(),
                &mut to,
                KERNEL_CHUNK,
                0,
            )
        };
        match n {
            0 => return Ok(Copied::ToEnd(offset as u64)),
            n if n > 0 => {
                written(offset as u64, n as u64);
                offset += n as i64;
                advance(offset as u64);
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    // Across filesystems on older kernels, filesystems
                    // without support, special files: the loop copies.
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                        return Ok(Copied::Declined(offset as u64));
                    }
                    _ => return Err(e.into()),
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_copy(
    _src: &File,
    _dst: &File,
    _deadline: Option<Instant>,
    _advance: &dyn Fn(u64),
    _written: &mut dyn FnMut(u64, u64),
) -> Result<Copied, Stopped> {
    Ok(Copied::Declined(0))
}

/// Ask the kernel to start writing `file`'s dirty pages now: the guest
/// hashes while the device writes, and its `fsync` then waits only for the
/// rest. Advisory; errors are ignored.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: an open descriptor kept alive by the borrow.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Some filesystems refuse to flush directories at all (`EINVAL`): the
/// guest reports that once and keeps the same order. Any other error means
/// the entries may not be durable.
fn dir_sync_error(e: io::Error) -> SyncError {
    if e.raw_os_error() == Some(EINVAL) {
        SyncError::Refused(e.to_string())
    } else {
        SyncError::Failed(e.to_string())
    }
}

/// Flush a directory's entries. Preopened directories are held `O_PATH` on
/// Linux, where `fsync` fails with `EBADF`; then open "." beneath it with
/// read access (the same directory, never a path that could have been
/// replaced) and flush that.
fn sync_dir(dir: &std::fs::File) -> io::Result<()> {
    match dir.sync_all() {
        Err(e) if e.raw_os_error() == Some(EBADF) => {
            let base = cap_std::fs::Dir::from_std_file(dir.try_clone()?);
            let mut options = cap_std::fs::OpenOptions::new();
            options.read(true).maybe_dir(true);
            base.open_with(".", &options)?.into_std().sync_all()
        }
        other => other,
    }
}

/// Caps the guest's linear memory so a runaway component fails the call
/// instead of exhausting the host. Remembers whether it refused, so the
/// resulting trap is reported as what it is.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) exceeded: bool,
}

/// Tables hold function references only; the handoff guest needs a few
/// hundred entries, so this is generous.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            // Trapping (rather than failing the grow) stops the guest at
            // the point of the allocation, with a clear cause.
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.limit
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn sync_dir_flushes_an_o_path_preopen() {
        // The way wasmtime-wasi opens a preopen: O_PATH on Linux.
        let tmp = tempfile::tempdir().unwrap();
        let ambient =
            cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let file = ambient.into_std_file();
        #[cfg(target_os = "linux")]
        assert_eq!(
            file.sync_all().unwrap_err().raw_os_error(),
            Some(EBADF),
            "an O_PATH descriptor"
        );
        sync_dir(&file).unwrap();
    }

    #[test]
    fn sync_dir_flushes_a_readable_directory() {
        let tmp = tempfile::tempdir().unwrap();
        sync_dir(&std::fs::File::open(tmp.path()).unwrap()).unwrap();
    }

    #[test]
    fn only_einval_on_a_directory_is_refused() {
        assert!(matches!(
            dir_sync_error(io::Error::from_raw_os_error(EINVAL)),
            SyncError::Refused(text) if text.contains("os error 22")
        ));
        assert!(matches!(
            dir_sync_error(io::Error::from_raw_os_error(5)),
            SyncError::Failed(text) if text.contains("os error 5")
        ));
    }

    /// A file of `len` bytes that differ from chunk to chunk, and its path.
    fn data_file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        let path = dir.join("src.bin");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    fn new_file(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn bulk_work_refuses_a_fifo_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pipe");
        handoff_testkit::mkfifo(&path).unwrap();
        // Opened without blocking, as a swap after the guest's look could
        // hand it over; a read of it would wait for a writer for good.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let err = regular(&fifo, "hash-file").unwrap_err();
        assert!(
            matches!(&err, BulkError::Failed(m) if m.contains("a FIFO")),
            "{err:?}"
        );
        let (data, _) = data_file(tmp.path(), 10);
        regular(&File::open(data).unwrap(), "hash-file").unwrap();
    }

    #[test]
    fn hash_file_is_blake3_of_the_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        // Not a multiple of the chunk: the last read is short.
        let (path, data) = data_file(tmp.path(), 3 * CHUNK + 12345);
        let (size, hash) = hash_file(&File::open(&path).unwrap(), None, &|_| {}).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(hash, blake3::hash(&data));
    }

    #[test]
    fn a_large_file_hashed_by_two_threads_has_its_blake3() {
        let tmp = tempfile::tempdir().unwrap();
        let min = PARALLEL_HASH_MIN as usize;
        // At the threshold, around a power of two, and an odd size.
        for size in [min, min + 1, 2 * min - 1, min + 3 * CHUNK + 12345] {
            let (path, data) = data_file(tmp.path(), size);
            let file = File::open(&path).unwrap();
            let halves = hash_halves(&file, size as u64, None, &|_| {}).unwrap();
            assert_eq!(halves, Some((size as u64, blake3::hash(&data))), "{size}");
            let whole = hash_file(&file, None, &|_| {}).unwrap();
            assert_eq!(whole, (size as u64, blake3::hash(&data)), "{size}");
        }
        // A file longer than it was said to be is left to one thread.
        let (path, _) = data_file(tmp.path(), min + 10);
        let file = File::open(&path).unwrap();
        assert_eq!(hash_halves(&file, min as u64, None, &|_| {}).unwrap(), None);
    }

    #[test]
    fn copy_file_copies_every_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, data) = data_file(tmp.path(), 2 * CHUNK + 999);
        let dst = new_file(&tmp.path().join("dst.bin"));
        let copied = copy_file(
            &File::open(&path).unwrap(),
            &dst,
            None,
            &|_| {},
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(copied, data.len() as u64);
        assert_eq!(std::fs::read(tmp.path().join("dst.bin")).unwrap(), data);
    }

    #[test]
    fn the_buffered_copy_goes_on_where_the_kernel_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, data) = data_file(tmp.path(), CHUNK + 5000);
        let dst = new_file(&tmp.path().join("dst.bin"));
        let head = 4096;
        dst.write_all_at(&data[..head], 0).unwrap();
        let copied = copy_from(
            &File::open(&path).unwrap(),
            &dst,
            head as u64,
            None,
            &|_| {},
        )
        .unwrap();
        assert_eq!(copied, data.len() as u64);
        assert_eq!(std::fs::read(tmp.path().join("dst.bin")).unwrap(), data);
    }

    #[test]
    fn copy_file_into_a_read_only_descriptor_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = data_file(tmp.path(), 1000);
        std::fs::write(tmp.path().join("dst.bin"), b"").unwrap();
        let read_only = File::open(tmp.path().join("dst.bin")).unwrap();
        assert!(matches!(
            copy_file(
                &File::open(&path).unwrap(),
                &read_only,
                None,
                &|_| {},
                &mut |_, _| {}
            ),
            Err(Stopped::Io(_))
        ));
    }

    #[test]
    fn bulk_work_past_the_time_limit_stops_as_an_interrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = data_file(tmp.path(), 1000);
        let past = Some(Instant::now());
        let file = File::open(&path).unwrap();
        assert!(matches!(
            hash_file(&file, past, &|_| {}),
            Err(Stopped::OutOfTime)
        ));
        let dst = new_file(&tmp.path().join("dst.bin"));
        assert!(matches!(
            copy_file(&file, &dst, past, &|_| {}, &mut |_, _| {}),
            Err(Stopped::OutOfTime)
        ));
        let trap = outcome(hash_file(&file, past, &|_| {}), "hashing").unwrap_err();
        assert_eq!(trap.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
    }

    /// What a [`Progress`](crate::Progress) was told, in order.
    #[derive(Default)]
    pub(crate) struct Recorded(pub(crate) std::sync::Mutex<Vec<String>>);

    impl crate::Progress for Recorded {
        fn start(&self, work: BulkWork, len: u64) {
            self.0.lock().unwrap().push(format!("start {work:?} {len}"));
        }
        fn advance(&self, done: u64) {
            self.0.lock().unwrap().push(format!("at {done}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".to_string());
        }
    }

    #[test]
    fn bulk_work_reports_its_progress_and_always_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        let len = 2 * CHUNK + 7;
        let (path, _) = data_file(tmp.path(), len);
        let recorded = Arc::new(Recorded::default());
        let hook = Hook(recorded.clone());

        let file = File::open(&path).unwrap();
        let meter = Meter::start(Some(&hook), BulkWork::Hashing, file_len(&file));
        hash_file(&file, None, &|done| meter.advance(done)).unwrap();
        drop(meter);
        let seen = std::mem::take(&mut *recorded.0.lock().unwrap());
        let chunk = CHUNK as u64;
        assert_eq!(
            seen,
            [
                format!("start Hashing {len}"),
                format!("at {chunk}"),
                format!("at {}", 2 * chunk),
                format!("at {len}"),
                "finish".to_string(),
            ]
        );

        // Stopped early (out of time), the display is still told it ended.
        let meter = Meter::start(Some(&hook), BulkWork::Copying, file_len(&file));
        let dst = new_file(&tmp.path().join("dst.bin"));
        let past = Some(Instant::now());
        assert!(
            copy_file(
                &file,
                &dst,
                past,
                &|done| meter.advance(done),
                &mut |_, _| {}
            )
            .is_err()
        );
        drop(meter);
        let seen = std::mem::take(&mut *recorded.0.lock().unwrap());
        assert_eq!(seen, [format!("start Copying {len}"), "finish".to_string()]);
    }

    #[test]
    fn writeback_is_advice_that_never_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = data_file(tmp.path(), 1000);
        let mut writeback = Writeback::default();
        writeback.start(Arc::new(File::open(&path).unwrap()));
        writeback.start(Arc::new(File::open(tmp.path()).unwrap()));
        drop(writeback);
    }

    #[test]
    fn memory_limiter_refuses_beyond_the_limit() {
        let mut limiter = MemoryLimiter {
            limit: 1 << 20,
            exceeded: false,
        };
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.exceeded);
        assert!(limiter.memory_growing(1 << 20, 2 << 20, None).is_err());
        assert!(limiter.exceeded);
    }
}
