use std::fs;

use crate::util::*;

const MANIFEST: &str = "handoff.manifest.json";

fn rewrite_manifest(env: &Env, step: u64, from: &str, to: &str) {
    let path = env.root().join(format!("step_{step}")).join(MANIFEST);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from));
    fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn manifest_paths_with_dotdot_or_absolute_are_integrity_errors() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    rewrite_manifest(&env, 1, "sub/adapter_config.json", "../../../etc/passwd");
    rewrite_manifest(&env, 2, "sub/adapter_config.json", "/etc/passwd");
    for step in ["1", "2"] {
        // No retry fixes an unsafe manifest: this fails at once, not at the timeout.
        let out = env.run("wait", &["--step", step, "--timeout", "30s"]);
        assert_exit(&out, 4, "unsafe path");
    }
}

#[test]
fn seal_refuses_a_payload_symlink_and_writes_nothing() {
    let env = Env::new();
    let step = env.root().join("step_5");
    payload(&step, "a", 100);
    std::os::unix::fs::symlink("/etc/passwd", step.join("sub/evil")).unwrap();
    let out = env.run("seal", &["--step", "5"]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("sub/evil") && stderr(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    assert!(!step.join("STABLE").exists());
    assert!(!step.join(MANIFEST).exists());
}

#[test]
fn publish_refuses_a_source_symlink_and_leaves_nothing_visible() {
    let env = Env::new();
    std::os::unix::fs::symlink("/etc/passwd", env.src().join("link")).unwrap();
    let out = env.run("publish", &["--step", "5", env.src().to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("link"), "{}", stderr(&out));
    assert!(!env.root().join("step_5").exists());
    let staging = env.root().join(".handoff/staging");
    assert!(!staging.exists() || fs::read_dir(staging).unwrap().count() == 0);
}

#[test]
fn publish_refuses_a_source_that_is_or_holds_the_root() {
    let env = Env::new();
    env.publish(1);
    let root = env.root();
    let inside = root.join("incoming");
    payload(&inside, "a", 100);
    let parent = root.parent().unwrap().to_path_buf();
    for (source, needle) in [
        (root.clone(), "is the root itself"),
        (root.join("step_1"), "is inside the root"),
        (inside.clone(), "is inside the root"),
        (parent, "contains the root"),
    ] {
        let out = env.run("publish", &["--step", "2", source.to_str().unwrap()]);
        assert_exit(&out, 1, needle);
        assert!(
            stderr(&out).contains(source.to_str().unwrap()),
            "{}",
            stderr(&out)
        );
        assert!(!root.join("step_2").exists(), "{}", source.display());
    }
    // What was there is untouched, and nothing was staged.
    let out = env.run("wait", &["--step", "1", "--verify", "hash"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let staging = root.join(".handoff/staging");
    assert!(!staging.exists() || fs::read_dir(staging).unwrap().count() == 0);
}

#[test]
fn publish_refuses_a_top_level_stable_or_manifest_in_the_source() {
    let env = Env::new();
    for name in ["STABLE", MANIFEST] {
        fs::write(env.src().join(name), b"x").unwrap();
        let out = env.run("publish", &["--step", "5", env.src().to_str().unwrap()]);
        assert_exit(&out, 1, &format!("`{name}` is a name handoff reserves"));
        assert!(!env.root().join("step_5").exists());
        fs::remove_file(env.src().join(name)).unwrap();
    }
}

#[test]
fn a_truncated_payload_exits_4_naming_the_file() {
    let env = Env::new();
    env.publish(1);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(env.root().join("step_1/adapter_model.safetensors"))
        .unwrap();
    file.set_len(100).unwrap();
    let wait: Vec<&str> = "--step 1 --timeout 1s --settle 200ms".split(' ').collect();
    let out = env.run("wait", &wait);
    assert_exit(&out, 4, "adapter_model.safetensors is short: 100 bytes");
    // A script branches on the JSON: which file, and whether waiting longer
    // may help (a lagging cache can show a file short).
    let out = env.run("wait", &[&wait[..], &["--json"]].concat());
    let error = json_failure(&out, 4);
    assert_eq!(error["kind"], "integrity");
    let file = env
        .root()
        .canonicalize()
        .unwrap()
        .join("step_1/adapter_model.safetensors");
    assert_eq!(error["path"], file.display().to_string());
    assert_eq!(error["retryable"], true);
}

#[test]
fn a_same_size_corruption_is_caught_by_verify_hash() {
    let env = Env::new();
    env.publish(1);
    let path = env.root().join("step_1/adapter_model.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    assert_ok(&env.run(
        "wait",
        &["--step", "1", "--timeout", "1s", "--verify", "size"],
    ));
    let out = env.run(
        "wait",
        &[
            "--step",
            "1",
            "--timeout",
            "1s",
            "--settle",
            "200ms",
            "--verify",
            "hash",
        ],
    );
    assert_exit(&out, 4, "adapter_model.safetensors does not match its hash");
}

#[test]
fn a_second_publish_exits_5_and_the_first_stays_intact() {
    let env = Env::new();
    env.publish(3);
    let manifest = fs::read(env.root().join("step_3").join(MANIFEST)).unwrap();
    payload(&env.src(), "other", 5000);
    let out = env.run("publish", &["--step", "3", env.src().to_str().unwrap()]);
    assert_exit(&out, 5, "already published");
    let out = env.run("seal", &["--step", "3"]);
    assert_exit(&out, 5, "already sealed");
    let out = env.run(
        "publish",
        &["--json", "--step", "3", env.src().to_str().unwrap()],
    );
    let error = json_failure(&out, 5);
    let step = env.root().canonicalize().unwrap().join("step_3");
    assert_eq!(error["path"], step.display().to_string());
    assert_eq!(error["retryable"], false);
    assert_eq!(
        fs::read(env.root().join("step_3").join(MANIFEST)).unwrap(),
        manifest
    );
    assert_ok(&env.run(
        "wait",
        &["--step", "3", "--verify", "hash", "--timeout", "1s"],
    ));
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let env = Env::new();
    let missing = env.tmp.path().join("nope");
    for args in [
        vec!["wait", "--step", "1", "--timeout", "1s"],
        vec!["ls"],
        vec!["seal", "--step", "1"],
    ] {
        let out = handoff()
            .arg(args[0])
            .arg("--root")
            .arg(&missing)
            .args(&args[1..])
            .output()
            .unwrap();
        assert_exit(&out, 1, "nope");
    }
}

#[test]
fn seal_of_a_missing_step_directory_names_it() {
    let env = Env::new();
    let out = env.run("seal", &["--step", "9"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("step_9"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        vec!["wait"],                                     // neither --step nor --latest
        vec!["wait", "--step", "1", "--latest"],          // both
        vec!["wait", "--step", "1", "--timeout", "soon"], // bad duration
        vec!["wait", "--step", "-1"],                     // not a u64
        vec!["wait", "--step", "1", "--verify", "maybe"], // bad verify
    ] {
        let out = env.run(args[0], &args[1..]);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_bad_component_file_is_a_clear_error() {
    let env = Env::new();
    env.publish(1);
    let garbage = env.tmp.path().join("garbage.wasm");
    fs::write(&garbage, b"this is not wasm").unwrap();
    let missing = env.tmp.path().join("missing.wasm");
    for (path, needle) in [(&garbage, "garbage.wasm"), (&missing, "missing.wasm")] {
        let out = handoff()
            .arg("--component")
            .arg(path)
            .args([
                "wait",
                "--root",
                &env.root_str(),
                "--step",
                "1",
                "--timeout",
                "1s",
            ])
            .output()
            .unwrap();
        assert_exit(&out, 1, needle);
    }
}

#[test]
fn a_component_call_over_its_deadline_is_an_error_not_a_hang() {
    let env = Env::new();
    // Hashing 256 MiB takes ~60 ms natively, well past the 20 ms limit,
    // and the host checks the limit between chunks as the epoch would.
    payload(&env.src(), "big", 256 << 20);
    env.publish(1);
    let start = std::time::Instant::now();
    let out = handoff()
        .args([
            "--deadline",
            "20ms",
            "wait",
            "--root",
            &env.root_str(),
            "--step",
            "1",
            "--verify",
            "hash",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 3, "time limit");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_write_stopped_by_its_deadline_leaves_nothing_in_the_way() {
    let env = Env::new();
    // Copying and hashing 256 MiB takes far longer than the 20 ms limit.
    payload(&env.src(), "big", 256 << 20);
    let src = env.src().display().to_string();
    let out = env.run("publish", &["--deadline", "20ms", "--step", "1", &src]);
    assert_exit(&out, 3, "time limit");
    let staging = env.root().join(".handoff/staging");
    let left: Vec<_> = fs::read_dir(&staging)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    assert!(!env.root().join("step_1").exists());

    // A seal stopped the same way leaves no claim: a retry by another
    // process (another default writer id) seals the step.
    let step_2 = env.root().join("step_2");
    payload(&step_2, "big", 256 << 20);
    let out = env.run("seal", &["--deadline", "20ms", "--step", "2"]);
    assert_exit(&out, 3, "time limit");
    assert!(!step_2.join(".handoff.seal").exists());
    assert_ok(&env.run("seal", &["--step", "2"]));
}

#[test]
fn seal_refuses_a_payload_that_changes_while_it_seals() {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new();
    // A writer that has not finished appends for as long as seal runs. On a
    // loaded machine it may not be scheduled at all while one seal runs, so
    // the seal is tried on up to five steps: the change must be caught on
    // one, and never leave STABLE on a step whose seal failed.
    let mut caught = None;
    for step in 1..=5u64 {
        let dir = env.root().join(format!("step_{step}"));
        payload(&dir, "a", 4 << 20);
        let file = dir.join("adapter_model.safetensors");
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let stop = stop.clone();
            let mut file = fs::OpenOptions::new().append(true).open(&file).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    file.write_all(b"x").unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            })
        };
        let out = env.run("seal", &["--step", &step.to_string()]);
        stop.store(true, Ordering::Relaxed);
        appender.join().unwrap();
        if code(&out) != 0 {
            assert_exit(&out, 1, "changed while it was sealed");
            assert!(!dir.join("STABLE").exists());
            caught = Some(step);
            break;
        }
    }
    assert!(
        caught.is_some(),
        "an append during seal was never caught in 5 tries"
    );
}
