//! The handoff command line: subcommands and flags, what each prints (text
//! and `--json`), and the exit codes. One contract, two programs:
//!
//! - `handoff` (host/), the native CLI, runs the protocol in its embedded
//!   component through `handoff-runtime`;
//! - `handoff-command.wasm` (crates/handoff-command), a plain WASI command,
//!   runs `handoff-core` directly inside whatever runtime runs it.
//!
//! Each implements [`Backend`]; [`run`] does the rest, and [`report`] turns
//! the outcome into the message and the exit code.
//!
//! ```no_run
//! # fn demo<B: handoff_cli::Backend>(backend: B) {
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     global: handoff_cli::Global,
//!     #[command(subcommand)]
//!     command: handoff_cli::Command,
//! }
//!
//! let cli = Cli::parse();
//! let json = cli.command.json();
//! let result = handoff_cli::run(&backend, &cli.global, cli.command);
//! std::process::exit(handoff_cli::report::<B>(result, json).into());
//! # }
//! ```
#![deny(missing_docs)]

/// `println!` that returns an error when stdout is gone (`handoff ls | head`)
/// instead of panicking; [`report`] then ends the program quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod duration;
mod json;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use handoff_core::{
    FsckEntry, GcOptions, GcReport, PinInfo, PinRequest, PublishReport, StepInfo, Target, Verify,
    Version, WaitOptions, WriteOptions,
};
use serde::Serialize;

/// The default step directory prefix.
pub const DEFAULT_PREFIX: &str = "step_";

/// The exit codes and duration syntax, for `--help` (`after_help`).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (bad root, bad component, I/O, ...)
  2  usage error
  3  timed out: the step was never committed
  4  integrity: the step is committed but a file is missing, short or differs
     from its hash, or the manifest is unsafe
  5  conflict: the step is already published (the first one stays intact)

Durations are written 500ms, 30s, 2m, 1h (or 1m30s).";

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Step directory prefix
    #[arg(long, global = true, value_name = "P", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
}

/// The protocol's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy SRC_DIR into staging, seal it, and rename it to ROOT/<prefix>N
    Publish {
        /// Where and which step.
        #[command(flatten)]
        step: RootStep,
        /// The payload to publish
        #[arg(value_name = "SRC_DIR")]
        source: PathBuf,
        /// Writer options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Seal a payload already written in ROOT/<prefix>N, in place
    Seal {
        /// Where and which step.
        #[command(flatten)]
        step: RootStep,
        /// Writer options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Wait until a step is committed and validates
    Wait(WaitArgs),
    /// Print each new step as it is committed, in step order, until interrupted.
    /// With --pin, a step stays pinned until a line on stdin asks for the next
    #[command(
        after_help = "With --pin, watch hands over pins: each step it prints stays pinned \
                      while you use it, renewed every half --ttl. Write a line to its stdin \
                      to ask for the next step; the one before is released once the next \
                      one is pinned. At end of input watch exits and leaves the last pin to \
                      expire (--ttl) or to `handoff unpin`."
    )]
    Watch(WatchArgs),
    /// List the step directories under ROOT with their state
    Ls {
        /// Where.
        #[command(flatten)]
        root: RootArg,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Pin a committed step so gc keeps it
    Pin {
        /// Where and which step.
        #[command(flatten)]
        step: RootStep,
        /// Who holds the pin: letters, digits, `.`, `_`, `-`, `:`, `@`
        #[arg(long, value_name = "ID", value_parser = parse_holder)]
        holder: String,
        /// How long the pin lasts
        #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10m")]
        ttl: Duration,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Release a pin
    Unpin {
        /// Where and which step.
        #[command(flatten)]
        step: RootStep,
        /// Who holds the pin
        #[arg(long, value_name = "ID", value_parser = parse_holder)]
        holder: String,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove old unpinned steps and abandoned staging directories
    Gc {
        /// Where.
        #[command(flatten)]
        root: RootArg,
        /// What to keep.
        #[command(flatten)]
        gc: GcArgs,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Classify every entry under ROOT; with --repair, clean up after crashes
    Fsck {
        /// Where.
        #[command(flatten)]
        root: RootArg,
        /// Finish or undo what a crash left
        #[arg(long)]
        repair: bool,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether `--json` was given: a failure is then also printed as JSON.
    pub fn json(&self) -> bool {
        match self {
            Command::Publish { write, .. } | Command::Seal { write, .. } => write.json,
            Command::Wait(args) => args.json,
            Command::Watch(args) => args.json,
            Command::Ls { json, .. }
            | Command::Pin { json, .. }
            | Command::Unpin { json, .. }
            | Command::Gc { json, .. }
            | Command::Fsck { json, .. } => *json,
        }
    }
}

/// `--root`.
#[derive(Debug, Args)]
pub struct RootArg {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    root: PathBuf,
}

/// `--root` and `--step`.
#[derive(Debug, Args)]
pub struct RootStep {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    root: PathBuf,
    /// The step number
    #[arg(long, value_name = "N")]
    step: u64,
}

/// Options of `publish` and `seal`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Writer id recorded in the manifest [default: <hostname>:<pid>; WASI: <$HOSTNAME or wasi>:<random>]
    #[arg(long, value_name = "ID")]
    writer: Option<String>,
    /// Creation time to record, milliseconds since the Unix epoch [default: now];
    /// two writers given the same payload, writer and time write identical manifests
    #[arg(long, value_name = "MS")]
    created_ms: Option<u64>,
    /// After success, run gc keeping the newest N steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep: Option<u32>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// Options of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep the newest N committed steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep: u32,
    /// Remove staging directories untouched for longer than this
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "1h")]
    grace: Duration,
    /// Clock difference allowed between nodes when judging pin expiry
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "2m")]
    skew: Duration,
}

