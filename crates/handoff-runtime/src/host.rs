//! The per-call host state: the WASI context, the durability import and the
//! memory limit.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_fs_ext::OpenOptionsMaybeDirExt;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::durability::{self, SyncError};

/// `EBADF` and `EINVAL`: the same numbers on Linux, macOS and the BSDs.
const EBADF: i32 = 9;
const EINVAL: i32 = 22;

/// The data of one call's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) fsync: FsyncStats,
}

impl HostState {
    pub(crate) fn new(wasi: WasiCtx, memory_limit: usize) -> HostState {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                exceeded: false,
            },
            fsync: FsyncStats::default(),
        }
    }
}

impl WasiView for HostState {
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

impl durability::Host for HostState {
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
}

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
mod tests {
    use super::*;

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
