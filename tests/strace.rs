use std::fs;
use std::process::Command;

use crate::util::*;

/// strace, or a message saying why the test is skipped.
fn strace_available() -> bool {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("skipped: strace is not installed (apt-get install strace)");
            false
        }
    }
}

/// `(syscall line index, line)` for the traced run of `handoff seal`.
fn trace_seal(env: &Env, step: &str) -> Vec<String> {
    let log = env.tmp.path().join("strace.log");
    let status = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,openat,openat2,renameat,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_handoff"))
        .env(
            "HANDOFF_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("handoff-cache"),
        )
        .args(["seal", "--root", &env.root_str(), "--step", step])
        .status()
        .unwrap();
    assert!(status.success());
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn seal_fsyncs_payload_before_stable_then_step_dir_and_root() {
    if !strace_available() {
        return;
    }
    let env = Env::new();
    let step_dir = env.root().join("step_3");
    payload(&step_dir, "a", 4096);
    let lines = trace_seal(&env, "3");
    let root = env.root().canonicalize().unwrap().display().to_string();
    let step = format!("{root}/step_3");
    let is_fsync_of = |line: &str, path: &str| {
        (line.contains("fsync(") || line.contains("fdatasync("))
            && line.contains(&format!("<{path}>"))
    };
    let find = |pred: &dyn Fn(&str) -> bool, from: usize| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| pred(l))
            .map(|(i, _)| i)
    };
    let stable_created = find(
        &|l| l.contains("STABLE\"") && l.contains("O_CREAT") && l.contains("O_EXCL"),
        0,
    )
    .unwrap_or_else(|| panic!("no exclusive create of STABLE in:\n{}", lines.join("\n")));
    for file in ["adapter_model.safetensors", "sub/adapter_config.json"] {
        let synced = find(&|l| is_fsync_of(l, &format!("{step}/{file}")), 0)
            .unwrap_or_else(|| panic!("{file} never fsynced:\n{}", lines.join("\n")));
        assert!(
            synced < stable_created,
            "{file} fsynced after STABLE was created"
        );
    }
    let sub_synced =
        find(&|l| is_fsync_of(l, &format!("{step}/sub")), 0).expect("sub/ never fsynced");
    assert!(sub_synced < stable_created);
    let manifest_renamed = find(
        &|l| l.contains("rename") && l.contains("handoff.manifest.json\""),
        0,
    )
    .expect("manifest rename");
    assert!(manifest_renamed < stable_created);
    let step_synced_before =
        find(&|l| is_fsync_of(l, &step), manifest_renamed).expect("step dir fsync after manifest");
    assert!(
        step_synced_before < stable_created,
        "manifest name not durable before STABLE"
    );
    // After STABLE: its own fsync, then the step directory, then the root.
    let stable_synced = find(
        &|l| is_fsync_of(l, &format!("{step}/STABLE")),
        stable_created,
    )
    .expect("STABLE fsync");
    let step_synced =
        find(&|l| is_fsync_of(l, &step), stable_synced).expect("step dir fsync after STABLE");
    let root_synced =
        find(&|l| is_fsync_of(l, &root), step_synced).expect("root fsync after step dir");
    assert!(
        stable_created < stable_synced && stable_synced < step_synced && step_synced < root_synced
    );
}
