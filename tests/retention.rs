use std::fs;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn steps(v: &Value, key: &str) -> Vec<u64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

#[test]
fn pin_holds_a_step_against_gc_until_unpinned() {
    let env = Env::new();
    for step in 1..=4 {
        env.publish(step);
    }
    assert_ok(&env.run(
        "pin",
        &["--step", "2", "--holder", "server-a", "--ttl", "10m"],
    ));
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&v, "removed"), [1, 3]);
    assert_eq!(steps(&v, "kept"), [4]);
    assert_eq!(steps(&v, "pinned"), [2]);
    assert!(v["staging_removed"].as_array().unwrap().is_empty());
    assert!(!env.root().join("step_1").exists());
    assert!(env.root().join("step_2/STABLE").exists());
    assert_ok(&env.run("unpin", &["--step", "2", "--holder", "server-a"]));
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&v, "removed"), [2]);
}

#[test]
fn pin_and_unpin_bad_input() {
    let env = Env::new();
    env.publish(1);
    payload(&env.root().join("step_2"), "x", 10); // not committed
    // (command, step, holder, exit code, what stderr names)
    for (sub, step, holder, exit, named) in [
        ("pin", "2", "a", 1, "step_2"),
        ("pin", "9", "a", 1, "step_9"),
        ("pin", "1", "../escape", 2, "holder"),
        ("unpin", "1", "nobody", 1, "nobody"),
    ] {
        let out = env.run(sub, &["--step", step, "--holder", holder]);
        assert_exit(&out, exit, named);
    }
    assert_eq!(code(&env.run("pin", &["--step", "1"])), 2);
}

#[test]
fn gc_bad_input() {
    let env = Env::new();
    env.publish(1);
    assert_eq!(code(&env.run("gc", &["--keep", "0"])), 2);
    assert_eq!(code(&env.run("gc", &["--keep", "-1"])), 2);
    assert_eq!(code(&env.run("gc", &[])), 2);
}

#[test]
fn gc_with_malformed_pins_and_garbage_names_keeps_going() {
    let env = Env::new();
    for step in 1..=3 {
        env.publish(step);
    }
    fs::write(env.root().join("step_1/.handoff.pins/broken"), b"").unwrap();
    fs::create_dir_all(env.root().join("step_2/.handoff.pins/dir-not-file")).unwrap();
    fs::create_dir_all(env.root().join(".handoff/pins/garbage")).unwrap();
    for junk in ["step_x", "step_007", "README", ".nfs000123"] {
        fs::write(env.root().join(junk), b"junk").unwrap();
    }
    fs::create_dir(env.root().join("step_-4")).unwrap();
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    // A pin gc cannot read holds its step: better to keep than to pull it away.
    assert_eq!(steps(&v, "pinned"), [1, 2]);
    // Names that are not the protocol's stay, an NFS client's `.nfsXXXX`
    // stand-in for a file deleted while open among them.
    assert!(env.root().join("README").exists() && env.root().join("step_x").exists());
    assert!(env.root().join(".nfs000123").exists());
    let v = json(&env.run("fsck", &["--repair", "--json"]));
    let entries = v["entries"].as_array().unwrap();
    let stray: Vec<_> = entries
        .iter()
        .filter(|e| e["state"] == "stray")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        stray
            .iter()
            .any(|n| n.ends_with("step_1/.handoff.pins/broken")),
        "{stray:?}"
    );
    assert!(
        stray
            .iter()
            .any(|n| n.ends_with("step_2/.handoff.pins/dir-not-file")),
        "{stray:?}"
    );
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&v, "removed"), [1, 2]);
}

#[test]
fn fsck_classifies_and_repair_is_idempotent() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    payload(&env.root().join("step_3"), "x", 10);
    payload(&env.root().join(".handoff/staging/step_4.0001"), "x", 10);
    payload(&env.root().join(".handoff/staging/step_5.0002"), "x", 10);
    payload(&env.root().join(".handoff/trash/step_0.0001"), "x", 10);
    fs::remove_file(env.root().join("step_2/adapter_model.safetensors")).unwrap();
    let v = json(&env.run("fsck", &["--json"]));
    let entry = |v: &Value, name: &str| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    let state =
        |v: &Value, name: &str| entry(v, name).map(|e| e["state"].as_str().unwrap().to_string());
    assert_eq!(state(&v, "step_1").as_deref(), Some("committed"));
    assert_eq!(state(&v, "step_2").as_deref(), Some("corrupt"));
    assert_eq!(state(&v, "step_3").as_deref(), Some("incomplete"));
    assert_eq!(
        state(&v, ".handoff/staging/step_4.0001").as_deref(),
        Some("staging")
    );
    assert_eq!(
        state(&v, ".handoff/trash/step_0.0001").as_deref(),
        Some("trash")
    );
    // Without --repair nothing changed.
    assert!(env.root().join("step_3").exists());
    // A publish abandoned two hours ago; the other staging copy and the
    // broken steps are fresh: a writer may be at work on them. (Removing an
    // old broken step waits out a 30 s settle period: core tests cover it.)
    let two_hours = Duration::from_secs(2 * 3600);
    age_tree(&env.root().join(".handoff/staging/step_4.0001"), two_hours).unwrap();
    let first = json(&env.run("fsck", &["--repair", "--json"]));
    for fresh in ["step_2", "step_3", ".handoff/staging/step_5.0002"] {
        let e = entry(&first, fresh).unwrap();
        assert!(e["action"].is_null(), "{e}");
        assert!(e["detail"].as_str().unwrap().contains("grace"), "{e}");
        assert!(env.root().join(fresh).exists());
    }
    let second = json(&env.run("fsck", &["--repair", "--json"]));
    let third = json(&env.run("fsck", &["--repair", "--json"]));
    assert_eq!(second, third);
    let names: Vec<_> = second["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["step_1", "step_2", "step_3", ".handoff/staging/step_5.0002"]
    );
}