/// Options of `wait`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["step", "latest", "after"]))]
pub struct WaitArgs {
    #[command(flatten)]
    root: RootArg,
    /// Wait for exactly this step
    #[arg(long, value_name = "N")]
    step: Option<u64>,
    /// Wait for the highest step that validates
    #[arg(long)]
    latest: bool,
    /// Wait for the lowest step above N that validates
    #[arg(long, value_name = "N")]
    after: Option<u64>,
    /// Give up after this long [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    timeout: Option<Duration>,
    #[command(flatten)]
    read: ReadArgs,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

/// How `wait` and `watch` check and hold what they return.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// What to check before accepting a step
    #[arg(long, value_enum, default_value_t = VerifyArg::Size)]
    verify: VerifyArg,
    /// How long a committed step that does not validate yet is retried
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "30s")]
    settle: Duration,
    /// Longest pause between two attempts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "100ms")]
    poll: Duration,
    /// Pin each step returned for this holder. `wait` keeps the holder's
    /// other pins: unpin the previous step once you have switched over.
    /// `watch` keeps each step pinned until you ask for the next one (a line
    /// on its stdin), then releases it once the next one is pinned
    #[arg(long, value_name = "HOLDER", value_parser = parse_holder)]
    pin: Option<String>,
    /// How long the pin taken with --pin lasts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10m", requires = "pin")]
    ttl: Duration,
}

impl ReadArgs {
    fn options(&self, prefix: &str, timeout: Option<Duration>) -> WaitOptions {
        WaitOptions {
            prefix: prefix.to_string(),
            verify: self.verify.into(),
            timeout_ms: timeout.map(millis),
            settle_ms: millis(self.settle),
            poll_ms: millis(self.poll),
            pin: self.pin.clone().map(|holder| PinRequest {
                holder,
                ttl_ms: millis(self.ttl),
            }),
        }
    }
}

/// Options of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    root: RootArg,
    /// Start with the lowest step >= N [default: the latest step]
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    #[command(flatten)]
    read: ReadArgs,
    /// Print one JSON object per line, per step
    #[arg(long)]
    json: bool,
}

