use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// strace, or a message saying why the test is skipped.
pub fn strace_available() -> bool {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("skipped: strace is not installed (apt-get install strace)");
            false
        }
    }
}

/// The log lines of `program args` run under `strace -f -y`, tracing the
/// calls that order durability: opens, renames and fsyncs.
pub fn trace(env: &Env, name: &str, program: &Path, args: &[&str]) -> Vec<String> {
    let log = env.tmp.path().join(format!("strace-{name}.log"));
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,openat,openat2,renameat,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(program)
        .args(args)
        .env(
            "HANDOFF_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("handoff-cache"),
        )
        .output()
        .unwrap();
    assert_ok(&out);
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines of a traced native `handoff seal`.
fn trace_seal(env: &Env, step: &str) -> Vec<String> {
    trace(
        env,
        "native",
        Path::new(env!("CARGO_BIN_EXE_handoff")),
        &["seal", "--root", &env.root_str(), "--step", step],
    )
}

/// Whether `line` is an fsync (or fdatasync) of exactly `path`, as `-y`
/// shows the descriptor.
fn is_fsync_of(line: &str, path: &str) -> bool {
    (line.contains("fsync(") || line.contains("fdatasync(")) && line.contains(&format!("<{path}>"))
}

/// The paths fsynced beneath `root`, in order, relative to it (`.` for the
/// root itself): what two runs must agree on to flush in the same order.
pub fn fsync_order(lines: &[String], root: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .filter_map(|l| {
            let start = l.find('<')? + 1;
            let path = &l[start..start + l[start..].find('>')?];
            if path == root {
                Some(".".to_string())
            } else {
                path.strip_prefix(root)?
                    .strip_prefix('/')
                    .map(str::to_string)
            }
        })
        .collect()
}

/// Assert the commit sequence of `seal` of `step_dir` (the canonical host
/// path of `<root>/step_N`) in a trace: every payload file and `sub/` flushed
/// before `STABLE` is created; the manifest renamed and the step directory
/// flushed before it; after it, `STABLE` itself, the step directory, the
/// root.
pub fn assert_seal_order(lines: &[String], root: &str, step: &str) {
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
        find(&|l| is_fsync_of(l, step), manifest_renamed).expect("step dir fsync after manifest");
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
        find(&|l| is_fsync_of(l, step), stable_synced).expect("step dir fsync after STABLE");
    let root_synced =
        find(&|l| is_fsync_of(l, root), step_synced).expect("root fsync after step dir");
    assert!(
        stable_created < stable_synced && stable_synced < step_synced && step_synced < root_synced
    );
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
    assert_seal_order(&lines, &root, &format!("{root}/step_3"));
}
