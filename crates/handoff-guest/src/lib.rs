//! The handoff protocol as a WASI component: the exports of the
//! `handoff:protocol` world, running `handoff-core` over the directories the
//! host preopened.

mod convert;
mod storage;

use std::time::Duration;

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
    FetchOptions, FetchReport, FsckEntry, GcOptions, GcReport, Guest, PinInfo, PublishReport,
};
use bindings::handoff::protocol::types::{
    Error, StepInfo, Target, Verify, Version, WaitOptions, WriteOptions,
};
use handoff_core as core;
use handoff_wasi::WasiPlatform;
use storage::{Imports, WasiDir};

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
        let report = core::publish(&root, &source, &WasiPlatform, step, &options.into())?;
        Ok(report.into())
    }

    fn seal(root: String, step: u64, options: WriteOptions) -> Result<PublishReport, Error> {
        let root = open(&root)?;
        Ok(core::seal(&root, &WasiPlatform, step, &options.into())?.into())
    }

    fn begin(root: String, prefix: String) -> Result<u64, Error> {
        let root = open(&root)?;
        Ok(core::begin(&root, &prefix)?)
    }

    fn wait(root: String, target: Target, options: WaitOptions) -> Result<Version, Error> {
        let root = open(&root)?;
        Ok(core::wait(&root, &WasiPlatform, target.into(), &options.into())?.into())
    }

    fn fetch(
        root: String,
        to: String,
        target: Target,
        options: FetchOptions,
    ) -> Result<FetchReport, Error> {
        let root = open(&root)?;
        let to = open(&to)?;
        Ok(core::fetch(&root, &to, &WasiPlatform, target.into(), &options.into())?.into())
    }

    fn latest(root: String, prefix: String, verify: Verify) -> Result<Option<Version>, Error> {
        let root = open(&root)?;
        Ok(core::latest(&root, &prefix, verify.into())?.map(Version::from))
    }

    fn list(root: String, prefix: String) -> Result<Vec<StepInfo>, Error> {
        let root = open(&root)?;
        let steps = core::list(&root, &prefix)?;
        Ok(steps.into_iter().map(StepInfo::from).collect())
    }

    fn pin(
        root: String,
        prefix: String,
        step: u64,
        holder: String,
        ttl_ms: u64,
    ) -> Result<PinInfo, Error> {
        let root = open(&root)?;
        let ttl = Duration::from_millis(ttl_ms);
        Ok(core::pin(&root, &WasiPlatform, &prefix, step, &holder, ttl)?.into())
    }

    fn unpin(root: String, prefix: String, step: u64, holder: String) -> Result<(), Error> {
        let root = open(&root)?;
        Ok(core::unpin(&root, &prefix, step, &holder)?)
    }

    fn gc(root: String, options: GcOptions) -> Result<GcReport, Error> {
        let root = open(&root)?;
        Ok(core::gc(&root, &WasiPlatform, &options.into())?.into())
    }

    fn fsck(root: String, prefix: String, repair: bool) -> Result<Vec<FsckEntry>, Error> {
        let root = open(&root)?;
        let entries = core::fsck(&root, &WasiPlatform, &prefix, repair)?;
        Ok(entries.into_iter().map(FsckEntry::from).collect())
    }
}

fn open(path: &str) -> Result<WasiDir, Error> {
    Ok(WasiDir::open(path, Imports)?)
}
