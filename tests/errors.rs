use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

/// The one line a failed `--json` run prints on stdout, with the keys every
/// failure has, after checking its exit code and its kind.
#[track_caller]
fn failure(out: &Output, code: i32, kind: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line on stdout: {stdout}");
    let error = json_failure(out, code);
    assert_eq!(error["kind"], kind, "{error}");
    assert_eq!(error["exit_code"], code, "{error}");
    assert!(error["message"].is_string(), "{error}");
    let keys: Vec<&str> = error
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["exit_code", "kind", "message", "path", "retryable"]);
    assert!(
        stderr(out).contains(&format!("handoff: error ({kind})"))
            || (kind == "usage" && stderr(out).starts_with("error: ")),
        "{}",
        stderr(out)
    );
    error
}

#[test]
fn json_failures_are_one_object_naming_kind_and_path() {
    let env = Env::new();
    env.publish(1);
    let src = env.src();
    let src = src.to_str().unwrap();
    let root = env.root().canonicalize().unwrap();

    let out = env.run("publish", &["--step", "1", src, "--json"]);
    let error = failure(&out, 5, "conflict");
    assert_eq!(error["path"], root.join("step_1").display().to_string());
    assert_eq!(error["retryable"], false);

    let out = env.run("wait", &["--step", "9", "--timeout", "0s", "--json"]);
    assert_eq!(failure(&out, 3, "timed-out")["retryable"], true);

    let missing = env.tmp.path().join("missing");
    let out = handoff()
        .args(["ls", "--json", "--root"])
        .arg(&missing)
        .output()
        .unwrap();
    let error = failure(&out, 1, "not-found");
    assert_eq!(error["path"], missing.display().to_string());

    let component = env.tmp.path().join("missing.wasm");
    let out = handoff()
        .args(["ls", "--json", "--component"])
        .arg(&component)
        .arg("--root")
        .arg(env.root())
        .output()
        .unwrap();
    let error = failure(&out, 1, "bad-component");
    assert_eq!(error["path"], component.display().to_string());

    fs::write(root.join("step_1/adapter_model.safetensors"), b"changed").unwrap();
    let out = env.run("wait", &["--step", "1", "--settle", "0s", "--json"]);
    failure(&out, 4, "integrity");
}

#[test]
fn usage_errors_exit_2_and_with_json_print_the_failure() {
    let env = Env::new();
    for args in [
        &["wait", "--json"][..],
        &["wait", "--step", "1", "--timeout", "soon", "--json"],
        &["gc", "--keep", "0", "--json"],
        &[
            "publish", "--step", "1", "--run", "99999999", "src", "--json",
        ],
        &["seal", "--step", "1000000000000", "--run", "1", "--json"],
        &["frobnicate", "--json"],
    ] {
        let out = env.run(args[0], &args[1..]);
        let error = failure(&out, 2, "usage");
        assert_eq!(error["path"], Value::Null, "{args:?}");
    }
    // Without --json: exit 2 and nothing on stdout.
    let out = env.run("seal", &["--step", "1000000000000", "--run", "1"]);
    assert_exit(&out, 2, "handoff: error (usage): --run, --step: run 1");
    assert!(out.stdout.is_empty());
    let out = handoff().args(["demo", "--json"]).output().unwrap();
    failure(&out, 2, "usage");
}

#[test]
fn a_wait_stopped_by_its_deadline_exits_3() {
    let env = Env::new();
    let out = env.run("wait", &["--step", "9", "--deadline", "300ms"]);
    assert_exit(&out, 3, "handoff: error (deadline-exceeded)");
    let out = env.run("wait", &["--step", "9", "--deadline", "300ms", "--json"]);
    let error = failure(&out, 3, "deadline-exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("time limit of 300ms"),
        "{error}"
    );
}

#[test]
fn a_symbolic_link_out_of_the_root_is_named_as_such() {
    let env = Env::new();
    let outside = env.tmp.path().join("outside");
    payload(&outside, "o", 10);
    fs::write(outside.join("STABLE"), b"").unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join("step_1")).unwrap();
    let out = env.run("wait", &["--step", "1", "--timeout", "0s"]);
    let link = env.root().canonicalize().unwrap().join("step_1");
    assert_exit(
        &out,
        1,
        &format!(
            "{} is a symbolic link leading outside the root (to {}), which handoff does not \
             follow",
            link.display(),
            outside.display()
        ),
    );
    assert!(!stderr(&out).contains("similar to"), "{}", stderr(&out));
}

