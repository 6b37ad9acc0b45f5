//! Running and timing processes, and reading their CPU time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff_testkit::proc::succeeded;

/// Run `cmd` to completion and return its wall time, from just before the
/// spawn to just after it was reaped. Fails, with its stderr, unless it
/// succeeded.
pub fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let elapsed = start.elapsed();
    succeeded(format_args!("{cmd:?}"), output)?;
    Ok(elapsed)
}

/// Run `cmd` and return its stdout; fails unless it succeeded.
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null());
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let output = succeeded(format_args!("{cmd:?}"), output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A child whose exit is timestamped by a thread blocked in `wait`, so the
/// time it returned is known to within a scheduler wake-up.
pub struct Watched {
    pub pid: u32,
    handle: JoinHandle<std::io::Result<(ExitStatus, Instant)>>,
}

impl Watched {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Watched> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child: Child = cmd
            .spawn()
            .with_context(|| format!("failed to start {cmd:?}"))?;
        let pid = child.id();
        let handle = std::thread::spawn(move || {
            let status = child.wait()?;
            Ok((status, Instant::now()))
        });
        Ok(Watched { pid, handle })
    }

    /// Wait for the exit; its status and when it was seen.
    pub fn join(self) -> anyhow::Result<(ExitStatus, Instant)> {
        match self.handle.join() {
            Ok(result) => Ok(result?),
            Err(_) => bail!("the thread waiting for process {} panicked", self.pid),
        }
    }

    pub fn finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stop the process (SIGKILL) and reap it.
    pub fn kill(self) -> anyhow::Result<()> {
        if !self.handle.is_finished() {
            // SAFETY: kill(2) on a child we spawned and have not reaped yet
            // (its waiting thread has not returned), so the pid is still ours.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        self.join().map(|_| ())
    }
}

/// CPU time used so far by every thread of `pid`: nanoseconds from
/// `/proc/<pid>/task/*/schedstat` when the kernel has it, else clock ticks
/// from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let mut total_ns: u128 = 0;
    let mut found = false;
    for entry in std::fs::read_dir(&tasks).with_context(|| format!("no {}", tasks.display()))? {
        let path = entry?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u128>().ok())
        {
            total_ns += ns;
            found = true;
        }
    }
    if found {
        return Ok(Duration::from_nanos(total_ns as u64));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: utime and
    // stime are fields 14 and 15, i.e. the 12th and 13th after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// `name` on `$PATH`, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `fsync` a file or directory by path.
pub fn fsync(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to fsync {}", path.display()))
}

/// CPU time (user + system, all threads) this process has used so far.
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
