//! What can go wrong when running the component, and the causes the
//! component cannot see for itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff_core::ErrorKind;

/// An operation of [`Runtime`](crate::Runtime) that did not succeed: the
/// protocol's own outcome, or one that arose in the host (a component that
/// cannot be used, one that failed while running, a root that cannot be
/// given to it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The protocol's outcome, as the component reported it: its kind, the
    /// file concerned, what was seen, and whether a retry can help.
    #[error(transparent)]
    Protocol(#[from] handoff_core::Error),
    /// The component file cannot be used: missing, not WebAssembly, a core
    /// module instead of a component, or a component of another world.
    #[error("bad component {path}: {reason}")]
    BadComponent {
        /// The file, or `<embedded>` for the built-in component.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The component trapped (a bug in the component or the host).
    #[error("component trapped: {0}")]
    Trap(String),
    /// The call ran longer than its time limit and was stopped.
    #[error("component exceeded its time limit of {limit:?}")]
    DeadlineExceeded {
        /// The limit that applied to the call.
        limit: Duration,
    },
    /// The component tried to grow its memory beyond the limit.
    #[error("component exceeded its memory limit of {} MiB", .limit / (1024 * 1024))]
    MemoryExceeded {
        /// The limit in bytes.
        limit: usize,
    },
    /// The root is missing or not a directory.
    #[error("root {}: {reason}", .path.display())]
    Root {
        /// The root as given.
        path: PathBuf,
        /// What was seen instead of a directory.
        reason: String,
        /// `not-found` for a missing root, `invalid-input` for one that is
        /// not a directory, `io` for any other failure to look at it.
        kind: ErrorKind,
    },
    /// The publish source is missing or not a directory.
    #[error("source {}: {reason}", .path.display())]
    Source {
        /// The source as given.
        path: PathBuf,
        /// What was seen instead of a directory.
        reason: String,
        /// As for [`Root`](Error::Root).
        kind: ErrorKind,
    },
    /// A fetch's local root cannot be one: it overlaps the shared root, or
    /// it cannot be created or is not a directory.
    #[error("local root {}: {reason}", .path.display())]
    Local {
        /// The local root as given.
        path: PathBuf,
        /// What was seen.
        reason: String,
        /// As for [`Root`](Error::Root).
        kind: ErrorKind,
    },
    /// The engine or the call's sandbox could not be set up.
    #[error("failed to set up the component: {0}")]
    Setup(String),
}

impl Error {
    /// The protocol's outcome, if this is one.
    pub fn protocol(&self) -> Option<&handoff_core::Error> {
        match self {
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }

    /// The protocol outcome's kind, if this is one.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.protocol().map(handoff_core::Error::kind)
    }

    /// The failure's stable name, as the CLI's messages and `--json` give
    /// it: the protocol outcome's kind (`timed-out`, `conflict`, ...), the
    /// kind of a root or source that cannot be used (`not-found`, ...), or
    /// `bad-component`, `trap`, `deadline-exceeded`, `memory-exceeded`,
    /// `setup`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Protocol(e) => e.kind().as_str(),
            Error::Root { kind, .. } | Error::Source { kind, .. } | Error::Local { kind, .. } => {
                kind.as_str()
            }
            Error::BadComponent { .. } => "bad-component",
            Error::Trap(_) => "trap",
            Error::DeadlineExceeded { .. } => "deadline-exceeded",
            Error::MemoryExceeded { .. } => "memory-exceeded",
            Error::Setup(_) => "setup",
        }
    }

    /// The file or directory concerned, where there is one.
    pub fn path(&self) -> Option<String> {
        match self {
            Error::Protocol(e) => e.path().map(str::to_string),
            Error::BadComponent { path, .. } => Some(path.clone()),
            Error::Root { path, .. } | Error::Source { path, .. } | Error::Local { path, .. } => {
                Some(path.to_string_lossy().into_owned())
            }
            _ => None,
        }
    }
}

