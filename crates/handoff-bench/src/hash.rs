//! BLAKE3 verification inside the component against native BLAKE3.
//!
//! One committed step holds one file, already in the page cache. Through
//! the library (no process start in the figure):
//!
//! - `wait --verify hash` minus `wait --verify size` on the same step: the
//!   time the component takes to have the file hashed; the throughput is
//!   the file size over that difference. The library's host hashes for the
//!   component (the `bulk` import), natively.
//! - the same with a runtime built with `bulk(false)`: the component reads
//!   the file through WASI and hashes it itself, as under the Python and
//!   Node hosts (`hash_ratio_vs_native_in_component`).
//! - native verify: this process reads the same file with the same 1 MiB
//!   buffer and feeds `blake3::Hasher::update`, single-threaded (the crate
//!   picks the widest SIMD the CPU has at run time; the report says which).
//! - native hash only: `Hasher::update` over an in-memory buffer, reported
//!   for reference.
//!
//! The ratio is component verify throughput over native verify throughput:
//! the same job (read the file, hash it) on both sides. Both are timed in
//! CPU time of this process (user + system, every thread), which a busy
//! shared machine does not inflate the way it inflates wall time; the
//! wall-time figures are reported beside it.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff_runtime::{Backend as _, Target, Verify, WaitOptions, WriteOptions, default_writer_id};
use handoff_testkit::Rng;

use crate::report::{Goal, Report};
use crate::stats::{median_ms, round, samples_ms};
use crate::{Bench, note, payload};

