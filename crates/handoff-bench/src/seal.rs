//! Seal in place: handoff against the fewest syscalls that make the same
//! adapter durable and marked, and against what prime-rl PR #2391 proposes.
//!
//! Each repetition writes a fresh two-file adapter into `<root>/step_N/`
//! (untimed, immediately before), then times only the sealing:
//!
//! - handoff: `Runtime::seal` in this process (the runtime built once, as a
//!   trainer would keep it): walk, hash every file inside the component,
//!   fsync each, manifest (temp, fsync, rename), fsync dir, `STABLE` (create,
//!   fsync), fsync dir, fsync root.
//! - handoff process: `handoff seal` as a whole process (reported, not the
//!   ratio's numerator).
//! - native: in this process, no wasm, no hashing: list the directory, fsync
//!   each file, write a manifest of names and sizes and fsync it, fsync dir,
//!   create `STABLE`, fsync dir, fsync root.
//! - python: `os.fsync` each file, touch `STABLE`, fsync the directory,
//!   timed inside the script (the interpreter's start is not counted).
//!
//! The four run in a rotating order within each repetition.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff_runtime::{Backend as _, WriteOptions, default_writer_id};
use handoff_testkit::Rng;

use crate::report::{Goal, Report};
use crate::stats::{median_ms, round, samples_ms};
use crate::{Bench, note, payload, proc};

/// What prime-rl PR #2391 proposes after writing an adapter: fsync each
/// file, touch `STABLE`, fsync the directory. Prints its own elapsed ms.
const PYTHON_SEAL: &str = r#"
import os, sys, time
d = sys.argv[1]
t = time.perf_counter()
for name in sorted(os.listdir(d)):
    fd = os.open(os.path.join(d, name), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
open(os.path.join(d, "STABLE"), "w").close()
fd = os.open(d, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
print((time.perf_counter() - t) * 1000.0)
"#;

#[derive(Clone, Copy, Debug)]
enum Variant {
    Library,
    Native,
    Python,
    Process,
}

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let root = b.fresh_dir("seal")?;
    let mut rng = Rng::from_time();
    let options = WriteOptions {
        writer: "handoff-bench".to_string(),
        ..WriteOptions::new(default_writer_id())
    };
    let mut variants = vec![Variant::Library, Variant::Native, Variant::Process];
    if b.python.is_some() {
        variants.push(Variant::Python);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut fsyncs = 0;
    let mut fsync_ms = Vec::new();
    let mut cpu_times = Vec::new();
    let mut step = 0u64;
    for rep in 0..b.plan.reps {
        for i in 0..variants.len() {
            let variant = variants[(rep + i) % variants.len()];
            step += 1;
            let dir = root.join(format!("step_{step}"));
            payload::adapter(&dir, b.plan.seal_bytes, &mut rng)?;
            let elapsed = match variant {
                Variant::Library => {
                    let cpu = proc::process_cpu_time();
                    let start = Instant::now();
                    let r = b
                        .runtime
                        .seal(&root, step, &options)
                        .context("handoff seal (library) failed")?;
                    let elapsed = start.elapsed();
                    cpu_times.push(proc::process_cpu_time() - cpu);
                    fsyncs = r.fsyncs;
                    fsync_ms.push(r.fsync_ms);
                    elapsed
                }
                Variant::Process => proc::timed(
                    b.handoff_cmd()
                        .args(["seal", "--writer", "handoff-bench", "--step"])
                        .arg(step.to_string())
                        .arg("--root")
                        .arg(&root),
                )?,
                Variant::Native => native_seal(&root, &dir)?,
                Variant::Python => python_seal(b, &dir)?,
            };
            times[variant as usize].push(elapsed);
            payload::remove(&dir)?;
        }
    }
    let lib = median_ms(&times[Variant::Library as usize]);
    let native = median_ms(&times[Variant::Native as usize]);
    let process = median_ms(&times[Variant::Process as usize]);
    let mib = b.plan.seal_bytes as f64 / (1 << 20) as f64;
    note!("seal {mib} MiB: handoff {lib:.1} ms, process {process:.1} ms, native {native:.1} ms");
    report.set("seal_mib", mib);
    report.set("seal_ms", round(lib, 2));
    report.set("seal_process_ms", round(process, 2));
    report.set("seal_native_ms", round(native, 2));
    report.set("seal_fsyncs", fsyncs);
    report.set("seal_fsync_ms", round(crate::stats::median(&fsync_ms), 2));
    report.set("seal_cpu_ms", round(median_ms(&cpu_times), 2));
    report.figure(
        "seal_ratio_vs_native",
        Some(lib / native),
        format!("handoff seal (library) {lib:.1} ms / native fsyncs {native:.1} ms, {mib} MiB"),
        Some(Goal::AtMost(1.10)),
    );
    if b.python.is_some() {
        let python = median_ms(&times[Variant::Python as usize]);
        report.set("seal_python_ms", round(python, 2));
        report.figure(
            "seal_ratio_vs_python_fsync",
            Some(lib / python),
            format!("handoff seal (library) {lib:.1} ms / python fsync+STABLE {python:.1} ms"),
            None,
        );
    } else {
        report.figure(
            "seal_ratio_vs_python_fsync",
            None,
            "python3 not found".to_string(),
            None,
        );
    }
    report.sample(
        "seal",
        serde_json::json!({
            "handoff": samples_ms(&times[Variant::Library as usize]),
            "handoff_process": samples_ms(&times[Variant::Process as usize]),
            "native": samples_ms(&times[Variant::Native as usize]),
            "python": samples_ms(&times[Variant::Python as usize]),
        }),
    );
    Ok(())
}

/// The fewest syscalls that make `dir`'s payload durable and marked, with
/// no hashing and no wasm.
fn native_seal(root: &Path, dir: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut manifest = String::from("{\"files\":[");
    for (i, name) in names.iter().enumerate() {
        let file = File::open(dir.join(name))?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        if i > 0 {
            manifest.push(',');
        }
        manifest.push_str(&format!(
            "{{\"path\":{:?},\"size\":{size}}}",
            name.to_string_lossy()
        ));
    }
    manifest.push_str("]}\n");
    native_commit(root, dir, &manifest)?;
    Ok(start.elapsed())
}

/// The end of a native seal of `dir`: write and fsync `manifest`, fsync
/// `dir`, create `STABLE`, fsync `dir` and `root`.
pub fn native_commit(root: &Path, dir: &Path, manifest: &str) -> anyhow::Result<()> {
    let mut file = File::create_new(dir.join("handoff.manifest.json"))?;
    file.write_all(manifest.as_bytes())?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    File::create_new(dir.join("STABLE"))?;
    File::open(dir)?.sync_all()?;
    File::open(root)?.sync_all()?;
    Ok(())
}

fn python_seal(b: &Bench, dir: &Path) -> anyhow::Result<Duration> {
    let python = b.python.as_ref().context("no python3")?;
    let out = proc::stdout_of(Command::new(python).args(["-c", PYTHON_SEAL]).arg(dir))?;
    let ms: f64 = out
        .trim()
        .parse()
        .with_context(|| format!("the python seal printed {out:?}"))?;
    if !ms.is_finite() || ms < 0.0 {
        bail!("the python seal printed {ms}");
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}
