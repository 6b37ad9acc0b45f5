//! The protocol's outcomes other than success.

use std::fmt;
use std::io;

/// What kind of outcome an [`Error`] is: what callers and exit codes branch
/// on. The cases mirror the WIT `error-kind` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The deadline passed and the step was never committed.
    TimedOut,
    /// The step is committed but a file is missing, short, differs from its
    /// hash, or the manifest is unsafe or unreadable.
    Integrity,
    /// The step is already published, or another writer is publishing or
    /// sealing it; what is there was left intact.
    Conflict,
    /// A step, pin or path named by the call does not exist.
    NotFound,
    /// The arguments or the payload are not acceptable.
    InvalidInput,
    /// A flush failed: nothing was announced, and the operation stopped.
    Durability,
    /// Any other filesystem error.
    Io,
}

impl ErrorKind {
    /// The kind's name as the WIT, the CLI's messages and `--json` spell it:
    /// `timed-out`, `integrity`, `conflict`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TimedOut => "timed-out",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Durability => "durability",
            ErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a protocol operation did not succeed.
///
/// The message names the file concerned and what was seen; [`kind`],
/// [`path`] and [`is_retryable`] carry what a caller branches on, so no
/// caller has to read the message.
///
/// [`kind`]: Error::kind
/// [`path`]: Error::path
/// [`is_retryable`]: Error::is_retryable
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<String>,
    retryable: bool,
}

/// A shorthand for results of protocol operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind`. Only a timeout counts as worth retrying unless
    /// [`retryable`](Error::retryable) says otherwise.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            path: None,
            retryable: kind == ErrorKind::TimedOut,
        }
    }

    /// The same error, naming `path` (as the storage displays it) as the
    /// file concerned.
    pub fn at(mut self, path: impl Into<String>) -> Error {
        self.path = Some(path.into());
        self
    }

    /// The same error, saying whether the same call may succeed later.
    pub fn retryable(mut self, retryable: bool) -> Error {
        self.retryable = retryable;
        self
    }

    /// Rebuild an error from its parts (what crossed the WIT boundary).
    pub fn from_parts(
        kind: ErrorKind,
        message: String,
        path: Option<String>,
        retryable: bool,
    ) -> Error {
        Error {
            kind,
            message,
            path,
            retryable,
        }
    }

    /// What kind of outcome this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The whole message: the file concerned and what was seen.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file or directory concerned, where one is, as the storage
    /// displays it.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether the same call may succeed later without anyone changing
    /// anything: a timeout, a committed step that did not validate yet (a
    /// lagging cache), a transient filesystem error. Never a conflict, a
    /// bad argument or an unsafe manifest.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The integrity error of finding `found` at `path` (a display path)
    /// where a regular file should be.
    pub(crate) fn not_regular(path: &str, found: crate::storage::Kind) -> Error {
        Error::new(
            ErrorKind::Integrity,
            format!(
                "{path} is {}, not a regular file: refused unopened",
                found.describe()
            ),
        )
        .at(path)
    }

    /// Wrap a filesystem error met while doing `what` to `path` (a display
    /// path), keeping the class where one applies.
    pub(crate) fn io(what: &str, path: &str, err: &io::Error) -> Error {
        if let Some(found) = crate::storage::not_regular(err) {
            return Error::not_regular(path, found);
        }
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        let transient = matches!(
            err.kind(),
            io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::ResourceBusy
                | io::ErrorKind::StaleNetworkFileHandle
        );
        Error::new(kind, format!("failed to {what} {path}: {err}"))
            .at(path)
            .retryable(transient)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_not_found_and_name_the_path() {
        let missing = io::Error::from(io::ErrorKind::NotFound);
        let err = Error::io("open", "/r/step_1/STABLE", &missing);
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.path(), Some("/r/step_1/STABLE"));
        assert!(!err.is_retryable());
        let stale = io::Error::from(io::ErrorKind::StaleNetworkFileHandle);
        assert!(Error::io("open", "x", &stale).is_retryable());
    }
}
