//! The last resort against a filesystem call that never returns.
//!
//! The runtime stops a call at its deadline by epoch interruption, which
//! acts only when the component runs: a host call blocked in the kernel (an
//! open of a FIFO, a read on a hung mount) is never interrupted. The
//! protocol refuses special files before it opens anything, but a file
//! swapped for a FIFO between that look and the open still blocks. So the
//! CLI arms a timer over the operation: once its calls' deadlines and a
//! grace have passed, it prints the documented deadline error (exit 3) and
//! exits, whatever thread is stuck.

use std::time::Duration;

use handoff_cli::Command;
use handoff_runtime::Limits;

/// How long after its deadline a stuck call is given before the process
/// exits: a call that is merely slow to notice its deadline returns well
/// within it (the epoch ticks every 10 ms).
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// What `command` is called in a message, and how long it may take in all
/// before the watchdog ends it: its calls' time limits (`deadline`, else
/// the runtime's defaults) plus [`GRACE`]. `None` for what may rightly run
/// for ever: `watch`, a `wait` without `--timeout` or `--deadline`.
pub(crate) fn budget(command: &Command, deadline: Option<Duration>) -> Option<(String, Duration)> {
    let limit = |calls: u32| deadline.unwrap_or(Limits::DEFAULT_TIME_LIMIT) * calls;
    let (name, total) = match command {
        Command::Watch(_) => return None,
        Command::Wait(args) => {
            let timeout = args.timeout.map(|t| t.saturating_add(Limits::WAIT_MARGIN));
            ("wait".to_string(), deadline.or(timeout)?)
        }
        // With --keep, a gc call follows the commit.
        Command::Publish { .. } => ("publish".to_string(), limit(2)),
        Command::Seal { .. } => ("seal".to_string(), limit(2)),
        other => {
            let debug = format!("{other:?}");
            let name = debug.split(|c: char| !c.is_alphanumeric()).next();
            (name.unwrap_or("the operation").to_lowercase(), limit(1))
        }
    };
    Some((name, total.saturating_add(GRACE)))
}

/// Start a thread that, `budget` from now, prints that `operation` did not
/// finish (a `deadline-exceeded` error, `--json` as `json` says) and exits the
/// process with its exit code. It ends with the process.
pub(crate) fn arm(operation: String, budget: Duration, json: bool) {
    let spawned = std::thread::Builder::new()
        .name("handoff-watchdog".into())
        .spawn(move || {
            std::thread::sleep(budget);
            let message = format!(
                "{operation} did not finish within {:.1} s (its deadline and a {} s grace): \
                 a filesystem call did not return (a special file such as a FIFO, or a \
                 mount that does not answer, under the root?)",
                budget.as_secs_f64(),
                GRACE.as_secs()
            );
            // The kind of a call stopped at its deadline, and its exit code.
            let code = handoff_cli::Failure::new("deadline-exceeded", message).report(json);
            std::process::exit(i32::from(code));
        });
    // Without a thread the operation runs unguarded, as it did before.
    if let Err(e) = spawned {
        eprintln!("handoff: warning: cannot start the watchdog thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> Command {
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        Cli::try_parse_from([&["handoff"], args].concat())
            .unwrap()
            .command
    }

    #[test]
    fn each_call_gets_its_deadline_and_the_grace() {
        let secs = Duration::from_secs;
        let wait = command(&["wait", "--root", "r", "--latest", "--timeout", "2s"]);
        assert_eq!(
            budget(&wait, None),
            Some(("wait".into(), secs(2) + Limits::WAIT_MARGIN + GRACE))
        );
        assert_eq!(budget(&wait, Some(secs(1))), Some(("wait".into(), secs(6))));
        let forever = command(&["wait", "--root", "r", "--latest"]);
        assert_eq!(budget(&forever, None), None);
        let ls = command(&["ls", "--root", "r"]);
        assert_eq!(budget(&ls, Some(secs(1))), Some(("ls".into(), secs(6))));
        let fsck = command(&["fsck", "--root", "r"]);
        assert_eq!(
            budget(&fsck, None),
            Some(("fsck".into(), Limits::DEFAULT_TIME_LIMIT + GRACE))
        );
        assert_eq!(budget(&command(&["watch", "--root", "r"]), None), None);
    }
}
