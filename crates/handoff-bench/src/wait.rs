//! The reader's side: how soon a waiting process returns after a commit,
//! what waiting costs while nothing happens, and what one `handoff wait`
//! process costs when the step is already there.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff_runtime::{Backend as _, WaitOptions, WriteOptions, default_writer_id};
use handoff_testkit::Rng;

use crate::proc::Watched;
use crate::report::{Goal, Report};
use crate::stats::{median, median_ms, round, samples_ms};
use crate::{Bench, note, payload, proc};

/// The naive reader: poll for `STABLE` with `os.path.exists`.
pub const PYTHON_WAIT: &str = r#"
import os, sys, time
path, poll = sys.argv[1], float(sys.argv[2])
while not os.path.exists(path):
    time.sleep(poll)
"#;

/// `handoff wait`'s default `--poll`.
fn default_poll_ms() -> u64 {
    WaitOptions::default().poll.as_millis() as u64
}

/// A faster poll, to show how the latency follows the interval.
const FAST_POLL_MS: u64 = 10;

/// Wait latency: waiters started in advance (a group per kind), then the
/// commit, done here as the last step of `publish` is: the step, already
/// sealed in a staging root on the same filesystem (by `Runtime::publish`),
/// is renamed into the root. The clock starts when `rename` returns and
/// stops when the thread blocked in `waitpid` on each waiter wakes up, so
/// the figure includes the waiter's last poll pause, its checks of
/// `STABLE`, the manifest and every file, its exit, and the reaping.
pub fn latency(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let root = b.fresh_dir("wait-root")?;
    let stage = b.fresh_dir("wait-stage")?;
    let src = b.fresh_dir("wait-src")?;
    let mut rng = Rng::from_time();
    payload::adapter(&src, 1 << 20, &mut rng)?;
    let poll = default_poll_ms();
    let mut groups: Vec<(&str, Vec<f64>)> = vec![
        ("handoff", Vec::new()),
        ("handoff_fast_poll", Vec::new()),
        ("python_poll", Vec::new()),
    ];
    for commit in 0..b.plan.commits {
        let step = commit as u64 + 1;
        b.runtime
            .publish(&stage, step, &src, &WriteOptions::new(default_writer_id()))
            .context("failed to prepare the step in staging")?;
        let stable = root.join(format!("step_{step}")).join("STABLE");
        let mut waiters: Vec<(usize, Watched)> = Vec::new();
        for _ in 0..b.plan.waiters {
            waiters.push((0, Watched::spawn(&mut wait_cmd(b, &root, step, poll))?));
            waiters.push((
                1,
                Watched::spawn(&mut wait_cmd(b, &root, step, FAST_POLL_MS))?,
            ));
            if let Some(python) = &b.python {
                waiters.push((
                    2,
                    Watched::spawn(
                        Command::new(python)
                            .args(["-c", PYTHON_WAIT])
                            .arg(&stable)
                            .arg(format!("{}", poll as f64 / 1000.0)),
                    )?,
                ));
            }
        }
        // Long enough for every waiter to start and reach its longest
        // pause; the extra random part puts the commit at a random phase of
        // their polling.
        std::thread::sleep(Duration::from_millis(1000 + rng.next_u64() % 200));
        if let Some((_, w)) = waiters.iter().find(|(_, w)| w.finished()) {
            bail!("waiter {} exited before the commit", w.pid);
        }
        std::fs::rename(
            stage.join(format!("step_{step}")),
            root.join(format!("step_{step}")),
        )?;
        let committed = Instant::now();
        proc::fsync(&root)?;
        for (group, waiter) in waiters {
            let pid = waiter.pid;
            let (status, exited) = waiter.join()?;
            if !status.success() {
                bail!("waiter {pid} ({}) failed: {status}", groups[group].0);
            }
            let ms = exited.saturating_duration_since(committed).as_secs_f64() * 1000.0;
            groups[group].1.push(ms);
        }
    }
    let p50 = |g: usize| (!groups[g].1.is_empty()).then(|| median(&groups[g].1));
    let handoff = p50(0).context("no samples")?;
    note!(
        "wait latency p50: handoff {handoff:.1} ms (poll {poll} ms), handoff --poll {FAST_POLL_MS}ms {:.1} ms, python exists() poll {:?} ms",
        p50(1).unwrap_or(f64::NAN),
        p50(2).map(|v| round(v, 1))
    );
    report.set("poll_interval_ms", poll);
    report.figure(
        "wait_latency_ms_p50",
        Some(handoff),
        format!(
            "rename -> waiter exit, median of {} (poll {poll} ms; target poll + 5 ms)",
            groups[0].1.len()
        ),
        Some(Goal::AtMost(poll as f64 + 5.0)),
    );
    // handoff has no change-notification path (WASI offers none to the
    // component): every reader polls.
    report.set("wait_latency_ms_p50_notify", serde_json::Value::Null);
    report.set("fast_poll_interval_ms", FAST_POLL_MS);
    report.set("wait_latency_ms_p50_fast_poll", p50(1).map(|v| round(v, 2)));
    report.set(
        "wait_latency_ms_p50_python_poll",
        p50(2).map(|v| round(v, 2)),
    );
    report.sample(
        "wait_latency",
        serde_json::Value::Object(
            groups
                .iter()
                .map(|(name, v)| {
                    let rounded: Vec<f64> = v.iter().map(|x| round(*x, 2)).collect();
                    (name.to_string(), rounded.into())
                })
                .collect(),
        ),
    );
    Ok(())
}

