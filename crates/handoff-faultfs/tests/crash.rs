//! Crashes on a lazy mount. Each seed: a root holding committed step 1; the
//! writer (real `handoff publish`/`seal`, or the naive writer) runs as a child
//! process and is SIGKILLed at a seeded state-changing request; a seeded
//! background writeback runs; the filesystem crashes and is remounted from
//! its backing directory. Then the reader's verdict on step 2:
//!
//! - handoff: `handoff wait --step 2 --timeout 1s --verify hash` and
//!   `handoff fsck --json`. Accepting (exit 0, or state `committed`) a step
//!   whose files are not exactly the payload is an accepted-broken version.
//!   Also counted, and required to be zero: an acknowledged write (exit 0)
//!   lost, step 1 no longer valid, a `corrupt` step (STABLE durable before
//!   its data), and a failed recovery (`fsck --repair`, then the same write
//!   again, must succeed).
//! - naive: `test -f step_2/STABLE` is acceptance; broken as above.
//!
//! Kill points are stratified over the writer's clean-run request count plus
//! a quarter more (crashes after the writer finished), so every seed set
//! covers the whole sequence; the writeback is what lets a writer that never
//! fsyncs leave STABLE durable and its data not.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use handoff_faultfs::{Mode, SeededRng, owned_dir};

use crate::util::{
    Payload, Rig, Setup, Tally, adapter, base, code, copy_tree, fsck_state, run, seeds, serial,
    setup, stderr,
};

const STEP: &str = "2";
const WORKERS: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Staged: copy into staging, seal there, rename into the root.
    Publish,
    /// In place: the payload is already in `step_2/`.
    Seal,
    /// A reader's local copy: fetch step 2 from a shared root on the real
    /// disk into the lazy mount's root.
    Fetch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Handoff,
    /// prime-rl's protocol: write the files, touch STABLE, no fsync.
    Naive,
}

/// What every seed of one scenario shares.
struct Scenario<'a> {
    setup: &'a Setup,
    op: Op,
    tool: Tool,
    /// The root with committed step 1, copied into each fresh backing store.
    template: PathBuf,
    src: PathBuf,
    /// For a fetch: the shared root (on the real disk) holding step 2.
    shared: PathBuf,
    payload: Payload,
    seeds: u64,
    /// State-changing requests of a clean run of the writer.
    clean_requests: u64,
}

impl Scenario<'_> {
    fn init(&self) -> impl Fn(&Path) + '_ {
        |backing: &Path| copy_tree(&self.template, &backing.join("root"))
    }

    /// The writer's command line. The naive writers are plain shell, as a
    /// trainer script would do it.
    fn writer(&self, root: &Path) -> Command {
        match (self.tool, self.op) {
            (Tool::Handoff, Op::Publish) => self.setup.cmd(
                "publish",
                root,
                &["--step", STEP, self.src.to_str().unwrap()],
            ),
            // A stable writer id, as a trainer that may be restarted
            // mid-seal needs: run again, it takes over its own claim.
            (Tool::Handoff, Op::Seal) => {
                self.setup
                    .cmd("seal", root, &["--step", STEP, "--writer", "trainer-0"])
            }
            (Tool::Handoff, Op::Fetch) => self.setup.cmd(
                "fetch",
                &self.shared,
                &["--step", STEP, "--to", root.to_str().unwrap()],
            ),
            // What a loader script does without handoff: copy the step
            // directory, STABLE and all, and trust it.
            (Tool::Naive, Op::Fetch) => {
                shell(r#"cp -r "$2"/step_2 "$1"/step_2"#, root, &self.shared)
            }
            (Tool::Naive, Op::Publish) => shell(
                r#"t="$1/.tmp-step_2"; mkdir -p "$t" && cp "$2"/* "$t"/ && touch "$t"/STABLE && mv "$t" "$1"/step_2"#,
                root,
                &self.src,
            ),
            (Tool::Naive, Op::Seal) => shell(
                r#"mkdir -p "$1"/step_2 && cp "$2"/* "$1"/step_2/ && touch "$1"/step_2/STABLE"#,
                root,
                &self.src,
            ),
        }
    }

    /// What happens before the writer runs: for handoff seal, the trainer's
    /// own unsynced writes of the payload into step_2.
    fn prepare(&self, root: &Path) {
        if (self.tool, self.op) == (Tool::Handoff, Op::Seal) {
            self.payload.write_to(&root.join("step_2")).unwrap();
        }
    }

    fn name(&self) -> &'static str {
        match self.op {
            Op::Publish => "crash-publish",
            Op::Seal => "crash-seal",
            Op::Fetch => "crash-fetch",
        }
    }

    fn tool_name(&self) -> &'static str {
        match self.tool {
            Tool::Handoff => "handoff",
            Tool::Naive => "naive",
        }
    }
}

