//! The protocol's outcomes other than success.

use std::io;

/// Why a protocol operation did not succeed. Every message names the file
/// concerned and what was seen. The variants mirror the WIT `error` variant,
/// which hosts map to the CLI's exit codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed and the step was never committed.
    #[error("{0}")]
    TimedOut(String),
    /// The step is committed but a file is missing, short, differs from its
    /// hash, or the manifest is unsafe or unreadable.
    #[error("{0}")]
    Integrity(String),
    /// The step is already published; the existing version was left intact.
    #[error("{0}")]
    Conflict(String),
    /// A step, pin or path named by the call does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The arguments or the payload are not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// A flush failed: nothing was announced, and the operation stopped.
    #[error("{0}")]
    Durability(String),
    /// Any other filesystem error.
    #[error("{0}")]
    Io(String),
}

/// A shorthand for results of protocol operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap a filesystem error met while doing `what` to `path` (a display
    /// path), keeping the class where one applies.
    pub(crate) fn io(what: &str, path: &str, err: &io::Error) -> Error {
        let msg = format!("failed to {what} {path}: {err}");
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound(msg),
            _ => Error::Io(msg),
        }
    }
}
