//! `handoff`: publish, seal, wait for and retain model-weight versions on a
//! shared filesystem. A thin CLI over `handoff-runtime`.

/// `println!` that returns an error when stdout is gone (`handoff ls | head`)
/// instead of panicking; `main` then exits quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

mod demo;
mod duration;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use handoff_runtime::{
    Error, GcOptions, GcReport, Limits, PinRequest, PublishReport, Runtime, Target, Verify,
    Version, WaitOptions, WriteOptions,
};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (bad root, bad component, I/O, ...)
  2  usage error
  3  timed out: the step was never committed
  4  integrity: the step is committed but a file is missing, short or differs
     from its hash, or the manifest is unsafe
  5  conflict: the step is already published (the first one stays intact)

Durations are written 500ms, 30s, 2m, 1h (or 1m30s).";

/// Publish, seal, wait for and retain model-weight versions on a shared filesystem.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Run this component file instead of the embedded one
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Step directory prefix
    #[arg(long, global = true, value_name = "P", default_value = handoff_runtime::DEFAULT_PREFIX)]
    prefix: String,
    /// Compile the component instead of using (or filling) the on-disk cache
    #[arg(long, global = true)]
    no_cache: bool,
    /// Time limit of each call into the component [default: 1h; wait: its timeout + 1m]
    #[arg(long, global = true, value_name = "DUR", value_parser = duration::parse)]
    deadline: Option<Duration>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy SRC_DIR into staging, seal it, and rename it to ROOT/<prefix>N
    Publish {
        #[command(flatten)]
        step: RootStep,
        /// The payload to publish
        #[arg(value_name = "SRC_DIR")]
        source: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Seal a payload already written in ROOT/<prefix>N, in place
    Seal {
        #[command(flatten)]
        step: RootStep,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Wait until a step is committed and validates
    Wait(WaitArgs),
    /// Print each new step as it is committed, in step order, until interrupted
    Watch(WatchArgs),
    /// List the step directories under ROOT with their state
    Ls {
        #[command(flatten)]
        root: RootArg,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Pin a committed step so gc keeps it
    Pin {
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
        #[command(flatten)]
        root: RootArg,
        #[command(flatten)]
        gc: GcArgs,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Classify every entry under ROOT; with --repair, clean up after crashes
    Fsck {
        #[command(flatten)]
        root: RootArg,
        /// Finish or undo what a crash left
        #[arg(long)]
        repair: bool,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Publish synthetic adapters while reader processes wait for them
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
struct RootArg {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    root: PathBuf,
}

#[derive(Debug, Args)]
struct RootStep {
    /// The broadcast root directory
    #[arg(long, value_name = "R")]
    root: PathBuf,
    /// The step number
    #[arg(long, value_name = "N")]
    step: u64,
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// Writer id recorded in the manifest [default: <hostname>:<pid>]
    #[arg(long, value_name = "ID")]
    writer: Option<String>,
    /// After success, run gc keeping the newest N steps (at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep: Option<u32>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GcArgs {
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

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["step", "latest", "after"]))]
struct WaitArgs {
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
    /// What to check before accepting the step
    #[arg(long, value_enum, default_value_t = VerifyArg::Size)]
    verify: VerifyArg,
    /// How long a committed step that does not validate yet is retried
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "30s")]
    settle: Duration,
    /// Longest pause between two attempts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "100ms")]
    poll: Duration,
    /// Pin the step for this holder before returning, releasing the holder's other pins
    #[arg(long, value_name = "HOLDER", value_parser = parse_holder)]
    pin: Option<String>,
    /// How long the pin taken with --pin lasts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10m", requires = "pin")]
    ttl: Duration,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    root: RootArg,
    /// Start with the lowest step >= N [default: the latest step]
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// What to check before accepting a step
    #[arg(long, value_enum, default_value_t = VerifyArg::Size)]
    verify: VerifyArg,
    /// How long a committed step that does not validate yet is retried
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "30s")]
    settle: Duration,
    /// Longest pause between two attempts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "100ms")]
    poll: Duration,
    /// Move this holder's pin to each step before printing it
    #[arg(long, value_name = "HOLDER", value_parser = parse_holder)]
    pin: Option<String>,
    /// How long the pin taken with --pin lasts
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10m", requires = "pin")]
    ttl: Duration,
    /// Print one JSON object per line, per step
    #[arg(long)]
    json: bool,
}

