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
mod storage;
mod write;

pub use error::{Error, Result};
pub use manifest::{FileEntry, Manifest};
pub use read::{StepInfo, StepState, Target, Verify, Version, WaitOptions, latest, list, wait};
pub use storage::{Clock, DirEntry, Kind, Metadata, Storage, StorageFile};
pub use write::{PublishReport, WriteOptions, publish, seal};
