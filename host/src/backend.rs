//! The native host as a [`Backend`] of the CLI contract: each call runs the
//! embedded component through `handoff-runtime`, converting between the
//! runtime's types and the protocol's.

use std::path::Path;
use std::time::Duration;

use handoff_cli::{Backend, Class, Written};
use handoff_core as core;
use handoff_runtime as rt;

/// The runtime, with the component loaded once for the run.
pub struct Native(pub rt::Runtime);

impl Backend for Native {
    type Error = rt::Error;

    fn class(error: &rt::Error) -> Class {
        match error {
            rt::Error::TimedOut(_) => Class::TimedOut,
            rt::Error::Integrity(_) => Class::Integrity,
            rt::Error::Conflict(_) => Class::Conflict,
            rt::Error::NotFound(_) => Class::NotFound,
            rt::Error::InvalidInput(_) => Class::InvalidInput,
            rt::Error::Durability(_) => Class::Durability,
            rt::Error::Io(_) => Class::Io,
            _ => Class::Other,
        }
    }

    fn default_writer(&self) -> String {
        rt::default_writer_id()
    }

    fn publish(
        &self,
        root: &Path,
        step: u64,
        source: &Path,
        options: &core::WriteOptions,
    ) -> Result<Written, rt::Error> {
        self.0
            .publish(root, step, source, &write_options(options))
            .map(written)
    }

    fn seal(
        &self,
        root: &Path,
        step: u64,
        options: &core::WriteOptions,
    ) -> Result<Written, rt::Error> {
        self.0
            .seal(root, step, &write_options(options))
            .map(written)
    }

    fn wait(
        &self,
        root: &Path,
        target: core::Target,
        options: &core::WaitOptions,
    ) -> Result<core::Version, rt::Error> {
        let target = match target {
            core::Target::Step(n) => rt::Target::Step(n),
            core::Target::Latest => rt::Target::Latest,
            core::Target::After(n) => rt::Target::After(n),
        };
        let options = rt::WaitOptions {
            prefix: options.prefix.clone(),
            verify: match options.verify {
                core::Verify::Size => rt::Verify::Size,
                core::Verify::Hash => rt::Verify::Hash,
            },
            timeout: options.timeout_ms.map(Duration::from_millis),
            settle: Duration::from_millis(options.settle_ms),
            poll: Duration::from_millis(options.poll_ms),
            pin: options.pin.as_ref().map(|p| rt::PinRequest {
                holder: p.holder.clone(),
                ttl: Duration::from_millis(p.ttl_ms),
            }),
        };
        self.0.wait(root, target, &options).map(version)
    }

    fn list(&self, root: &Path, prefix: &str) -> Result<Vec<core::StepInfo>, rt::Error> {
        let steps = self.0.list(root, prefix)?;
        Ok(steps
            .into_iter()
            .map(|s| core::StepInfo {
                step: s.step,
                path: s.path.display().to_string(),
                state: state(s.state),
                files: s.files,
                bytes: s.bytes,
            })
            .collect())
    }

    fn pin(
        &self,
        root: &Path,
        prefix: &str,
        step: u64,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<core::PinInfo, rt::Error> {
        let pin = self
            .0
            .pin(root, prefix, step, holder, Duration::from_millis(ttl_ms))?;
        Ok(core::PinInfo {
            step: pin.step,
            holder: pin.holder,
            expires_ms: pin.expires_ms,
        })
    }

    fn unpin(&self, root: &Path, prefix: &str, step: u64, holder: &str) -> Result<(), rt::Error> {
        self.0.unpin(root, prefix, step, holder)
    }

    fn gc(&self, root: &Path, options: &core::GcOptions) -> Result<core::GcReport, rt::Error> {
        let options = rt::GcOptions {
            prefix: options.prefix.clone(),
            keep: options.keep,
            grace: Duration::from_millis(options.grace_ms),
            skew: Duration::from_millis(options.skew_ms),
        };
        let report = self.0.gc(root, &options)?;
        Ok(core::GcReport {
            removed: report.removed,
            kept: report.kept,
            pinned: report.pinned,
            staging_removed: report.staging_removed,
        })
    }

    fn fsck(
        &self,
        root: &Path,
        prefix: &str,
        repair: bool,
    ) -> Result<Vec<core::FsckEntry>, rt::Error> {
        let entries = self.0.fsck(root, prefix, repair)?;
        Ok(entries
            .into_iter()
            .map(|e| core::FsckEntry {
                name: e.name,
                state: state(e.state),
                detail: e.detail,
                action: e.action,
            })
            .collect())
    }
}

fn write_options(o: &core::WriteOptions) -> rt::WriteOptions {
    rt::WriteOptions {
        prefix: o.prefix.clone(),
        writer: o.writer.clone(),
        created_ms: o.created_ms,
    }
}

fn written(r: rt::PublishReport) -> Written {
    Written {
        report: core::PublishReport {
            version: version(r.version),
            syncs: r.syncs,
            warnings: r.warnings,
        },
        fsyncs: r.fsyncs,
        fsync_ms: r.fsync_ms,
    }
}

fn version(v: rt::Version) -> core::Version {
    core::Version {
        step: v.step,
        path: v.path.display().to_string(),
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
    }
}

fn state(s: rt::StepState) -> core::StepState {
    match s {
        rt::StepState::Committed => core::StepState::Committed,
        rt::StepState::Incomplete => core::StepState::Incomplete,
        rt::StepState::Corrupt => core::StepState::Corrupt,
        rt::StepState::Staging => core::StepState::Staging,
        rt::StepState::Trash => core::StepState::Trash,
        rt::StepState::Stray => core::StepState::Stray,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_exit_1_and_protocol_errors_keep_their_class() {
        let class = |e: rt::Error| Native::class(&e);
        assert_eq!(class(rt::Error::TimedOut(String::new())).exit_code(), 3);
        assert_eq!(class(rt::Error::Integrity(String::new())).exit_code(), 4);
        assert_eq!(class(rt::Error::Conflict(String::new())).exit_code(), 5);
        assert_eq!(class(rt::Error::NotFound(String::new())), Class::NotFound);
        assert_eq!(class(rt::Error::Trap(String::new())), Class::Other);
        assert_eq!(class(rt::Error::Trap(String::new())).exit_code(), 1);
    }
}
