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
/// calls that order durability: opens, renames and fsyncs, and the
/// kernel copies of `publish`.
pub fn trace(env: &Env, name: &str, program: &Path, args: &[&str]) -> Vec<String> {
    let log = env.tmp.path().join(format!("strace-{name}.log"));
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,openat,openat2,renameat,renameat2,copy_file_range",
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

/// The line where the call begun at `lines[i]` returned: itself, or, for a
/// call another thread's line interrupted (`<unfinished ...>`), its
/// `resumed` line. A flush must have returned, not only begun, before
/// what it makes safe.
pub fn returned(lines: &[String], i: usize) -> usize {
    if !lines[i].contains("<unfinished ...>") {
        return i;
    }
    let pid = lines[i].split_whitespace().next().unwrap_or_default();
    lines
        .iter()
        .enumerate()
        .skip(i + 1)
        .find(|(_, l)| l.split_whitespace().next() == Some(pid) && l.contains("resumed>"))
        .map_or_else(
            || panic!("the call never returned: {}", lines[i]),
            |(j, _)| j,
        )
}

/// Whether `line` is an fsync (or fdatasync) of exactly `path`, as `-y`
/// shows the descriptor.
fn is_fsync_of(line: &str, path: &str) -> bool {
    (line.contains("fsync(") || line.contains("fdatasync(")) && line.contains(&format!("<{path}>"))
}

/// The paths fsynced beneath `root`, in order, relative to it (`.` for the
/// root itself): what two runs must agree on to flush in the same order.
/// Files flushed one after another, with no directory between them, are
/// listed sorted: a host may flush such a batch from several threads at
/// once, and then their order is the scheduler's.
pub fn fsync_order(lines: &[String], root: &str) -> Vec<String> {
    let order = flushed(lines, root);
    let is_dir = |path: &str| Path::new(root).join(path).is_dir();
    let mut sorted = Vec::with_capacity(order.len());
    let mut run: Vec<String> = Vec::new();
    for path in order {
        if is_dir(&path) {
            run.sort();
            sorted.append(&mut run);
            sorted.push(path);
        } else {
            run.push(path);
        }
    }
    run.sort();
    sorted.append(&mut run);
    sorted
}

/// The paths fsynced beneath `root`, in the order the calls began.
fn flushed(lines: &[String], root: &str) -> Vec<String> {
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
                    .map(without_random)
            }
        })
        .collect()
}

