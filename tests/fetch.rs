use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use handoff_testkit::{Rng, write_random};
use serde_json::Value;

use crate::util::*;

/// The local root of a test: beside the shared one.
fn local(env: &Env) -> PathBuf {
    env.tmp.path().join("local")
}

/// `handoff fetch --root <shared> --to <local> <args>`.
fn fetch(env: &Env, args: &[&str]) -> std::process::Output {
    let to = local(env);
    let all = [&["--to", to.to_str().unwrap()], args].concat();
    env.run("fetch", &all)
}

/// Make the source's payload file `size` bytes: a copy that takes a while.
fn big_payload(env: &Env, size: u64) {
    let path = env.src().join("adapter_model.safetensors");
    write_random(&path, size, &mut Rng::new(7)).unwrap();
}

/// Wait until `found` holds, for at most 30 s.
fn wait_until(what: &str, mut found: impl FnMut() -> bool) {
    let start = Instant::now();
    while !found() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never saw {what}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Send `signal` (STOP, CONT) to the child.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The background `fetch` of step `step`, stopped (SIGSTOP) as soon as it
/// holds its pin on the shared step: the wait is over, the copy not done.
fn fetch_stopped_at_its_pin(env: &Env, step: u64, args: &[&str]) -> Child {
    let to = local(env);
    let step_arg = step.to_string();
    let all = [
        &["--step", step_arg.as_str(), "--to", to.to_str().unwrap()],
        args,
    ]
    .concat();
    let child = env.spawn("fetch", &all);
    wait_until("the fetch's pin", || !env.pin_holders(step).is_empty());
    signal(&child, "STOP");
    child
}

fn manifest(dir: &Path) -> Vec<u8> {
    fs::read(dir.join("handoff.manifest.json")).unwrap()
}

#[test]
fn fetch_commits_a_local_copy_and_prints_the_local_version() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    let v = json(&fetch(&env, &["--latest", "--json", "--holder", "node-a"]));
    let to = local(&env);
    let local_step = fs::canonicalize(&to).unwrap().join("step_2");
    assert_eq!(v["step"], 2);
    assert_eq!(v["path"], local_step.display().to_string());
    assert_eq!(
        v["source"],
        fs::canonicalize(env.root().join("step_2"))
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(v["copied"], true);
    assert_eq!(v["bytes_copied"], v["bytes"]);
    assert!(v["fsyncs"].as_u64().unwrap() > 0);
    assert_eq!(manifest(&env.root().join("step_2")), manifest(&local_step));
    assert!(local_step.join("STABLE").is_file());
    // Pinned while copied, released after.
    assert!(env.pin_holders(2).is_empty());
    // The local root is a root: a hash-checking wait accepts the copy.
    let to_str = to.to_str().unwrap();
    let out = handoff()
        .args(["wait", "--root", to_str, "--step", "2", "--verify", "hash"])
        .output()
        .unwrap();
    assert_ok(&out);
    // Again: nothing copied; the text says so.
    let out = fetch(&env, &["--step", "2"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("already fetched"), "{text}");
    // --keep: the local gc after it.
    let v = json(&fetch(&env, &["--step", "1", "--keep", "1", "--json"]));
    assert_eq!(v["copied"], true);
    assert_eq!(v["gc"]["kept"], serde_json::json!([2]));
    assert_eq!(v["gc"]["removed"], serde_json::json!([1]));
}

#[test]
fn fetch_refuses_a_local_root_in_or_around_the_shared_one() {
    let env = Env::new();
    env.publish(1);
    let inside = env.root().join("copies");
    for to in [env.root(), inside.clone(), env.tmp.path().to_path_buf()] {
        let out = env.run("fetch", &["--step", "1", "--to", to.to_str().unwrap()]);
        assert_exit(&out, 1, "local root");
    }
    assert!(!inside.exists(), "nothing is made before the refusal");
    // A missing target is a usage error.
    assert_eq!(code(&env.run("fetch", &["--to", "x"])), 2);
}

#[test]
fn a_source_corrupted_mid_copy_commits_nothing_locally_and_names_the_file() {
    let env = Env::new();
    big_payload(&env, 32 << 20);
    env.publish(1);
    // The wait (sizes) is over and the pin taken: then the shared file
    // is rewritten with other bytes of the same size.
    let child = fetch_stopped_at_its_pin(&env, 1, &["--settle", "1s", "--json"]);
    let config = env.root().join("step_1/sub/adapter_config.json");
    let mut bytes = fs::read(&config).unwrap();
    bytes.reverse();
    fs::write(&config, bytes).unwrap();
    signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    let err = json_failure(&out, 4);
    assert_eq!(err["kind"], "integrity");
    let named = fs::canonicalize(&config).unwrap().display().to_string();
    assert_eq!(err["path"], named);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("does not match its hash"),
        "{err}"
    );
    // Nothing committed, no staging left, the pin released.
    let to = local(&env);
    assert!(!to.join("step_1").exists());
    let staging: Vec<_> = fs::read_dir(to.join(".handoff/staging")).unwrap().collect();
    assert!(staging.is_empty(), "{staging:?}");
    assert!(env.pin_holders(1).is_empty());
}

#[test]
fn a_fetch_holds_its_pin_against_gc_and_releases_it_after() {
    let env = Env::new();
    big_payload(&env, 8 << 20);
    env.publish(1);
    env.publish(2);
    env.publish(3);
    let child = fetch_stopped_at_its_pin(&env, 1, &["--json"]);
    // The writer's gc while the copy is under way keeps the step.
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(v["pinned"], serde_json::json!([1]), "{v}");
    assert_eq!(v["removed"], serde_json::json!([2]), "{v}");
    signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copied"], true);
    assert!(env.pin_holders(1).is_empty());
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(v["removed"], serde_json::json!([1]), "{v}");
}

#[test]
fn a_fetch_killed_mid_copy_commits_nothing_and_fsck_repair_cleans_up() {
    let env = Env::new();
    big_payload(&env, 256 << 20);
    env.publish(1);
    let to = local(&env);
    let child = fetch_stopped_at_its_pin(&env, 1, &[]);
    signal(&child, "CONT");
    // Killed once its copy has begun under the local staging.
    let staging = to.join(".handoff/staging");
    wait_until("the staging copy", || {
        fs::read_dir(&staging).is_ok_and(|mut d| {
            d.any(|e| e.unwrap().path().join("adapter_model.safetensors").exists())
        })
    });
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!to.join("step_1").exists(), "nothing committed locally");
    let to_str = to.to_str().unwrap();
    let fsck = |repair: bool| {
        let mut cmd = handoff();
        cmd.args(["fsck", "--root", to_str, "--json"]);
        if repair {
            cmd.arg("--repair");
        }
        json(&cmd.output().unwrap())
    };
    let v = fsck(false);
    let entries = v["entries"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert!(entries.iter().any(|e| e["state"] == "staging"), "{v}");
    // A crash a few minutes ago: older than a fetch's grace, so repair
    // takes it, where a shared root's staging would wait an hour.
    age_tree(&staging, Duration::from_secs(120)).unwrap();
    let v = fsck(true);
    let entries = v["entries"].as_array().unwrap();
    let repaired: Vec<_> = entries.iter().filter(|e| e["state"] == "staging").collect();
    assert!(!repaired.is_empty(), "{v}");
    assert!(repaired.iter().all(|e| e["action"] == "removed"), "{v}");
    assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
    // A fetch run again succeeds.
    let v = json(&fetch(&env, &["--step", "1", "--json"]));
    assert_eq!(v["copied"], true);
}

#[test]
fn watch_to_fetches_each_new_step() {
    let env = Env::new();
    env.publish(1);
    let to = local(&env);
    let mut child = env.spawn(
        "watch",
        &[
            "--from",
            "1",
            "--to",
            to.to_str().unwrap(),
            "--keep",
            "1",
            "--json",
        ],
    );
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let first = next();
    assert_eq!(first["step"], 1);
    assert_eq!(first["copied"], true);
    env.publish(2);
    let second = next();
    assert_eq!(second["step"], 2);
    assert_eq!(second["gc"]["removed"], serde_json::json!([1]));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(to.join("step_2/STABLE").exists());
    assert!(!to.join("step_1").exists());
    assert!(env.pin_holders(1).is_empty() && env.pin_holders(2).is_empty());
}

#[test]
fn a_fetch_stopped_by_its_deadline_leaves_no_staging_copy() {
    let env = Env::new();
    big_payload(&env, 512 << 20);
    env.publish(1);
    let to = local(&env);
    // Stopped during the wait, the copy or the hashing, wherever 30 ms
    // lands: nothing committed and nothing left under staging either way.
    let mut cmd = handoff();
    cmd.args(["--deadline", "30ms", "fetch", "--step", "1", "--to"])
        .arg(&to)
        .arg("--root")
        .arg(env.root());
    let out = cmd.output().unwrap();
    assert_exit(&out, 3, "deadline");
    assert!(!to.join("step_1").exists());
    let left: Vec<_> = fs::read_dir(to.join(".handoff/staging"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
