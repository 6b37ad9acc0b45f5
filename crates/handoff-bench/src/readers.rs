//! Many readers waiting on one root: the metadata load they put on the
//! filesystem (on NFS, every one of these is a round trip to the server).
//!
//! `readers` `handoff wait --step N` processes wait for a step that is not
//! published yet, in a root holding three committed steps. After they are
//! past start-up, their metadata syscalls are counted over a window, in
//! the kernel with `perf stat` on the syscall tracepoints when perf is
//! there (no slowdown of the readers), else with `strace -c -f` attached
//! to them. The same is done for a smaller group of naive Python pollers
//! (`os.path.exists(STABLE)` at the same interval) as the baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use handoff_runtime::{Backend as _, WaitOptions, WriteOptions, default_writer_id};
use handoff_testkit::Rng;

use crate::proc::Watched;
use crate::report::{Goal, Report};
use crate::stats::round;
use crate::{Bench, note, payload, proc};

/// Syscalls that look up, open, list or inspect names: what costs a round
/// trip on a network filesystem. Spelled as strace spells them on x86_64;
/// `tracepoint` gives perf's name.
const METADATA_SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "stat",
    "lstat",
    "fstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents64",
    "mkdirat",
    "unlinkat",
    "renameat",
    "renameat2",
];

fn tracepoint(syscall: &str) -> String {
    let kernel = match syscall {
        "stat" => "newstat",
        "lstat" => "newlstat",
        "fstat" => "newfstat",
        other => other,
    };
    format!("syscalls:sys_enter_{kernel}")
}

/// How the syscalls are counted.
enum Counter {
    Perf(PathBuf, Vec<&'static str>),
    Strace(PathBuf),
}

impl Counter {
    fn find() -> Option<Counter> {
        if let Some(perf) = proc::which("perf") {
            let events = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
                .iter()
                .map(|d| Path::new(d).join("events/syscalls"))
                .find(|d| d.is_dir());
            if let Some(events) = events {
                let present: Vec<&str> = METADATA_SYSCALLS
                    .iter()
                    .copied()
                    .filter(|s| {
                        let tp = tracepoint(s);
                        let name = tp.trim_start_matches("syscalls:");
                        events.join(name).is_dir()
                    })
                    .collect();
                if !present.is_empty() {
                    return Some(Counter::Perf(perf, present));
                }
            }
        }
        proc::which("strace").map(Counter::Strace)
    }

    fn name(&self) -> &'static str {
        match self {
            Counter::Perf(..) => "perf stat (syscall tracepoints)",
            Counter::Strace(_) => "strace -c -f",
        }
    }

