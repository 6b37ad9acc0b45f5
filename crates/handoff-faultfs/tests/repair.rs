//! `fsck --repair` on node B while node B cannot read what node A published
//! (opening its files fails with EIO, as on a soft NFS mount whose server does not
//! answer, or with ESTALE): an error is not evidence, so repair reports the
//! steps and removes nothing, however old they are; once the errors stop,
//! fsck finds them committed and whole.

use std::time::{Duration, Instant};

use handoff_testkit::age_tree;

use crate::nodes::two_nodes;
use crate::util::{Tally, adapter, code, run, serial, setup, stderr};

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn repair_removes_nothing_it_cannot_read() {
    let Some(setup) = setup() else { return };
    let _serial = serial();
    let started = Instant::now();
    let mut tally = Tally::default();
    for (errno, name) in [
        (libc::EIO, "handoff.manifest.json"),
        (libc::ESTALE, "adapter_model.safetensors"),
        (libc::EACCES, "STABLE"),
    ] {
        tally.seeds += 1;
        let rig = two_nodes("repair", &["root".to_owned()]);
        let (root_a, root_b) = (rig.at(0).join("root"), rig.at(1).join("root"));
        let src = rig.dir.join("src");
        adapter("repair").write_to(&src).unwrap();
        for step in ["1", "2"] {
            let out = run(
                setup.cmd("publish", &root_a, &["--step", step, src.to_str().unwrap()]),
                DEADLINE,
            );
            assert!(out.status.success(), "publish: {}", stderr(&out));
        }
        // Far older than the grace period: age alone would let repair act.
        age_tree(&root_a, Duration::from_secs(2 * 3600)).unwrap();
        rig.fs.fail_opens(1, name, Some(errno));
        let repair = run(
            setup.cmd("fsck", &root_b, &["--repair", "--json"]),
            DEADLINE,
        );
        rig.fs.fail_opens(1, name, None);
        let case = format!("{name} failing with errno {errno}");
        if !repair.status.success() {
            tally.broken(format!(
                "{case}: fsck --repair exit {}: {}",
                code(&repair),
                stderr(&repair)
            ));
            continue;
        }
        let report: serde_json::Value = serde_json::from_slice(&repair.stdout).unwrap();
        let entries = report["entries"].as_array().unwrap();
        // The scenario must have bitten: repair saw the steps, unreadable.
        let unreadable = entries
            .iter()
            .filter(|e| {
                e["state"] != "committed" && e["name"].as_str().unwrap().starts_with("step_")
            })
            .count();
        if unreadable != 2 {
            tally.broken(format!(
                "{case}: repair did not see both steps unreadable: {report}"
            ));
        }
        for entry in entries {
            if !entry["action"].is_null()
                && !entry["name"].as_str().unwrap().starts_with(".handoff")
            {
                tally.broken(format!(
                    "{case}: repair acted on an unreadable step: {entry}"
                ));
            }
        }
        for step in ["1", "2"] {
            let wait = run(
                setup.cmd(
                    "wait",
                    &root_b,
                    &["--step", step, "--verify", "hash", "--timeout", "5s"],
                ),
                DEADLINE,
            );
            if wait.status.success() {
                tally.count("kept_whole");
            } else {
                tally.broken(format!(
                    "{case}: step {step} after repair: {}",
                    stderr(&wait)
                ));
            }
        }
    }
    tally.report("repair-unreadable", "handoff", started.elapsed());
    assert_eq!(tally.accepted_broken, 0, "{:?}", tally.examples);
}
