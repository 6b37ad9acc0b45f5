//! Flushes through the host's `durability` import, falling back to
//! `descriptor.sync()` where the host cannot flush a descriptor itself.
//! The storage itself is `handoff-wasi`'s [`WasiDir`](handoff_wasi::WasiDir).

use std::io;

use handoff_wasi::{DescriptorSync, Flush};
use wasip2::filesystem::types::Descriptor;

use crate::bindings::handoff::protocol::durability::{self, SyncError};

/// The host's `durability` interface as a [`Flush`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HostDurability;

impl Flush for HostDurability {
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
}

/// A root or source directory of the component.
pub type WasiDir = handoff_wasi::WasiDir<HostDurability>;
