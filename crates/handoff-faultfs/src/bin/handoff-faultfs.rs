//! `handoff-faultfs`: mount the fault-injecting filesystem by hand.
//!
//! ```text
//! handoff-faultfs mount --backing DIR --lazy MOUNTPOINT
//! handoff-faultfs mount --backing DIR --nodes MOUNTPOINT MOUNTPOINT...
//! handoff-faultfs sweep BASE
//! ```
//!
//! While mounted it reads control commands, one per line, on standard input:
//! `crash`, `writeback SEED`, `seed N`,
//! `delays DATA_MS NEGATIVE_MS POSITIVE_MS ATTR_MS`, `persist`, `quit`. End
//! of input unmounts too. If the process is killed instead, run `sweep` (or
//! `umount -l`) on the mount point's parent.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use handoff_faultfs::{Delays, FaultFs, Mode, sweep_stale_mounts};

/// The control commands read on stdin while mounted.
const CONTROL: &str = "crash | writeback SEED | seed N | delays DATA_MS NEGATIVE_MS POSITIVE_MS ATTR_MS | persist | quit";

/// Mount the fault-injecting filesystem by hand.
#[derive(Debug, Parser)]
#[command(
    name = "handoff-faultfs",
    after_help = format!(
        "Commands on stdin while mounted:\n  {CONTROL}\n\n\
         Exit status: 0 on success, 1 if loading or mounting fails, 2 for a usage error."
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount a backing directory: one lazy mount point, or one per node.
    Mount {
        /// The directory whose files the filesystem serves
        #[arg(long, value_name = "DIR")]
        backing: PathBuf,
        /// One mount point that loses unsynced data and names on `crash`
        #[arg(long, conflicts_with = "nodes")]
        lazy: bool,
        /// One mount point per node, each with its own lagging view (the default)
        #[arg(long)]
        nodes: bool,
        /// Where to mount: one with --lazy, one per node otherwise
        #[arg(value_name = "MOUNTPOINT", required = true)]
        points: Vec<PathBuf>,
    },
    /// Detach every stale mount below BASE.
    Sweep {
        #[arg(value_name = "BASE")]
        base: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Mount {
            backing,
            lazy,
            nodes: _,
            points,
        } => {
            if lazy && points.len() != 1 {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::WrongNumberOfValues,
                        "--lazy takes exactly one MOUNTPOINT",
                    )
                    .exit();
            }
            mount(&backing, lazy, &points)
        }
        Command::Sweep { base } => sweep(&base),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("handoff-faultfs: {message}");
            ExitCode::FAILURE
        }
    }
}

fn sweep(base: &Path) -> Result<(), String> {
    let points =
        sweep_stale_mounts(base).map_err(|e| format!("sweep of {} failed: {e}", base.display()))?;
    for point in points {
        println!("detached {}", point.display());
    }
    Ok(())
}

fn mount(backing: &Path, lazy: bool, points: &[PathBuf]) -> Result<(), String> {
    let mode = if lazy {
        Mode::Lazy
    } else {
        Mode::Nodes(points.len())
    };
    let fs = FaultFs::open(backing, mode)
        .map_err(|e| format!("cannot load {}: {e}", backing.display()))?;
    let mut mounts = Vec::new();
    for (node, point) in points.iter().enumerate() {
        mounts.push(
            fs.mount(node, point)
                .map_err(|e| format!("cannot mount {}: {e}", point.display()))?,
        );
        println!("node {node} mounted at {}", point.display());
    }
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match control(&fs, &words) {
            Ok(true) => break,
            Ok(false) => println!("ok"),
            Err(message) => println!("error: {message}"),
        }
    }
    drop(mounts);
    Ok(())
}

/// Runs one control command; `Ok(true)` means quit.
fn control(fs: &FaultFs, words: &[&str]) -> Result<bool, String> {
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let ms = |s: &str| num(s).map(Duration::from_millis);
    match words {
        ["quit"] => return Ok(true),
        ["crash"] => fs.crash().map_err(|e| e.to_string())?,
        ["writeback", seed] => println!("{:?}", fs.writeback(num(seed)?)),
        ["seed", seed] => fs.set_seed(num(seed)?),
        ["delays", data, negative, positive, attr] => fs.set_delays(Delays {
            data_lag_max: ms(data)?,
            negative_ttl: ms(negative)?,
            positive_ttl: ms(positive)?,
            attr_ttl: ms(attr)?,
        }),
        ["persist"] => fs.persist().map_err(|e| e.to_string())?,
        [] => {}
        _ => return Err(format!("unknown command; commands: {CONTROL}")),
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_takes_its_flags_in_any_order() {
        Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["handoff-faultfs", "mount"].iter().chain(args));
            match cli.map(|cli| cli.command) {
                Ok(Command::Mount { lazy, points, .. }) => Ok((lazy, points.len())),
                Ok(other) => panic!("not a mount: {other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(parse(&["--backing", "b", "--lazy", "p"]), Ok((true, 1)));
        assert_eq!(
            parse(&["p", "q", "--backing", "b", "--nodes"]),
            Ok((false, 2))
        );
        assert_eq!(parse(&["p", "q", "--backing", "b"]), Ok((false, 2)));
        assert_eq!(
            parse(&["--backing", "b", "--lazy", "--nodes", "p"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            parse(&["--lazy", "p"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
    }
}