/// A filesystem error the component reported, with the cause WASI could not
/// carry named from what the host sees at its path. wasmtime-wasi turns
/// errno values WASI has no code for (`EROFS` among them) into `io`, refuses
/// a symbolic link out of a directory it was given with `EPERM`, and refuses
/// a whole directory listing for one name that is not UTF-8 with `EILSEQ`:
/// the component only sees `I/O error (EIO)`, `operation not permitted
/// (EPERM)` and `a name that is not valid UTF-8 (EILSEQ)` (the words of
/// `handoff_wasi::cause`). The component's paths are the host's (the
/// directories are preopened under their canonical names). Anything else
/// is returned as it is.
pub(crate) fn explain(err: handoff_core::Error) -> handoff_core::Error {
    let (Some(path), Some((before, cause))) = (err.path(), err.message().rsplit_once(": ")) else {
        return err;
    };
    let path = Path::new(path);
    let found = match cause {
        "I/O error (EIO)" if modifies(before) => read_only(path).map(|mounted| {
            format!(
                "read-only file system (EROFS): {} is on a file system mounted read-only",
                mounted.display()
            )
        }),
        "operation not permitted (EPERM)" => symlink_in(path).map(|(link, target)| {
            format!(
                "{} is a symbolic link leading outside the root (to {}), which handoff does \
                 not follow",
                link.display(),
                target.display()
            )
        }),
        "a name that is not valid UTF-8 (EILSEQ)" => not_utf8(path).map(|name| {
            format!(
                "{} holds a name that is not valid UTF-8, {name:?} (shown with its bytes \
                 escaped): handoff handles UTF-8 names only; rename it or move it out",
                path.display()
            )
        }),
        _ => None,
    };
    match found {
        Some(cause) => handoff_core::Error::from_parts(
            err.kind(),
            format!("{before}: {cause}"),
            err.path().map(str::to_string),
            err.is_retryable(),
        ),
        None => err,
    }
}

/// Whether the operation a message says failed (the last `failed to ...`)
/// writes: only a write meets `EROFS`, so a read's `EIO` stays one.
fn modifies(message: &str) -> bool {
    const READS: [&str; 5] = ["inspect", "list", "open", "read", "hash"];
    let op = message.rsplit("failed to ").next().unwrap_or_default();
    !READS.iter().any(|read| op.starts_with(read))
}

/// `path`, or for a path not there yet its nearest existing ancestor, if
/// the file system holding it is mounted read-only.
fn read_only(path: &Path) -> Option<&Path> {
    use std::os::unix::ffi::OsStrExt as _;
    let existing = path.ancestors().find(|p| p.symlink_metadata().is_ok())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated path and `stat` is a buffer of
    // the type statvfs(3) fills.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let read_only = rc == 0 && unsafe { stat.assume_init() }.f_flag & libc::ST_RDONLY != 0;
    read_only.then_some(existing)
}

/// The first symbolic link on the way to `path` (the shallowest: the host
/// resolves each later component through it), and where it points.
fn symlink_in(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|p| {
        let meta = p.symlink_metadata().ok()?;
        meta.file_type()
            .is_symlink()
            .then(|| (p.to_path_buf(), std::fs::read_link(p).unwrap_or_default()))
    })
}

/// The first name in the directory `dir` that is not valid UTF-8.
fn not_utf8(dir: &Path) -> Option<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .find(|name| name.to_str().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_core::Error as CoreError;

    fn io_error(message: &str, path: &Path) -> CoreError {
        let shown = path.display().to_string();
        CoreError::new(ErrorKind::Io, message.replace("{}", &shown)).at(shown)
    }

    #[test]
    fn a_symbolic_link_out_of_the_root_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/etc", root.join("step_1")).unwrap();
        let stable = root.join("step_1/STABLE");
        let err = explain(io_error(
            "failed to open {}: operation not permitted (EPERM)",
            &stable,
        ));
        assert_eq!(
            err.message(),
            format!(
                "failed to open {}: {} is a symbolic link leading outside the root (to /etc), \
                 which handoff does not follow",
                stable.display(),
                root.join("step_1").display()
            )
        );
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.path(), Some(stable.to_str().unwrap()));
    }

    #[test]
    fn a_name_that_is_not_utf8_is_shown_with_its_directory() {
        use std::os::unix::ffi::OsStrExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"w\xffts")), b"x").unwrap();
        let err = explain(io_error(
            "failed to list {}: a name that is not valid UTF-8 (EILSEQ)",
            &dir,
        ));
        let text = err.message();
        assert!(
            text.contains(&format!(
                "{} holds a name that is not valid UTF-8",
                dir.display()
            )),
            "{text}"
        );
        assert!(text.contains(r#""w\xFFts""#), "{text}");
    }

    #[test]
    fn other_causes_and_writable_paths_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        // A plain EIO on a writable file system says no more than EIO.
        for message in [
            "failed to create {}: I/O error (EIO)",
            "failed to open {}: operation not permitted (EPERM)",
            "failed to list {}: a name that is not valid UTF-8 (EILSEQ)",
            "failed to open {}: permission denied (EACCES)",
        ] {
            let err = io_error(message, &dir.join("x"));
            assert_eq!(explain(err.clone()), err);
        }
    }

    #[test]
    fn only_writes_are_taken_for_a_read_only_file_system() {
        assert!(modifies(
            "failed to publish step 1 from s: failed to create /r/.handoff"
        ));
        assert!(modifies(
            "failed to seal step 1: failed to rename claim to /r/x"
        ));
        assert!(!modifies(
            "failed to wait for step 1: failed to read /r/step_1/a"
        ));
        assert!(!modifies("failed to list the root: failed to list /r"));
    }

    #[test]
    fn read_only_looks_at_the_nearest_existing_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_only(&tmp.path().join("not/there/yet")), None);
    }
}
