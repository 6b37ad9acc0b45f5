//! The handoff command line: subcommands and flags, what each prints (text
//! and `--json`), and the exit codes. One contract, two programs:
//!
//! - `handoff` (host/), the native CLI, runs the protocol in its embedded
//!   component through `handoff-runtime`;
//! - `handoff-command.wasm` (crates/handoff-command), a plain WASI command,
//!   runs `handoff-core` directly inside whatever runtime runs it.
//!
//! Each provides the core's [`Backend`]; [`run`] does the rest, and [`report`] turns the outcome into the message and the exit
//! code. The modules follow the path of a call: [`flags`] (what was asked),
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
//! let cli = Cli::parse();
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
pub use output::exit_code;
pub use run::run;

/// Print the outcome of [`run`] (or of anything before it) and return the
/// exit code: 0, the failure's [`exit_code`], or 6 after a gc that printed
/// its report and could not remove everything. The message names the
/// class (`handoff: error (conflict): ...`), and with `json` the failure is
/// also printed to stdout as
/// `{"error":{"class":"conflict","exit_code":5,"message":"...","path":...,"retryable":false}}`.
pub fn report<B: Backend>(result: anyhow::Result<()>, json: bool) -> u8 {
    let err = match result {
        Ok(()) => return 0,
        Err(err) if is_broken_pipe(&err) => return 0,
        Err(err) => err,
    };
    if err.downcast_ref::<output::GcIncomplete>().is_some() {
        // Its report, failures and all, is already on stdout.
        eprintln!("handoff: error (gc-incomplete): {err:#}");
        return output::GC_INCOMPLETE;
    }
    let protocol = classify::<B>(&err);
    output::Printer { json }.failure(protocol, &format!("{err:#}"));
    exit_code(protocol.map(handoff_core::Error::kind))
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
