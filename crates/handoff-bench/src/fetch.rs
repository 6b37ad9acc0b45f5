//! Fetch: `handoff fetch` of a committed adapter into a local root against
//! `cp -r` of the step plus native BLAKE3 hashing of the copy.
//!
//! One step (a two-file adapter of `fetch_bytes`) is published once; its
//! files are in the page cache for both sides. Each repetition copies to a
//! new destination on the same disk, the two sides interleaved:
//!
//! - handoff: `handoff fetch --root R --step 1 --to L_N`, a whole process
//!   timed from spawn to exit: wait (sizes), pin, copy each file
//!   (`copy_file_range` in the host), hash the copy natively and check it
//!   against the manifest, fsync each file, manifest, `STABLE`, fsyncs,
//!   rename, fsync the local root, unpin.
//! - cp: `cp -r R/step_1 L/cp_N`, then this process reads each copied file
//!   with a 1 MiB buffer into `blake3::Hasher` (single-threaded, the widest
//!   SIMD the CPU has): the same copy and check, with nothing made durable.
//!
//! `fetch_throughput_ratio_vs_cp` is the cp side's median time over
//! handoff's. The same baseline with `sync` of the copied files, their
//! folder and L (what handoff's durability costs) is reported beside it.

use std::time::Instant;

use handoff_testkit::Rng;

use crate::report::{Goal, Report};
use crate::stats::{median_ms, round, samples_ms};
use crate::{Bench, note, payload, proc};

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let src = b.fresh_dir("fetch-src")?;
    let root = b.fresh_dir("fetch-root")?;
    let local = b.fresh_dir("fetch-local")?;
    payload::adapter(&src, b.plan.fetch_bytes, &mut Rng::from_time())?;
    proc::timed(
        b.handoff_cmd()
            .args([
                "publish",
                "--writer",
                "handoff-bench",
                "--step",
                "1",
                "--root",
            ])
            .arg(&root)
            .arg(&src),
    )?;
    let step = root.join("step_1");
    let names = [payload::CONFIG_NAME, payload::MODEL_NAME];
    // Into the page cache, for both sides alike; and one fetch untimed, so
    // that compiling the component into the cache is not in a sample.
    for name in names {
        crate::hash::native_verify(&step.join(name))?;
    }
    let warm = local.join("warm-up");
    proc::timed(
        b.handoff_cmd()
            .args(["fetch", "--step", "1", "--root"])
            .arg(&root)
            .arg("--to")
            .arg(&warm),
    )?;
    payload::remove(&warm)?;

    let mut handoff = Vec::new();
    let mut cp = Vec::new();
    let mut cp_sync = Vec::new();
    for rep in 0..b.plan.reps {
        for side in 0..2 {
            let dst = local.join(format!("rep_{rep}"));
            if (rep + side) % 2 == 0 {
                handoff.push(proc::timed(
                    b.handoff_cmd()
                        .args(["fetch", "--step", "1", "--holder", "handoff-bench"])
                        .arg("--root")
                        .arg(&root)
                        .arg("--to")
                        .arg(&dst),
                )?);
            } else {
                let start = Instant::now();
                proc::timed(
                    std::process::Command::new("cp")
                        .arg("-r")
                        .arg(&step)
                        .arg(&dst),
                )?;
                for name in names {
                    crate::hash::native_verify(&dst.join(name))?;
                }
                let copied = start.elapsed();
                let mut sync = std::process::Command::new("sync");
                for name in names {
                    sync.arg(dst.join(name));
                }
                sync.arg(&dst).arg(&local);
                cp.push(copied);
                cp_sync.push(copied + proc::timed(&mut sync)?);
            }
            payload::remove(&dst)?;
        }
    }
    let h = median_ms(&handoff);
    let c = median_ms(&cp);
    let cs = median_ms(&cp_sync);
    let mib = b.plan.fetch_bytes as f64 / (1 << 20) as f64;
    let rate = |ms: f64| mib / (ms / 1000.0);
    note!(
        "fetch {mib} MiB: handoff {h:.1} ms ({:.0} MiB/s), cp -r + blake3 {c:.1} ms ({:.0} MiB/s), \
         with sync {cs:.1} ms",
        rate(h),
        rate(c)
    );
    report.set("fetch_mib", mib);
    report.set("fetch_ms", round(h, 2));
    report.set("fetch_cp_hash_ms", round(c, 2));
    report.set("fetch_cp_hash_sync_ms", round(cs, 2));
    report.set("fetch_mib_per_s", round(rate(h), 1));
    report.figure(
        "fetch_throughput_ratio_vs_cp",
        Some(c / h),
        format!(
            "handoff fetch {:.0} MiB/s / cp -r + native blake3 of the copy {:.0} MiB/s, \
             {mib} MiB adapter",
            rate(h),
            rate(c)
        ),
        Some(Goal::AtLeast(0.9)),
    );
    report.set("fetch_throughput_ratio_vs_cp_sync", round(cs / h, 3));
    report.sample(
        "fetch",
        serde_json::json!({
            "handoff": samples_ms(&handoff),
            "cp_hash": samples_ms(&cp),
            "cp_hash_sync": samples_ms(&cp_sync),
        }),
    );
    Ok(())
}
