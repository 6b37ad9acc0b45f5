//! Child processes: the `handoff` binary under test, runs with a deadline,
//! and failures that carry the child's stderr.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `handoff` binary to run: `$HANDOFF_BIN` when set, else the one cargo
/// builds for the running executable's profile (`target/<profile>/handoff`;
/// see [`build_handoff`]).
pub fn handoff_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HANDOFF_BIN") {
        return PathBuf::from(bin);
    }
    profile_dir().join("handoff")
}

/// `cargo build -p handoff` in the running executable's profile, for the
/// workspace at `workspace` (a no-op when the binary is up to date, and
/// skipped when `$HANDOFF_BIN` names one). `Err` holds cargo's stderr.
pub fn build_handoff(workspace: &Path) -> Result<(), String> {
    if std::env::var_os("HANDOFF_BIN").is_some() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "handoff", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"));
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let out = build
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    succeeded("cargo build -p handoff", out)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `target/<profile>` of the running executable: its directory, or the
/// parent of that for a test in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("an executable is in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A process that ran and did not succeed.
#[derive(Debug)]
pub struct Failed {
    /// What ran, as the message names it.
    pub what: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard error, trimmed.
    pub stderr: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({}): {}", self.what, self.status, self.stderr)
    }
}

impl std::error::Error for Failed {}

/// `output` if its process succeeded, else a [`Failed`] naming it `what`.
pub fn succeeded(what: impl fmt::Display, output: Output) -> Result<Output, Failed> {
    if output.status.success() {
        return Ok(output);
    }
    Err(Failed {
        what: what.to_string(),
        status: output.status,
        stderr: stderr(&output),
    })
}

/// Runs `cmd` to completion with stdin closed and its output captured,
/// SIGKILLing it past `deadline`: `Err` holds what it printed before then.
/// Only the child is killed: output pipes a grandchild holds open keep this
/// waiting until the grandchild ends.
pub fn run_within(cmd: &mut Command, deadline: Duration) -> Result<Output, Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => Ok(out.expect("wait for a child")),
        Err(_) => {
            // Our own child, by its pid: it is still unreaped (the waiting
            // thread has not returned), so the pid is still its.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(rx
                .recv()
                .expect("the waiting thread reports")
                .expect("wait for a child"))
        }
    }
}

/// The exit code, or -1 for a process ended by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// The standard error, lossily decoded and trimmed.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Asserts that less than `limit` has passed since `start`, and returns how
/// much has.
#[track_caller]
pub fn assert_within(start: Instant, limit: Duration) -> Duration {
    let took = start.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_its_deadline_is_killed() {
        let start = Instant::now();
        let out = run_within(
            Command::new("sh").args(["-c", "echo started >&2; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert_within(start, Duration::from_secs(10));
        assert_eq!(code(&out), -1);
        assert_eq!(stderr(&out), "started");
    }

    #[test]
    fn a_failure_names_the_process_and_carries_its_stderr() {
        let out = run_within(
            Command::new("sh").args(["-c", "echo ' no such step ' >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(code(&out), 3);
        let err = succeeded("the reader", out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the reader failed (exit status: 3): no such step"
        );
        let ok = run_within(&mut Command::new("true"), Duration::from_secs(10)).unwrap();
        assert!(succeeded("true", ok).is_ok());
    }
}