#[test]
fn a_name_that_is_not_utf8_is_shown_escaped_with_its_directory() {
    let env = Env::new();
    let name = std::ffi::OsStr::from_bytes(b"weights-\xff.bin");
    fs::write(env.src().join("sub").join(name), b"x").unwrap();
    let out = env.run("publish", &["--step", "1", env.src().to_str().unwrap()]);
    let dir = env.src().canonicalize().unwrap().join("sub");
    assert_exit(
        &out,
        1,
        &format!(
            "{} holds a name that is not valid UTF-8, \"weights-\\xFF.bin\"",
            dir.display()
        ),
    );
    assert!(!env.root().join("step_1").exists());
}

/// A tmpfs mounted at `dir` with `options`, unmounted when dropped; `None`
/// (and a note on stderr) where mounting is not allowed (not root, no
/// CAP_SYS_ADMIN).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Option<Mount> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs ({options}) at {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `handoff publish --step 1 --root <root> <flags> <env's source>`.
fn publish_into(env: &Env, root: &Path, flags: &[&str]) -> Output {
    handoff()
        .args(["publish", "--step", "1", "--root"])
        .arg(root)
        .arg(env.src())
        .args(flags)
        .output()
        .unwrap()
}

#[test]
fn a_read_only_file_system_is_named() {
    let env = Env::new();
    let dir = env.tmp.path().join("ro");
    let Some(_mount) = Mount::tmpfs(&dir, "ro") else {
        return;
    };
    let out = publish_into(&env, &dir, &[]);
    assert_exit(
        &out,
        1,
        &format!(
            "read-only file system (EROFS): {} is on a file system mounted read-only",
            dir.display()
        ),
    );
    assert!(!stderr(&out).contains("EIO"), "{}", stderr(&out));
}

#[test]
fn a_full_file_system_is_named() {
    let env = Env::new();
    let dir = env.tmp.path().join("full");
    // Smaller than the 64 KiB payload.
    let Some(_mount) = Mount::tmpfs(&dir, "size=16k") else {
        return;
    };
    // The host copies natively (its own words for the errno); with
    // --no-bulk the component copies through WASI.
    for (flags, cause) in [
        (&[][..], "No space left on device (os error 28)"),
        (&["--no-bulk"][..], "no space left on device (ENOSPC)"),
    ] {
        let out = publish_into(&env, &dir, flags);
        assert_exit(&out, 1, cause);
        assert!(
            stderr(&out).contains(&dir.display().to_string()),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn permission_denied_is_named() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    use std::os::unix::fs::MetadataExt as _;
    // The root belongs to this user; another user may read it, not write.
    for dir in [env.tmp.path(), &env.root()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // And may pass through the folders above it: a test run's own scratch
    // folder (scripts/test's TMPDIR) is made private. Search permission
    // lets it look up names only, not list or change anything.
    // Folders above the temporary folder are left as they are.
    let me = fs::metadata(env.tmp.path()).unwrap().uid();
    let scratch = std::env::temp_dir();
    for dir in env.tmp.path().ancestors().skip(1) {
        let meta = fs::metadata(dir).unwrap();
        if meta.mode() & 0o001 != 0 {
            continue;
        }
        if meta.uid() != me || !dir.starts_with(&scratch) {
            eprintln!("skipped: another user cannot reach {}", dir.display());
            return;
        }
        let mode = (meta.mode() & 0o7777) | 0o011;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_handoff"))
        .args(["publish", "--no-cache", "--step", "1", "--root"])
        .arg(env.root())
        .arg(env.src())
        .output();
    let out = match out {
        Ok(out) if !stderr(&out).starts_with("setpriv:") => out,
        other => {
            eprintln!("skipped: cannot run as another user (setpriv): {other:?}");
            return;
        }
    };
    let root = env.root().canonicalize().unwrap();
    assert_exit(
        &out,
        1,
        &format!(
            "failed to create {}: permission denied (EACCES)",
            root.join(".handoff").display()
        ),
    );
}

#[test]
fn a_failure_after_partial_output_ends_with_its_json_line() {
    let env = Env::new();
    env.publish(1);
    // Step 1 is printed at once; the wait for step 2 is stopped by the
    // deadline of each call.
    let out = env.run("watch", &["--from", "1", "--json", "--deadline", "300ms"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["step"], 1, "{stdout}");
    assert_eq!(lines[1]["error"]["kind"], "deadline-exceeded", "{stdout}");
    assert_exit(&out, 3, "failed to watch for the next step");
}
