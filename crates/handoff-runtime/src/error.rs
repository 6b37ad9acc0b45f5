//! What can go wrong when running the component.

use std::path::PathBuf;
use std::time::Duration;

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

impl Error {
    /// The protocol's outcome, if this is one.
    pub fn protocol(&self) -> Option<&handoff_core::Error> {
        match self {
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }

    /// The protocol outcome's kind, if this is one.
    pub fn kind(&self) -> Option<handoff_core::ErrorKind> {
        self.protocol().map(handoff_core::Error::kind)
    }
}
