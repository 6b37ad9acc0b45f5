//! Validation: one attempt to accept a committed step, as readers, pins, gc
//! and fsck all make it.

use std::io;

use crate::error::{Error, ErrorKind};
use crate::layout::{run_of, step_name};
use crate::manifest::{MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, STABLE_NAME};
use crate::storage::{Storage, StorageFile, join, not_regular, open_file};
use crate::tree::hash_file;
use crate::types::{Verify, Version};

/// Why one attempt to validate a step did not accept it.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// No `STABLE`: not committed (yet).
    NotCommitted(String),
    /// Committed, but something listed is not (yet) as the manifest says.
    /// On a shared filesystem this can be a lagging cache: retried. The
    /// integrity error to report once retrying is over.
    Mismatch(Error),
    /// The manifest itself is unacceptable: retrying will not help.
    Unsafe(Error),
    /// A filesystem error other than "not there".
    Failed(Error),
}

impl Rejected {
    /// Something at `path` is not (yet) as the manifest says.
    fn mismatch(path: &str, why: String) -> Rejected {
        Rejected::Mismatch(
            Error::new(ErrorKind::Integrity, why)
                .at(path)
                .retryable(true),
        )
    }

    /// The manifest at `path` can never be accepted.
    fn unsafe_manifest(path: &str, why: String) -> Rejected {
        Rejected::Unsafe(Error::new(ErrorKind::Integrity, why).at(path))
    }
}

/// What an error reading a step, other than "not there", counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadErrors {
    /// A [`Rejected::Mismatch`], retried for the settle time: a reader's
    /// view, to which an NFS soft mount's transient `EIO` is a lagging cache.
    Mismatch,
    /// A [`Rejected::Failed`]: fsck removes a step only on evidence that it
    /// is broken (a name not there, what was read), never on an error.
    Failed,
}

impl ReadErrors {
    /// Whether `e`, opening `STABLE`, means it is not there.
    fn absent(self, e: &io::Error) -> bool {
        match self {
            ReadErrors::Mismatch => is_absent(e),
            ReadErrors::Failed => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// The rejection for an error opening `path`: something other than a
    /// regular file there can never be accepted, whoever looks.
    fn refuse(self, path: &str, e: &io::Error) -> Rejected {
        match not_regular(e) {
            Some(found) => Rejected::Unsafe(Error::not_regular(path, found)),
            None => self.reject(path, format!("cannot open {path}: {e}")),
        }
    }

    /// The rejection for an error reading `path`, said by `why`.
    fn reject(self, path: &str, why: String) -> Rejected {
        match self {
            ReadErrors::Mismatch => Rejected::mismatch(path, why),
            ReadErrors::Failed => Rejected::Failed(Error::new(ErrorKind::Io, why).at(path)),
        }
    }
}

/// One attempt: open `STABLE`, the manifest and every listed file afresh, and
/// check them.
pub(crate) fn check<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
) -> Result<Version, Rejected> {
    check_as(fs, prefix, step, verify, ReadErrors::Mismatch)
}

/// [`check`], with read errors counted as `errors` says.
pub(crate) fn check_as<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
    errors: ReadErrors,
) -> Result<Version, Rejected> {
    let dir = step_name(prefix, step);
    let stable = join(&dir, STABLE_NAME);
    let committed = match open_file(fs, &stable) {
        Ok(_) => true,
        // Only a regular file commits: a directory (or anything else)
        // named STABLE is not one, and is never opened.
        Err(e) if not_regular(&e).is_some() => {
            let found = not_regular(&e).map_or("", |k| k.describe());
            return Err(Rejected::NotCommitted(format!(
                "step {step} is not committed: {} is {found}, not a regular file",
                fs.display(&stable)
            )));
        }
        Err(e) if errors.absent(&e) => false,
        Err(e) => {
            return Err(Rejected::Failed(Error::io(
                "open",
                &fs.display(&stable),
                &e,
            )));
        }
    };
    if !committed {
        return Err(Rejected::NotCommitted(format!(
            "step {step} is not committed: no {}",
            fs.display(&stable)
        )));
    }
    contents(fs, prefix, step, verify, errors)
}

/// Whether `path` exists, found by opening it rather than by `stat`: an NFS
/// client may answer `stat` of a name from its caches (a `STABLE` another
/// node removed can look present for seconds), while an open goes to the
/// server (close-to-open consistency). A missing or non-directory parent,
/// and a handle the server no longer knows, all mean "not there".
pub(crate) fn opens<S: Storage>(fs: &S, path: &str) -> io::Result<bool> {
    match open_file(fs, path) {
        Ok(_) => Ok(true),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an error opening or creating a path means that it, or a
/// directory on the way, is not there (any more).
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::StaleNetworkFileHandle
    )
}

