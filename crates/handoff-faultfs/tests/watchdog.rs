//! The CLI's watchdog: a filesystem call that does not return (here an
//! unlink the filesystem holds) cannot keep the CLI from reporting the
//! deadline error at its `--deadline` plus a grace, and exiting 3.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use handoff_faultfs::Mode;

use crate::util::{Rig, adapter, base, copy_tree, run, serial, setup, stderr};

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
    // gc unpublishes step 1 by removing its STABLE: that unlink hangs for
    // longer than the deadline and the grace. A FUSE request already sent
    // cannot be abandoned (the kernel waits for the answer even for a
    // dying process), so the process ends only once it is answered; what
    // the watchdog guarantees is the error at the deadline plus the grace,
    // and the exit code once the process can go.
    let stall = Duration::from_secs(25);
    rig.fs.stall_unlink(0, "STABLE", stall);
    let root = rig.at(0).join("root");
    let start = Instant::now();
    let mut child = setup
        .cmd("gc", &root, &["--keep", "1", "--deadline", "1s"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, said) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send((start.elapsed(), line));
        }
    });
    let (when, line) = said
        .recv_timeout(Duration::from_secs(15))
        .expect("no error within 15 s of a 1 s deadline");
    assert!(
        line.contains("handoff: error (deadline-exceeded): gc did not finish within 6.0 s")
            && line.contains("a filesystem call did not return"),
        "{line}"
    );
    assert!(when < stall, "said at {when:?}");
    let status = child.wait().unwrap();
    assert_eq!(rig.fs.stalls_begun(), 1, "gc never reached the unlink");
    assert_eq!(status.code(), Some(3), "{status:?}");
    println!(
        "faultfs: watchdog said gc was stuck after {when:?}; the process ended after {:?}",
        start.elapsed()
    );
}