/// A pin holder id, checked here so a bad one is a usage error. The same
/// rule as the protocol's (`handoff_core::check_holder`): it becomes a file
/// name under the root.
pub fn parse_holder(text: &str) -> Result<String, String> {
    handoff_core::check_holder(text)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
}

/// `--verify`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum VerifyArg {
    /// Every file exists with its listed size
    Size,
    /// Sizes, and every file's BLAKE3 hash
    Hash,
}

impl From<VerifyArg> for Verify {
    fn from(v: VerifyArg) -> Verify {
        match v {
            VerifyArg::Size => Verify::Size,
            VerifyArg::Hash => Verify::Hash,
        }
    }
}

/// What a failure was, as far as the exit code and `--json` are concerned:
/// the protocol's outcomes (the WIT `error` cases) and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// The deadline passed and the step was never committed (exit 3).
    TimedOut,
    /// Committed, but a file is missing, short or differs, or the manifest
    /// is unsafe (exit 4).
    Integrity,
    /// The step is already published (exit 5).
    Conflict,
    /// A step, pin or path does not exist (exit 1).
    NotFound,
    /// Invalid arguments (exit 1).
    InvalidInput,
    /// A flush failed (exit 1).
    Durability,
    /// Another filesystem error (exit 1).
    Io,
    /// Anything else: a bad component, a trap, a missing root (exit 1).
    Other,
}

impl Class {
    /// The documented exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::TimedOut => 3,
            Class::Integrity => 4,
            Class::Conflict => 5,
            _ => 1,
        }
    }

    /// The class as it appears in messages and in `--json` errors: the WIT
    /// error case's name (`timed-out`, `integrity`, `conflict`, ...), or
    /// `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::TimedOut => "timed-out",
            Class::Integrity => "integrity",
            Class::Conflict => "conflict",
            Class::NotFound => "not-found",
            Class::InvalidInput => "invalid-input",
            Class::Durability => "durability",
            Class::Io => "io",
            Class::Other => "other",
        }
    }

    /// The class of a protocol error.
    pub fn of(error: &handoff_core::Error) -> Class {
        use handoff_core::Error as E;
        match error {
            E::TimedOut(_) => Class::TimedOut,
            E::Integrity(_) => Class::Integrity,
            E::Conflict(_) => Class::Conflict,
            E::NotFound(_) => Class::NotFound,
            E::InvalidInput(_) => Class::InvalidInput,
            E::Durability(_) => Class::Durability,
            E::Io(_) => Class::Io,
            _ => Class::Other,
        }
    }
}

/// What `publish` and `seal` did, with the flushes as the program that ran
/// the protocol counted them.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The protocol's report.
    pub report: PublishReport,
    /// Real flushes made (`fsync` calls for the native host; for the WASI
    /// command, the `descriptor.sync` calls it made).
    pub fsyncs: u64,
    /// Their total time in milliseconds.
    pub fsync_ms: f64,
}

/// Where the protocol runs: the native host's embedded component, or
/// `handoff-core` inside a WASI command. Paths are as the user gave them.
pub trait Backend {
    /// A failed operation.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The class of a failure, for the exit code and messages.
    fn class(error: &Self::Error) -> Class;

    /// The writer id recorded when `--writer` is not given.
    fn default_writer(&self) -> String;

    /// Copy `source` into staging, seal it, rename it to its step.
    fn publish(
        &self,
        root: &Path,
        step: u64,
        source: &Path,
        options: &WriteOptions,
    ) -> Result<Written, Self::Error>;

    /// Seal a payload in place.
    fn seal(&self, root: &Path, step: u64, options: &WriteOptions) -> Result<Written, Self::Error>;

    /// Wait for `target`.
    fn wait(
        &self,
        root: &Path,
        target: Target,
        options: &WaitOptions,
    ) -> Result<Version, Self::Error>;

    /// Every step directory with its state.
    fn list(&self, root: &Path, prefix: &str) -> Result<Vec<StepInfo>, Self::Error>;