/// The part of [`check`] after `STABLE`: the manifest and every listed file.
pub(crate) fn check_contents<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
) -> Result<Version, Rejected> {
    contents(fs, prefix, step, verify, ReadErrors::Mismatch)
}

fn contents<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
    errors: ReadErrors,
) -> Result<Version, Rejected> {
    let dir = step_name(prefix, step);
    let manifest = manifest_as(fs, &dir, errors)?;
    // A directory copied under another step's (or run's) number.
    let elsewhere = if manifest.step != step {
        Some(format!("belongs to step {}, not {step}", manifest.step))
    } else if manifest.run != 0 && manifest.run != run_of(step) {
        let run = run_of(step);
        Some(format!(
            "says run {}, but step {step} is of run {run}",
            manifest.run
        ))
    } else {
        None
    };
    if let Some(why) = elsewhere {
        let shown = fs.display(&join(&dir, MANIFEST_NAME));
        return Err(Rejected::unsafe_manifest(&shown, format!("{shown} {why}")));
    }
    for entry in &manifest.files {
        let path = join(&dir, &entry.path);
        let shown = || fs.display(&path);
        let mut file = match open_file(fs, &path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Rejected::mismatch(
                    &shown(),
                    format!(
                        "{} is missing (manifest lists {} bytes)",
                        shown(),
                        entry.size
                    ),
                ));
            }
            Err(e) => return Err(errors.refuse(&shown(), &e)),
        };
        let size = file
            .size()
            .map_err(|e| errors.reject(&shown(), format!("cannot inspect {}: {e}", shown())))?;
        if size != entry.size {
            let what = if size < entry.size {
                "short"
            } else {
                "too long"
            };
            return Err(Rejected::mismatch(
                &shown(),
                format!(
                    "{} is {what}: {size} bytes, manifest lists {}",
                    shown(),
                    entry.size
                ),
            ));
        }
        if verify == Verify::Hash {
            let (read, hash) = hash_file(fs, &mut file, &path)
                .map_err(|e| errors.reject(&shown(), e.to_string()))?;
            if read != entry.size || hash != entry.blake3 {
                return Err(Rejected::mismatch(
                    &shown(),
                    format!(
                        "{} does not match its hash: read {read} bytes with blake3 {hash}, \
                     manifest lists {} bytes with blake3 {}",
                        shown(),
                        entry.size,
                        entry.blake3
                    ),
                ));
            }
        }
    }
    Ok(Version::from_manifest(fs.display(&dir), manifest))
}

/// Read and parse `<dir>/handoff.manifest.json` of a committed step.
pub(crate) fn read_manifest<S: Storage>(fs: &S, dir: &str) -> Result<Manifest, Rejected> {
    manifest_as(fs, dir, ReadErrors::Mismatch)
}

fn manifest_as<S: Storage>(fs: &S, dir: &str, errors: ReadErrors) -> Result<Manifest, Rejected> {
    manifest_bytes_as(fs, dir, errors).map(|(_, manifest)| manifest)
}

/// [`read_manifest`], with the bytes read: what a fetch installs in its
/// local copy, unchanged.
pub(crate) fn read_manifest_bytes<S: Storage>(
    fs: &S,
    dir: &str,
) -> Result<(Vec<u8>, Manifest), Rejected> {
    manifest_bytes_as(fs, dir, ReadErrors::Mismatch)
}

fn manifest_bytes_as<S: Storage>(
    fs: &S,
    dir: &str,
    errors: ReadErrors,
) -> Result<(Vec<u8>, Manifest), Rejected> {
    let path = join(dir, MANIFEST_NAME);
    let shown = fs.display(&path);
    let mut file = match open_file(fs, &path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Rejected::mismatch(
                &shown,
                format!("STABLE is present but {shown} is missing"),
            ));
        }
        Err(e) => return Err(errors.refuse(&shown, &e)),
    };
    let size = file
        .size()
        .map_err(|e| errors.reject(&shown, format!("cannot inspect {shown}: {e}")))?;
    if size > MAX_MANIFEST_BYTES {
        return Err(Rejected::unsafe_manifest(
            &shown,
            format!(
                "{shown} is {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
            ),
        ));
    }
    let mut bytes = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(errors.reject(&shown, format!("cannot read {shown}: {e}"))),
        }
    }
    bytes.truncate(filled);
    let manifest = Manifest::parse(&bytes).map_err(|bad| {
        let why = format!("{shown}: {bad}");
        if bad.permanent {
            Rejected::unsafe_manifest(&shown, why)
        } else {
            Rejected::mismatch(&shown, why)
        }
    })?;
    Ok((bytes, manifest))
}
