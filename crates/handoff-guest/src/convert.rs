//! The one conversion between the WIT records and the core's types, on the
//! component's side of the boundary (the runtime has the other).

use std::time::Duration;

use handoff_core as core;

use crate::bindings::exports::handoff::protocol::protocol as wit;
use crate::bindings::handoff::protocol::types as wit_types;

impl From<wit_types::Target> for core::Target {
    fn from(t: wit_types::Target) -> Self {
        match t {
            wit_types::Target::Step(step) => core::Target::Step(step),
            wit_types::Target::Latest => core::Target::Latest,
            wit_types::Target::After(step) => core::Target::After(step),
        }
    }
}

impl From<wit_types::Verify> for core::Verify {
    fn from(v: wit_types::Verify) -> Self {
        match v {
            wit_types::Verify::Size => core::Verify::Size,
            wit_types::Verify::Hash => core::Verify::Hash,
        }
    }
}

impl From<wit_types::WriteOptions> for core::WriteOptions {
    fn from(o: wit_types::WriteOptions) -> Self {
        core::WriteOptions {
            prefix: o.prefix,
            writer: o.writer,
            created_ms: o.created_ms,
            run: o.run,
        }
    }
}

impl From<wit_types::WaitOptions> for core::WaitOptions {
    fn from(o: wit_types::WaitOptions) -> Self {
        core::WaitOptions {
            prefix: o.prefix,
            verify: o.verify.into(),
            timeout: o.timeout_ms.map(Duration::from_millis),
            settle: Duration::from_millis(o.settle_ms),
            poll: Duration::from_millis(o.poll_ms),
            pin: o.pin.map(|p| core::PinRequest {
                holder: p.holder,
                ttl: Duration::from_millis(p.ttl_ms),
            }),
        }
    }
}

impl From<wit::FetchOptions> for core::FetchOptions {
    fn from(o: wit::FetchOptions) -> Self {
        core::FetchOptions {
            prefix: o.prefix,
            timeout: o.timeout_ms.map(Duration::from_millis),
            settle: Duration::from_millis(o.settle_ms),
            poll: Duration::from_millis(o.poll_ms),
            holder: o.holder,
            ttl: Duration::from_millis(o.ttl_ms),
        }
    }
}

impl From<core::FetchReport> for wit::FetchReport {
    fn from(r: core::FetchReport) -> Self {
        wit::FetchReport {
            version: r.version.into(),
            source: r.source,
            copied: r.copied,
            bytes_copied: r.bytes_copied,
            fsyncs: r.fsyncs,
            warnings: r.warnings,
        }
    }
}

impl From<wit::GcOptions> for core::GcOptions {
    fn from(o: wit::GcOptions) -> Self {
        core::GcOptions {
            prefix: o.prefix,
            keep: o.keep,
            grace: Duration::from_millis(o.grace_ms),
            skew: Duration::from_millis(o.skew_ms),
        }
    }
}

impl From<core::Version> for wit_types::Version {
    fn from(v: core::Version) -> Self {
        wit_types::Version {
            step: v.step,
            run: v.run,
            path: v.path,
            writer: v.writer,
            created_ms: v.created_ms,
            files: v
                .files
                .into_iter()
                .map(|f| wit_types::FileEntry {
                    path: f.path,
                    size: f.size,
                    blake3: f.blake3,
                })
                .collect(),
            warnings: v.warnings,
        }
    }
}

impl From<core::PublishReport> for wit::PublishReport {
    fn from(r: core::PublishReport) -> Self {
        wit::PublishReport {
            version: r.version.into(),
            fsyncs: r.fsyncs,
            warnings: r.warnings,
        }
    }
}

impl From<core::StepState> for wit_types::StepState {
    fn from(s: core::StepState) -> Self {
        match s {
            core::StepState::Committed => wit_types::StepState::Committed,
            core::StepState::Incomplete => wit_types::StepState::Incomplete,
            core::StepState::Corrupt => wit_types::StepState::Corrupt,
            core::StepState::Staging => wit_types::StepState::Staging,
            core::StepState::Trash => wit_types::StepState::Trash,
            core::StepState::Stray => wit_types::StepState::Stray,
        }
    }
}

impl From<core::StepInfo> for wit_types::StepInfo {
    fn from(i: core::StepInfo) -> Self {
        wit_types::StepInfo {
            step: i.step,
            path: i.path,
            state: i.state.into(),
            files: i.files,
            bytes: i.bytes,
            detail: i.detail,
        }
    }
}

impl From<core::PinInfo> for wit::PinInfo {
    fn from(p: core::PinInfo) -> Self {
        wit::PinInfo {
            step: p.step,
            holder: p.holder,
            expires_ms: p.expires_ms,
        }
    }
}

impl From<core::GcReport> for wit::GcReport {
    fn from(r: core::GcReport) -> Self {
        wit::GcReport {
            removed: r.removed,
            kept: r.kept,
            pinned: r.pinned,
            staging_removed: r.staging_removed,
            invalid: r.invalid,
            failed: r
                .failed
                .into_iter()
                .map(|f| wit::GcFailure {
                    name: f.name,
                    error: f.error.into(),
                })
                .collect(),
        }
    }
}

impl From<core::FsckEntry> for wit::FsckEntry {
    fn from(e: core::FsckEntry) -> Self {
        wit::FsckEntry {
            name: e.name,
            state: e.state.into(),
            detail: e.detail,
            action: e.action,
        }
    }
}

impl From<core::Error> for wit_types::Error {
    fn from(e: core::Error) -> Self {
        use core::ErrorKind as K;
        use wit_types::ErrorKind as W;
        let kind = match e.kind() {
            K::TimedOut => W::TimedOut,
            K::Integrity => W::Integrity,
            K::Conflict => W::Conflict,
            K::NotFound => W::NotFound,
            K::InvalidInput => W::InvalidInput,
            K::Durability => W::Durability,
            // `ErrorKind` is non-exhaustive: a kind added later crosses as
            // `io` until the WIT names it.
            _ => W::Io,
        };
        wit_types::Error {
            kind,
            path: e.path().map(str::to_string),
            retryable: e.is_retryable(),
            message: e.message().to_string(),
        }
    }
}