    /// Pin a committed step.
    fn pin(
        &self,
        root: &Path,
        prefix: &str,
        step: u64,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<PinInfo, Self::Error>;

    /// Release a pin.
    fn unpin(&self, root: &Path, prefix: &str, step: u64, holder: &str) -> Result<(), Self::Error>;

    /// Remove old unpinned steps and abandoned staging.
    fn gc(&self, root: &Path, options: &GcOptions) -> Result<GcReport, Self::Error>;

    /// Classify (and with `repair`, clean up) every entry of the root.
    fn fsck(&self, root: &Path, prefix: &str, repair: bool) -> Result<Vec<FsckEntry>, Self::Error>;
}

/// Run one subcommand against `backend`, printing its output.
pub fn run<B: Backend>(backend: &B, global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Publish {
            step,
            source,
            write,
        } => {
            let options = write_options(backend, global, &write);
            let start = Instant::now();
            let written = backend
                .publish(&step.root, step.step, &source, &options)
                .with_context(|| {
                    format!(
                        "failed to publish step {} from {}",
                        step.step,
                        source.display()
                    )
                })?;
            finish_write(
                backend,
                global,
                &step.root,
                &write,
                written,
                start.elapsed(),
                "published",
            )
        }
        Command::Seal { step, write } => {
            let options = write_options(backend, global, &write);
            let start = Instant::now();
            let written = backend
                .seal(&step.root, step.step, &options)
                .with_context(|| format!("failed to seal step {}", step.step))?;
            finish_write(
                backend,
                global,
                &step.root,
                &write,
                written,
                start.elapsed(),
                "sealed",
            )
        }
        Command::Wait(args) => wait(backend, global, args),
        Command::Watch(args) => watch(backend, global, args),
        Command::Ls { root, json } => {
            let steps = backend
                .list(&root.root, &global.prefix)
                .context("failed to list the root")?;
            if json {
                return print_json(&json::Steps::new(&steps));
            }
            out!(
                "{:<24} {:<10} {:>5} {:>14}",
                "NAME",
                "STATE",
                "FILES",
                "BYTES"
            );
            for s in &steps {
                let name = s.path.rsplit('/').next().unwrap_or(&s.path);
                out!(
                    "{name:<24} {:<10} {:>5} {:>14}",
                    s.state.as_str(),
                    s.files,
                    s.bytes
                );
            }
            Ok(())
        }
        Command::Pin {
            step,
            holder,
            ttl,
            json,
        } => {
            let pin = backend
                .pin(&step.root, &global.prefix, step.step, &holder, millis(ttl))
                .with_context(|| format!("failed to pin step {}", step.step))?;
            if json {
                return print_json(&json::Pin::new(&pin));
            }
            out!(
                "pinned step {} for {} for {}",
                pin.step,
                pin.holder,
                duration::format(ttl)
            );
            Ok(())
        }
        Command::Unpin { step, holder, json } => {
            backend
                .unpin(&step.root, &global.prefix, step.step, &holder)
                .with_context(|| format!("failed to unpin step {}", step.step))?;
            if json {
                return print_json(&json::Unpinned {
                    step: step.step,
                    holder: &holder,
                    released: true,
                });
            }
            out!("released {holder}'s pin on step {}", step.step);
            Ok(())
        }
        Command::Gc { root, gc, json } => {
            let report = run_gc(backend, global, &root.root, &gc)?;
            if json {
                return print_json(&json::Gc::new(&report));
            }
            print_gc(&report)?;
            Ok(())
        }
        Command::Fsck { root, repair, json } => {
            let entries = backend
                .fsck(&root.root, &global.prefix, repair)
                .context("fsck failed")?;
            if json {
                return print_json(&json::Entries::new(&entries));
            }
            for e in &entries {
                let mut line = format!("{:<32} {}", e.name, e.state.as_str());
                if let Some(detail) = &e.detail {
                    line.push_str(&format!(": {detail}"));
                }
                if let Some(action) = &e.action {
                    line.push_str(&format!(" [{action}]"));
                }
                out!("{line}");
            }
            Ok(())
        }
    }
}

