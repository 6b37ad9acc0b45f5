//! The CLI's watchdog: a filesystem call that does not return (here an
//! unlink the filesystem holds for a minute) cannot hold the CLI past its
//! `--deadline` and a grace; it exits with the deadline error instead.

use std::time::{Duration, Instant};

use handoff_faultfs::Mode;

use crate::util::{Rig, adapter, base, code, copy_tree, run, serial, setup, stderr};

#[test]
fn a_stuck_call_ends_at_the_deadline_plus_the_grace() {
    let Some(setup) = setup() else { return };
    let _serial = serial();
    let work = base().join(format!("watchdog-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let template = work.join("root");
    std::fs::create_dir_all(&template).unwrap();
    for step in ["1", "2"] {
        let src = work.join(format!("src{step}"));
        adapter("watchdog").write_to(&src).unwrap();
        let out = run(
            setup.cmd(
                "publish",
                &template,
                &["--step", step, src.to_str().unwrap()],
            ),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "publish {step}: {}", stderr(&out));
    }
    let rig = Rig::new("watchdog", Mode::Nodes(1), |backing| {
        copy_tree(&template, &backing.join("root"))
    });
    let _ = std::fs::remove_dir_all(&work);
    // gc unpublishes step 1 by removing its STABLE: that unlink hangs.
    rig.fs.stall_unlink(0, "STABLE", Duration::from_secs(60));
    let root = rig.at(0).join("root");
    let start = Instant::now();
    let out = run(
        setup.cmd("gc", &root, &["--keep", "1", "--deadline", "1s"]),
        Duration::from_secs(40),
    );
    let took = start.elapsed();
    assert_eq!(rig.fs.stalls_begun(), 1, "gc never reached the unlink");
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("gc did not finish within 6.0 s")
            && stderr(&out).contains("a filesystem call did not return"),
        "{}",
        stderr(&out)
    );
    // The deadline (1 s) and the grace (5 s), not the minute of the stall.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    println!("faultfs: watchdog ended a stuck gc after {took:?}");
}