/// `path` with each name's random suffix (`.<16 hex digits>`, one
/// attempt's own) written `.<random>`, so two runs' orders compare.
fn without_random(path: &str) -> String {
    let names: Vec<String> = path
        .split('/')
        .map(|name| match name.rsplit_once('.') {
            Some((stem, tail))
                if tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                format!("{stem}.<random>")
            }
            _ => name.to_string(),
        })
        .collect();
    names.join("/")
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
    let manifest_written = find(
        &|l| l.contains("handoff.manifest.json.tmp") && l.contains("O_CREAT"),
        0,
    )
    .unwrap_or_else(|| panic!("no manifest written in:\n{}", lines.join("\n")));
    for file in ["adapter_model.safetensors", "sub/adapter_config.json"] {
        let synced = find(&|l| is_fsync_of(l, &format!("{step}/{file}")), 0)
            .unwrap_or_else(|| panic!("{file} never fsynced:\n{}", lines.join("\n")));
        assert!(
            returned(lines, synced) < manifest_written,
            "{file}'s fsync had not returned when the manifest was written"
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

#[test]
fn publish_copies_in_the_kernel_and_fsyncs_every_copy_before_the_commit() {
    if !strace_available() {
        return;
    }
    let env = Env::new();
    let src = env.src().canonicalize().unwrap().display().to_string();
    let lines = trace(
        &env,
        "publish",
        Path::new(env!("CARGO_BIN_EXE_handoff")),
        &["publish", "--root", &env.root_str(), "--step", "4", &src],
    );
    let all = || lines.join("\n");
    let position = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let committed = position(&|l| l.contains("rename") && l.contains("\"step_4\")"))
        .unwrap_or_else(|| panic!("no rename of the staging copy to step_4:\n{}", all()));
    let stable_created = position(&|l| l.contains("STABLE\"") && l.contains("O_EXCL"))
        .unwrap_or_else(|| panic!("no exclusive create of STABLE:\n{}", all()));
    let manifest_written =
        position(&|l| l.contains("handoff.manifest.json.tmp") && l.contains("O_CREAT"))
            .unwrap_or_else(|| panic!("no manifest written:\n{}", all()));
    for file in ["adapter_model.safetensors", "sub/adapter_config.json"] {
        let copy = format!("/{file}>");
        // The native host copies inside the kernel, source to staging.
        let copied = position(&|l| {
            l.starts_with(|c: char| c.is_ascii_digit())
                && l.contains("copy_file_range(")
                && l.contains(&format!("<{src}/{file}>"))
                && l.contains("/.handoff/staging/")
                && l.contains(&copy)
        })
        .unwrap_or_else(|| panic!("{file} not copied with copy_file_range:\n{}", all()));
        let synced = position(&|l| {
            l.contains("fsync(") && l.contains("/.handoff/staging/") && l.contains(&copy)
        })
        .unwrap_or_else(|| panic!("the copy of {file} was never fsynced:\n{}", all()));
        assert!(copied < synced, "{file} fsynced before it was copied");
        let synced = returned(&lines, synced);
        assert!(
            synced < manifest_written,
            "{file}'s fsync had not returned when the manifest was written"
        );
        assert!(synced < stable_created, "{file} fsynced after STABLE");
        assert!(synced < committed, "{file} fsynced after the commit");
    }
    // After the rename, both its directories are flushed: the root (the
    // destination, which Linux's local filesystems and NFS need) and staging
    // (the source, which the CephFS client ties the rename to).
    let root = env.root().canonicalize().unwrap().display().to_string();
    let after: Vec<&String> = lines[committed..].iter().collect();
    for dir in [root.clone(), format!("{root}/.handoff/staging")] {
        assert!(
            after.iter().any(|l| is_fsync_of(l, &dir)),
            "{dir} not flushed after the rename:\n{}",
            all()
        );
    }
    // The host hashed the source: the manifest vouches for its bytes.
    let manifest = fs::read_to_string(env.root().join("step_4/handoff.manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    for entry in manifest["files"].as_array().unwrap() {
        let path = entry["path"].as_str().unwrap();
        let data = fs::read(env.src().join(path)).unwrap();
        assert_eq!(entry["size"], data.len(), "{path}");
        assert_eq!(
            entry["blake3"].as_str().unwrap(),
            blake3::hash(&data).to_hex().as_str(),
            "{path}"
        );
    }
}

#[test]
fn no_bulk_publishes_the_same_manifest_without_kernel_copies() {
    if !strace_available() {
        return;
    }
    let env = Env::new();
    let src = env.src().display().to_string();
    let root = env.root_str();
    let publish = |step: &str, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend([
            "publish",
            "--root",
            &root,
            "--step",
            step,
            "--created-ms",
            "1",
            "--writer",
            "w",
            &src,
        ]);
        let name = format!("publish-{step}");
        trace(&env, &name, Path::new(env!("CARGO_BIN_EXE_handoff")), &args)
    };
    let native = publish("1", &[]);
    let in_component = publish("2", &["--no-bulk"]);
    let copies = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("copy_file_range("))
            .count()
    };
    assert!(copies(&native) >= 2, "{}", native.join("\n"));
    assert_eq!(copies(&in_component), 0, "{}", in_component.join("\n"));
    let manifest = |step: &str| {
        let text = fs::read_to_string(env.root().join(step).join("handoff.manifest.json")).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["step"] = serde_json::Value::Null;
        value
    };
    assert_eq!(manifest("step_1"), manifest("step_2"));
}
