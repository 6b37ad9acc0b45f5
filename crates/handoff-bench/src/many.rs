//! Payloads of many small files (sharded checkpoints, optimizer states,
//! per-rank files): publish and seal, each against what a user would do
//! without handoff, in the same run.
//!
//! Two shapes, each spread over 50 folders: 5,000 files of 4 KiB and
//! 20,000 files of 256 B. Each repetition, in a rotating order:
//!
//! - publish: `handoff publish` of a source tree written once and flushed,
//!   against `cp -r` of it and `sync -f` (a `syncfs(2)` of the filesystem,
//!   which writes back everything dirty there in one sweep).
//! - seal: a fresh tree written into `<root>/step_N` (untimed, not
//!   flushed, as a trainer leaves it), then `handoff seal`, against a native
//!   program (this process, no wasm, no hashing) that fsyncs each file one
//!   after another and each folder after its files, writes and fsyncs a
//!   manifest of names and sizes, creates `STABLE` and fsyncs the step and
//!   the root.
//!
//! Before each side the filesystem is flushed (`sync -f`, untimed), so that
//! no side pays for what the one before left dirty (a removed tree is
//! thousands of journaled unlinks, and with `discard` their trims).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use handoff_testkit::Rng;

use crate::report::{Goal, Report};
use crate::stats::{median_ms, round, samples_ms};
use crate::{Bench, note, payload, proc};

/// Folders each shape's files are spread over.
const FOLDERS: usize = 50;

/// One payload shape: how many files of what size.
struct Shape {
    files: usize,
    size: u64,
    /// Its name in the report's keys.
    name: &'static str,
}