fn shell(script: &str, root: &Path, src: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").arg(root).arg(src);
    cmd
}

/// The seeded kill point: stratified over `0..span` so the seeds spread over
/// the whole request sequence; `None` (no kill) past the clean-run count.
fn kill_point(seed: u64, seeds: u64, clean: u64) -> Option<u64> {
    let span = clean + clean / 4 + 1;
    let u = SeededRng::new(seed).unit();
    let k = ((seed as f64 + u) * span as f64 / seeds as f64) as u64;
    (k < clean).then_some(k)
}

fn run_scenario(op: Op, tool: Tool) {
    let Some(setup) = setup() else { return };
    let _serial = serial();
    let started = Instant::now();
    let work = owned_dir(&base(), "crash-src").unwrap();
    let payload = adapter(&format!("crash-{op:?}"));
    let src = work.join("src");
    payload.write_to(&src).unwrap();
    // The template: a root where step 1 is committed (published on a real disk).
    let template = work.join("root");
    fs::create_dir(&template).unwrap();
    adapter("step-1").write_to(&work.join("src1")).unwrap();
    let out = run(
        setup.cmd(
            "publish",
            &template,
            &["--step", "1", work.join("src1").to_str().unwrap()],
        ),
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "publish of step 1 failed: {}",
        stderr(&out)
    );

    // The shared root a fetch copies from: step 2 of the payload, committed
    // on the real disk.
    let shared = work.join("shared");
    fs::create_dir(&shared).unwrap();
    let out = run(
        setup.cmd("publish", &shared, &["--step", STEP, src.to_str().unwrap()]),
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "publish of the shared step failed: {}",
        stderr(&out)
    );

    let mut scenario = Scenario {
        setup,
        op,
        tool,
        template,
        src,
        shared,
        payload,
        seeds: seeds(50),
        clean_requests: 0,
    };
    scenario.clean_requests = measure(&scenario);

    let tally = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let scenario = &scenario;
                scope.spawn(move || {
                    let mut rig = Rig::new("crash", Mode::Lazy, scenario.init());
                    let mut tally = Tally::default();
                    for seed in (w..scenario.seeds).step_by(WORKERS as usize) {
                        one_seed(scenario, &mut rig, seed, &mut tally);
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        let mut panic = None;
        for worker in workers {
            match worker.join() {
                Ok(t) => total.merge(t),
                Err(p) => panic = Some(p),
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        total
    });
    let _ = fs::remove_dir_all(&work);
    let mut tally = tally;
    tally
        .detail
        .insert("clean_requests".to_owned(), scenario.clean_requests);
    tally.report(scenario.name(), scenario.tool_name(), started.elapsed());
    match tool {
        Tool::Handoff => {
            assert_eq!(
                tally.accepted_broken, 0,
                "handoff accepted a broken version: {:?}",
                tally.examples
            );
            for must_be_zero in [
                "lost_acked",
                "earlier_lost",
                "state_corrupt",
                "recovery_failed",
            ] {
                assert_eq!(
                    tally.get(must_be_zero),
                    0,
                    "{must_be_zero}: {:?}",
                    tally.detail
                );
            }
        }
        Tool::Naive => assert!(
            tally.accepted_broken >= 1,
            "the naive writer never left an accepted-but-broken version: the test cannot fail ({:?})",
            tally.detail
        ),
    }
}

/// The number of state-changing requests of one clean run of the writer.
fn measure(scenario: &Scenario<'_>) -> u64 {
    let rig = Rig::new("crash-measure", Mode::Lazy, scenario.init());
    let root = rig.at(0).join("root");
    scenario.prepare(&root);
    let before = rig.fs.mutations();
    let out = run(scenario.writer(&root), DEADLINE);
    assert!(
        out.status.success(),
        "clean {:?} failed on the lazy mount: {}",
        scenario.op,
        stderr(&out)
    );
    rig.fs.mutations() - before
}

fn one_seed(scenario: &Scenario<'_>, rig: &mut Rig, seed: u64, tally: &mut Tally) {
    let setup = scenario.setup;
    rig.reset(scenario.init());
    let root = rig.at(0).join("root");
    scenario.prepare(&root);

    let kill = kill_point(seed, scenario.seeds, scenario.clean_requests);
    if let Some(k) = kill {
        rig.fs.arm_kill(k);
    }
    let out = run(scenario.writer(&root), DEADLINE);
    let killed = rig.fs.disarm_kill();
    let acked = out.status.success();
    match (kill, killed) {
        (None, _) => assert!(
            acked,
            "seed {seed}: unkilled writer failed: {}",
            stderr(&out)
        ),
        (Some(_), Some(_)) => tally.count("killed"),
        // The run made fewer requests than the clean one: it finished.
        (Some(_), None) => {}
    }
    tally.count(if acked { "completed" } else { "interrupted" });

    let wb = rig.fs.writeback(seed.wrapping_mul(0x9e37) ^ 0xc0ffee);
    if wb.entry_ops > 0 || wb.files > 0 {
        tally.count("writeback");
    }
    rig.fs.crash().unwrap();
    rig.remount();

    let step = root.join("step_2");
    let content = scenario.payload.check(&step);
    tally.seeds += 1;
    match scenario.tool {
        Tool::Naive => {
            if step.join("STABLE").exists() {
                tally.count("accepted");
                if let Err(why) = content {
                    tally.broken(format!(
                        "seed={seed} kill={kill:?} writeback={wb:?}: STABLE present, {why}"
                    ));
                }
            }
        }
        Tool::Handoff => {
            let wait = wait_hash(setup, &root, STEP);
            let state = fsck_state(setup, &root, "step_2");
            tally.count(&format!("state_{state}"));
            tally.count(&format!("wait_exit_{}", code(&wait)));
            let accepted = wait.status.success() || state == "committed";
            if accepted && let Err(why) = &content {
                tally.broken(format!(
                    "seed={seed} kill={kill:?} writeback={wb:?}: wait exit {}, fsck {state}, {why}",
                    code(&wait)
                ));
            }
            if acked && !wait.status.success() {
                tally.count("lost_acked");
            }
            let earlier = wait_hash(setup, &root, "1");
            if !earlier.status.success() {
                tally.count("earlier_lost");
            }
            if state != "committed" && !recovers(scenario, &root) {
                tally.count("recovery_failed");
            }
        }
    }
}

/// After a crash that left step 2 uncommitted: `fsck --repair`, then the
/// same write again, must commit it.
/// `handoff wait --verify hash` for `step` after the crash, with a second to
/// see it and a second to let it settle.
fn wait_hash(setup: &Setup, root: &Path, step: &str) -> Output {
    let args = [
        "--step",
        step,
        "--timeout",
        "1s",
        "--settle",
        "1s",
        "--verify",
        "hash",
    ];
    run(setup.cmd("wait", root, &args), DEADLINE)
}

fn recovers(scenario: &Scenario<'_>, root: &Path) -> bool {
    let setup = scenario.setup;
    let repair = run(setup.cmd("fsck", root, &["--repair"]), DEADLINE);
    if !repair.status.success() {
        eprintln!("fsck --repair failed: {}", stderr(&repair));
        return false;
    }
    scenario.prepare(root);
    let again = run(scenario.writer(root), DEADLINE);
    let wait = run(
        setup.cmd(
            "wait",
            root,
            &["--step", STEP, "--timeout", "1s", "--verify", "hash"],
        ),
        DEADLINE,
    );
    if !again.status.success() || !wait.status.success() {
        eprintln!(
            "recovery: write exit {}: {}; wait: {}",
            code(&again),
            stderr(&again),
            stderr(&wait)
        );
        return false;
    }
    scenario.payload.check(&root.join("step_2")).is_ok()
}

/// Each scenario with its control: handoff never accepts a broken version
/// after a crash, and the naive writer and reader, in the same scenario, are
/// caught (so the scenario can fail).
#[test]
fn crash_never_accepts_a_broken_version_where_a_naive_writer_is_caught() {
    for op in [Op::Publish, Op::Seal, Op::Fetch] {
        run_scenario(op, Tool::Handoff);
        run_scenario(op, Tool::Naive);
    }
}
