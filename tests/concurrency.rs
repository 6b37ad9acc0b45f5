use std::fs;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn two_publishers_of_one_step_one_wins_nothing_mixed() {
    for round in 0..5 {
        let env = Env::new();
        let other = env.tmp.path().join("other");
        payload(&other, "other", 256 * 1024);
        let (a, _) = one_wins(
            &env,
            ["publish", "--step", "1", env.src().to_str().unwrap()],
            ["publish", "--step", "1", other.to_str().unwrap()],
            round,
        );
        // The committed version is one writer's payload, whole.
        let winner = if code(&a) == 0 { env.src() } else { other };
        for file in ["adapter_model.safetensors", "sub/adapter_config.json"] {
            assert_eq!(
                fs::read(env.root().join("step_1").join(file)).unwrap(),
                fs::read(winner.join(file)).unwrap()
            );
        }
        assert_ok(&env.run(
            "wait",
            &["--step", "1", "--verify", "hash", "--timeout", "1s"],
        ));
        let staging = fs::read_dir(env.root().join(".handoff/staging"))
            .unwrap()
            .count();
        assert_eq!(staging, 0, "the loser removed its staging copy");
    }
}

#[test]
fn two_sealers_of_one_step_one_wins_with_its_own_manifest() {
    for round in 0..10 {
        let env = Env::new();
        payload(&env.root().join("step_1"), "in place", 4 << 20);
        let (a, _) = one_wins(
            &env,
            ["seal", "--step", "1", "--writer", "a"],
            ["seal", "--step", "1", "--writer", "b"],
            round,
        );
        let winner = if code(&a) == 0 { "a" } else { "b" };
        let got = json(&env.run(
            "wait",
            &[
                "--step",
                "1",
                "--verify",
                "hash",
                "--timeout",
                "1s",
                "--json",
            ],
        ));
        assert_eq!(got["writer"], winner, "round {round}");
        let left: Vec<_> = fs::read_dir(env.root().join("step_1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| {
                n.starts_with(".handoff.manifest.json.tmp") || n.starts_with(".handoff.seal")
            })
            .collect();
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
}

/// Run the two commands at once and check that one exited 0 and the other 5
/// (a conflict).
fn one_wins<const A: usize, const B: usize>(
    env: &Env,
    a: [&str; A],
    b: [&str; B],
    round: u32,
) -> (Output, Output) {
    let a = env.spawn(a[0], &a[1..]);
    let b = env.spawn(b[0], &b[1..]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [code(&a), code(&b)];
    codes.sort();
    assert_eq!(
        codes,
        [0, 5],
        "round {round}: {} / {}",
        stderr(&a),
        stderr(&b)
    );
    (a, b)
}

/// One publisher at full speed with `--keep 2`; 8 reader processes that wait
/// for the latest with a pin, read every file and check its hash, then unpin.
#[test]
fn readers_never_lose_a_pinned_step_to_gc() {
    let secs: u64 = std::env::var("HANDOFF_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let env = Env::new();
    payload(&env.src(), "big", 2 << 20);
    env.publish(0);
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let published = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    thread::scope(|s| {
        s.spawn(|| {
            let mut step = 1;
            while Instant::now() < deadline {
                payload(&env.src(), &format!("v{step}"), 2 << 20);
                env.publish_with(step, &["--keep", "2"]);
                published.fetch_add(1, Ordering::Relaxed);
                step += 1;
            }
            stop.store(true, Ordering::Relaxed);
        });
        for reader in 0..8 {
            let (env, stop, reads) = (&env, &stop, &reads);
            s.spawn(move || {
                let holder = format!("reader-{reader}");
                while !stop.load(Ordering::Relaxed) {
                    let v = json(&env.run(
                        "wait",
                        &[
                            "--latest",
                            "--pin",
                            &holder,
                            "--ttl",
                            "1m",
                            "--json",
                            "--timeout",
                            "10s",
                        ],
                    ));
                    let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
                    for file in v["files"].as_array().unwrap() {
                        let path = dir.join(file["path"].as_str().unwrap());
                        let bytes = fs::read(&path)
                            .unwrap_or_else(|e| panic!("failed read of {}: {e}", path.display()));
                        assert_eq!(
                            blake3::hash(&bytes).to_hex().as_str(),
                            file["blake3"].as_str().unwrap(),
                            "{}",
                            path.display()
                        );
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    let step = v["step"].to_string();
                    assert_ok(&env.run("unpin", &["--step", &step, "--holder", &holder]));
                }
            });
        }
    });
    eprintln!(
        "readers_never_lose_a_pinned_step_to_gc: {} publishes, {} verified reads in {secs} s",
        published.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    let g = json(&env.run("gc", &["--keep", "2", "--json"]));
    assert!(g["pinned"].as_array().unwrap().is_empty(), "{g}");
    let mut left: Vec<_> = fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}"); // .handoff and the two newest steps
    for dir in ["staging", "trash"] {
        let path = env.root().join(".handoff").join(dir);
        let n = if path.exists() {
            fs::read_dir(&path).unwrap().count()
        } else {
            0
        };
        assert_eq!(n, 0, "leftovers in {}", path.display());
    }
    // No pin is left on the steps that stay, and no version 1 pins exist.
    for name in left.iter().filter(|n| n.starts_with("step_")) {
        let step: u64 = name["step_".len()..].parse().unwrap();
        assert_eq!(
            env.pin_holders(step),
            Vec::<String>::new(),
            "pins left in {name}"
        );
    }
    assert!(!env.root().join(".handoff/pins").exists());
}