#[test]
fn publish_with_keep_collects_old_steps() {
    let env = Env::new();
    for step in 1..=4 {
        env.publish_with(step, &["--keep", "2"]);
    }
    let mut left: Vec<_> = fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("step_"))
        .collect();
    left.sort();
    assert_eq!(left, ["step_3", "step_4"]);
}

#[test]
fn wait_with_pin_holds_the_step() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    let v = json(&env.run(
        "wait",
        &["--latest", "--pin", "srv", "--json", "--timeout", "1s"],
    ));
    assert_eq!(v["step"], 2);
    env.publish(3);
    env.publish(4);
    // srv still holds 2; gc keeps it.
    let g = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&g, "pinned"), [2]);
    // Waiting for the next version keeps the old pin: srv may still serve 2
    // until it has switched over to 4.
    json(&env.run(
        "wait",
        &["--latest", "--pin", "srv", "--json", "--timeout", "1s"],
    ));
    let g = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&g, "pinned"), [2]);
    // Switched over: the unpin ends the hand-over.
    assert_ok(&env.run("unpin", &["--step", "2", "--holder", "srv"]));
    let g = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&g, "removed"), [2]);
}

#[test]
fn watch_with_pin_hands_over_when_asked_for_the_next_step() {
    let (env, mut watch) = watching_step_1(&["--pin", "srv", "--poll", "20ms"]);

    // The consumer has not asked for more: step 1 stays pinned however many
    // steps arrive.
    env.publish(2);
    env.publish(3);
    std::thread::sleep(Duration::from_millis(200));
    let g = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&g, "pinned"), [1]);
    assert_eq!(steps(&g, "removed"), [2]);

    // Asked: the next step is pinned, then step 1 released.
    watch.ask.write_all(b"next\n").unwrap();
    assert_eq!(watch.next()["step"], 3);
    let g = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&g, "removed"), [1]);
    assert_eq!(env.pin_holders(3), ["srv"]);

    // End of input: watch ends, its last pin left for the consumer.
    watch.end_input();
    assert_eq!(env.pin_holders(3), ["srv"]);
}

#[test]
fn watch_with_pin_renews_the_pin_while_the_consumer_uses_the_step() {
    let (env, watch) = watching_step_1(&["--pin", "srv", "--ttl", "2s"]);
    env.publish(2);
    // Served for more than twice the ttl: without renewal the pin would
    // have expired (gc allows no skew here) and step 1 would go.
    std::thread::sleep(Duration::from_millis(4500));
    let g = json(&env.run("gc", &["--keep", "1", "--skew", "0s", "--json"]));
    assert_eq!(steps(&g, "pinned"), [1], "{g}");
    assert_eq!(env.pin_holders(1), ["srv"], "one pin, renewed in place");
    watch.end_input();
}

#[test]
fn watch_prints_each_new_step_in_order() {
    let (env, mut watch) = watching_step_1(&[]);
    env.publish(2);
    env.publish(3);
    assert_eq!(watch.next()["step"], 2);
    let third = watch.next();
    assert_eq!(third["step"], 3);
    assert!(third["path"].as_str().unwrap().ends_with("step_3"));
    watch.child.kill().unwrap();
    watch.child.wait().unwrap();
    let _ = Duration::ZERO;
}

