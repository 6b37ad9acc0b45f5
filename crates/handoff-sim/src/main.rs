//! `handoff-sim`: a model checker for the handoff protocol.
//!
//! `report` checks every (protocol, operation) pair and prints one line each,
//! then `N passed, M failed` over handoff's pairs; it exits non-zero if any
//! handoff pair has a violation or a reference protocol (which must fail)
//! has none. `replay` re-runs one state of a violation's trace and prints it.

mod check;
mod model;
mod node;
mod protocols;
mod view;

use std::process::ExitCode;
use std::time::Instant;

use check::{Budget, Focus};
use protocols::Operation;

const USAGE: &str = "\
handoff-sim: crash-state and lagging-reader model checker for handoff

usage:
  handoff-sim report [--quick] [--seed S] [--exhaustive-limit N] [--samples N] [--view-runs N]
                     [--threads N]
  handoff-sim replay --protocol P --op O [--root R] [--interleave-at I] [--crash-at K]
                     [--state N] [--seed S] [--exhaustive-limit N] [--samples N] [--view-runs N]

report prints `protocol=<name> operation=<op> states=<n> violations=<n>` per pair, the
trace of each pair's first violation, and ends with `N passed, M failed` over handoff's
pairs. Exit status: 0 if handoff has no violation and every reference protocol (naive,
stable-reader, handoff-v1) has at least one; 1 otherwise; 2 for a usage error.

--quick uses the small budget of `cargo test` (set it before the other budget flags).

replay prints the trace of every state selected (a violation's trace ends with the replay
command that selects it; leave a selector out to see all its values). Protocols: handoff,
naive, stable-reader, handoff-v1. Operations: seal, publish, publish-race, read-lagging,
read-lagging-seal, pin, wait-pin, unpin, gc, gc-pin-race, gc-race, fsck-repair.
";

/// Default seed of `report`: fixed, so CI is reproducible; pass `--seed` to
/// explore further.
const DEFAULT_SEED: u64 = 1;

struct Args {
    budget: Budget,
    focus: Focus,
    protocol: Option<String>,
    op: Option<Operation>,
    threads: usize,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        budget: Budget::full(DEFAULT_SEED),
        focus: Focus::default(),
        protocol: None,
        op: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--quick" {
            parsed.budget = Budget::reduced(parsed.budget.seed);
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--seed" => parsed.budget.seed = number()?,
            "--exhaustive-limit" => parsed.budget.exhaustive_limit = number()? as usize,
            "--samples" => parsed.budget.samples = number()? as usize,
            "--view-runs" => parsed.budget.view_runs = number()?,
            "--threads" => parsed.threads = number()? as usize,
            "--root" => parsed.focus.root = Some(number()? as usize),
            "--interleave-at" => parsed.focus.interleave_at = Some(number()? as usize),
            "--crash-at" => parsed.focus.crash_at = Some(number()? as usize),
            "--state" => parsed.focus.state = Some(number()? as usize),
            "--protocol" => parsed.protocol = Some(value.clone()),
            "--op" => {
                parsed.op = Some(
                    Operation::parse(value)
                        .ok_or_else(|| format!("unknown operation {value:?}"))?,
                );
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(parsed)
}

fn report(args: Args) -> ExitCode {
    let started = Instant::now();
    let budget = &args.budget;
    println!(
        "handoff-sim report: seed={} exhaustive-limit={} samples={} view-runs={}",
        budget.seed, budget.exhaustive_limit, budget.samples, budget.view_runs
    );
    let outcomes = check::run_all(budget, args.threads);
    for outcome in &outcomes {
        println!("{}", outcome.line());
    }
    for outcome in &outcomes {
        if let Some(trace) = &outcome.first {
            let label = if outcome.reference {
                "reference protocol failed, as it must"
            } else {
                "handoff FAILED"
            };
            println!(
                "\n--- {label}: protocol={} operation={} (first of {} violations)\n{trace}",
                outcome.protocol,
                outcome.operation.name(),
                outcome.violations
            );
        }
    }
    let points: u64 = outcomes.iter().map(|o| o.crash_points).sum();
    let sampled: u64 = outcomes.iter().map(|o| o.sampled_points).sum();
    println!(
        "\ncrash points: {points}, of which {} enumerated every crash state and {sampled} \
         were sampled (seed {})",
        points - sampled,
        budget.seed
    );
    let verdict = check::verdict(&outcomes);
    for protocol in &verdict.references_not_failing {
        println!("reference protocol {protocol} showed no violation: the checker cannot fail it");
    }
    eprintln!("elapsed: {:.1} s", started.elapsed().as_secs_f64());
    println!("{} passed, {} failed", verdict.passed, verdict.failed);
    if verdict.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(mut args: Args) -> ExitCode {
    let (Some(protocol), Some(op)) = (args.protocol.clone(), args.op) else {
        eprintln!("replay needs --protocol and --op\n\n{USAGE}");
        return ExitCode::from(2);
    };
    args.focus.verbose = true;
    let Some(outcome) = check::run_named(&protocol, op, &args.budget, &args.focus) else {
        eprintln!("protocol {protocol:?} has no operation {}", op.name());
        return ExitCode::from(2);
    };
    for trace in &outcome.shown {
        println!("{trace}");
    }
    println!("{}", outcome.line());
    if outcome.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let parsed = match parse(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command.as_str() {
        "report" => report(parsed),
        "replay" => replay(parsed),
        other => {
            eprintln!("error: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
