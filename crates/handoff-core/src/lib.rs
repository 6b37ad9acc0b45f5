//! The handoff protocol: publish a directory of model weights so that readers
//! on other machines see it only once it is complete and durable, wait for it,
//! and retain it while readers hold it.
//!
//! This crate is the protocol alone, as plain Rust over the [`Storage`] and
//! [`Platform`] traits: the component runs it over WASI descriptors, the
//! simulation over a model of a crashing disk. docs/PROTOCOL.md describes the
//! on-disk layout and the ordering arguments.
//!
//! Its modules are layered, each using only those above it:
//! - [`error`], [`types`], [`layout`], [`manifest`]: values and names;
//! - `storage`: the traits every effect goes through;
//! - `tree`: counted flushes, durable directory creation, streamed hashing;
//! - `validate`: one attempt to accept a committed step;
//! - `runs` (begin, and which run a writer may write for), `retain` (pin,
//!   gc, fsck), then `read` (wait, which may pin), `write`, and `fetch`
//!   (wait, then a verified copy into a local root by `write`'s staged path);
//! - [`Backend`]: the same operations on a root given by its path, as the
//!   runtime and the WASI command provide them.
#![deny(missing_docs)]

mod backend;
pub mod error;
mod fetch;
pub mod layout;
pub mod manifest;
mod read;
mod retain;
mod runs;
mod storage;
mod tree;
pub mod types;
mod validate;
mod write;

pub use backend::Backend;
pub use error::{Error, ErrorKind, Result};
pub use fetch::fetch;
pub use manifest::{FileEntry, Manifest};
pub use read::{latest, list, wait};
pub use retain::{check_holder, fsck, fsck_with, gc, pin, unpin};
pub use runs::begin;
pub use storage::{
    BatchError, BatchResult, Digest, DirEntry, Kind, Metadata, Platform, Storage, StorageFile,
};
pub use types::{
    DEFAULT_PREFIX, FetchOptions, FetchReport, FsckEntry, FsckOptions, GcFailure, GcOptions,
    GcReport, PinInfo, PinRequest, PublishReport, StepInfo, StepState, Target, Verify, Version,
    WaitOptions, WriteOptions, millis,
};
pub use write::{publish, seal};

#[cfg(test)]
mod testfs;
#[cfg(test)]
mod tests;
