//! The handoff protocol: publish a directory of model weights so that readers
//! on other machines see it only once it is complete and durable, wait for it,
//! and retain it while readers hold it.
//!
//! This crate is the protocol alone, as plain Rust over the [`Storage`] and
//! [`Clock`] traits: the component runs it over WASI descriptors, the
//! simulation over a model of a crashing disk. docs/PROTOCOL.md describes the
//! on-disk layout and the ordering arguments.
#![deny(missing_docs)]

mod error;
pub mod layout;
pub mod manifest;
mod read;
mod retain;
mod storage;
mod write;

pub use error::{Error, Result};
pub use manifest::{FileEntry, Manifest};
pub use read::{
    PinRequest, StepInfo, StepState, Target, Verify, Version, WaitOptions, latest, list, wait,
};
pub use retain::{FsckEntry, GcOptions, GcReport, PinInfo, check_holder, fsck, gc, pin, unpin};
pub use storage::{Clock, DirEntry, Kind, Metadata, Storage, StorageFile};
pub use write::{PublishReport, WriteOptions, publish, seal};

#[cfg(test)]
mod testfs;
#[cfg(test)]
mod tests;