fn wait_cmd(b: &Bench, root: &Path, step: u64, poll_ms: u64) -> Command {
    let mut cmd = b.handoff_cmd();
    cmd.args(["wait", "--timeout", "2m", "--step"])
        .arg(step.to_string())
        .arg("--root")
        .arg(root)
        .arg("--poll")
        .arg(format!("{poll_ms}ms"));
    cmd
}

/// One `handoff wait` process on a step that is already published, from
/// spawn to exit: with the compiled component as `handoff` loads it (the
/// embedded one from the code built into the binary, a `--component` from
/// the cache), and compiled at start (the same wasm as `--component` with
/// `--no-cache`). `handoff --version` (no wasm at all) is reported as the
/// floor a process start costs.
pub fn process(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let root = b.fresh_dir("process-root")?;
    let src = b.fresh_dir("process-src")?;
    let mut rng = Rng::from_time();
    payload::adapter(&src, 1 << 20, &mut rng)?;
    b.runtime
        .publish(&root, 1, &src, &WriteOptions::new(default_writer_id()))
        .context("failed to publish the step")?;
    // The embedded component never compiles at start: time its wasm as a
    // component file instead.
    let cold_component = match &b.component {
        Some(_) => None,
        None => {
            let path = b.fresh_dir("process-wasm")?.join("handoff_guest.wasm");
            std::fs::write(&path, handoff_runtime::DEFAULT_COMPONENT)
                .with_context(|| format!("failed to write {}", path.display()))?;
            Some(path)
        }
    };
    let wait = |cold: bool| {
        let mut cmd = b.handoff_cmd();
        if cold {
            if let Some(path) = &cold_component {
                cmd.arg("--component").arg(path);
            }
            cmd.arg("--no-cache");
        }
        cmd.args(["wait", "--step", "1", "--timeout", "10s", "--root"])
            .arg(&root);
        proc::timed(&mut cmd)
    };
    // Fill the cache (a no-op when the library already did).
    wait(false)?;
    let (mut warm, mut cold, mut floor) = (vec![], vec![], vec![]);
    for rep in 0..b.plan.process_reps {
        for i in 0..3 {
            match (rep + i) % 3 {
                0 => warm.push(wait(false)?),
                1 => cold.push(wait(true)?),
                _ => floor.push(proc::timed(b.handoff_cmd().arg("--version"))?),
            }
        }
    }
    let (w, c, f) = (median_ms(&warm), median_ms(&cold), median_ms(&floor));
    note!(
        "handoff wait process: {w:.1} ms loaded, {c:.1} ms compiled at start, --version {f:.1} ms"
    );
    report.figure(
        "wait_process_ms",
        Some(w),
        format!(
            "handoff wait on a published step, component precompiled (or cached), median of {}",
            warm.len()
        ),
        Some(Goal::AtMost(20.0)),
    );
    report.figure(
        "wait_process_cold_ms",
        Some(c),
        "the same with the component compiled at start (--component, --no-cache)".to_string(),
        None,
    );
    report.set("process_floor_ms", round(f, 2));
    report.sample(
        "wait_process",
        serde_json::json!({
            "cached": samples_ms(&warm),
            "no_cache": samples_ms(&cold),
            "version": samples_ms(&floor),
        }),
    );
    Ok(())
}

/// The Node package's waiter: a synchronous `wait` on the root in argv[2],
/// with the poll interval in argv[3], after an `ls` that instantiates the
/// component (the package's `src/index.js` is argv[1]).
const NODE_WAIT: &str = r#"
import { pathToFileURL } from 'node:url';
const [index, root, poll] = process.argv.slice(1);
const handoff = await import(pathToFileURL(index).href);
handoff.ls(root);
handoff.wait(root, 999999, { pollMs: Number(poll), timeoutMs: 120000 });
"#;