const CHUNK: usize = 1 << 20;

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let src = b.fresh_dir("hash-src")?;
    let root = b.fresh_dir("hash-root")?;
    let mut rng = Rng::from_time();
    let name = "model.safetensors";
    payload::file(&src.join(name), b.plan.hash_bytes, &mut rng)?;
    let published = b
        .runtime
        .publish(&root, 1, &src, &WriteOptions::new(default_writer_id()))
        .context("failed to publish the step to verify")?;
    let expected = published.version.files[0].blake3.clone();
    let file = Path::new(&published.version.path).join(name);
    // Into the page cache, and check the component and the crate agree.
    let (_, native_hash) = native_verify(&file)?;
    if native_hash != expected {
        bail!("native blake3 {native_hash} differs from the component's {expected}");
    }

    let wait = |runtime: &handoff_runtime::Runtime, verify| {
        let options = WaitOptions {
            verify,
            timeout: Some(Duration::from_secs(60)),
            ..WaitOptions::default()
        };
        timed(|| {
            runtime
                .wait(&root, Target::Step(1), &options)
                .context("wait failed")
                .map(drop)
        })
    };
    let mut memory = vec![0u8; (b.plan.hash_bytes as usize).min(64 << 20)];
    rng.fill(&mut memory);
    // [kind][wall = 0, cpu = 1]
    let mut samples: [[Vec<Duration>; 2]; KINDS] = Default::default();
    for rep in 0..b.plan.reps {
        for i in 0..KINDS {
            let kind = (rep + i) % KINDS;
            let (wall, cpu) = match kind {
                HASH => wait(&b.runtime, Verify::Hash)?,
                SIZE => wait(&b.runtime, Verify::Size)?,
                WASM_HASH => wait(&b.runtime_without_bulk, Verify::Hash)?,
                WASM_SIZE => wait(&b.runtime_without_bulk, Verify::Size)?,
                NATIVE => timed(|| native_verify(&file).map(drop))?,
                _ => timed(|| {
                    hash_memory(&memory, b.plan.hash_bytes);
                    Ok(())
                })?,
            };
            samples[kind][0].push(wall);
            samples[kind][1].push(cpu);
        }
    }
    let mib = b.plan.hash_bytes as f64 / (1 << 20) as f64;
    // MiB/s of each kind, by wall (0) or CPU (1) time; the component's is
    // `hash` minus `size`.
    let rate = |clock: usize| {
        let ms = |kind: usize| median_ms(&samples[kind][clock]);
        let component = mib / ((ms(HASH) - ms(SIZE)).max(1e-3) / 1000.0);
        let in_wasm = mib / ((ms(WASM_HASH) - ms(WASM_SIZE)).max(1e-3) / 1000.0);
        (
            component,
            mib / (ms(NATIVE) / 1000.0),
            mib / (ms(MEMORY) / 1000.0),
            in_wasm,
        )
    };
    let (component, native_rate, memory_rate, in_wasm) = rate(1);
    let (component_wall, native_wall, memory_wall, _) = rate(0);
    note!(
        "verify {mib} MiB, CPU time: component {component:.0} MiB/s, native read+hash {native_rate:.0} MiB/s, native hash only {memory_rate:.0} MiB/s; wall: {component_wall:.0}, {native_wall:.0}, {memory_wall:.0} MiB/s"
    );
    report.set("hash_mib", mib);
    // Rates to 0.1 MiB/s, ratios to 0.001.
    for (key, value, digits) in [
        ("hash_component_mib_per_s", component, 1),
        ("hash_native_verify_mib_per_s", native_rate, 1),
        ("hash_native_memory_mib_per_s", memory_rate, 1),
        ("hash_ratio_vs_native_memory", component / memory_rate, 3),
        ("hash_ratio_vs_native_wall", component_wall / native_wall, 3),
        ("hash_component_mib_per_s_wall", component_wall, 1),
        ("hash_native_verify_mib_per_s_wall", native_wall, 1),
        ("hash_in_component_mib_per_s", in_wasm, 1),
        (
            "hash_ratio_vs_native_in_component",
            in_wasm / native_rate,
            3,
        ),
    ] {
        report.set(key, round(value, digits));
    }
    report.figure(
        "hash_ratio_vs_native",
        Some(component / native_rate),
        format!(
            "component verify {component:.0} MiB/s / native read+blake3 {native_rate:.0} MiB/s ({}), CPU time",
            crate::machine::native_simd()
        ),
        Some(Goal::AtLeast(0.5)),
    );
    let names = [
        "wait_verify_hash",
        "wait_verify_size",
        "native_read_hash",
        "native_memory_hash",
        "wait_verify_hash_without_bulk",
        "wait_verify_size_without_bulk",
    ];
    let by_clock = |clock: usize| {
        serde_json::Value::Object(
            names
                .iter()
                .zip(&samples)
                .map(|(name, s)| (name.to_string(), samples_ms(&s[clock]).into()))
                .collect(),
        )
    };
    report.sample(
        "hash",
        serde_json::json!({ "wall": by_clock(0), "cpu": by_clock(1) }),
    );
    Ok(())
}

const HASH: usize = 0;
const SIZE: usize = 1;
const NATIVE: usize = 2;
const MEMORY: usize = 3;
const WASM_HASH: usize = 4;
const WASM_SIZE: usize = 5;
const KINDS: usize = 6;

/// Run `f`; its wall time and the CPU time this process used meanwhile.
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<(Duration, Duration)> {
    let cpu = crate::proc::process_cpu_time();
    let start = Instant::now();
    f()?;
    Ok((start.elapsed(), crate::proc::process_cpu_time() - cpu))
}

/// Read `path` with a 1 MiB buffer into one `Hasher`: the time and the hash.
pub(crate) fn native_verify(path: &std::path::Path) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash = hasher.finalize().to_hex().to_string();
    Ok((start.elapsed(), hash))
}

/// Hash `total` bytes from memory, 1 MiB per `update`, cycling over `buf`.
fn hash_memory(buf: &[u8], total: u64) {
    let mut hasher = blake3::Hasher::new();
    let mut left = total as usize;
    while left > 0 {
        for chunk in buf.chunks(CHUNK) {
            let n = chunk.len().min(left);
            hasher.update(&chunk[..n]);
            left -= n;
            if left == 0 {
                break;
            }
        }
    }
    std::hint::black_box(hasher.finalize());
}
