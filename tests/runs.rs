//! Runs from the command line: `begin`, `--run`, and who is superseded.

use crate::util::*;

#[test]
fn a_restarted_trainer_begins_a_run_that_supersedes_the_old_one() {
    let env = Env::new();
    for step in 1..=3 {
        env.publish(step);
    }
    let begun = json(&env.run("begin", &["--json"]));
    assert_eq!(begun, serde_json::json!({ "run": 1 }));
    // The restarted trainer republishes step 2 in its run: no conflict.
    let src = env.src().display().to_string();
    let out = env.run("publish", &["--run", "1", "--step", "2", "--json", &src]);
    let written = json(&out);
    assert_eq!(written["run"], 1);
    assert_eq!(written["step"], 1_000_000_000_002u64);
    let latest = json(&env.run("wait", &["--latest", "--json", "--timeout", "1s"]));
    assert_eq!(latest["step"], 1_000_000_000_002u64);
    let next = json(&env.run("wait", &["--after", "1", "--json", "--timeout", "1s"]));
    assert_eq!(next["step"], 1_000_000_000_002u64, "not step 2 of run 0");
    // The old trainer, still running, is refused.
    let out = env.run("publish", &["--step", "4", &src]);
    assert_exit(&out, 5, "superseded");
    let failure = json_failure(&env.run("publish", &["--step", "4", "--json", &src]), 5);
    assert_eq!(failure["kind"], "conflict");
    // A run never begun is a usage mistake, not a conflict.
    let out = env.run("publish", &["--run", "7", "--step", "4", &src]);
    assert_exit(&out, 1, "never begun");
    // As text, begin prints the number alone, for `G=$(handoff begin ...)`.
    let out = env.run("begin", &[]);
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}
