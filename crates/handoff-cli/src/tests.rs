//! The command line's parsing and its exit codes, against a backend that
//! fails on purpose.

use std::path::Path;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use handoff_core::{
    Error, ErrorKind, FetchOptions, FetchReport, FsckEntry, GcOptions, GcReport, PinInfo,
    PublishReport, StepInfo, Target, Verify, Version, WaitOptions, WriteOptions,
};

use super::*;
use crate::flags::parse_holder;

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
fn bad_prefixes_are_usage_errors() {
    for bad in ["a/b", ".hidden"] {
        let err = parse(&["ls", "--root", "r", "--prefix", bad]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}");
        assert!(err.to_string().contains("invalid prefix"), "{err}");
    }
    assert!(parse(&["ls", "--root", "r", "--prefix", "ckpt_"]).is_ok());
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
    let before = parse(&["--prefix", "ckpt-", "--json", "ls", "--root", "r"]).unwrap();
    let after = parse(&["ls", "--root", "r", "--prefix", "ckpt-", "--json"]).unwrap();
    for cli in [before, after] {
        assert_eq!(cli.global.prefix, "ckpt-");
        assert!(cli.global.json);
    }
}

#[test]
fn defaults_are_the_cores() {
    let cli = parse(&["wait", "--root", "r", "--latest", "--pin", "a"]).unwrap();
    let Command::Wait(args) = cli.command else {
        panic!("not a wait");
    };
    assert_eq!(cli.global.prefix, handoff_core::DEFAULT_PREFIX);
    let options = args.read.options(&cli.global.prefix, None);
    let defaults = handoff_core::WaitOptions::default();
    assert_eq!(
        (options.settle, options.poll),
        (defaults.settle, defaults.poll)
    );
    assert_eq!(
        options.pin.unwrap().ttl,
        handoff_core::PinRequest::DEFAULT_TTL
    );
    let cli = parse(&["gc", "--root", "r", "--keep", "2"]).unwrap();
    let Command::Gc { gc, .. } = cli.command else {
        panic!("not a gc");
    };
    let defaults = GcOptions::keep(2);
    assert_eq!((gc.grace, gc.skew), (defaults.grace, defaults.skew));
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
fn fetch_takes_one_target_and_a_local_root() {
    let ok = ["fetch", "--root", "r", "--latest", "--to", "d"];
    assert!(parse(&ok).is_ok());
    assert!(parse(&["fetch", "--root", "r", "--latest"]).is_err());
    assert!(parse(&["fetch", "--root", "r", "--to", "d"]).is_err());
    assert!(
        parse(&[
            "fetch", "--root", "r", "--step", "1", "--latest", "--to", "d"
        ])
        .is_err()
    );
    assert!(
        parse(&[
            "fetch", "--root", "r", "--after", "1", "--to", "d", "--keep", "0"
        ])
        .is_err()
    );
    assert!(
        parse(&[
            "fetch", "--root", "r", "--latest", "--to", "d", "--holder", ".x"
        ])
        .is_err()
    );
    // watch --to copies: a pin held past the copy is not what it does.
    assert!(parse(&["watch", "--root", "r", "--to", "d", "--keep", "2"]).is_ok());
    assert!(parse(&["watch", "--root", "r", "--to", "d", "--pin", "h"]).is_err());
    assert!(parse(&["watch", "--root", "r", "--keep", "2"]).is_err());
}

#[test]
fn keep_must_be_positive() {
    assert!(parse(&["gc", "--root", "r", "--keep", "0"]).is_err());
    assert!(parse(&["gc", "--root", "r", "--keep", "1"]).is_ok());
    assert!(parse(&["publish", "--root", "r", "--step", "1", "--keep", "0", "s"]).is_err());
}

/// A backend whose every call fails with the given protocol error, but gc
/// when it is given a report.
struct Failing(Error, Option<GcReport>);

impl Backend for Failing {
    type Error = Error;
    fn protocol_error(error: &Error) -> Option<&Error> {
        Some(error)
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
    ) -> Result<PublishReport, Error> {
        Err(self.0.clone())
    }
    fn seal(&self, _: &Path, _: u64, _: &WriteOptions) -> Result<PublishReport, Error> {
        Err(self.0.clone())
    }
    fn begin(&self, _: &Path, _: &str) -> Result<u64, Error> {
        Err(self.0.clone())
    }
    fn wait(&self, _: &Path, _: Target, _: &WaitOptions) -> Result<Version, Error> {
        Err(self.0.clone())
    }
    fn fetch(&self, _: &Path, _: &Path, _: Target, _: &FetchOptions) -> Result<FetchReport, Error> {
        Err(self.0.clone())
    }
    fn latest(&self, _: &Path, _: &str, _: Verify) -> Result<Option<Version>, Error> {
        Err(self.0.clone())
    }
    fn list(&self, _: &Path, _: &str) -> Result<Vec<StepInfo>, Error> {
        Err(self.0.clone())
    }
    fn pin(&self, _: &Path, _: &str, _: u64, _: &str, _: Duration) -> Result<PinInfo, Error> {
        Err(self.0.clone())
    }
    fn unpin(&self, _: &Path, _: &str, _: u64, _: &str) -> Result<(), Error> {
        Err(self.0.clone())
    }
    fn gc(&self, _: &Path, _: &GcOptions) -> Result<GcReport, Error> {
        self.1.clone().ok_or_else(|| self.0.clone())
    }
    fn fsck(&self, _: &Path, _: &str, _: bool) -> Result<Vec<FsckEntry>, Error> {
        Err(self.0.clone())
    }
}

#[test]
fn exit_codes_follow_the_protocol_outcome() {
    for args in [
        &["seal", "--root", "r", "--step", "1"][..],
        &["fetch", "--root", "r", "--latest", "--to", "d"],
    ] {
        let code = |kind: ErrorKind| {
            let cli = parse(args).unwrap();
            let result = run(
                &Failing(Error::new(kind, ""), None),
                &cli.global,
                cli.command,
            );
            report::<Failing>(result, false)
        };
        assert_eq!(code(ErrorKind::TimedOut), 3);
        assert_eq!(code(ErrorKind::Integrity), 4);
        assert_eq!(code(ErrorKind::Conflict), 5);
        assert_eq!(code(ErrorKind::NotFound), 1);
        assert_eq!(code(ErrorKind::Io), 1);
    }
    let other = anyhow::anyhow!("no backend error in here");
    assert_eq!(report::<Failing>(Err(other), false), 1);
}

#[test]
fn kind_is_found_beneath_context() {
    let err = anyhow::Error::from(Error::new(ErrorKind::Conflict, "x"))
        .context("failed to publish step 1");
    let found = classify::<Failing>(&err).map(Error::kind);
    assert_eq!(found, Some(ErrorKind::Conflict));
}

#[test]
fn help_documents_exit_codes() {
    let help = Cli::command().render_long_help().to_string();
    assert!(
        help.contains("Exit codes:") && help.contains("5  conflict"),
        "{help}"
    );
}

/// A backend whose gc removes step 1 and cannot remove step 2.
fn partial_gc() -> Failing {
    let report = GcReport {
        removed: vec![1],
        kept: vec![3],
        failed: vec![handoff_core::GcFailure {
            name: "step_2".into(),
            error: Error::new(ErrorKind::Io, "failed to remove r/step_2: busy").at("r/step_2"),
        }],
        ..GcReport::default()
    };
    Failing(Error::new(ErrorKind::Io, "unused"), Some(report))
}

#[test]
fn a_gc_that_could_not_remove_everything_exits_6_after_its_report() {
    for json in [false, true] {
        let mut args = vec!["gc", "--root", "r", "--keep", "1"];
        if json {
            args.push("--json");
        }
        let cli = parse(&args).unwrap();
        let result = run(&partial_gc(), &cli.global, cli.command);
        assert_eq!(report::<Failing>(result, json), 6);
    }
    let report = partial_gc()
        .gc(Path::new("r"), &GcOptions::keep(1))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&report).unwrap()["failed"],
        serde_json::json!([{"name": "step_2", "error": {
            "kind": "io", "message": "failed to remove r/step_2: busy",
            "path": "r/step_2", "retryable": false}}])
    );
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("6  gc"), "{help}");
}

#[test]
fn a_run_and_step_that_name_no_step_are_a_usage_error() {
    for args in [
        [
            "seal",
            "--root",
            "r",
            "--step",
            "1000000000000",
            "--run",
            "1",
        ],
        ["seal", "--root", "r", "--step", "1", "--run", "99999999"],
    ] {
        let cli = parse(&args).unwrap();
        let backend = Failing(Error::new(ErrorKind::Io, "not to be called"), None);
        let result = run(&backend, &cli.global, cli.command);
        let err = result.unwrap_err();
        assert_eq!(failure::<Failing>(&err).kind, "usage", "{err:#}");
        assert_eq!(report::<Failing>(Err(err), false), 2);
    }
}