/// How long the Node waiter runs before its window: past the one-off
/// memory-reducing GC that each V8 isolate runs about 8 s after it starts.
const NODE_SETTLE: Duration = Duration::from_secs(14);

/// CPU burned by a waiter while nothing is published: every thread's CPU
/// time over the window, after a second to get past start-up. The naive
/// Python poller runs alongside as the baseline, and so does the Node
/// package's waiter (started 15 s before the window), when `node` and the
/// built package (`bindings/js/gen`) are there.
pub fn idle(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let root = b.fresh_dir("idle-root")?;
    let poll = default_poll_ms();
    let node = match (proc::which("node"), b.workspace.join("bindings/js")) {
        (Some(node), package) if package.join("gen/handoff.js").is_file() => {
            let waiter = Watched::spawn(
                Command::new(node)
                    .args(["--input-type=module", "-e", NODE_WAIT])
                    .arg(package.join("src/index.js"))
                    .arg(&root)
                    .arg(poll.to_string()),
            )?;
            std::thread::sleep(NODE_SETTLE);
            if waiter.finished() {
                let (status, _) = waiter.join()?;
                note!("the Node waiter ended before its window ({status}): skipped (null)");
                None
            } else {
                Some(waiter)
            }
        }
        (None, _) => {
            note!("node not found: the Node waiter is skipped (null)");
            None
        }
        _ => {
            note!(
                "bindings/js is not built (bindings/test.sh, or npm run build there): \
                 the Node waiter is skipped (null)"
            );
            None
        }
    };
    let handoff = Watched::spawn(&mut wait_cmd(b, &root, 999_999, poll))?;
    let python = match &b.python {
        Some(python) => Some(Watched::spawn(
            Command::new(python)
                .args(["-c", PYTHON_WAIT])
                .arg(root.join("step_999999/STABLE"))
                .arg(format!("{}", poll as f64 / 1000.0)),
        )?),
        None => None,
    };
    std::thread::sleep(Duration::from_secs(1));
    let pids: Vec<u32> = [
        Some(handoff.pid),
        python.as_ref().map(|p| p.pid),
        node.as_ref().map(|n| n.pid),
    ]
    .into_iter()
    .flatten()
    .collect();
    let before: Vec<Duration> = pids
        .iter()
        .map(|&p| proc::cpu_time(p))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    std::thread::sleep(b.plan.idle_window);
    let after: Vec<Duration> = pids
        .iter()
        .map(|&p| proc::cpu_time(p))
        .collect::<Result<_, _>>()?;
    let window = start.elapsed().as_secs_f64();
    let exited = [
        handoff.finished().then_some("the idle waiter"),
        node.as_ref()
            .is_some_and(Watched::finished)
            .then_some("the Node waiter"),
    ];
    let percent = |pid: u32| {
        let i = pids.iter().position(|&p| p == pid).expect("measured");
        (after[i] - before[i]).as_secs_f64() / window * 100.0
    };
    let h = percent(handoff.pid);
    let p = python.as_ref().map(|python| percent(python.pid));
    let n = node.as_ref().map(|node| percent(node.pid));
    for waiter in [Some(handoff), python, node].into_iter().flatten() {
        waiter.kill()?;
    }
    if let Some(which) = exited.into_iter().flatten().next() {
        bail!("{which} exited during the window");
    }
    let shown = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}%"));
    note!(
        "idle waiter CPU over {window:.1} s: handoff {h:.3}%, node {}, python exists() poll {}",
        shown(n),
        shown(p)
    );
    report.figure(
        "idle_waiter_cpu_percent",
        Some(h),
        format!("handoff wait, nothing published, {window:.0} s window (poll {poll} ms)"),
        Some(Goal::AtMost(1.0)),
    );
    report.figure(
        "idle_waiter_cpu_percent_node",
        n,
        format!(
            "the Node package's wait, same window, from {} s after its first call",
            NODE_SETTLE.as_secs() + 1
        ),
        Some(Goal::AtMost(1.0)),
    );
    report.set("idle_node_ratio_vs_cli", n.map(|n| round(n / h, 2)));
    report.set("idle_window_s", round(window, 1));
    report.set(
        "idle_waiter_cpu_percent_python_poll",
        p.map(|v| round(v, 3)),
    );
    Ok(())
}
