//! The command line's shape: subcommands and flags, with their defaults
//! taken from the core.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use handoff_core::{DEFAULT_PREFIX, GcOptions, PinRequest, Target, Verify, WaitOptions};

use crate::duration;

/// The exit codes and duration syntax, for `--help` (`after_help`).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (bad root, bad component, I/O, ...)
  2  usage error
  3  timed out: the step was never committed (wait --timeout), or the call
     was stopped by its --deadline
  4  integrity: the step is committed but a file is missing, short or differs
     from its hash, or the manifest is unsafe (fetch: a copy did not match
     its hash for --settle; nothing was committed under --to)
  5  conflict: the step is already published, or another writer is at it
     (what is there stays intact); fetch: --to holds another copy of the step
  6  gc (or the gc of --keep) could not remove everything it should: it went
     on with the rest, and its report (stdout) names each under \"failed\"

With --json a failure is also one object on stdout:
{\"error\":{\"exit_code\":N,\"kind\":\"...\",\"message\":\"...\",\"path\":...,\"retryable\":B}}

Durations are written 500ms, 30s, 2m, 1h (or 1m30s).";

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Step directory prefix
    #[arg(long, global = true, value_name = "P", default_value = DEFAULT_PREFIX,
          value_parser = parse_prefix)]
    pub prefix: String,
    /// Print one JSON object (for `watch`, one per line); a failure too
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Begin a new run on ROOT and print its number: steps of older runs are
    /// superseded, and their writers refused
    #[command(
        after_help = "A trainer restarted from an earlier checkpoint runs `handoff begin` once, \
                      then passes the run it printed to every publish or seal (--run G). Step \
                      N of run G is the step numbered G * 10^12 + N, so every reader, old or \
                      new, finds the newest run's steps after every older step."
    )]
    Begin {
        /// Where.
        #[command(flatten)]
        root: RootArg,
    },
    /// Wait until a step is committed and validates
    Wait(WaitArgs),
    /// Wait for a step, pinned, and copy it, verified, into the local root
    /// DIR; print the local copy
    #[command(
        after_help = "The copy is a handoff root of its own: DIR/<prefix>N with the shared \
                      manifest byte for byte and STABLE, durable, by the staged path of \
                      publish, so `wait`, `gc` and `fsck` work on DIR. Each copied file is \
                      hashed and checked against the manifest; a mismatch is copied again for \
                      --settle, then fails (exit 4) with nothing committed. The shared step is \
                      pinned only while it is copied. A step already in DIR with the same \
                      manifest is not copied again."
    )]
    Fetch(FetchArgs),
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
        #[arg(long, value_name = "DUR", value_parser = duration::parse,
              default_value = duration::format(PinRequest::DEFAULT_TTL))]
        ttl: Duration,
    },
    /// Release a pin
    Unpin {
        /// Where and which step.
        #[command(flatten)]
        step: RootStep,
        /// Who holds the pin
        #[arg(long, value_name = "ID", value_parser = parse_holder)]
        holder: String,
    },
    /// Remove old unpinned steps and abandoned staging directories
    Gc {
        /// Where.
        #[command(flatten)]
        root: RootArg,
        /// What to keep.
        #[command(flatten)]
        gc: GcArgs,
    },
    /// Classify every entry under ROOT; with --repair, clean up after crashes
    Fsck {
        /// Where.
        #[command(flatten)]
        root: RootArg,
        /// Finish or undo what a crash left: remove only what is broken
        /// (seen twice, 30 s apart), untouched for an hour and not pinned
        #[arg(long)]
        repair: bool,
    },
}

/// `--root`.
#[derive(Debug, Args)]
pub struct RootArg {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    pub root: PathBuf,
}

/// `--root` and `--step`.
#[derive(Debug, Args)]
pub struct RootStep {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    pub root: PathBuf,
    /// The step number
    #[arg(long, value_name = "N")]
    pub step: u64,
}

/// Options of `publish` and `seal`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Writer id recorded in the manifest [default: <hostname>:<pid>; WASI: <$HOSTNAME or wasi>:<random>]
    #[arg(long, value_name = "ID")]
    pub writer: Option<String>,
    /// Creation time to record, milliseconds since the Unix epoch [default: now];
    /// two writers given the same payload, writer and time write identical manifests
    #[arg(long, value_name = "MS")]
    pub created_ms: Option<u64>,
    /// After success, run gc keeping the newest N steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// The run to write for, as `handoff begin` printed it: the step written
    /// is step N of run G; refused once a newer run has begun
    #[arg(long, value_name = "G", default_value_t = 0)]
    pub run: u64,
}

