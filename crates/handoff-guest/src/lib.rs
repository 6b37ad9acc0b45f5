//! The handoff protocol as a WASI component: the exports of the
//! `handoff:protocol` world, running `handoff-core` over the directories the
//! host preopened.

mod storage;

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handoff",
        with: {
            "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
        },
    });
}

use bindings::exports::handoff::protocol::protocol::{
    FsckEntry, GcOptions, GcReport, Guest, PinInfo, PublishReport,
};
use bindings::handoff::protocol::types::{
    Error, FileEntry, StepInfo, StepState, Target, Verify, Version, WaitOptions, WriteOptions,
};
use handoff_core as core;
use handoff_wasi::WasiClock;
use storage::{HostImports, WasiDir};

struct Component;

bindings::export!(Component with_types_in bindings);

impl Guest for Component {
    fn publish(
        root: String,
        step: u64,
        source: String,
        options: WriteOptions,
    ) -> Result<PublishReport, Error> {
        let root = open(&root)?;
        let source = open(&source)?;
        core::publish(&root, &source, &WasiClock, step, &write_options(options))
            .map(publish_report)
            .map_err(error)
    }

    fn seal(root: String, step: u64, options: WriteOptions) -> Result<PublishReport, Error> {
        let root = open(&root)?;
        core::seal(&root, &WasiClock, step, &write_options(options))
            .map(publish_report)
            .map_err(error)
    }

    fn wait(root: String, target: Target, options: WaitOptions) -> Result<Version, Error> {
        let root = open(&root)?;
        let target = match target {
            Target::Step(step) => core::Target::Step(step),
            Target::Latest => core::Target::Latest,
            Target::After(step) => core::Target::After(step),
        };
        let options = core::WaitOptions {
            prefix: options.prefix,
            verify: verify(options.verify),
            timeout_ms: options.timeout_ms,
            settle_ms: options.settle_ms,
            poll_ms: options.poll_ms,
            pin: options.pin.map(|p| core::PinRequest {
                holder: p.holder,
                ttl_ms: p.ttl_ms,
            }),
        };
        core::wait(&root, &WasiClock, target, &options)
            .map(version)
            .map_err(error)
    }

    fn latest(root: String, prefix: String, check: Verify) -> Result<Option<Version>, Error> {
        let root = open(&root)?;
        core::latest(&root, &prefix, verify(check))
            .map(|v| v.map(version))
            .map_err(error)
    }

    fn list(root: String, prefix: String) -> Result<Vec<StepInfo>, Error> {
        let root = open(&root)?;
        let infos = core::list(&root, &prefix).map_err(error)?;
        Ok(infos
            .into_iter()
            .map(|i| StepInfo {
                step: i.step,
                path: i.path,
                state: step_state(i.state),
                files: i.files,
                bytes: i.bytes,
            })
            .collect())
    }

    fn pin(
        root: String,
        prefix: String,
        step: u64,
        holder: String,
        ttl_ms: u64,
    ) -> Result<PinInfo, Error> {
        let root = open(&root)?;
        let pin = core::pin(&root, &WasiClock, &prefix, step, &holder, ttl_ms).map_err(error)?;
        Ok(PinInfo {
            step: pin.step,
            holder: pin.holder,
            expires_ms: pin.expires_ms,
        })
    }

    fn unpin(root: String, prefix: String, step: u64, holder: String) -> Result<(), Error> {
        let root = open(&root)?;
        core::unpin(&root, &prefix, step, &holder).map_err(error)
    }

    fn gc(root: String, options: GcOptions) -> Result<GcReport, Error> {
        let root = open(&root)?;
        let options = core::GcOptions {
            prefix: options.prefix,
            keep: options.keep,
            grace_ms: options.grace_ms,
            skew_ms: options.skew_ms,
        };
        let report = core::gc(&root, &WasiClock, &options).map_err(error)?;
        Ok(GcReport {
            removed: report.removed,
            kept: report.kept,
            pinned: report.pinned,
            staging_removed: report.staging_removed,
        })
    }

    fn fsck(root: String, prefix: String, repair: bool) -> Result<Vec<FsckEntry>, Error> {
        let root = open(&root)?;
        let entries = core::fsck(&root, &WasiClock, &prefix, repair).map_err(error)?;
        Ok(entries
            .into_iter()
            .map(|e| FsckEntry {
                name: e.name,
                state: step_state(e.state),
                detail: e.detail,
                action: e.action,
            })
            .collect())
    }
}

fn open(path: &str) -> Result<WasiDir, Error> {
    WasiDir::open(path, HostImports).map_err(error)
}

fn write_options(options: WriteOptions) -> core::WriteOptions {
    core::WriteOptions {
        prefix: options.prefix,
        writer: options.writer,
        created_ms: options.created_ms,
    }
}

fn verify(v: Verify) -> core::Verify {
    match v {
        Verify::Size => core::Verify::Size,
        Verify::Hash => core::Verify::Hash,
    }
}

fn step_state(s: core::StepState) -> StepState {
    match s {
        core::StepState::Committed => StepState::Committed,
        core::StepState::Incomplete => StepState::Incomplete,
        core::StepState::Corrupt => StepState::Corrupt,
        core::StepState::Staging => StepState::Staging,
        core::StepState::Trash => StepState::Trash,
        core::StepState::Stray => StepState::Stray,
    }
}

fn version(v: core::Version) -> Version {
    Version {
        step: v.step,
        path: v.path,
        writer: v.writer,
        created_ms: v.created_ms,
        files: v
            .files
            .into_iter()
            .map(|f| FileEntry {
                path: f.path,
                size: f.size,
                blake3: f.blake3,
            })
            .collect(),
    }
}

fn publish_report(r: core::PublishReport) -> PublishReport {
    PublishReport {
        version: version(r.version),
        syncs: r.syncs,
        warnings: r.warnings,
    }
}

fn error(e: core::Error) -> Error {
    match e {
        core::Error::TimedOut(m) => Error::TimedOut(m),
        core::Error::Integrity(m) => Error::Integrity(m),
        core::Error::Conflict(m) => Error::Conflict(m),
        core::Error::NotFound(m) => Error::NotFound(m),
        core::Error::InvalidInput(m) => Error::InvalidInput(m),
        core::Error::Durability(m) => Error::Durability(m),
        core::Error::Io(m) => Error::Io(m),
        other => Error::Io(other.to_string()),
    }
}