const SHAPES: [Shape; 2] = [
    Shape {
        files: 5_000,
        size: 4096,
        name: "5000x4k",
    },
    Shape {
        files: 20_000,
        size: 256,
        name: "20000x256",
    },
];

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    // The shapes' sizes are the point, so a quick run keeps them and
    // repeats less.
    let reps = if b.plan.quick { 3 } else { b.plan.reps };
    let mut publish_ratios = Vec::new();
    let mut seal_ratios = Vec::new();
    for shape in &SHAPES {
        let (publish, seal) = run_shape(b, shape, reps, report)?;
        publish_ratios.push((publish, shape.name));
        seal_ratios.push((seal, shape.name));
    }
    // The headline is the worse of the two shapes.
    fn worst(ratios: &[(f64, &'static str)]) -> (f64, &'static str) {
        ratios
            .iter()
            .copied()
            .fold((f64::MIN, ""), |a, r| if r.0 > a.0 { r } else { a })
    }
    let (publish, shape) = worst(&publish_ratios);
    report.figure(
        "many_publish_ratio_vs_cp_sync",
        Some(publish),
        format!("handoff publish / cp -r + sync -f, the worse shape ({shape})"),
        Some(Goal::AtMost(3.0)),
    );
    let (seal, shape) = worst(&seal_ratios);
    report.figure(
        "many_seal_ratio_vs_native",
        Some(seal),
        format!("handoff seal / native fsync of each file, the worse shape ({shape})"),
        Some(Goal::AtMost(0.6)),
    );
    Ok(())
}

/// Both comparisons for one shape: the publish and seal ratios.
fn run_shape(
    b: &Bench,
    shape: &Shape,
    reps: usize,
    report: &mut Report,
) -> anyhow::Result<(f64, f64)> {
    let mut rng = Rng::from_time();
    let src = b.fresh_dir(&format!("many-src-{}", shape.name))?;
    write_tree(&src, shape, &mut rng)?;
    flush_tree(&src)?;
    let root = b.fresh_dir(&format!("many-root-{}", shape.name))?;

    // [handoff publish, cp + sync, handoff seal, native seal]
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut fsyncs = 0;
    let mut step = 0u64;
    for rep in 0..reps {
        for i in 0..4 {
            let variant = (rep + i) % 4;
            step += 1;
            let dir = root.join(format!("step_{step}"));
            // Nothing left dirty by the side before (its tree's removal is
            // thousands of journaled unlinks): each side's flushes are its
            // own.
            proc::timed(Command::new("sync").arg("-f").arg(&root))?;
            let elapsed = match variant {
                0 => {
                    let (elapsed, out) = timed_stdout(
                        b.handoff_cmd()
                            .args(["publish", "--json", "--writer", "handoff-bench"])
                            .arg("--step")
                            .arg(step.to_string())
                            .arg("--root")
                            .arg(&root)
                            .arg(&src),
                    )?;
                    fsyncs = fsyncs_of(&out)?;
                    elapsed
                }
                1 => {
                    let start = Instant::now();
                    proc::timed(Command::new("cp").arg("-r").arg(&src).arg(&dir))?;
                    proc::timed(Command::new("sync").arg("-f").arg(&dir))?;
                    start.elapsed()
                }
                2 => {
                    write_tree(&dir, shape, &mut rng)?;
                    proc::timed(
                        b.handoff_cmd()
                            .args(["seal", "--writer", "handoff-bench", "--step"])
                            .arg(step.to_string())
                            .arg("--root")
                            .arg(&root),
                    )?
                }
                _ => {
                    write_tree(&dir, shape, &mut rng)?;
                    native_seal(&root, &dir)?
                }
            };
            times[variant].push(elapsed);
            payload::remove(&dir)?;
        }
    }
    let [publish, cp, seal, native] = times.each_ref().map(|t| median_ms(t));
    let name = shape.name;
    note!(
        "{} files of {} B: publish {publish:.0} ms, cp+sync {cp:.0} ms, seal {seal:.0} ms, \
         native seal {native:.0} ms",
        shape.files,
        shape.size
    );
    report.set(&format!("many_{name}_publish_ms"), round(publish, 1));
    report.set(&format!("many_{name}_cp_sync_ms"), round(cp, 1));
    report.set(&format!("many_{name}_seal_ms"), round(seal, 1));
    report.set(&format!("many_{name}_native_seal_ms"), round(native, 1));
    report.set(&format!("many_{name}_publish_fsyncs"), fsyncs);
    report.sample(
        &format!("many_{name}"),
        serde_json::json!({
            "publish": samples_ms(&times[0]),
            "cp_sync": samples_ms(&times[1]),
            "seal": samples_ms(&times[2]),
            "native_seal": samples_ms(&times[3]),
        }),
    );
    payload::remove(&src)?;
    payload::remove(&root)?;
    Ok((publish / cp, seal / native))
}

/// Write `shape`'s files into `dir` (created), `f<i>` in folder
/// `d<i mod 50>`, fresh bytes each, not flushed.
fn write_tree(dir: &Path, shape: &Shape, rng: &mut Rng) -> anyhow::Result<()> {
    for folder in 0..FOLDERS {
        let path = dir.join(format!("d{folder}"));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
    }
    for i in 0..shape.files {
        let path = dir.join(format!("d{}/f{i}", i % FOLDERS));
        payload::file(&path, shape.size, rng)?;
    }
    Ok(())
}

/// Every file and folder of the tree `dir` made durable, so a source is
/// clean in the page cache for both sides of the publish comparison.
fn flush_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in walk(dir)? {
        proc::fsync(&entry)?;
    }
    proc::fsync(dir)
}

/// The files and folders under `dir` (folders after their files), sorted.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(walk(&path)?);
        }
        out.push(path);
    }
    Ok(out)
}

/// The native program a user would write: fsync each file one after
/// another and each folder after its files, a manifest of the files' names
/// and sizes, `STABLE`.
fn native_seal(root: &Path, dir: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut manifest = String::from("{\"files\":[");
    let mut first = true;
    for path in walk(dir)? {
        let file = File::open(&path)?;
        file.sync_all()?;
        let meta = file.metadata()?;
        if meta.is_file() {
            if !first {
                manifest.push(',');
            }
            first = false;
            let size = meta.len();
            manifest.push_str(&format!("{{\"path\":{path:?},\"size\":{size}}}"));
        }
    }
    manifest.push_str("]}\n");
    crate::seal::native_commit(root, dir, &manifest)?;
    Ok(start.elapsed())
}

/// Run `cmd` to success: how long it took, and its stdout.
fn timed_stdout(cmd: &mut Command) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let out = proc::stdout_of(cmd)?;
    Ok((start.elapsed(), out))
}

/// The `fsyncs` of a `--json` report.
fn fsyncs_of(json: &str) -> anyhow::Result<u64> {
    let value: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("handoff printed {json:?}"))?;
    value["fsyncs"]
        .as_u64()
        .with_context(|| format!("no fsyncs in {json}"))
}