/// Print the outcome of [`run`] (or of anything before it) and return the
/// exit code: 0, or the failure's [`Class::exit_code`]. The message names
/// the class (`handoff: error (conflict): ...`), and with `json` the failure
/// is also printed to stdout as
/// `{"error":{"class":"conflict","exit_code":5,"message":"..."}}`, so the
/// class survives a runtime that cannot pass the exit code on.
pub fn report<B: Backend>(result: anyhow::Result<()>, json: bool) -> u8 {
    let err = match result {
        Ok(()) => return 0,
        Err(err) if is_broken_pipe(&err) => return 0,
        Err(err) => err,
    };
    let class = classify::<B>(&err);
    let message = format!("{err:#}");
    if json {
        let _ = print_json(&json::Failure::new(class, &message));
    }
    match class {
        Class::Other => eprintln!("handoff: error: {message}"),
        class => eprintln!("handoff: error ({}): {message}", class.as_str()),
    }
    class.exit_code()
}

/// The class of a failure: that of the first backend error in its chain.
pub fn classify<B: Backend>(err: &anyhow::Error) -> Class {
    err.chain()
        .find_map(|e| e.downcast_ref::<B::Error>())
        .map_or(Class::Other, B::class)
}

/// Whether the failure is only that stdout's reader went away.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn write_options<B: Backend>(backend: &B, global: &Global, write: &WriteArgs) -> WriteOptions {
    WriteOptions {
        prefix: global.prefix.clone(),
        writer: write
            .writer
            .clone()
            .unwrap_or_else(|| backend.default_writer()),
        created_ms: write.created_ms,
    }
}

fn finish_write<B: Backend>(
    backend: &B,
    global: &Global,
    root: &Path,
    write: &WriteArgs,
    written: Written,
    elapsed: Duration,
    verb: &str,
) -> anyhow::Result<()> {
    let gc = match write.keep {
        Some(keep) => {
            let args = GcArgs {
                keep,
                grace: Duration::from_secs(3600),
                skew: Duration::from_secs(120),
            };
            let report = run_gc(backend, global, root, &args).with_context(|| {
                format!(
                    "step {} was {verb}, but the gc after it failed",
                    written.report.version.step
                )
            })?;
            Some(report)
        }
        None => None,
    };
    if write.json {
        return print_json(&json::Write::new(&written, elapsed, gc.as_ref()));
    }
    for warning in &written.report.warnings {
        eprintln!("handoff: warning: {warning}");
    }
    let v = &written.report.version;
    out!(
        "{verb} step {} at {}: {} files, {} bytes, {} fsyncs ({:.1} ms) in {:.1} ms",
        v.step,
        v.path,
        v.files.len(),
        bytes(v),
        written.fsyncs,
        written.fsync_ms,
        elapsed.as_secs_f64() * 1000.0
    );
    if let Some(gc) = &gc {
        print_gc(gc)?;
    }
    Ok(())
}

