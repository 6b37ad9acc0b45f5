use std::fs;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn publish_json_reports_files_and_fsyncs() {
    let env = Env::new();
    let out = env.run(
        "publish",
        &["--step", "7", "--json", env.src().to_str().unwrap()],
    );
    let v = json(&out);
    assert_eq!(v["step"], 7);
    assert_eq!(
        v["path"],
        env.root()
            .join("step_7")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
    let files = v["files"].as_array().unwrap();
    let paths: Vec<_> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["adapter_model.safetensors", "sub/adapter_config.json"]
    );
    assert_eq!(files[0]["size"], 64 * 1024);
    assert_eq!(files[0]["blake3"].as_str().unwrap().len(), 64);
    // 2 files + manifest + STABLE, sub/, staging dir twice, root at least.
    assert!(v["fsyncs"].as_u64().unwrap() >= 7, "{v}");
    assert!(v["elapsed_ms"].is_number());
    assert!(env.root().join("step_7/STABLE").exists());
}

#[test]
fn seal_then_wait_round_trips_the_manifest() {
    let env = Env::new();
    payload(&env.root().join("step_3"), "b", 1000);
    let sealed = json(&env.run("seal", &["--step", "3", "--json"]));
    let waited = json(&env.run(
        "wait",
        &[
            "--step",
            "3",
            "--verify",
            "hash",
            "--json",
            "--timeout",
            "1s",
        ],
    ));
    assert_eq!(sealed["files"], waited["files"]);
    assert_eq!(waited["step"], 3);
    assert!(waited["elapsed_ms"].is_number());
}

#[test]
fn a_reader_started_first_returns_when_the_step_lands() {
    let env = Env::new();
    let start = Instant::now();
    let reader = env.spawn(
        "wait",
        &[
            "--step",
            "1",
            "--timeout",
            "20s",
            "--verify",
            "hash",
            "--json",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    env.publish(1);
    let published = start.elapsed();
    let out = reader.wait_with_output().unwrap();
    let v = json(&out);
    assert_eq!(v["step"], 1);
    assert!(start.elapsed() >= published);
    assert_within(start, Duration::from_secs(10));
}

#[test]
fn a_wait_that_times_out_exits_3_promptly() {
    let env = Env::new();
    payload(&env.root().join("step_2"), "x", 10); // written, never sealed
    let start = Instant::now();
    let out = env.run("wait", &["--step", "2", "--timeout", "1s"]);
    let took = start.elapsed();
    assert_exit(&out, 3, "step_2/STABLE");
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn wait_latest_and_ls() {
    let env = Env::new();
    env.publish(1);
    env.publish(10);
    payload(&env.root().join("step_11"), "x", 10); // incomplete
    fs::create_dir(env.root().join("step_011")).unwrap(); // stray
    let v = json(&env.run("wait", &["--latest", "--json", "--timeout", "1s"]));
    assert_eq!(v["step"], 10);
    let ls = json(&env.run("ls", &["--json"]));
    let steps: Vec<_> = ls["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, "committed".to_string()),
            (10, "committed".into()),
            (11, "incomplete".into())
        ]
    );
    let human = env.run("ls", &[]);
    assert_ok(&human);
    assert!(String::from_utf8_lossy(&human.stdout).contains("step_10"));
}

#[test]
fn a_custom_prefix_is_used_throughout() {
    let env = Env::new();
    let out = handoff()
        .args([
            "--prefix",
            "ckpt-",
            "publish",
            "--root",
            &env.root_str(),
            "--step",
            "4",
            env.src().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(env.root().join("ckpt-4/STABLE").exists());
    let out = handoff()
        .args([
            "--prefix",
            "ckpt-",
            "wait",
            "--root",
            &env.root_str(),
            "--step",
            "4",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = handoff()
        .args([
            "demo",
            "--root",
            tmp.path().to_str().unwrap(),
            "--steps",
            "2",
            "--size-mib",
            "2",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("visible"), "{text}");
}

#[test]
fn writer_and_created_ms_make_manifests_byte_identical() {
    let env = Env::new();
    let args = |step: &'static str| {
        [
            "--step",
            step,
            "--writer",
            "trainer-0",
            "--created-ms",
            "1764380000000",
        ]
    };
    assert_ok(&env.run(
        "publish",
        &[&args("1")[..], &[env.src().to_str().unwrap()]].concat(),
    ));
    payload(&env.root().join("step_2"), "a", 64 * 1024);
    assert_ok(&env.run("seal", &args("2")));
    let read = |step: &str| {
        std::fs::read_to_string(env.root().join(step).join("handoff.manifest.json")).unwrap()
    };
    let (one, two) = (read("step_1"), read("step_2"));
    assert!(
        one.contains(r#""writer":"trainer-0","created":1764380000000"#),
        "{one}"
    );
    assert_eq!(one.replace(r#""step":1"#, r#""step":2"#), two);
}
