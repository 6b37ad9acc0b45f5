//! `handoff`: publish, seal, wait for and retain model-weight versions on a
//! shared filesystem. A thin CLI over `handoff-runtime`; the subcommands,
//! their output and the exit codes are `handoff-cli`'s, shared with the WASI
//! command.

mod demo;
mod progress;
mod watchdog;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use handoff_cli::{EXIT_CODES, Global, duration};
use handoff_runtime::{Limits, Runtime};

/// Publish, seal, wait for and retain model-weight versions on a shared filesystem.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(flatten)]
    host: HostOptions,
    #[command(subcommand)]
    command: HostCommand,
}

/// Options of the native host: which component runs, and its limits.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct HostOptions {
    /// Run this component file instead of the embedded one
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Compile the --component file instead of using (or filling) the
    /// on-disk cache (the embedded component never uses it)
    #[arg(long, global = true)]
    no_cache: bool,
    /// Hash and copy inside the component instead of natively (slower; for
    /// a filesystem whose copy_file_range is not to be trusted)
    #[arg(long, global = true)]
    no_bulk: bool,
    /// Time limit of each call into the component [default: 1h; wait: its timeout + 1m;
    /// fetch: its timeout + 1h; either without a timeout: none]
    #[arg(long = "deadline", global = true, value_name = "DUR", value_parser = duration::parse)]
    time_limit: Option<Duration>,
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    #[command(flatten)]
    Protocol(handoff_cli::Command),
    /// Publish synthetic adapters while reader processes wait for them
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(handoff_cli::usage_error(&e, std::env::args_os())),
    };
    let json = cli.global.json;
    ExitCode::from(handoff_cli::report::<Runtime>(run(cli), json))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.global.json && matches!(cli.command, HostCommand::Demo(_)) {
        return Err(handoff_cli::Usage(
            "demo prints text only: --json does not apply to it".to_string(),
        )
        .into());
    }
    let progress = shows_progress(cli.global.json, std::io::stderr().is_terminal());
    let runtime = runtime(&cli.host, progress)?;
    match cli.command {
        HostCommand::Protocol(command) => {
            if let Some((operation, budget)) = watchdog::budget(&command, cli.host.time_limit) {
                watchdog::arm(operation, budget, cli.global.json);
            }
            handoff_cli::run(&runtime, &cli.global, command)
        }
        HostCommand::Demo(args) => demo::run(&runtime, &cli.global, &cli.host, &args),
    }
}

/// A progress bar only for a person watching: never with `--json`, never
/// into a pipe or a log file.
fn shows_progress(json: bool, stderr_is_terminal: bool) -> bool {
    !json && stderr_is_terminal
}

fn runtime(host: &HostOptions, progress: bool) -> anyhow::Result<Runtime> {
    let mut builder = Runtime::builder()
        .cache(!host.no_cache)
        .bulk(!host.no_bulk)
        .limits(Limits {
            time_limit: host.time_limit,
            ..Limits::default()
        });
    if let Some(path) = &host.component {
        builder = builder.component(path);
    }
    if progress {
        builder = builder.progress(Arc::new(progress::StderrBar::new()));
    }
    let runtime = builder.build()?;
    // The component loaded all the same; say why it had to be compiled
    // (an untrusted cache directory, a bad entry replaced), once.
    if let Some(problem) = &runtime.load_info().cache_problem {
        eprintln!("handoff: warning: {problem}");
    }
    Ok(runtime)
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
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = Cli::try_parse_from([
            "handoff",
            "--prefix",
            "ckpt-",
            "--no-cache",
            "ls",
            "--root",
            "r",
        ])
        .unwrap();
        let after = Cli::try_parse_from([
            "handoff",
            "ls",
            "--root",
            "r",
            "--prefix",
            "ckpt-",
            "--no-cache",
        ])
        .unwrap();
        for cli in [before, after] {
            assert_eq!(cli.global.prefix, "ckpt-");
            assert!(cli.host.no_cache);
        }
    }

    #[test]
    fn demo_is_a_host_subcommand() {
        let cli = Cli::try_parse_from(["handoff", "demo", "--steps", "2"]).unwrap();
        assert!(matches!(cli.command, HostCommand::Demo(_)));
        let cli = Cli::try_parse_from(["handoff", "ls", "--root", "r", "--json"]).unwrap();
        assert!(matches!(cli.command, HostCommand::Protocol(_)) && cli.global.json);
    }

    #[test]
    fn progress_only_on_a_terminal_and_never_with_json() {
        assert!(shows_progress(false, true));
        assert!(!shows_progress(true, true));
        assert!(!shows_progress(false, false));
        assert!(!shows_progress(true, false));
    }

    #[test]
    fn bad_deadlines_are_usage_errors() {
        let err = Cli::try_parse_from(["handoff", "--deadline", "soon", "ls", "--root", "r"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn host_failures_have_their_kind_and_protocol_outcomes_keep_their_code() {
        use handoff_core::{Backend, ErrorKind};
        use handoff_runtime::Error;
        let failure = |e: Error| handoff_cli::failure::<Runtime>(&e.into());
        let code = |e: Error| failure(e).exit_code();
        let protocol = |kind| Error::Protocol(handoff_core::Error::new(kind, ""));
        assert_eq!(code(protocol(ErrorKind::TimedOut)), 3);
        assert_eq!(code(protocol(ErrorKind::Integrity)), 4);
        assert_eq!(code(protocol(ErrorKind::Conflict)), 5);
        assert_eq!(code(protocol(ErrorKind::NotFound)), 1);
        assert_eq!(Runtime::kind(&Error::Trap(String::new())), None);
        assert_eq!(code(Error::Trap(String::new())), 1);
        assert_eq!(failure(Error::Trap(String::new())).kind, "trap");
        let late = Error::DeadlineExceeded {
            limit: Duration::from_secs(1),
        };
        assert_eq!(
            (failure(late.clone()).kind, code(late)),
            ("deadline-exceeded", 3)
        );
        let root = Error::Root {
            path: "/no/root".into(),
            reason: "No such file or directory".into(),
            kind: ErrorKind::NotFound,
        };
        let root = failure(root);
        assert_eq!(
            (root.kind, root.path.as_deref()),
            ("not-found", Some("/no/root"))
        );
    }

    #[test]
    fn help_ends_with_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.trim_end().ends_with(EXIT_CODES), "{help}");
    }
}
