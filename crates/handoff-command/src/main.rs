//! `handoff-command.wasm`: the handoff CLI as a plain WASI 0.2 command, for
//! runtimes people already have (`wasmtime run`, jco under Node), with no
//! handoff host. The same subcommands, output and exit codes as the native
//! `handoff` (both are `handoff-cli`); the protocol is `handoff-core`, run
//! over `handoff-wasi`'s storage and flushed with `descriptor.sync()`.
//!
//! It sees only the directories the runtime preopens:
//!
//! ```text
//! wasmtime run --dir HOST_ROOT::/root --dir SRC::/src handoff-command.wasm \
//!     publish --root /root --step 7 /src
//! ```

use std::cell::Cell;
use std::io::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use handoff_cli::{EXIT_CODES, Global};
use handoff_core::{
    self as core, Backend, ErrorKind, FetchOptions, FetchReport, FsckEntry, GcOptions, GcReport,
    PinInfo, Platform as _, PublishReport, StepInfo, Target, Verify, Version, WaitOptions,
    WriteOptions,
};
use handoff_wasi::{DescriptorSync, Offload, WasiDir, WasiPlatform};
use wasip2::filesystem::types::Descriptor;

/// What `--help` adds for this build: where directories come from and what
/// becomes of exit codes.
const WASI_NOTES: &str = "\
Directories: only those the runtime preopens are reachable, by their guest
paths. wasmtime: --dir HOST_DIR::/root, then --root /root.