/// A running `handoff watch`: its input, where the consumer asks for the
/// next step, and its output, one JSON line per step.
struct Watch {
    child: Child,
    ask: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// A root with step 1, and a `handoff watch --from 1 --json <args>` that
/// has printed it.
fn watching_step_1(args: &[&str]) -> (Env, Watch) {
    let env = Env::new();
    env.publish(1);
    let mut watch = Watch::start(&env, &[&["--from", "1", "--json"], args].concat());
    assert_eq!(watch.next()["step"], 1);
    (env, watch)
}

impl Watch {
    fn start(env: &Env, args: &[&str]) -> Watch {
        let mut child = env
            .cmd("watch", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Watch {
            ask: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
        }
    }

    /// The next step it prints.
    fn next(&mut self) -> Value {
        serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap()
    }

    /// Closes its input, which must end it successfully.
    fn end_input(self) {
        let Watch { mut child, ask, .. } = self;
        drop(ask);
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn gc_never_removes_the_only_valid_step_for_newer_ones_that_do_not_validate() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    // What a writer that only touches STABLE leaves.
    std::fs::create_dir(env.root().join("step_3")).unwrap();
    std::fs::write(env.root().join("step_3/STABLE"), b"").unwrap();
    let v = json(&env.run("gc", &["--keep", "1", "--json"]));
    assert_eq!(steps(&v, "kept"), [2]);
    assert_eq!(steps(&v, "removed"), [1]);
    assert_eq!(steps(&v, "invalid"), [3]);
    let out = env.run("gc", &["--keep", "1"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("left [3]"));
    assert_ok(&env.run(
        "wait",
        &["--step", "2", "--verify", "hash", "--timeout", "1s"],
    ));
}

#[test]
fn gc_reports_what_it_cannot_remove_goes_on_and_exits_6() {
    let env = Env::new();
    for step in 1..=3 {
        env.publish(step);
    }
    // A pin directory that is not one: gc cannot list it, so cannot claim
    // step 1.
    let pins = env.root().join("step_1/.handoff.pins");
    fs::remove_dir(&pins).unwrap();
    fs::write(&pins, b"").unwrap();
    let out = env.run("gc", &["--keep", "1", "--json"]);
    assert_exit(&out, 6, "gc-incomplete");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(steps(&v, "removed"), [2]);
    assert_eq!(steps(&v, "kept"), [3]);
    let failed = v["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["name"], "step_1");
    assert_eq!(failed[0]["error"]["kind"], "io");
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains(".handoff.pins"), "{message}");
    // stdout is still one object: the report, carrying the failure.
    assert_eq!(v["error"]["kind"], "gc-incomplete", "{v}");
    assert_eq!(v["error"]["exit_code"], 6, "{v}");
    assert!(env.root().join("step_1/STABLE").exists());

    let out = env.run("gc", &["--keep", "1"]);
    assert_exit(&out, 6, "could not remove 1 entry");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gc: could not remove step_1 (io): "),
        "{text}"
    );

    // The gc of --keep after a publish that succeeded: the same.
    let src = env.src();
    let out = env.run(
        "publish",
        &[
            "--step",
            "4",
            "--keep",
            "1",
            "--json",
            src.to_str().unwrap(),
        ],
    );
    assert_exit(&out, 6, "gc-incomplete");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["step"], 4);
    assert_eq!(steps(&v["gc"], "removed"), [3]);
    assert_eq!(v["gc"]["failed"][0]["name"], "step_1");
}

/// A small tmpfs on a fresh directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounted with `options`, or `None` after saying why not (it needs
    /// root).
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(dir)),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (this test needs root): {}",
                    stderr(&out).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Fill `dir`'s filesystem: its space, then its inodes.
fn fill(dir: &std::path::Path) {
    fs::create_dir(dir).unwrap();
    let mut big = fs::File::create(dir.join("big")).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while big.write_all(&chunk).is_ok() {}
    drop(big);
    for n in 0.. {
        if fs::File::create(dir.join(n.to_string())).is_err() {
            break;
        }
    }
    let err = fs::write(dir.join("probe"), b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
}

#[test]
fn gc_frees_space_on_a_full_filesystem() {
    let Some(tmpfs) = Tmpfs::mount("size=2m,nr_inodes=64") else {
        return;
    };
    let env = Env::new();
    let root = tmpfs.0.path().join("root");
    fs::create_dir(&root).unwrap();
    let root = root.to_str().unwrap();
    let src = env.src();
    for step in ["1", "2", "3"] {
        let out = handoff()
            .args(["publish", "--root", root, "--step", step])
            .arg(&src)
            .output()
            .unwrap();
        assert_ok(&out);
    }
    // What a publisher that died left.
    let dead = tmpfs.0.path().join("root/.handoff/staging/step_9.dead");
    payload(&dead, "dead", 1024);
    // Not the protocol's: gc leaves it, and it holds every byte and inode.
    fill(&tmpfs.0.path().join("root/filler"));

    // Without room for its clock file or its trash directory, gc still
    // frees space. (--skew 0s: this node is the server.)
    let out = handoff()
        .args(["gc", "--root", root, "--keep", "1", "--json"])
        .args(["--grace", "1ms", "--skew", "0s"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(steps(&v, "removed"), [1, 2]);
    assert_eq!(steps(&v, "kept"), [3]);
    assert_eq!(v["staging_removed"], serde_json::json!(["step_9.dead"]));
    assert_eq!(v["failed"], serde_json::json!([]));
    assert!(!tmpfs.0.path().join("root/step_1").exists());
    assert!(!dead.exists());
    fs::write(
        tmpfs.0.path().join("root/filler/probe"),
        vec![1u8; 64 * 1024],
    )
    .expect("gc freed no space");
    let out = handoff()
        .args(["wait", "--root", root, "--step", "3", "--verify", "hash"])
        .args(["--timeout", "1s"])
        .output()
        .unwrap();
    assert_ok(&out);
}
