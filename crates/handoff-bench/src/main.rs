//! `handoff-bench`: handoff's costs, each measured against the baseline a
//! user would otherwise use, in the same run, on the same disk.
//!
//! ```sh
//! cargo run --release -p handoff-bench -- [--quick] [--json]
//! ```
//!
//! Every figure that matters is a ratio of two medians taken in one run,
//! with the two sides interleaved, because absolute times on a shared
//! machine drift from minute to minute. docs/BENCHMARKS.md lists what each
//! figure means, how it is measured and the targets.

mod copy;
mod fetch;
mod hash;
mod machine;
mod many;
mod payload;
mod proc;
mod python;
mod readers;
mod report;
mod seal;
mod stats;
mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use handoff_runtime::Runtime;

use crate::report::Report;

/// The sections, in the order they run.
const SECTIONS: &[&str] = &[
    "seal", "copy", "many", "fetch", "hash", "python", "wait", "process", "idle", "readers",
];

/// Measure handoff against the baselines a user would otherwise use.
#[derive(Debug, Parser)]
#[command(name = "handoff-bench")]
struct Args {
    /// Smaller payloads, fewer repetitions and shorter windows (about 2 min)
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout (progress still goes to stderr)
    #[arg(long)]
    json: bool,
    /// The `handoff` binary to measure [default: $HANDOFF_BIN, else build it
    /// with cargo, next to this one]
    #[arg(long, value_name = "PATH")]
    handoff: Option<PathBuf>,
    /// Measure this component build instead of the embedded one (passed to
    /// the library and to every `handoff` process as `--component`)
    #[arg(long, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Directory for the payloads and roots; must be on the disk you care
    /// about (fsync on tmpfs is free) [default: <workspace>/target/bench-tmp]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run only these sections (comma-separated: seal, copy, many, fetch,
    /// hash, python, wait, process, idle, readers)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Repetitions of each timed comparison [default: 5, or 7 without --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(5..))]
    reps: Option<u32>,
}

/// Sizes, repetitions and windows of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// Repetitions of each interleaved comparison (medians of these).
    pub reps: usize,
    /// Total bytes of the two-file adapter sealed in place.
    pub seal_bytes: u64,
    /// Total bytes of the four files published by copy.
    pub copy_bytes: u64,
    /// Total bytes of the two-file adapter fetched into a local root.
    pub fetch_bytes: u64,
    /// Size of the file hashed by `wait --verify hash`.
    pub hash_bytes: u64,
    /// Commits observed for the wait latency (waiters per commit: `waiters`).
    pub commits: usize,
    pub waiters: usize,
    /// Whole-process `handoff wait` runs per variant.
    pub process_reps: usize,
    /// How long the idle waiter's CPU time is watched.
    pub idle_window: Duration,
    /// Readers sharing one root, and how long their syscalls are counted.
    pub readers: usize,
    pub reader_window: Duration,
}

impl Plan {
    fn new(quick: bool, reps: Option<u32>) -> Plan {
        const MIB: u64 = 1 << 20;
        let reps = reps.map_or(if quick { 5 } else { 7 }, |r| r as usize);
        if quick {
            Plan {
                quick,
                reps,
                seal_bytes: 32 * MIB,
                copy_bytes: 128 * MIB,
                fetch_bytes: 256 * MIB,
                hash_bytes: 64 * MIB,
                commits: 5,
                waiters: 2,
                process_reps: 7,
                idle_window: Duration::from_secs(3),
                readers: 64,
                reader_window: Duration::from_secs(3),
            }
        } else {
            Plan {
                quick,
                reps,
                seal_bytes: 256 * MIB,
                copy_bytes: 1024 * MIB,
                fetch_bytes: 256 * MIB,
                hash_bytes: 256 * MIB,
                commits: 9,
                waiters: 3,
                process_reps: 21,
                idle_window: Duration::from_secs(10),
                readers: 64,
                reader_window: Duration::from_secs(10),
            }
        }
    }
}

/// What every section shares.
pub struct Bench {
    pub plan: Plan,
    /// The `handoff` binary.
    pub handoff: PathBuf,
    /// The compiled-component cache every handoff process and the library use.
    pub cache_dir: PathBuf,
    /// `--component`, when another build than the embedded one is measured.
    pub component: Option<PathBuf>,
    /// The library, for the in-process measurements.
    pub runtime: Runtime,
    /// The same without the `bulk` import: the component hashes and copies
    /// itself, as under the Python and Node hosts.
    pub runtime_without_bulk: Runtime,
    /// Scratch space on the measured disk, removed at the end.
    pub work: PathBuf,
    /// `python3`, when there is one (the Python baselines need it).
    pub python: Option<PathBuf>,
    /// The workspace root (`target/py-venv` and `bindings/python` are in it).
    pub workspace: PathBuf,
}

