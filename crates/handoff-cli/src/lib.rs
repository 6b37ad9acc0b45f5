//! The handoff command line: subcommands and flags, what each prints (text
//! and `--json`), and the exit codes. One contract, two programs:
//!
//! - `handoff` (host/), the native CLI, runs the protocol in its embedded
//!   component through `handoff-runtime`;
//! - `handoff-command.wasm` (crates/handoff-command), a plain WASI command,
//!   runs `handoff-core` directly inside whatever runtime runs it.
//!
//! Each provides the core's [`Backend`]; [`run`] does the rest, and [`report`] turns the outcome into the message and the exit
//! code ([`failure`]: the one mapping from an error to its kind, exit code
//! and `--json` object). The modules follow the path of a call: [`flags`] (what was asked),
//! `run` (the core's options, the call), `output` (what is printed).
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
//! let cli = match Cli::try_parse() {
//!     Ok(cli) => cli,
//!     Err(e) => std::process::exit(handoff_cli::usage_error(&e, std::env::args_os()).into()),
//! };
//! let json = cli.global.json;
//! let result = handoff_cli::run(&backend, &cli.global, cli.command);
//! std::process::exit(handoff_cli::report::<B>(result, json).into());
//! # }
//! ```
#![deny(missing_docs)]

pub mod duration;
pub mod flags;
mod output;
mod run;

pub use flags::{Command, EXIT_CODES, Global};
/// What the command line runs against: the core's operations on a root
/// given by its path (the runtime's, or the WASI command's).
pub use handoff_core::Backend;
pub use output::{Failure, KINDS, Usage, exit_code, failure, kind, usage_error};
pub use run::run;

/// Print the outcome of [`run`] (or of anything before it) and return the
/// exit code: 0, or the exit code of its [`failure`]. The message names the
/// kind (`handoff: error (conflict): ...`), and with `json` the failure is
/// also printed to stdout as one object ([`Failure`]). A gc that could not
/// remove everything (exit 6) has already printed its report, which carries
/// that failure as `"error"` with `json`.
pub fn report<B: Backend>(result: anyhow::Result<()>, json: bool) -> u8 {
    match result {
        Ok(()) => 0,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => output::report_failure::<B>(&err, json),
    }
}

/// The protocol's outcome in a failure: that of the first backend error in
/// its chain, if it is one.
pub fn classify<B: Backend>(err: &anyhow::Error) -> Option<&handoff_core::Error> {
    err.chain()
        .find_map(|e| e.downcast_ref::<B::Error>())
        .and_then(B::protocol_error)
}

/// Whether the failure is only that stdout's reader went away.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests;
