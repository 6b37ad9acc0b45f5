//! Special files where the protocol expects regular ones: every command
//! returns within its bound and names the path, instead of blocking in an
//! open of a FIFO for good. (Inside the component, WASI reports a FIFO as a
//! file of unknown type: "a special file (a FIFO or a socket)".)

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use handoff_testkit::mkfifo;
use handoff_testkit::proc::run_within;

use crate::util::*;

/// What these runs must finish within: a hang is what they guard against.
const BOUND: Duration = Duration::from_secs(20);

/// Run `handoff <sub> --root <root> <args>` and fail if it hangs.
fn bounded(env: &Env, sub: &str, args: &[&str]) -> std::process::Output {
    let start = Instant::now();
    let out = run_within(&mut env.cmd(sub, args), BOUND)
        .unwrap_or_else(|out| panic!("{sub} {args:?} hung; stderr: {}", stderr(&out)));
    assert_within(start, BOUND);
    out
}

/// Steps 1 and 2 published, with `rel` of step 2 replaced by a FIFO.
fn fifo_in_step_2(rel: &str) -> Env {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    let path = env.root().join("step_2").join(rel);
    replace_with_fifo(&path);
    env
}

fn replace_with_fifo(path: &Path) {
    fs::remove_file(path).unwrap();
    mkfifo(path).unwrap();
}

#[test]
fn wait_for_a_step_with_a_fifo_payload_file_is_an_integrity_error() {
    let env = fifo_in_step_2("adapter_model.safetensors");
    let out = bounded(&env, "wait", &["--step", "2", "--timeout", "1s"]);
    assert_exit(
        &out,
        4,
        "step_2/adapter_model.safetensors is a special file (a FIFO or a socket), not a regular file",
    );
}

#[test]
fn wait_latest_passes_over_a_fifo_manifest_with_a_warning() {
    let env = fifo_in_step_2("handoff.manifest.json");
    let out = bounded(&env, "wait", &["--latest", "--timeout", "1s", "--json"]);
    let v = json(&out);
    assert_eq!(v["step"], 1);
    let warning = v["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("step_2/handoff.manifest.json is a special file (a FIFO or a socket)"),
        "{v}"
    );
    let out = bounded(&env, "wait", &["--latest", "--timeout", "1s"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("handoff: warning: step 2 skipped"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fsck_and_ls_report_a_fifo_manifest_and_go_on() {
    let env = fifo_in_step_2("handoff.manifest.json");
    let out = bounded(&env, "fsck", &["--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("handoff.manifest.json is a special file (a FIFO or a socket)"),
        "{text}"
    );
    let v = json(&bounded(&env, "ls", &["--json"]));
    assert_eq!(v["steps"][0]["state"], "committed");
    assert_eq!(v["steps"][1]["state"], "corrupt");
    let detail = v["steps"][1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("handoff.manifest.json is a special file (a FIFO or a socket)"),
        "{v}"
    );
}

#[test]
fn pin_of_a_step_whose_stable_is_a_fifo_is_refused_unopened() {
    let env = fifo_in_step_2("STABLE");
    let out = bounded(&env, "pin", &["--step", "2", "--holder", "r"]);
    assert_exit(
        &out,
        1,
        "step_2/STABLE is a special file (a FIFO or a socket), not a regular file",
    );
    // And gc, which reads pin files, is not held by one that is a FIFO.
    let pins = env.root().join(".handoff/pins/step_1");
    fs::create_dir_all(&pins).unwrap();
    mkfifo(&pins.join("r.json")).unwrap();
    let out = bounded(&env, "gc", &["--keep", "1"]);
    assert!(code(&out) == 0 || code(&out) == 6, "{}", stderr(&out));
}

#[test]
fn a_stable_that_is_a_directory_commits_nothing() {
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    let stable = env.root().join("step_2/STABLE");
    fs::remove_file(&stable).unwrap();
    fs::create_dir(&stable).unwrap();
    let v = json(&bounded(
        &env,
        "wait",
        &["--latest", "--timeout", "1s", "--json"],
    ));
    assert_eq!(v["step"], 1);
    let out = bounded(&env, "wait", &["--step", "2", "--timeout", "300ms"]);
    assert_exit(&out, 3, "step_2/STABLE is a directory, not a regular file");
    let v = json(&bounded(&env, "ls", &["--json"]));
    assert_eq!(v["steps"][1]["state"], "incomplete", "{v}");
    let out = bounded(&env, "fsck", &["--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STABLE is a directory"), "{text}");
}

#[test]
fn an_unreadable_newer_step_is_skipped_with_a_warning() {
    // Root reads past mode 000, so the newest step's manifest is made
    // unreadable another way: it does not parse.
    let env = Env::new();
    env.publish(1);
    env.publish(2);
    fs::write(
        env.root().join("step_2/handoff.manifest.json"),
        b"{not json",
    )
    .unwrap();
    let out = bounded(&env, "wait", &["--latest", "--timeout", "1s"]);
    assert_ok(&out);
    assert!(stdout_has(&out, "step 1 ready"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("step 2 skipped")
            && stderr(&out).contains("step_2/handoff.manifest.json"),
        "{}",
        stderr(&out)
    );
    let out = bounded(&env, "wait", &["--step", "2", "--timeout", "300ms"]);
    assert_exit(&out, 4, "step_2/handoff.manifest.json");
}

fn stdout_has(out: &std::process::Output, needle: &str) -> bool {
    String::from_utf8_lossy(&out.stdout).contains(needle)
}
