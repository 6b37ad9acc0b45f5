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
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use handoff_faultfs::{Delays, FaultFs, Mode, sweep_stale_mounts};

const USAGE: &str = "usage:
  handoff-faultfs mount --backing DIR --lazy MOUNTPOINT
  handoff-faultfs mount --backing DIR --nodes MOUNTPOINT MOUNTPOINT...
  handoff-faultfs sweep BASE
commands on stdin while mounted:
  crash | writeback SEED | seed N | delays DATA_MS NEGATIVE_MS POSITIVE_MS ATTR_MS | persist | quit";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("mount") => mount(&args[1..]),
        Some("sweep") if args.len() == 2 => sweep(&args[1]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("handoff-faultfs: {message}");
            ExitCode::FAILURE
        }
    }
}

fn sweep(base: &str) -> Result<(), String> {
    for point in
        sweep_stale_mounts(base.as_ref()).map_err(|e| format!("sweep of {base} failed: {e}"))?
    {
        println!("detached {}", point.display());
    }
    Ok(())
}

fn mount(args: &[String]) -> Result<(), String> {
    let mut backing = None;
    let mut lazy = false;
    let mut points = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--backing" => backing = Some(PathBuf::from(iter.next().ok_or(USAGE)?)),
            "--lazy" => lazy = true,
            "--nodes" => lazy = false,
            other if other.starts_with("--") => {
                return Err(format!("unknown option {other}\n{USAGE}"));
            }
            point => points.push(PathBuf::from(point)),
        }
    }
    let backing = backing.ok_or(USAGE)?;
    if points.is_empty() || (lazy && points.len() != 1) {
        return Err(USAGE.to_owned());
    }
    let mode = if lazy {
        Mode::Lazy
    } else {
        Mode::Nodes(points.len())
    };
    let fs = FaultFs::open(&backing, mode)
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
        _ => return Err(format!("unknown command\n{USAGE}")),
    }
    Ok(false)
}
