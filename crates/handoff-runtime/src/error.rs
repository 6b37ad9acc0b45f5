//! What can go wrong when running the component.

use std::path::PathBuf;
use std::time::Duration;

use crate::bindings::wit_types;

/// An operation of [`Runtime`](crate::Runtime) that did not succeed.
///
/// The first seven variants are protocol outcomes reported by the component
/// (the WIT `error`); their text comes from the component and names the file
/// concerned and what was seen. The others arise in the host: a component
/// that cannot be used, a component that failed while running, or a root
/// that cannot be given to it.
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
    /// The step is already published; the existing version is intact.
    #[error("{0}")]
    Conflict(String),
    /// A step, pin or path the call names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The arguments are invalid (a bad prefix, holder, source entry).
    #[error("{0}")]
    InvalidInput(String),
    /// A flush failed; nothing was announced.
    #[error("{0}")]
    Durability(String),
    /// Any other filesystem error met by the component.
    #[error("{0}")]
    Io(String),

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
    },
    /// The publish source is missing or not a directory.
    #[error("source {}: {reason}", .path.display())]
    Source {
        /// The source as given.
        path: PathBuf,
        /// What was seen instead of a directory.
        reason: String,
    },
    /// The engine or the call's sandbox could not be set up.
    #[error("failed to set up the component: {0}")]
    Setup(String),
}

impl From<wit_types::Error> for Error {
    fn from(e: wit_types::Error) -> Error {
        use wit_types::Error as W;
        match e {
            W::TimedOut(m) => Error::TimedOut(m),
            W::Integrity(m) => Error::Integrity(m),
            W::Conflict(m) => Error::Conflict(m),
            W::NotFound(m) => Error::NotFound(m),
            W::InvalidInput(m) => Error::InvalidInput(m),
            W::Durability(m) => Error::Durability(m),
            W::Io(m) => Error::Io(m),
        }
    }
}