/// Options of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep the newest N committed steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Remove staging directories untouched for longer than this
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(GcOptions::DEFAULT_GRACE))]
    pub grace: Duration,
    /// Clock difference allowed between nodes when judging pin expiry
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(GcOptions::DEFAULT_SKEW))]
    pub skew: Duration,
}

/// `--step N`, `--latest` or `--after N`: which step `wait` or `fetch`
/// is for.
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArg {
    /// Exactly this step
    #[arg(long, value_name = "N")]
    pub step: Option<u64>,
    /// The highest step that validates
    #[arg(long)]
    pub latest: bool,
    /// The lowest step above N that validates
    #[arg(long, value_name = "N")]
    pub after: Option<u64>,
}

impl TargetArg {
    /// The target these flags name.
    pub fn target(&self) -> Target {
        match (self.step, self.after) {
            (Some(step), _) => Target::Step(step),
            (_, Some(after)) => Target::After(after),
            _ => Target::Latest,
        }
    }
}

/// Options of `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Where.
    #[command(flatten)]
    pub root: RootArg,
    /// Which step.
    #[command(flatten)]
    pub target: TargetArg,
    /// Give up after this long [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// How to check and hold what is returned.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `--settle` and `--poll`: how a reader retries.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// How long a committed step that does not validate yet (for fetch: or
    /// a copy that does not match its hash) is retried
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(WaitOptions::DEFAULT_SETTLE))]
    pub settle: Duration,
    /// Longest pause between two attempts
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(WaitOptions::DEFAULT_POLL))]
    pub poll: Duration,
}

/// How `wait` and `watch` check and hold what they return.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// What to check before accepting a step
    #[arg(long, value_enum, default_value_t = VerifyArg::Size)]
    pub verify: VerifyArg,
    /// How it retries.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Pin each step returned for this holder. `wait` keeps the holder's
    /// other pins: unpin the previous step once you have switched over.
    /// `watch` keeps each step pinned until you ask for the next one (a line
    /// on its stdin), then releases it once the next one is pinned
    #[arg(long, value_name = "HOLDER", value_parser = parse_holder)]
    pub pin: Option<String>,
    /// How long the pin taken with --pin lasts
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(PinRequest::DEFAULT_TTL), requires = "pin")]
    pub ttl: Duration,
}

impl ReadArgs {
    /// The core's options for these flags.
    pub fn options(&self, prefix: &str, timeout: Option<Duration>) -> WaitOptions {
        WaitOptions {
            prefix: prefix.to_string(),
            verify: self.verify.into(),
            timeout,
            settle: self.retry.settle,
            poll: self.retry.poll,
            pin: self.pin.clone().map(|holder| PinRequest {
                holder,
                ttl: self.ttl,
            }),
        }
    }
}

/// Options of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Where.
    #[command(flatten)]
    pub root: RootArg,
    /// Start with the lowest step >= N [default: the latest step]
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// How to check and hold what is returned.
    #[command(flatten)]
    pub read: ReadArgs,
    /// Fetch each new step into the local root DIR (as `fetch` does) and
    /// print the local copy; the shared step is pinned only while it is
    /// copied
    #[arg(long, value_name = "DIR", conflicts_with = "pin")]
    pub to: Option<PathBuf>,
    /// With --to: after each fetch, run gc on DIR keeping the newest N
    /// steps (at least 1)
    #[arg(long, value_name = "N", requires = "to",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// With --to: who holds the pin while a step is copied
    /// [default: <hostname>:<pid>]
    #[arg(long, value_name = "ID", requires = "to", value_parser = parse_holder)]
    pub holder: Option<String>,
}

/// Options of `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Where.
    #[command(flatten)]
    pub root: RootArg,
    /// Which step.
    #[command(flatten)]
    pub target: TargetArg,
    /// The local root to copy into (created if missing); not the shared
    /// root, inside it, nor containing it
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// After the fetch, run gc on DIR keeping the newest N steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Give up waiting for the step after this long [default: wait forever]
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// How it retries.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Who holds the pin on the shared step while it is copied
    /// [default: <hostname>:<pid>]
    #[arg(long, value_name = "ID", value_parser = parse_holder)]
    pub holder: Option<String>,
    /// How long that pin lasts; renewed between files once half of it has
    /// passed
    #[arg(long, value_name = "DUR", value_parser = duration::parse,
          default_value = duration::format(PinRequest::DEFAULT_TTL))]
    pub ttl: Duration,
}

/// `--prefix`: checked as the protocol checks it, so a bad one is a usage
/// error (exit 2), not a failed call.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    handoff_core::layout::check_prefix(text)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
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
pub enum VerifyArg {
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