/// A pin holder id, checked here so a bad one is a usage error. The same
/// rule as the component's: it becomes a file name under the root.
fn parse_holder(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid holder {text:?}: use 1 to 128 letters, digits, `.`, `_`, `-`, `:` or `@`, not starting with `.`"
        ))
    }
}

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

fn main() -> ExitCode {
    // Usage errors exit 2 inside `parse`.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("handoff: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Whether the failure is only that stdout's reader went away.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The documented exit code of a failure.
fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Error>() {
        Some(Error::TimedOut(_)) => 3,
        Some(Error::Integrity(_)) => 4,
        Some(Error::Conflict(_)) => 5,
        _ => 1,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    let runtime = runtime(global)?;
    match cli.command {
        Command::Publish {
            step,
            source,
            write,
        } => {
            let options = write_options(global, &write);
            let start = Instant::now();
            let report = runtime
                .publish(&step.root, step.step, &source, &options)
                .with_context(|| {
                    format!(
                        "failed to publish step {} from {}",
                        step.step,
                        source.display()
                    )
                })?;
            finish_write(
                &runtime,
                global,
                &step.root,
                &write,
                report,
                start.elapsed(),
                "published",
            )
        }
        Command::Seal { step, write } => {
            let options = write_options(global, &write);
            let start = Instant::now();
            let report = runtime
                .seal(&step.root, step.step, &options)
                .with_context(|| format!("failed to seal step {}", step.step))?;
            finish_write(
                &runtime,
                global,
                &step.root,
                &write,
                report,
                start.elapsed(),
                "sealed",
            )
        }
        Command::Wait(args) => wait(&runtime, global, args),
        Command::Watch(args) => watch(&runtime, global, args),
        Command::Ls { root, json } => {
            let steps = runtime
                .list(&root.root, &global.prefix)
                .context("failed to list the root")?;
            if json {
                return print_json(&serde_json::json!({ "steps": steps }));
            }
            out!(
                "{:<24} {:<10} {:>5} {:>14}",
                "NAME",
                "STATE",
                "FILES",
                "BYTES"
            );
            for s in &steps {
                let name = s.path.file_name().map_or_else(
                    || s.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                out!("{name:<24} {:<10} {:>5} {:>14}", s.state, s.files, s.bytes);
            }
            Ok(())
        }
        Command::Pin {
            step,
            holder,
            ttl,
            json,
        } => {
            let pin = runtime
                .pin(&step.root, &global.prefix, step.step, &holder, ttl)
                .with_context(|| format!("failed to pin step {}", step.step))?;
            if json {
                return print_json(&pin);
            }
            out!(
                "pinned step {} for {} for {}",
                pin.step,
                pin.holder,
                handoff_runtime::format_duration(ttl)
            );
            Ok(())
        }
        Command::Unpin { step, holder, json } => {
            runtime
                .unpin(&step.root, &global.prefix, step.step, &holder)
                .with_context(|| format!("failed to unpin step {}", step.step))?;
            if json {
                return print_json(
                    &serde_json::json!({ "step": step.step, "holder": holder, "released": true }),
                );
            }
            out!("released {holder}'s pin on step {}", step.step);
            Ok(())
        }
        Command::Gc { root, gc, json } => {
            let report = run_gc(&runtime, global, &root.root, &gc)?;
            if json {
                return print_json(&report);
            }
            print_gc(&report)?;
            Ok(())
        }
        Command::Fsck { root, repair, json } => {
            let entries = runtime
                .fsck(&root.root, &global.prefix, repair)
                .context("fsck failed")?;
            if json {
                return print_json(&serde_json::json!({ "entries": entries }));
            }
            for e in &entries {
                let mut line = format!("{:<32} {}", e.name, e.state);
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
        Command::Demo(args) => demo::run(&runtime, global, &args),
    }
}

fn runtime(global: &Global) -> anyhow::Result<Runtime> {
    let mut builder = Runtime::builder().cache(!global.no_cache).limits(Limits {
        deadline: global.deadline,
        ..Limits::default()
    });
    if let Some(path) = &global.component {
        builder = builder.component(path);
    }
    Ok(builder.build()?)
}

fn write_options(global: &Global, write: &WriteArgs) -> WriteOptions {
    WriteOptions {
        prefix: global.prefix.clone(),
        writer: write
            .writer
            .clone()
            .unwrap_or_else(handoff_runtime::default_writer_id),
        created_ms: None,
    }
}

/// What `publish`, `seal` and `wait` print with `--json`.
#[derive(Serialize)]
struct VersionOutput<'a> {
    #[serde(flatten)]
    version: &'a Version,
    bytes: u64,
    elapsed_ms: f64,
}

/// What `publish` and `seal` print with `--json`.
#[derive(Serialize)]
struct WriteOutput<'a> {
    #[serde(flatten)]
    version: VersionOutput<'a>,
    syncs: u32,
    fsyncs: u64,
    fsync_ms: f64,
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    gc: Option<GcReport>,
}

fn finish_write(
    runtime: &Runtime,
    global: &Global,
    root: &Path,
    write: &WriteArgs,
    report: PublishReport,
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
            let report = run_gc(runtime, global, root, &args).with_context(|| {
                format!(
                    "step {} was {verb}, but the gc after it failed",
                    report.version.step
                )
            })?;
            Some(report)
        }
        None => None,
    };
    if write.json {
        return print_json(&WriteOutput {
            version: version_output(&report.version, elapsed),
            syncs: report.syncs,
            fsyncs: report.fsyncs,
            fsync_ms: round3(report.fsync_ms),
            warnings: &report.warnings,
            gc,
        });
    }
    for warning in &report.warnings {
        eprintln!("handoff: warning: {warning}");
    }
    let v = &report.version;
    out!(
        "{verb} step {} at {}: {} files, {} bytes, {} fsyncs ({:.1} ms) in {:.1} ms",
        v.step,
        v.path.display(),
        v.files.len(),
        v.bytes(),
        report.fsyncs,
        report.fsync_ms,
        elapsed.as_secs_f64() * 1000.0
    );
    if let Some(gc) = &gc {
        print_gc(gc)?;
    }
    Ok(())
}