fn wait<B: Backend>(backend: &B, global: &Global, args: WaitArgs) -> anyhow::Result<()> {
    let target = match (args.step, args.latest, args.after) {
        (Some(step), _, _) => Target::Step(step),
        (_, _, Some(after)) => Target::After(after),
        _ => Target::Latest,
    };
    let options = args.read.options(&global.prefix, args.timeout);
    let start = Instant::now();
    let version = backend
        .wait(&args.root.root, target, &options)
        .with_context(|| match target {
            Target::Step(n) => format!("failed to wait for step {n}"),
            Target::Latest => "failed to wait for the latest step".to_string(),
            Target::After(n) => format!("failed to wait for a step after {n}"),
        })?;
    let elapsed = start.elapsed();
    if args.json {
        return print_json(&json::VersionOut::new(&version, elapsed));
    }
    out!(
        "step {} ready at {}: {} files, {} bytes, after {:.1} ms",
        version.step,
        version.path,
        version.files.len(),
        bytes(&version),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn watch<B: Backend>(backend: &B, global: &Global, args: WatchArgs) -> anyhow::Result<()> {
    let options = args.read.options(&global.prefix, None);
    let root = &args.root.root;
    let holder = args.read.pin.as_deref();
    // With --pin, the step printed last stays pinned until the consumer asks
    // for the next one, and is released only once that one is pinned: the
    // consumer is never left holding nothing. While the consumer uses it, the
    // pin is renewed every half ttl, so serving one step for longer than the
    // ttl does not let gc take it.
    let mut held: Option<u64> = None;
    let ttl_ms = millis(args.read.ttl);
    let next_requested = |step: u64| -> anyhow::Result<bool> {
        let renew = || {
            let holder = holder.expect("a held step has a holder");
            backend
                .pin(root, &global.prefix, step, holder, ttl_ms)
                .map(drop)
                .with_context(|| {
                    format!(
                        "failed to renew the pin on step {step}: it is no longer protected from gc"
                    )
                })
        };
        next_line(renew, Duration::from_millis((ttl_ms / 2).max(100)))
    };
    let mut target = match args.from {
        None => Target::Latest,
        Some(0) => {
            // `after` cannot say ">= 0": look at step 0 once, then go on
            // from there.
            let once = WaitOptions {
                timeout_ms: Some(0),
                ..options.clone()
            };
            match backend.wait(root, Target::Step(0), &once) {
                Ok(version) => {
                    print_watched(&version, Duration::ZERO, args.json)?;
                    if holder.is_some() {
                        held = Some(0);
                        if !next_requested(0)? {
                            return Ok(());
                        }
                    }
                }
                Err(e) if B::class(&e) == Class::TimedOut => {}
                Err(e) => return Err(e).context("failed to watch step 0"),
            }
            Target::After(0)
        }
        Some(n) => Target::After(n - 1),
    };
    loop {
        let start = Instant::now();
        let version = backend
            .wait(root, target, &options)
            .context("failed to watch for the next step")?;
        if let (Some(previous), Some(holder)) = (held, holder) {
            release(backend, global, root, previous, holder)?;
        }
        print_watched(&version, start.elapsed(), args.json)?;
        target = Target::After(version.step);
        if holder.is_some() {
            held = Some(version.step);
            if !next_requested(version.step)? {
                // stdin closed: no more asks. The pin stays until it
                // expires or is unpinned; the consumer may still read it.
                return Ok(());
            }
        }
    }
}

/// Waits for the consumer of `watch --pin` to ask for the next version: a
/// line on stdin. False at end of input. Calls `renew` every `every` while
/// it waits; where threads are not available (a WASI command), it only
/// waits.
fn next_line(
    mut renew: impl FnMut() -> anyhow::Result<()>,
    every: Duration,
) -> anyhow::Result<bool> {
    use std::sync::mpsc::RecvTimeoutError;
    let context = "failed to read the request for the next step from stdin";
    let Some(lines) = stdin_lines() else {
        let mut line = String::new();
        return Ok(std::io::stdin().read_line(&mut line).context(context)? > 0);
    };
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match lines.recv_timeout(every) {
            Ok(read) => return Ok(read.context(context)? > 0),
            Err(RecvTimeoutError::Timeout) => renew()?,
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
    }
}

/// Lines of stdin read by a thread of their own (their lengths; 0 at end of
/// input), so a wait for one can time out. `None` where no thread can be
/// started.
fn stdin_lines()
-> Option<&'static std::sync::Mutex<std::sync::mpsc::Receiver<std::io::Result<usize>>>> {
    use std::sync::{Mutex, OnceLock, mpsc};
    static LINES: OnceLock<Option<Mutex<mpsc::Receiver<std::io::Result<usize>>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let (send, receive) = mpsc::channel();
            std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        let read = std::io::stdin().read_line(&mut line);
                        let done = !matches!(read, Ok(n) if n > 0);
                        if send.send(read).is_err() || done {
                            return;
                        }
                    }
                })
                .ok()
                .map(|_| Mutex::new(receive))
        })
        .as_ref()
}