impl Bench {
    /// `handoff` with the bench's private component cache.
    pub fn handoff_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.handoff);
        cmd.env("HANDOFF_CACHE_DIR", &self.cache_dir);
        if let Some(component) = &self.component {
            cmd.arg("--component").arg(component);
        }
        cmd
    }

    /// A fresh directory under the scratch space.
    pub fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        Ok(dir)
    }
}

/// Progress, on stderr so `--json` output stays one object.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => { eprintln!("handoff-bench: {}", format_args!($($arg)*)) };
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("handoff-bench: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let sections: Vec<&str> = match &args.only {
        None => SECTIONS.to_vec(),
        Some(list) => {
            for name in list {
                if !SECTIONS.contains(&name.as_str()) {
                    bail!(
                        "unknown section {name:?}; sections: {}",
                        SECTIONS.join(", ")
                    );
                }
            }
            SECTIONS
                .iter()
                .copied()
                .filter(|s| list.iter().any(|n| n == s))
                .collect()
        }
    };
    let plan = Plan::new(args.quick, args.reps);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .context("crates/handoff-bench lives two levels below the workspace root")?
        .to_path_buf();
    let handoff = match args.handoff {
        Some(path) => path,
        None => build_handoff(&workspace)?,
    };
    let base = args
        .dir
        .unwrap_or_else(|| workspace.join("target").join("bench-tmp"));
    std::fs::create_dir_all(&base)
        .with_context(|| format!("failed to create {}", base.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("run.")
        .tempdir_in(&base)
        .with_context(|| format!("failed to create a scratch directory in {}", base.display()))?;
    let work = scratch.path().to_path_buf();
    let cache_dir = work.join("component-cache");
    std::fs::create_dir_all(&cache_dir)?;
    let mut builder = Runtime::builder().cache_dir(&cache_dir);
    if let Some(component) = &args.component {
        builder = builder.component(component);
    }
    let runtime = builder
        .clone()
        .build()
        .context("failed to load the handoff component")?;
    let runtime_without_bulk = builder
        .bulk(false)
        .build()
        .context("failed to load the handoff component")?;

    let mut report = Report::new();
    let machine = machine::describe(&work);
    if machine.fs_type == "tmpfs" || machine.fs_type == "ramfs" {
        note!(
            "warning: {} is on {}: fsync is free there, the seal and copy figures mean little; pass --dir on a real disk",
            work.display(),
            machine.fs_type
        );
    }
    note!(
        "mode {}, {} reps; scratch {} ({} on {}); handoff {}",
        if plan.quick { "quick" } else { "full" },
        plan.reps,
        work.display(),
        machine.fs_type,
        machine.device,
        handoff.display()
    );
    let bench = Bench {
        plan,
        handoff,
        cache_dir,
        component: args.component,
        runtime,
        runtime_without_bulk,
        work,
        python: proc::which("python3"),
        workspace,
    };
    if bench.python.is_none() {
        note!("python3 not found: the Python baselines are skipped (null)");
    }

    for section in &sections {
        let start = Instant::now();
        note!("{section} ...");
        match *section {
            "seal" => seal::run(&bench, &mut report),
            "copy" => copy::run(&bench, &mut report),
            "many" => many::run(&bench, &mut report),
            "fetch" => fetch::run(&bench, &mut report),
            "hash" => hash::run(&bench, &mut report),
            "python" => python::run(&bench, &mut report),
            "wait" => wait::latency(&bench, &mut report),
            "process" => wait::process(&bench, &mut report),
            "idle" => wait::idle(&bench, &mut report),
            "readers" => readers::run(&bench, &mut report),
            _ => unreachable!("sections are checked above"),
        }
        .with_context(|| format!("the {section} benchmark failed"))?;
        note!("{section} done in {:.1} s", start.elapsed().as_secs_f64());
    }

    report.set("mode", if bench.plan.quick { "quick" } else { "full" });
    report.set("reps", bench.plan.reps);
    report.set("machine", machine.to_json(&machine::loadavg()));
    report.set("wall_s", stats::round(started.elapsed().as_secs_f64(), 1));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    drop(bench);
    scratch
        .close()
        .context("failed to remove the scratch directory")?;
    Ok(())
}

/// `$HANDOFF_BIN`, else the `handoff` binary built now with the same
/// profile as this one (a no-op when it is up to date), next to this
/// executable.
fn build_handoff(workspace: &Path) -> anyhow::Result<PathBuf> {
    note!("finding handoff ($HANDOFF_BIN, else cargo build -p handoff in this profile) ...");
    handoff_testkit::proc::build_handoff(workspace).map_err(anyhow::Error::msg)?;
    let path = handoff_testkit::proc::handoff_binary();
    if !path.is_file() {
        bail!(
            "{} is missing after the build; pass --handoff PATH",
            path.display()
        );
    }
    Ok(path)
}