fn wait(runtime: &Runtime, global: &Global, args: WaitArgs) -> anyhow::Result<()> {
    let target = match (args.step, args.latest, args.after) {
        (Some(step), _, _) => Target::Step(step),
        (_, _, Some(after)) => Target::After(after),
        _ => Target::Latest,
    };
    let options = WaitOptions {
        prefix: global.prefix.clone(),
        verify: args.verify.into(),
        timeout: args.timeout,
        settle: args.settle,
        poll: args.poll,
        pin: args.pin.map(|holder| PinRequest {
            holder,
            ttl: args.ttl,
        }),
    };
    let start = Instant::now();
    let version = runtime
        .wait(&args.root.root, target, &options)
        .with_context(|| match target {
            Target::Step(n) => format!("failed to wait for step {n}"),
            Target::Latest => "failed to wait for the latest step".to_string(),
            Target::After(n) => format!("failed to wait for a step after {n}"),
        })?;
    let elapsed = start.elapsed();
    if args.json {
        return print_json(&version_output(&version, elapsed));
    }
    out!(
        "step {} ready at {}: {} files, {} bytes, after {:.1} ms",
        version.step,
        version.path.display(),
        version.files.len(),
        version.bytes(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn watch(runtime: &Runtime, global: &Global, args: WatchArgs) -> anyhow::Result<()> {
    let options = WaitOptions {
        prefix: global.prefix.clone(),
        verify: args.verify.into(),
        timeout: None,
        settle: args.settle,
        poll: args.poll,
        pin: args.pin.map(|holder| PinRequest {
            holder,
            ttl: args.ttl,
        }),
    };
    let mut target = match args.from {
        None => Target::Latest,
        Some(0) => {
            // `after` cannot say ">= 0": look at step 0 once, then go on
            // from there.
            let once = WaitOptions {
                timeout: Some(Duration::ZERO),
                ..options.clone()
            };
            match runtime.wait(&args.root.root, Target::Step(0), &once) {
                Ok(version) => print_watched(&version, Duration::ZERO, args.json)?,
                Err(Error::TimedOut(_)) => {}
                Err(e) => return Err(e).context("failed to watch step 0"),
            }
            Target::After(0)
        }
        Some(n) => Target::After(n - 1),
    };
    loop {
        let start = Instant::now();
        let version = runtime
            .wait(&args.root.root, target, &options)
            .context("failed to watch for the next step")?;
        print_watched(&version, start.elapsed(), args.json)?;
        target = Target::After(version.step);
    }
}

fn print_watched(version: &Version, elapsed: Duration, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&version_output(version, elapsed))?;
    } else {
        out!(
            "step {} ready at {}: {} files, {} bytes",
            version.step,
            version.path.display(),
            version.files.len(),
            version.bytes()
        );
    }
    // A pipe would hold the line back; a watcher's consumer needs it now.
    std::io::Write::flush(&mut std::io::stdout())?;
    Ok(())
}

fn run_gc(
    runtime: &Runtime,
    global: &Global,
    root: &Path,
    args: &GcArgs,
) -> anyhow::Result<GcReport> {
    let options = GcOptions {
        prefix: global.prefix.clone(),
        keep: args.keep,
        grace: args.grace,
        skew: args.skew,
    };
    runtime.gc(root, &options).context("gc failed")
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

fn version_output(version: &Version, elapsed: Duration) -> VersionOutput<'_> {
    VersionOutput {
        version,
        bytes: version.bytes(),
        elapsed_ms: round3(elapsed.as_secs_f64() * 1000.0),
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The one JSON object a `--json` run prints.
fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["handoff", "wait", "--root", "r"]).is_err());
        assert!(
            Cli::try_parse_from(["handoff", "wait", "--root", "r", "--step", "1", "--latest"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["handoff", "wait", "--root", "r", "--latest"]).is_ok());
        assert!(Cli::try_parse_from(["handoff", "wait", "--root", "r", "--after", "3"]).is_ok());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        let err = Cli::try_parse_from([
            "handoff",
            "wait",
            "--root",
            "r",
            "--latest",
            "--timeout",
            "soon",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before =
            Cli::try_parse_from(["handoff", "--prefix", "ckpt-", "ls", "--root", "r"]).unwrap();
        let after =
            Cli::try_parse_from(["handoff", "ls", "--root", "r", "--prefix", "ckpt-"]).unwrap();
        assert_eq!(before.global.prefix, "ckpt-");
        assert_eq!(after.global.prefix, "ckpt-");
    }

    #[test]
    fn ttl_needs_pin() {
        assert!(
            Cli::try_parse_from(["handoff", "wait", "--root", "r", "--latest", "--ttl", "1m"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "handoff", "wait", "--root", "r", "--latest", "--pin", "a", "--ttl", "1m"
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
        let err = Cli::try_parse_from([
            "handoff", "pin", "--root", "r", "--step", "1", "--holder", "../x",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn keep_must_be_positive() {
        assert!(Cli::try_parse_from(["handoff", "gc", "--root", "r", "--keep", "0"]).is_err());
        assert!(Cli::try_parse_from(["handoff", "gc", "--root", "r", "--keep", "1"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "handoff", "publish", "--root", "r", "--step", "1", "--keep", "0", "s"
            ])
            .is_err()
        );
    }

    #[test]
    fn exit_codes_follow_the_protocol_outcome() {
        let code = |e: Error| exit_code(&anyhow::Error::from(e).context("failed to do it"));
        assert_eq!(code(Error::TimedOut(String::new())), 3);
        assert_eq!(code(Error::Integrity(String::new())), 4);
        assert_eq!(code(Error::Conflict(String::new())), 5);
        assert_eq!(code(Error::NotFound(String::new())), 1);
        assert_eq!(code(Error::Trap(String::new())), 1);
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
