//! The one conversion between the core's types and the WIT records, on the
//! host's side of the boundary (the component has the other). A protocol
//! error crossing it gains the cause only the host can see
//! ([`explain`](crate::error::explain)).

use handoff_core::{self as core, millis};

use crate::bindings::{wit, wit_types};

impl From<&core::WriteOptions> for wit_types::WriteOptions {
    fn from(o: &core::WriteOptions) -> Self {
        wit_types::WriteOptions {
            prefix: o.prefix.clone(),
            writer: o.writer.clone(),
            created_ms: o.created_ms,
            run: o.run,
        }
    }
}

impl From<core::Verify> for wit_types::Verify {
    fn from(v: core::Verify) -> Self {
        match v {
            core::Verify::Size => wit_types::Verify::Size,
            core::Verify::Hash => wit_types::Verify::Hash,
        }
    }
}

impl From<core::Target> for wit_types::Target {
    fn from(t: core::Target) -> Self {
        match t {
            core::Target::Step(n) => wit_types::Target::Step(n),
            core::Target::Latest => wit_types::Target::Latest,
            core::Target::After(n) => wit_types::Target::After(n),
        }
    }
}

impl From<&core::WaitOptions> for wit_types::WaitOptions {
    fn from(o: &core::WaitOptions) -> Self {
        wit_types::WaitOptions {
            prefix: o.prefix.clone(),
            verify: o.verify.into(),
            timeout_ms: o.timeout.map(millis),
            settle_ms: millis(o.settle),
            poll_ms: millis(o.poll),
            pin: o.pin.as_ref().map(|p| wit_types::PinRequest {
                holder: p.holder.clone(),
                ttl_ms: millis(p.ttl),
            }),
        }
    }
}

impl From<&core::FetchOptions> for wit::FetchOptions {
    fn from(o: &core::FetchOptions) -> Self {
        wit::FetchOptions {
            prefix: o.prefix.clone(),
            timeout_ms: o.timeout.map(millis),
            settle_ms: millis(o.settle),
            poll_ms: millis(o.poll),
            holder: o.holder.clone(),
            ttl_ms: millis(o.ttl),
        }
    }
}

impl From<&core::GcOptions> for wit::GcOptions {
    fn from(o: &core::GcOptions) -> Self {
        wit::GcOptions {
            prefix: o.prefix.clone(),
            keep: o.keep,
            grace_ms: millis(o.grace),
            skew_ms: millis(o.skew),
        }
    }
}

impl From<wit_types::Version> for core::Version {
    fn from(v: wit_types::Version) -> Self {
        core::Version {
            step: v.step,
            run: v.run,
            path: v.path,
            writer: v.writer,
            created_ms: v.created_ms,
            files: v
                .files
                .into_iter()
                .map(|f| core::FileEntry {
                    path: f.path,
                    size: f.size,
                    blake3: f.blake3,
                })
                .collect(),
            warnings: v.warnings,
        }
    }
}

impl From<wit_types::StepState> for core::StepState {
    fn from(s: wit_types::StepState) -> Self {
        use wit_types::StepState as W;
        match s {
            W::Committed => core::StepState::Committed,
            W::Incomplete => core::StepState::Incomplete,
            W::Corrupt => core::StepState::Corrupt,
            W::Staging => core::StepState::Staging,
            W::Trash => core::StepState::Trash,
            W::Stray => core::StepState::Stray,
        }
    }
}

impl From<wit_types::StepInfo> for core::StepInfo {
    fn from(s: wit_types::StepInfo) -> Self {
        core::StepInfo {
            step: s.step,
            path: s.path,
            state: s.state.into(),
            files: s.files,
            bytes: s.bytes,
            detail: s.detail,
        }
    }
}

impl From<wit::PinInfo> for core::PinInfo {
    fn from(p: wit::PinInfo) -> Self {
        core::PinInfo {
            step: p.step,
            holder: p.holder,
            expires_ms: p.expires_ms,
        }
    }
}

impl From<wit::GcReport> for core::GcReport {
    fn from(r: wit::GcReport) -> Self {
        core::GcReport {
            removed: r.removed,
            kept: r.kept,
            pinned: r.pinned,
            staging_removed: r.staging_removed,
            invalid: r.invalid,
            failed: r
                .failed
                .into_iter()
                .map(|f| core::GcFailure {
                    name: f.name,
                    error: f.error.into(),
                })
                .collect(),
        }
    }
}

impl From<wit::FsckEntry> for core::FsckEntry {
    fn from(e: wit::FsckEntry) -> Self {
        core::FsckEntry {
            name: e.name,
            state: e.state.into(),
            detail: e.detail,
            action: e.action,
        }
    }
}

impl From<wit_types::Error> for core::Error {
    fn from(e: wit_types::Error) -> Self {
        use core::ErrorKind as K;
        use wit_types::ErrorKind as W;
        let kind = match e.kind {
            W::TimedOut => K::TimedOut,
            W::Integrity => K::Integrity,
            W::Conflict => K::Conflict,
            W::NotFound => K::NotFound,
            W::InvalidInput => K::InvalidInput,
            W::Durability => K::Durability,
            W::Io => K::Io,
        };
        crate::error::explain(core::Error::from_parts(
            kind,
            e.message,
            e.path,
            e.retryable,
        ))
    }
}
