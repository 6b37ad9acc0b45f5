//! What a write stopped by its time limit leaves behind, and its removal.
//!
//! A trap ends the component wherever it is, so a `publish` or `seal` that
//! runs out of time cannot clean up as it does after an error. The host
//! knows what it made all the same: the component names its staging copy
//! and its temporary manifests from random numbers that the host handed it
//! (`wasi:random`) and recorded for the call, and a seal's claim holds the
//! writer id the host passed in.

use std::convert::Infallible;
use std::io::{self, Read as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use handoff_core::layout::{
    SEAL_CLAIM_NAME, SEAL_CLAIM_WRITER, STAGING_DIR, join, manifest_tmp_name, seal_claim_tmp_name,
    staging_name, step_name,
};
use rand_core::TryRng;
use wasmtime_wasi::Rng;

/// The random `u64`s a call's component drew.
#[derive(Clone, Default)]
pub(crate) struct Draws(Arc<Mutex<Vec<u64>>>);

impl Draws {
    fn taken(&self) -> Vec<u64> {
        self.0.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The host's secure generator, recording every `u64` it hands out.
pub(crate) struct Recording {
    inner: Box<dyn Rng + Send>,
    draws: Draws,
}

impl Recording {
    pub(crate) fn new(draws: &Draws) -> Recording {
        Recording {
            inner: wasmtime_wasi::thread_rng(),
            draws: draws.clone(),
        }
    }
}

impl TryRng for Recording {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.inner.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let value = self.inner.next_u64();
        if let Ok(mut draws) = self.draws.0.lock() {
            draws.push(value);
        }
        Ok(value)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        Ok(())
    }
}

/// Remove the staging copy of `<prefix><step>` a publish stopped under
/// `root` made: a name no other process uses.
pub(crate) fn publish(root: &Path, prefix: &str, step: u64, draws: &Draws) -> io::Result<()> {
    let root = Dir::open_ambient_dir(root, ambient_authority())?;
    let dir = step_name(prefix, step);
    for unique in draws.taken() {
        remove_tree(&root, &staging_name(&dir, unique))?;
    }
    Ok(())
}

/// Remove the staging copy a fetch into the local root `to` stopped: the
/// staging folder named from one of the call's draws, whatever its step
/// (a fetch of the latest step learns its number only inside the call).
pub(crate) fn fetch(to: &Path, draws: &Draws) -> io::Result<()> {
    let root = Dir::open_ambient_dir(to, ambient_authority())?;
    let staging = match root.read_dir(STAGING_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let taken = draws.taken();
    for entry in staging {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if taken
            .iter()
            .any(|unique| name.ends_with(&format!(".{unique:016x}")))
        {
            remove_tree(&root, &join(STAGING_DIR, name))?;
        }
    }
    Ok(())
}

/// Remove what a seal of `<prefix><step>` as `writer` stopped under `root`
/// left: its temporary manifests, its prepared claim, and its claim if the
/// claim is still its own, so that a retry by any writer can claim the
/// step. A step it committed before it stopped keeps its `STABLE`; the
/// claim goes either way.
pub(crate) fn seal(
    root: &Path,
    prefix: &str,
    step: u64,
    writer: &str,
    draws: &Draws,
) -> io::Result<()> {
    let root = Dir::open_ambient_dir(root, ambient_authority())?;
    let dir = step_name(prefix, step);
    for unique in draws.taken() {
        remove_tree(&root, &join(&dir, &manifest_tmp_name(unique)))?;
        remove_tree(&root, &join(&dir, &seal_claim_tmp_name(unique)))?;
    }
    let claim = join(&dir, SEAL_CLAIM_NAME);
    let mut holder = Vec::new();
    match root.open(join(&claim, SEAL_CLAIM_WRITER)) {
        // No longer than the writer id: a longer claim is not this one.
        Ok(file) => file
            .take(writer.len() as u64 + 1)
            .read_to_end(&mut holder)
            .map(drop)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if holder == writer.as_bytes() {
        remove_tree(&root, &claim)?;
    }
    Ok(())
}

/// Remove the file or tree at `path`, if there is one.
fn remove_tree(root: &Dir, path: &str) -> io::Result<()> {
    let removed = match root.symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => root.remove_dir_all(path),
        Ok(_) => root.remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