/// Releases `holder`'s pin on `step`; already gone (expired and collected,
/// or unpinned by hand) is fine.
fn release<B: Backend>(
    backend: &B,
    global: &Global,
    root: &Path,
    step: u64,
    holder: &str,
) -> anyhow::Result<()> {
    match backend.unpin(root, &global.prefix, step, holder) {
        Err(e) if B::class(&e) != Class::NotFound => {
            Err(e).with_context(|| format!("failed to release {holder}'s pin on step {step}"))
        }
        _ => Ok(()),
    }
}

fn print_watched(version: &Version, elapsed: Duration, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&json::VersionOut::new(version, elapsed))?;
    } else {
        out!(
            "step {} ready at {}: {} files, {} bytes",
            version.step,
            version.path,
            version.files.len(),
            bytes(version)
        );
    }
    // A pipe would hold the line back; a watcher's consumer needs it now.
    std::io::Write::flush(&mut std::io::stdout())?;
    Ok(())
}

fn run_gc<B: Backend>(
    backend: &B,
    global: &Global,
    root: &Path,
    args: &GcArgs,
) -> anyhow::Result<GcReport> {
    let options = GcOptions {
        prefix: global.prefix.clone(),
        keep: args.keep,
        grace_ms: millis(args.grace),
        skew_ms: millis(args.skew),
    };
    backend.gc(root, &options).context("gc failed")
}