    /// Metadata syscalls made by `pids` (all their threads) over `window`,
    /// by syscall.
    fn count(
        &self,
        pids: &[u32],
        window: Duration,
        out: &Path,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let pid_list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match self {
            Counter::Perf(perf, syscalls) => {
                let events: Vec<String> = syscalls.iter().map(|s| tracepoint(s)).collect();
                proc::timed(
                    Command::new(perf)
                        .args(["stat", "-x", ",", "-o"])
                        .arg(out)
                        .args(["-e", &events.join(","), "-p", &pid_list, "--", "sleep"])
                        .arg(format!("{}", window.as_secs_f64())),
                )?;
                let text = std::fs::read_to_string(out)?;
                let mut counts = BTreeMap::new();
                for line in text.lines() {
                    let fields: Vec<&str> = line.split(',').collect();
                    if fields.len() < 3 {
                        continue;
                    }
                    if let (Ok(n), Some(name)) = (
                        fields[0].trim().parse::<u64>(),
                        fields[2].trim().strip_prefix("syscalls:sys_enter_"),
                    ) {
                        counts.insert(name.to_string(), n);
                    }
                }
                if counts.is_empty() {
                    bail!("perf stat counted nothing: {text}");
                }
                Ok(counts)
            }
            Counter::Strace(strace) => {
                let mut cmd = Command::new(strace);
                cmd.args(["-f", "-c", "-q", "-o"])
                    .arg(out)
                    .arg(format!("-etrace={}", METADATA_SYSCALLS.join(",")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                for pid in pids {
                    cmd.arg("-p").arg(pid.to_string());
                }
                let mut child = cmd.spawn().context("failed to start strace")?;
                std::thread::sleep(window);
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                child.wait()?;
                let text = std::fs::read_to_string(out)?;
                let mut counts = BTreeMap::new();
                for line in text.lines() {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // % time, seconds, usecs/call, calls, [errors], syscall
                    if fields.len() >= 5
                        && let (Ok(calls), Some(name)) = (fields[3].parse::<u64>(), fields.last())
                        && METADATA_SYSCALLS.contains(name)
                    {
                        counts.insert(name.to_string(), calls);
                    }
                }
                Ok(counts)
            }
        }
    }
}

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Some(counter) = Counter::find() else {
        note!("neither perf nor strace found: reader_metadata_ops_per_s is null");
        report.figure(
            "reader_metadata_ops_per_s",
            None,
            "needs perf or strace".to_string(),
            None,
        );
        return Ok(());
    };
    let root = b.fresh_dir("readers-root")?;
    let src = b.fresh_dir("readers-src")?;
    let mut rng = Rng::from_time();
    payload::adapter(&src, 1 << 20, &mut rng)?;
    for step in 1..=3 {
        b.runtime
            .publish(&root, step, &src, &WriteOptions::new(default_writer_id()))
            .context("failed to publish")?;
    }
    let poll = WaitOptions::default().poll.as_millis() as u64;
    let n = b.plan.readers;
    let python_n = (n / 4).max(1);

    // Three groups at once, counted separately: `wait --step 4` (the
    // headline), `wait --after 3` (what `watch` does: list the root each
    // time), and the naive Python poller.
    let mut groups: Vec<(&str, Vec<Watched>)> = Vec::new();
    let spawn_n = |count: usize, make: &dyn Fn() -> Command| {
        (0..count)
            .map(|_| Watched::spawn(&mut make()))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let handoff_wait = |target: &[&str]| {
        let mut cmd = b.handoff_cmd();
        cmd.arg("wait")
            .args(target)
            .args(["--timeout", "10m", "--root"])
            .arg(&root);
        cmd
    };
    groups.push(("step", spawn_n(n, &|| handoff_wait(&["--step", "4"]))?));
    groups.push(("after", spawn_n(n, &|| handoff_wait(&["--after", "3"]))?));
    if let Some(python) = &b.python {
        let make = || {
            let mut cmd = Command::new(python);
            cmd.args(["-c", crate::wait::PYTHON_WAIT])
                .arg(root.join("step_4/STABLE"))
                .arg(format!("{}", poll as f64 / 1000.0));
            cmd
        };
        groups.push(("python", spawn_n(python_n, &make)?));
    }
    // Start-up of this many processes on a small machine, then a settled
    // poll rate.
    let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
    std::thread::sleep(Duration::from_millis(1500 + 10 * total as u64));
    let window = b.plan.reader_window;
    let counted: Vec<anyhow::Result<BTreeMap<String, u64>>> = std::thread::scope(|s| {
        let threads: Vec<_> = groups
            .iter()
            .map(|(name, group)| {
                let pids: Vec<u32> = group.iter().map(|r| r.pid).collect();
                let out = b.work.join(format!("syscalls-{name}.txt"));
                let counter = &counter;
                s.spawn(move || counter.count(&pids, window, &out))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("counter panicked")))
            })
            .collect()
    });
    let mut early = None;
    for (_, group) in groups.iter() {
        if let Some(r) = group.iter().find(|r| r.finished()) {
            early = Some(r.pid);
        }
    }
    let sizes: Vec<usize> = groups.iter().map(|(_, g)| g.len()).collect();
    for (_, group) in groups {
        for r in group {
            r.kill()?;
        }
    }
    if let Some(pid) = early {
        bail!("reader {pid} exited before the end of the window");
    }
    let secs = window.as_secs_f64();
    let mut rates = Vec::new();
    for (counts, size) in counted.into_iter().zip(sizes) {
        let counts: BTreeMap<String, u64> = counts?.into_iter().filter(|(_, c)| *c > 0).collect();
        let rate = counts.values().sum::<u64>() as f64 / size as f64 / secs;
        rates.push((rate, counts));
    }
    let (h, step_counts) = &rates[0];
    let limit = 1000.0 / poll as f64 * 4.0;
    note!(
        "{n} readers: {h:.1} metadata syscalls per reader per second ({step_counts:?}); --after: {:.1} ({:?}); counted by {}",
        rates[1].0,
        rates[1].1,
        counter.name()
    );
    report.figure(
        "reader_metadata_ops_per_s",
        Some(*h),
        format!(
            "{n} handoff wait --step processes, {secs:.0} s window, {} (target 1000/poll x 4)",
            counter.name()
        ),
        Some(Goal::AtMost(limit)),
    );
    report.set("readers", n);
    report.set("reader_counter", counter.name());
    report.set("reader_syscalls", serde_json::json!(step_counts));
    report.figure(
        "reader_metadata_ops_per_s_after",
        Some(rates[1].0),
        format!(
            "{n} handoff wait --after processes (what watch does): the root is listed each poll"
        ),
        Some(Goal::AtMost(limit)),
    );
    report.set("reader_syscalls_after", serde_json::json!(rates[1].1));
    match rates.get(2) {
        Some((p, counts)) => {
            note!("{python_n} python exists() pollers: {p:.1} per reader per second");
            report.set("reader_metadata_ops_per_s_python_poll", round(*p, 2));
            report.set("reader_syscalls_python_poll", serde_json::json!(counts));
        }
        None => report.set(
            "reader_metadata_ops_per_s_python_poll",
            serde_json::Value::Null,
        ),
    }
    Ok(())
}