Exit codes 3 to 6 go through wasi:cli/exit exit-with-code (WASI 0.2.12).
A build with --no-default-features imports only exit(ok|err) for older
runtimes: every failure then exits 1. Either way the kind is in the message
(handoff: error (conflict): ...) and, with --json, on stdout as
{\"error\":{\"exit_code\":5,\"kind\":\"conflict\",\"message\":\"...\",\"path\":...}}.";

/// Publish, seal, wait for and retain model-weight versions on a shared filesystem (WASI command)
#[derive(Debug, Parser)]
#[command(
    name = "handoff-command",
    version,
    after_help = format!("{EXIT_CODES}\n\n{WASI_NOTES}")
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: handoff_cli::Command,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` exit 0, usage errors 2.
        Err(e) => exit(handoff_cli::usage_error(&e, std::env::args_os())),
    };
    let json = cli.global.json;
    let result = handoff_cli::run(&Wasi, &cli.global, cli.command);
    exit(handoff_cli::report::<Wasi>(result, json));
}

/// End the program with `code`: through `exit-with-code` where this build
/// has it (Rust's `std::process::exit` maps every nonzero code to 1 on
/// wasip2), else through `exit(err)`, which every runtime shows as 1.
fn exit(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if code == 0 {
        std::process::exit(0);
    }
    #[cfg(feature = "exit-with-code")]
    wasip2::cli::exit::exit_with_code(code);
    std::process::exit(1)
}

/// The protocol run in this process, over the preopens.
struct Wasi;

impl Backend for Wasi {
    type Error = core::Error;

    fn protocol_error(error: &core::Error) -> Option<&core::Error> {
        Some(error)
    }

    /// `<$HOSTNAME or wasi>:<random>`: a WASI program has no process id, and
    /// sees a host name only if the runtime passes the environment on.
    fn default_writer(&self) -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "wasi".to_string());
        format!("{host}:{:08x}", WasiPlatform.random_u64() as u32)
    }

    fn publish(
        &self,
        root: &Path,
        step: u64,
        source: &Path,
        options: &WriteOptions,
    ) -> Result<PublishReport, core::Error> {
        let flush = Counted::default();
        let root = open(root, flush.clone())?;
        let source = open(source, flush.clone())?;
        let report = core::publish(&root, &source, &WasiPlatform, step, options)?;
        Ok(flush.timed(report))
    }

    fn seal(
        &self,
        root: &Path,
        step: u64,
        options: &WriteOptions,
    ) -> Result<PublishReport, core::Error> {
        let flush = Counted::default();
        let root = open(root, flush.clone())?;
        let report = core::seal(&root, &WasiPlatform, step, options)?;
        Ok(flush.timed(report))
    }

    fn begin(&self, root: &Path, prefix: &str) -> Result<u64, core::Error> {
        core::begin(&open(root, Counted::default())?, prefix)
    }

    /// `to` must exist. A WASI program sees names, not the host's folder
    /// identities, so the overlap with `root` is judged by the names given.
    fn fetch(
        &self,
        root: &Path,
        to: &Path,
        target: Target,
        options: &FetchOptions,
    ) -> Result<FetchReport, core::Error> {
        if to.starts_with(root) || root.starts_with(to) {
            let shown = to.display().to_string();
            return Err(core::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "local root {shown} overlaps the shared root {}: a local root is a \
                     root of its own, on the reader's disk",
                    root.display()
                ),
            )
            .at(shown));
        }
        let flush = Counted::default();
        let shared = open(root, Counted::default())?;
        let local = open(to, flush.clone())?;
        let report = core::fetch(&shared, &local, &WasiPlatform, target, options)?;
        Ok(FetchReport {
            fsyncs: flush.0.calls.get(),
            fsync_ms: flush.0.nanos.get() as f64 / 1e6,
            ..report
        })
    }

    fn wait(
        &self,
        root: &Path,
        target: Target,
        options: &WaitOptions,
    ) -> Result<Version, core::Error> {
        let root = open(root, Counted::default())?;
        core::wait(&root, &WasiPlatform, target, options)
    }

    fn latest(
        &self,
        root: &Path,
        prefix: &str,
        verify: Verify,
    ) -> Result<Option<Version>, core::Error> {
        let root = open(root, Counted::default())?;
        core::latest(&root, prefix, verify)
    }

    fn list(&self, root: &Path, prefix: &str) -> Result<Vec<StepInfo>, core::Error> {
        let root = open(root, Counted::default())?;
        core::list(&root, prefix)
    }

    fn pin(
        &self,
        root: &Path,
        prefix: &str,
        step: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<PinInfo, core::Error> {
        let root = open(root, Counted::default())?;
        core::pin(&root, &WasiPlatform, prefix, step, holder, ttl)
    }

    fn unpin(&self, root: &Path, prefix: &str, step: u64, holder: &str) -> Result<(), core::Error> {
        let root = open(root, Counted::default())?;
        core::unpin(&root, prefix, step, holder)
    }

    fn gc(&self, root: &Path, options: &GcOptions) -> Result<GcReport, core::Error> {
        let root = open(root, Counted::default())?;
        core::gc(&root, &WasiPlatform, options)
    }

    fn fsck(&self, root: &Path, prefix: &str, repair: bool) -> Result<Vec<FsckEntry>, core::Error> {
        let root = open(root, Counted::default())?;
        core::fsck(&root, &WasiPlatform, prefix, repair)
    }
}

/// A directory given on the command line, by its guest path.
fn open(path: &Path, flush: Counted) -> Result<WasiDir<Counted>, core::Error> {
    let text = path.to_str().ok_or_else(|| {
        let shown = path.display();
        core::Error::new(
            ErrorKind::InvalidInput,
            format!("{shown} is not valid UTF-8"),
        )
        .at(shown.to_string())
    })?;
    WasiDir::open(text, flush)
}

/// `descriptor.sync()`, counted and timed for the report (`fsyncs`,
/// `fsync_ms`): the command's own flushes, as the native host counts its
/// `fsync` calls.
#[derive(Clone, Default)]
struct Counted(Rc<Stats>);

#[derive(Default)]
struct Stats {
    calls: Cell<u64>,
    nanos: Cell<u128>,
}

impl Counted {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let stats = &self.0;
        stats.calls.set(stats.calls.get() + 1);
        stats
            .nanos
            .set(stats.nanos.get() + start.elapsed().as_nanos());
        out
    }

    /// The report, with the flushes as this command made and timed them.
    fn timed(&self, report: PublishReport) -> PublishReport {
        PublishReport {
            fsyncs: self.0.calls.get(),
            fsync_ms: self.0.nanos.get() as f64 / 1e6,
            ..report
        }
    }
}

impl Offload for Counted {
    fn sync_file(&self, file: &Descriptor) -> std::io::Result<()> {
        self.time(|| DescriptorSync.sync_file(file))
    }

    fn sync_dir(&self, dir: &Descriptor) -> std::io::Result<()> {
        self.time(|| DescriptorSync.sync_dir(dir))
    }
}