fn print_gc(report: &GcReport) -> anyhow::Result<()> {
    let list = |steps: &[u64]| {
        steps
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    out!(
        "gc: removed [{}], kept [{}], pinned [{}], staging removed {}",
        list(&report.removed),
        list(&report.kept),
        list(&report.pinned),
        report.staging_removed.len()
    );
    Ok(())
}

/// Total payload bytes of a version.
fn bytes(version: &Version) -> u64 {
    version.files.iter().map(|f| f.size).sum()
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The one JSON object a `--json` run prints (one per line for `watch`).
fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "handoff", after_help = EXIT_CODES)]
    struct Cli {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("handoff").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_needs_exactly_one_target() {
        assert!(parse(&["wait", "--root", "r"]).is_err());
        assert!(parse(&["wait", "--root", "r", "--step", "1", "--latest"]).is_err());
        assert!(parse(&["wait", "--root", "r", "--latest"]).is_ok());
        assert!(parse(&["wait", "--root", "r", "--after", "3"]).is_ok());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        let err = parse(&["wait", "--root", "r", "--latest", "--timeout", "soon"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = parse(&["--prefix", "ckpt-", "ls", "--root", "r"]).unwrap();
        let after = parse(&["ls", "--root", "r", "--prefix", "ckpt-"]).unwrap();
        assert_eq!(before.global.prefix, "ckpt-");
        assert_eq!(after.global.prefix, "ckpt-");
    }

    #[test]
    fn ttl_needs_pin() {
        assert!(parse(&["wait", "--root", "r", "--latest", "--ttl", "1m"]).is_err());
        assert!(
            parse(&[
                "wait", "--root", "r", "--latest", "--pin", "a", "--ttl", "1m"
            ])
            .is_ok()
        );
    }

    #[test]
    fn holders_are_checked_before_running() {
        assert_eq!(
            parse_holder("server-a:1@node.x_y"),
            Ok("server-a:1@node.x_y".to_string())
        );
        for bad in ["", ".hidden", "../escape", "a/b", "a b", &"x".repeat(129)] {
            assert!(parse_holder(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["pin", "--root", "r", "--step", "1", "--holder", "../x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn keep_must_be_positive() {
        assert!(parse(&["gc", "--root", "r", "--keep", "0"]).is_err());
        assert!(parse(&["gc", "--root", "r", "--keep", "1"]).is_ok());
        assert!(parse(&["publish", "--root", "r", "--step", "1", "--keep", "0", "s"]).is_err());
    }

    #[test]
    fn json_flag_is_seen_on_every_subcommand() {
        for args in [
            &["publish", "--root", "r", "--step", "1", "s", "--json"][..],
            &["seal", "--root", "r", "--step", "1", "--json"],
            &["wait", "--root", "r", "--latest", "--json"],
            &["watch", "--root", "r", "--json"],
            &["ls", "--root", "r", "--json"],
            &[
                "pin", "--root", "r", "--step", "1", "--holder", "a", "--json",
            ],
            &[
                "unpin", "--root", "r", "--step", "1", "--holder", "a", "--json",
            ],
            &["gc", "--root", "r", "--keep", "1", "--json"],
            &["fsck", "--root", "r", "--json"],
        ] {
            assert!(parse(args).unwrap().command.json(), "{args:?}");
            let without: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
            assert!(!parse(&without).unwrap().command.json(), "{without:?}");
        }
    }

    /// A backend whose every call fails with the given protocol error.
    struct Failing(handoff_core::Error);

    impl Backend for Failing {
        type Error = handoff_core::Error;
        fn class(error: &Self::Error) -> Class {
            Class::of(error)
        }
        fn default_writer(&self) -> String {
            "test".to_string()
        }
        fn publish(
            &self,
            _: &Path,
            _: u64,
            _: &Path,
            _: &WriteOptions,
        ) -> Result<Written, Self::Error> {
            Err(self.0.clone())
        }
        fn seal(&self, _: &Path, _: u64, _: &WriteOptions) -> Result<Written, Self::Error> {
            Err(self.0.clone())
        }
        fn wait(&self, _: &Path, _: Target, _: &WaitOptions) -> Result<Version, Self::Error> {
            Err(self.0.clone())
        }
        fn list(&self, _: &Path, _: &str) -> Result<Vec<StepInfo>, Self::Error> {
            Err(self.0.clone())
        }
        fn pin(&self, _: &Path, _: &str, _: u64, _: &str, _: u64) -> Result<PinInfo, Self::Error> {
            Err(self.0.clone())
        }
        fn unpin(&self, _: &Path, _: &str, _: u64, _: &str) -> Result<(), Self::Error> {
            Err(self.0.clone())
        }
        fn gc(&self, _: &Path, _: &GcOptions) -> Result<GcReport, Self::Error> {
            Err(self.0.clone())
        }
        fn fsck(&self, _: &Path, _: &str, _: bool) -> Result<Vec<FsckEntry>, Self::Error> {
            Err(self.0.clone())
        }
    }

    #[test]
    fn exit_codes_follow_the_protocol_outcome() {
        use handoff_core::Error as E;
        let code = |e: E| {
            let cli = parse(&["seal", "--root", "r", "--step", "1"]).unwrap();
            let result = run(&Failing(e), &cli.global, cli.command);
            report::<Failing>(result, false)
        };
        assert_eq!(code(E::TimedOut(String::new())), 3);
        assert_eq!(code(E::Integrity(String::new())), 4);
        assert_eq!(code(E::Conflict(String::new())), 5);
        assert_eq!(code(E::NotFound(String::new())), 1);
        assert_eq!(code(E::Io(String::new())), 1);
        let other = anyhow::anyhow!("no backend error in here");
        assert_eq!(report::<Failing>(Err(other), false), 1);
    }

    #[test]
    fn class_is_found_beneath_context() {
        let err = anyhow::Error::from(handoff_core::Error::Conflict("x".into()))
            .context("failed to publish step 1");
        assert_eq!(classify::<Failing>(&err), Class::Conflict);
        assert_eq!(Class::Conflict.as_str(), "conflict");
        assert_eq!(Class::TimedOut.as_str(), "timed-out");
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("Exit codes:") && help.contains("5  conflict"),
            "{help}"
        );
    }
}
