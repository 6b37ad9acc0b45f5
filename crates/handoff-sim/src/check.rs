//! Scenarios and invariants.
//!
//! Three kinds of scenario, each run per protocol and operation:
//! - **crash**: set up a root, record every mutating call of one operation,
//!   and at every crash point (after call k, for every k) check every crash
//!   state the model allows;
//! - **race**: run a second process whole in between two storage calls of
//!   the first (at every call, reads included), then check the outcome live
//!   and under crashes;
//! - **lagging reader**: a reader on another node, seeded lags, while the
//!   writer publishes.
//!
//! gc, pin and fsck run on nodes of their own ([`NodeView`]: a client's
//! attribute and negative look-up caches over the shared model): both
//! processes of `gc-pin-race` and `gc-race`, the long-lived reader of
//! `wait-pin` and the gc some cases run after a crash, and `fsck-repair`. A node
//! whose reader read a step a moment before has it cached as present.
//!
//! The invariants, checked on every state (see [`check_state`]):
//! 1. a reader never accepts a version whose files differ from what the
//!    writer wrote;
//! 2. once publish/seal returned OK, no crash loses that version (nor does
//!    any operation lose versions committed before it);
//! 3. after any crash, `fsck --repair` (its grace period shorter than the
//!    time since the crash) leaves only complete committed versions and no
//!    staging or trash, and a second repair changes nothing;
//! 4. gc never removes a pinned step;
//! 5. of two publishers of one step, one wins whole and the other gets a
//!    conflict.
//!
//! And a few the issue implies: what `list` calls committed, a reader can
//! load; repair never removes a version a reader accepts; gc honours a pin
//! within its clock-skew allowance; a long-lived reader moving its pin
//! forward always holds a durable pin on the step it serves or the next.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use handoff_core::layout::{RUN_SPAN, parse_step};
use handoff_core::{Error, ErrorKind, Platform, Storage, Target};

use crate::model::{
    CrashOptions, FsState, Model, Node, Recording, Rng, SimPlatform, Tree, mix, show_bytes,
    show_tree,
};
use crate::node::{NodeCaches, NodeView};
use crate::protocols::{
    Commit, Files, GcParams, Handoff, HandoffV1, Naive, Operation, PREFIX, Pin, Protocol, Read,
    SETTLE_MS, StableReader, Written,
};
use crate::view::{LaggingView, Lags, Timeline};

/// When scenarios start, milliseconds since the Unix epoch.
const T0_MS: u64 = 1_700_000_000_000;
/// How long after the crash recovery runs.
const RECOVERY_GAP_MS: u64 = 1_000;
/// A reader's deadline in crash states (virtual time: costs nothing real).
const WAIT_MS: u64 = 60;
const WRITER: &str = "writer-a";
const RIVAL: &str = "writer-b";
const HOLDER: &str = "reader-1";
const LATE_HOLDER: &str = "reader-2";
const PIN_TTL_MS: u64 = 60_000;
/// gc keeps the newest step; a pin counts 2 s past its expiry.
const GC: GcParams = GcParams {
    keep: 1,
    grace_ms: 3_600_000,
    skew_ms: 2_000,
};
/// The lagging reader: the writer makes one call per millisecond; names,
/// sizes and data lag up to 20 ms; failed look-ups are cached for 10 ms.
const OP_MS: u64 = 1;
const MAX_LAG_MS: u64 = 20;
const NEGATIVE_TTL_MS: u64 = 10;
/// A reader warmed its node's cache this long before the race, at most.
const WARM_MS: u64 = 1_000;

/// The caches of node `node` of a scenario (TTLs drawn per node from the
/// seed, see [`NodeCaches::drawn`]).
fn caches(seed: u64, node: u64) -> NodeCaches {
    NodeCaches::drawn(mix(seed ^ mix(node ^ 0xcac4e)))
}

/// A node whose reader read `step` a moment before (age drawn from the
/// seed): the step directory and its payload and manifest are cached as
/// present. Names starting with `.` are the protocol's own, which a reader
/// does not look up.
fn reader_node(name: &str, model: &Model, clock: &SimPlatform, seed: u64, step: u64) -> NodeView {
    let node = NodeView::new(name, model, clock, caches(seed, step ^ 0x9ead));
    let dir = handoff_core::layout::step_name(PREFIX, step);
    let age = Rng::new(mix(seed ^ 0xa9e)).below(WARM_MS + 1);
    node.warm(&dir, age, |path| {
        !path.split('/').skip(1).any(|part| part.starts_with('.'))
    });
    node
}

/// A trace's first words: whether it shows a violation, and of what.
fn trace_head<P: Protocol>(op: Operation, problems: &[String]) -> String {
    let verdict = if problems.is_empty() {
        "STATE"
    } else {
        "VIOLATION"
    };
    format!("{verdict} protocol={} operation={}", P::NAME, op.name())
}

/// The nodes of a race or a crash case and what they answered from their
/// caches, for traces.
fn show_nodes(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    for node in nodes {
        let c = node.caches();
        let _ = write!(
            out,
            "  node {} (attributes cached {} ms, failed look-ups {} ms), answered from its \
             cache:\n{}",
            node.name(),
            c.attr_ttl_ms,
            c.negative_ttl_ms,
            node.show_log()
        );
    }
    out
}

/// How much to explore.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Seed of every random choice; printed, so a run replays.
    pub seed: u64,
    /// Crash states per crash point are enumerated exhaustively up to this.
    pub exhaustive_limit: usize,
    /// Otherwise this many are sampled.
    pub samples: usize,
    /// Lagging-reader runs per operation.
    pub view_runs: u64,
}

impl Budget {
    /// What CI runs.
    pub fn full(seed: u64) -> Budget {
        Budget {
            seed,
            exhaustive_limit: 4096,
            samples: 512,
            view_runs: 10_000,
        }
    }

    /// A quick run for `cargo test`.
    pub fn reduced(seed: u64) -> Budget {
        Budget {
            seed,
            exhaustive_limit: 256,
            samples: 32,
            view_runs: 300,
        }
    }

    /// The command-line flags that reproduce this budget.
    pub fn flags(&self) -> String {
        format!(
            "--seed {} --exhaustive-limit {} --samples {} --view-runs {}",
            self.seed, self.exhaustive_limit, self.samples, self.view_runs
        )
    }

    fn crash_options(&self, point: u64) -> CrashOptions {
        CrashOptions {
            exhaustive_limit: self.exhaustive_limit,
            samples: self.samples,
            seed: mix(self.seed ^ mix(point)),
        }
    }
}

/// Which states to look at: all (a report) or one (a replay).
#[derive(Clone, Debug, Default)]
pub struct Focus {
    /// fsck-repair: only this starting root (0: the untidy root; then the
    /// crash states of publish, seal and gc).
    pub root: Option<usize>,
    /// Races: only this interleaving (the second process runs after this
    /// many calls of the first).
    pub interleave_at: Option<usize>,
    /// Only this crash point (crash after this many mutating calls).
    pub crash_at: Option<usize>,
    /// Only this state of the crash point (or this lagging-reader run).
    pub state: Option<usize>,
    /// Print a trace of every state looked at, violation or not.
    pub verbose: bool,
}

/// What checking one protocol's operation found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The protocol's name.
    pub protocol: &'static str,
    /// Whether it is a reference protocol (expected to fail).
    pub reference: bool,
    /// The operation.
    pub operation: Operation,
    /// States checked.
    pub states: u64,
    /// States with at least one violated invariant.
    pub violations: u64,
    /// The trace of the first violation found (crash points in order, fewest
    /// kept operations first).
    pub first: Option<String>,
    /// Traces of every state looked at, with [`Focus::verbose`].
    pub shown: Vec<String>,
    /// Why the operation could not be checked, if it could not.
    pub skipped: Option<String>,
    /// Crash points looked at.
    pub crash_points: u64,
    /// Of those, the ones with too many states, sampled rather than
    /// enumerated.
    pub sampled_points: u64,
}

impl Outcome {
    fn new<P: Protocol>(operation: Operation) -> Outcome {
        Outcome {
            protocol: P::NAME,
            reference: P::REFERENCE,
            operation,
            states: 0,
            violations: 0,
            first: None,
            shown: Vec::new(),
            skipped: None,
            crash_points: 0,
            sampled_points: 0,
        }
    }

    /// The report line.
    pub fn line(&self) -> String {
        let mut line = format!(
            "protocol={} operation={} states={} violations={}",
            self.protocol,
            self.operation.name(),
            self.states,
            self.violations
        );
        if let Some(why) = &self.skipped {
            let _ = write!(line, " skipped=\"{why}\"");
        }
        line
    }

    fn crash_point(&mut self, exhaustive: bool) {
        self.crash_points += 1;
        if !exhaustive {
            self.sampled_points += 1;
        }
    }

    /// Count one checked state; keep a trace of it if it broke an invariant
    /// (the first one) or if asked to.
    fn record(
        &mut self,
        problems: &[String],
        verbose: bool,
        trace: impl FnOnce(&[String]) -> String,
    ) {
        self.states += 1;
        if !problems.is_empty() {
            self.violations += 1;
        }
        if verbose || (!problems.is_empty() && self.first.is_none()) {
            let text = trace(problems);
            if !problems.is_empty() && self.first.is_none() {
                self.first = Some(text.clone());
            }
            if verbose {
                self.shown.push(text);
            }
        }
    }
}

/// What must hold in a state.
#[derive(Clone, Debug, Default)]
struct Expect {
    /// What each step may legitimately hold (two candidates in a race).
    known: BTreeMap<u64, Vec<Written>>,
    /// Steps a reader must find.
    must_read: BTreeSet<u64>,
    /// Steps gc reported removed: no reader may accept them any more.
    must_not_read: BTreeSet<u64>,
    /// Pinned steps: their files must stay, through gc and fsck --repair.
    protected: BTreeSet<u64>,
    /// A long-lived reader: it must hold a pin on at least one of these
    /// steps (the one it serves, or the one it is moving to).
    held: Option<(&'static str, BTreeSet<u64>)>,
    /// Run gc after the crash too, and check that `protected` and the steps
    /// `held` pins survive it.
    gc_after_crash: bool,
}

/// A root set up for an operation.
struct Scenario {
    model: Model,
    clock: SimPlatform,
    /// What was done before the operation, for traces.
    setup: Vec<String>,
    known: BTreeMap<u64, Vec<Written>>,
    /// Committed before the operation: must survive it.
    committed: BTreeSet<u64>,
}

impl Scenario {
    /// A root where `p` published `steps` (as [`WRITER`]), then everything
    /// was synced.
    fn new<P: Protocol>(p: P, steps: &[u64]) -> Scenario {
        let clock = SimPlatform::new(T0_MS, mix(0x5eed));
        let model = Model::new(&clock);
        let mut known = BTreeMap::new();
        for &step in steps {
            let written = Written::new(step, WRITER);
            if let Err(e) = p.write(&model, &clock, Commit::Publish(&written)) {
                panic!("setup: {} could not publish step {step}: {e}", P::NAME);
            }
            known.insert(step, vec![written]);
        }
        model.sync_all();
        Scenario {
            model,
            clock,
            setup: vec![format!(
                "{} published steps {steps:?} as {WRITER}, then everything was synced",
                P::NAME
            )],
            known,
            committed: steps.iter().copied().collect(),
        }
    }

    fn expect(&self) -> Expect {
        Expect {
            known: self.known.clone(),
            must_read: self.committed.clone(),
            ..Expect::default()
        }
    }

    fn pin_in_setup<P: Protocol>(&mut self, p: P, step: u64, ttl_ms: u64) -> Result<(), String> {
        match p.pin(
            &self.model,
            &self.clock,
            Pin {
                step,
                holder: HOLDER,
                ttl_ms,
            },
        ) {
            None => Err(format!("{} has no pin", P::NAME)),
            Some(Err(e)) => panic!("setup: pin of step {step} failed: {e}"),
            Some(Ok(())) => {
                self.model.sync_all();
                self.setup.push(format!(
                    "{HOLDER} pinned step {step} for {ttl_ms} ms, then everything was synced"
                ));
                Ok(())
            }
        }
    }
}

type Action = Box<dyn FnOnce(&Model, &SimPlatform) -> Option<Result<(), Error>>>;

/// One operation, crashed at every call.
struct CrashCase {
    scenario: Scenario,
    /// What the operation is, for traces.
    action: String,
    run: Action,
    /// What holds at every crash point.
    during: Expect,
    /// What holds once the operation returned OK.
    after: Expect,
}

/// The roots an operation is crashed on: one, but for fsck-repair also
/// every crash state of publish, seal and gc.
fn crash_cases<P: Protocol>(
    p: P,
    op: Operation,
    budget: &Budget,
) -> Result<Vec<CrashCase>, String> {
    let mut cases = vec![crash_case(p, op)?];
    if op != Operation::FsckRepair {
        return Ok(cases);
    }
    let mut seen = HashSet::new();
    for origin in [Operation::Publish, Operation::Seal, Operation::Gc] {
        let case = crash_case(p, origin)?;
        let sc = &case.scenario;
        sc.model.start_recording();
        let result = (case.run)(&sc.model, &sc.clock);
        let recording = sc.model.take_recording();
        let Some(result) = result else { continue };
        let last = recording.points.len() - 1;
        for (k, point) in recording.points.iter().enumerate() {
            let enumeration = point.crash_states(&budget.crash_options(k as u64));
            for (i, state) in enumeration.states.into_iter().enumerate() {
                if !seen.insert(state.fs.tree()) {
                    continue;
                }
                let clock = SimPlatform::new(sc.clock.now_ms() + RECOVERY_GAP_MS, mix(k as u64));
                let model = Model::from_state(state.fs, &clock);
                // Repair must keep every version a reader accepts here.
                let readable: BTreeSet<u64> = sc
                    .known
                    .keys()
                    .copied()
                    .filter(|&step| {
                        matches!(
                            p.read(&model, &clock, Target::Step(step), WAIT_MS),
                            Read::Got { .. }
                        )
                    })
                    .collect();
                let mut setup = sc.setup.clone();
                setup.push(format!(
                    "{} -> {}, crashed after call {k} of {last}; crash state {i}:",
                    case.action,
                    result_text(&result)
                ));
                setup.extend(state.description.lines().map(|l| format!("  {}", l.trim())));
                let during = Expect {
                    known: sc.known.clone(),
                    must_read: readable.clone(),
                    protected: case.during.protected.clone(),
                    ..Expect::default()
                };
                cases.push(CrashCase {
                    scenario: Scenario {
                        model,
                        clock,
                        setup,
                        known: sc.known.clone(),
                        committed: readable,
                    },
                    action: "fsck --repair".to_string(),
                    run: Box::new(move |m, c| fsck_on_node(p, m, c)),
                    after: during.clone(),
                    during,
                });
            }
        }
    }
    Ok(cases)
}

fn crash_case<P: Protocol>(p: P, op: Operation) -> Result<CrashCase, String> {
    let case = match op {
        Operation::Publish | Operation::Seal => {
            let mut sc = Scenario::new(p, &[1]);
            let written = Written::new(2, WRITER);
            let action;
            let run: Action = if op == Operation::Seal {
                written
                    .write_in(&sc.model, &written.dir())
                    .expect("the trainer's in-place write");
                sc.setup.push(format!(
                    "the trainer wrote {}/{{{}}} in place, without any fsync",
                    written.dir(),
                    written.files.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                action = format!("seal step 2 as {WRITER}");
                let w = written.clone();
                Box::new(move |m, c| Some(p.write(m, c, Commit::Seal(&w))))
            } else {
                action = format!("publish step 2 as {WRITER}");
                let w = written.clone();
                Box::new(move |m, c| Some(p.write(m, c, Commit::Publish(&w))))
            };
            sc.known.insert(2, vec![written]);
            let during = sc.expect();
            let mut after = during.clone();
            after.must_read.insert(2);
            CrashCase {
                scenario: sc,
                action,
                run,
                during,
                after,
            }
        }
        Operation::Pin => {
            let sc = Scenario::new(p, &[1, 2]);
            let during = sc.expect();
            let mut after = during.clone();
            after.protected.insert(1);
            after.gc_after_crash = true;
            CrashCase {
                scenario: sc,
                action: format!("{HOLDER} pins step 1 for {PIN_TTL_MS} ms"),
                run: Box::new(move |m, c| {
                    p.pin(
                        m,
                        c,
                        Pin {
                            step: 1,
                            holder: HOLDER,
                            ttl_ms: PIN_TTL_MS,
                        },
                    )
                }),
                during,
                after,
            }
        }
        Operation::WaitPin => {
            let mut sc = Scenario::new(p, &[1, 2]);
            sc.pin_in_setup(p, 1, PIN_TTL_MS)?;
            let mut during = sc.expect();
            during.held = Some((HOLDER, BTreeSet::from([1, 2])));
            during.gc_after_crash = true;
            let mut after = during.clone();
            // Once it has switched over to step 2, the reader serves step 2.
            after.held = Some((HOLDER, BTreeSet::from([2])));
            CrashCase {
                scenario: sc,
                action: format!(
                    "{HOLDER}, serving step 1, waits for the latest step with a pin, \
                     switches over to it, then unpins step 1"
                ),
                run: Box::new(move |m, c| {
                    // The reader's node has step 1, which it serves, cached.
                    let node = &reader_node("reader-node", m, c, 0, 1);
                    let waited = p.wait_pin(node, c, Target::Latest, HOLDER, PIN_TTL_MS)?;
                    match waited {
                        Ok(2) => p.unpin(node, c, 1, HOLDER),
                        Ok(step) => Some(Err(Error::new(
                            ErrorKind::Io,
                            format!("the wait returned step {step}, not 2"),
                        ))),
                        Err(e) => Some(Err(e)),
                    }
                }),
                during,
                after,
            }
        }
        Operation::Unpin => {
            let mut sc = Scenario::new(p, &[1, 2]);
            sc.pin_in_setup(p, 1, PIN_TTL_MS)?;
            let during = sc.expect();
            CrashCase {
                scenario: sc,
                action: format!("{HOLDER} unpins step 1"),
                run: Box::new(move |m, c| p.unpin(m, c, 1, HOLDER)),
                after: during.clone(),
                during,
            }
        }
        Operation::Gc => {
            let sc = gc_scenario(p)?;
            let during = gc_expect(&sc);
            let mut after = during.clone();
            after.must_not_read.insert(2);
            CrashCase {
                scenario: sc,
                action: gc_action(),
                run: Box::new(move |m, c| p.gc(m, c, GC).map(|r| r.map(|_| ()))),
                during,
                after,
            }
        }
        Operation::FsckRepair => {
            let sc = untidy_scenario(p);
            let during = sc.expect();
            CrashCase {
                scenario: sc,
                action: "fsck --repair".to_string(),
                run: Box::new(move |m, c| fsck_on_node(p, m, c)),
                after: during.clone(),
                during,
            }
        }
        _ => unreachable!("{} is not a crash scenario", op.name()),
    };
    Ok(case)
}

/// Steps 1–3; step 1 pinned by a pin that expired 1 s ago by the pinner's
/// clock, which gc's 2 s skew allowance must still honour.
fn gc_scenario<P: Protocol>(p: P) -> Result<Scenario, String> {
    let mut sc = Scenario::new(p, &[1, 2, 3]);
    let ttl = 10_000;
    sc.pin_in_setup(p, 1, ttl)?;
    sc.clock.advance(ttl + GC.skew_ms / 2);
    sc.setup.push(format!(
        "{} ms later (the pin expired {} ms ago, within gc's {} ms skew allowance)",
        ttl + GC.skew_ms / 2,
        GC.skew_ms / 2,
        GC.skew_ms
    ));
    Ok(sc)
}

/// What gc of a [`gc_scenario`] may do: remove step 2 (no reader need find
/// it), never step 1 (its pin is within the skew allowance).
fn gc_expect(sc: &Scenario) -> Expect {
    let mut expect = sc.expect();
    expect.must_read.remove(&2);
    expect.protected.insert(1);
    expect
}

/// `fsck --repair` on a node of its own (whose cache starts empty).
fn fsck_on_node<P: Protocol>(
    p: P,
    model: &Model,
    clock: &SimPlatform,
) -> Option<Result<(), Error>> {
    // A process of its own, with its own random names: a crash state's
    // recovery clock may draw the same as the clock the crash case ran on,
    // and a clock file the crash left must not collide with the recovery's.
    let clock = &clock.fork(mix(clock.random_u64() ^ 0xf5c));
    let node = NodeView::new("fsck-node", model, clock, caches(0, 0xf5c));
    p.fsck_repair(&node, clock).map(|r| r.map(|_| ()))
}

/// gc on a node of its own (whose cache starts empty).
fn gc_on_node<P: Protocol>(
    p: P,
    node: &str,
    model: &Model,
    clock: &SimPlatform,
    seed: u64,
) -> Option<Result<(), Error>> {
    let node = NodeView::new(node, model, clock, caches(seed, 0x9c));
    p.gc(&node, clock, GC).map(|r| r.map(|_| ()))
}

fn gc_action() -> String {
    format!(
        "gc keep={} grace={} ms skew={} ms",
        GC.keep, GC.grace_ms, GC.skew_ms
    )
}

/// A root that crashes left untidy: step 1 committed; a publish of step 2
/// that crashed halfway (its staging copy left); step 3 written in place but
/// never sealed (with a manifest temp file); a gc that crashed after moving
/// a step into trash; a pin on a step that is gone.
fn untidy_scenario<P: Protocol>(p: P) -> Scenario {
    let mut sc = Scenario::new(p, &[1]);
    let w2 = Written::new(2, WRITER);
    sc.model.start_recording();
    p.write(&sc.model, &sc.clock, Commit::Publish(&w2))
        .expect("setup: publish of step 2");
    let recording = sc.model.take_recording();
    let halfway = recording.points[recording.points.len() / 2].clone();
    sc.model = Model::from_state(halfway, &sc.clock);
    let w3 = Written::new(3, WRITER);
    let fs = &sc.model;
    w3.write_in(fs, &w3.dir()).expect("setup: step 3");
    fs.create_new(&format!("{}/.handoff.manifest.json.tmp", w3.dir()))
        .expect("setup: manifest temp");
    for dir in [
        ".handoff/trash",
        ".handoff/trash/step_0.00000000000000aa",
        ".handoff/trash/step_0.00000000000000aa/weights",
        ".handoff/pins",
        ".handoff/pins/step_5",
    ] {
        if fs.stat(dir).unwrap().is_none() {
            fs.create_dir(dir).expect("setup: directory");
        }
    }
    let mut file = fs
        .create_new(".handoff/trash/step_0.00000000000000aa/weights/adapter.safetensors")
        .expect("setup: trash file");
    handoff_core::StorageFile::write_at(&mut file, b"old", 0).expect("setup: write");
    let pin = format!(
        "{{\"step\":5,\"holder\":\"{HOLDER}\",\"expires_ms\":{}}}",
        T0_MS + PIN_TTL_MS
    );
    let mut file = fs
        .create_new(&format!(".handoff/pins/step_5/{HOLDER}"))
        .expect("setup: pin");
    handoff_core::StorageFile::write_at(&mut file, pin.as_bytes(), 0).expect("setup: write");
    sc.model.sync_all();
    // Repair takes only trees older than its grace period for abandoned.
    sc.clock.advance(RECOVERY_GAP_MS);
    sc.known.insert(2, vec![w2]);
    sc.known.insert(3, vec![w3]);
    sc.setup.push(format!(
        "a publish of step 2 crashed halfway (staging left); step 3 was written in place \
         and never sealed (with a manifest temp file); a gc crashed with step_0 in trash; \
         a pin on step 5, which is gone; then everything was synced, {RECOVERY_GAP_MS} ms ago"
    ));
    sc
}

fn result_text(result: &Result<(), Error>) -> String {
    match result {
        Ok(()) => "Ok".to_string(),
        Err(e) => format!("Err({e:?})"),
    }
}

/// The calls of a recording, with the crash point marked.
fn show_calls(
    recording: &Recording,
    crash_at: Option<usize>,
    mark: impl Fn(usize) -> &'static str,
) -> String {
    let mut out = String::new();
    for (i, call) in recording.ops.iter().enumerate() {
        let n = i + 1;
        let note = match crash_at {
            Some(k) if n == k => "   <- crash here",
            Some(k) if n > k => "   (not reached)",
            _ => "",
        };
        let _ = writeln!(out, "    {n:>3} {:<2}{call}{note}", mark(i));
    }
    if recording.ops.is_empty() {
        out.push_str("    (no calls)\n");
    }
    out
}

/// A race's calls: every call until the second process returned, then the
/// mutating ones.
fn show_race_calls(
    recording: &Recording,
    second: &std::ops::Range<usize>,
    crash_at: Option<usize>,
) -> String {
    let mut out = String::new();
    let mut skipped = 0;
    for (i, (call, point)) in recording.calls.iter().enumerate() {
        if i >= second.end && point.is_none() {
            skipped += 1;
            continue;
        }
        let who = if second.contains(&i) { "b" } else { "a" };
        let note = match (point, crash_at) {
            (Some(k), Some(c)) if *k == c => format!("   [{k}] <- crash here"),
            (Some(k), Some(c)) if *k > c => format!("   [{k}] (not reached)"),
            (Some(k), _) => format!("   [{k}]"),
            (None, _) => String::new(),
        };
        let _ = writeln!(out, "    {:>3} {who}  {call}{note}", i + 1);
    }
    if skipped > 0 {
        let _ = writeln!(out, "    ({skipped} later reads not shown)");
    }
    out
}

fn show_problems(problems: &[String]) -> String {
    if problems.is_empty() {
        return "  none: every invariant holds\n".to_string();
    }
    problems.iter().map(|p| format!("  - {p}\n")).collect()
}

fn replay_command<P: Protocol>(op: Operation, budget: &Budget, at: &[(&str, usize)]) -> String {
    let mut cmd = format!(
        "cargo run --release -p handoff-sim -- replay --protocol {} --op {}",
        P::NAME,
        op.name()
    );
    for (flag, value) in at {
        let _ = write!(cmd, " --{flag} {value}");
    }
    let _ = write!(cmd, " {}", budget.flags());
    cmd
}

/// Run one protocol's operation.
pub fn run<P: Protocol>(p: P, op: Operation, budget: &Budget, focus: &Focus) -> Outcome {
    match op {
        Operation::ReadLagging | Operation::ReadLaggingSeal => lagging(p, op, budget, focus),
        Operation::PublishRace
        | Operation::SealRace
        | Operation::RunRace
        | Operation::GcPinRace
        | Operation::GcRace => race(p, op, budget, focus),
        _ => crash(p, op, budget, focus),
    }
}

fn crash<P: Protocol>(p: P, op: Operation, budget: &Budget, focus: &Focus) -> Outcome {
    let mut out = Outcome::new::<P>(op);
    let cases = match crash_cases(p, op, budget) {
        Ok(cases) => cases,
        Err(why) => {
            out.skipped = Some(why);
            return out;
        }
    };
    for (root, case) in cases.into_iter().enumerate() {
        if focus.root.is_some_and(|r| r != root) {
            continue;
        }
        if let Err(why) = crash_root(p, op, root, case, budget, focus, &mut out) {
            out.skipped = Some(why);
            return out;
        }
    }
    out
}

/// Crash one operation at every call, from one root.
fn crash_root<P: Protocol>(
    p: P,
    op: Operation,
    root: usize,
    case: CrashCase,
    budget: &Budget,
    focus: &Focus,
    out: &mut Outcome,
) -> Result<(), String> {
    let sc = &case.scenario;
    sc.model.start_recording();
    let result = (case.run)(&sc.model, &sc.clock);
    let recording = sc.model.take_recording();
    let Some(result) = result else {
        return Err(format!("{} has no {}", P::NAME, op.name()));
    };
    let mut at = Vec::new();
    if op == Operation::FsckRepair {
        at.push(("root", root));
    }
    let title = |problems: &[String], extra: &str| {
        let mut t = trace_head::<P>(op, problems);
        for (flag, value) in &at {
            let _ = write!(t, " {flag}={value}");
        }
        let _ = write!(t, "{extra}\nsetup:\n");
        for line in &sc.setup {
            let _ = writeln!(t, "  {line}");
        }
        t
    };
    if let Err(e) = &result
        && !P::REFERENCE
        && focus.crash_at.is_none()
    {
        let problems = [format!("the operation failed: {e}")];
        out.record(&problems, false, |problems| {
            let mut t = title(problems, "");
            let _ = writeln!(t, "operation: {} -> {}", case.action, result_text(&result));
            let _ = write!(
                t,
                "calls:\n{}problems:\n{}",
                show_calls(&recording, None, |_| ""),
                show_problems(problems)
            );
            t
        });
    }

    let last = recording.points.len() - 1;
    let recovery_ms = sc.clock.now_ms() + RECOVERY_GAP_MS;
    for (k, point) in recording.points.iter().enumerate() {
        if focus.crash_at.is_some_and(|c| c != k) {
            continue;
        }
        let returned = k == last && result.is_ok();
        let expect = if returned { &case.after } else { &case.during };
        let enumeration = point.crash_states(&budget.crash_options(k as u64));
        let total = enumeration.states.len();
        let exhaustive = enumeration.exhaustive;
        out.crash_point(exhaustive);
        for (i, state) in enumeration.states.into_iter().enumerate() {
            if focus.state.is_some_and(|s| s != i) {
                continue;
            }
            let tree = state.fs.tree();
            let problems = check_state(
                p,
                expect,
                state.fs,
                recovery_ms,
                mix(budget.seed ^ i as u64),
            );
            out.record(&problems, focus.verbose, |problems| {
                let mut t = title(problems, &format!(" crash-at={k} state={i}"));
                let _ = writeln!(
                    t,
                    "operation: {} -> {}{}",
                    case.action,
                    result_text(&result),
                    if returned {
                        " (returned before the crash)"
                    } else {
                        ""
                    }
                );
                let _ = write!(
                    t,
                    "calls (crash after call {k} of {last}):\n{}",
                    show_calls(&recording, Some(k), |_| "")
                );
                let _ = write!(
                    t,
                    "crash state {i} of {total} ({}):\n{}",
                    if exhaustive {
                        "all states enumerated"
                    } else {
                        "seeded sample"
                    },
                    state.description
                );
                let _ = write!(t, "tree after the crash:\n{}", show_tree(&tree));
                let _ = write!(t, "problems:\n{}", show_problems(problems));
                let mut flags = at.clone();
                flags.extend([("crash-at", k), ("state", i)]);
                let _ = writeln!(t, "replay: {}", replay_command::<P>(op, budget, &flags));
                t
            });
        }
    }
    Ok(())
}

/// Check one recovered state: reads, pins, gc (if asked) and repair.
fn check_state<P: Protocol>(
    p: P,
    expect: &Expect,
    fs: FsState,
    now_ms: u64,
    seed: u64,
) -> Vec<String> {
    let clock = SimPlatform::new(now_ms, seed);
    let model = Model::from_state(fs, &clock);
    let mut problems = Vec::new();
    check_reads(p, &model, &clock, expect, "after the crash", &mut problems);
    let tree = model.tree();
    check_protected(&tree, expect, "after the crash", &mut problems);
    let held = check_held(&tree, expect, &mut problems);
    if expect.gc_after_crash {
        let copy = Model::from_state(model.state(), &clock);
        match gc_on_node(p, "gc-node", &copy, &clock, seed) {
            None => {}
            Some(Err(e)) => problems.push(format!("gc after the crash failed: {e}")),
            Some(Ok(_)) => {
                let mut protect = expect.clone();
                protect.protected.extend(held);
                check_protected(
                    &copy.tree(),
                    &protect,
                    "after a gc following the crash",
                    &mut problems,
                );
            }
        }
    }
    check_repair(p, &model, &clock, expect, &mut problems);
    problems
}

/// Whether `files` (from `writer`) is one of the versions written; if not,
/// how it differs from the closest.
fn compare(writes: &[Written], writer: &Option<String>, files: &Files) -> Result<(), String> {
    let same_writer = |w: &&Written| writer.as_ref().is_none_or(|x| *x == w.writer);
    if writes.iter().filter(same_writer).any(|w| w.files == *files) {
        return Ok(());
    }
    let closest = writes.iter().find(same_writer).unwrap_or(&writes[0]);
    let mut parts = Vec::new();
    if let Some(x) = writer
        && *x != closest.writer
    {
        parts.push(format!("writer {x:?}, not {:?}", closest.writer));
    }
    for (path, data) in &closest.files {
        match files.get(path) {
            None => parts.push(format!("{path} missing")),
            Some(got) if got != data => parts.push(format!(
                "{path} is {}, was written {}",
                show_bytes(got),
                show_bytes(data)
            )),
            Some(_) => {}
        }
    }
    for path in files.keys().filter(|p| !closest.files.contains_key(*p)) {
        parts.push(format!("{path} was never written"));
    }
    Err(parts.join("; "))
}

fn check_reads<P: Protocol, S: Storage>(
    p: P,
    fs: &S,
    clock: &SimPlatform,
    expect: &Expect,
    when: &str,
    problems: &mut Vec<String>,
) {
    let mut readable = BTreeSet::new();
    for (&step, writes) in &expect.known {
        match p.read(fs, clock, Target::Step(step), WAIT_MS) {
            Read::Got { writer, files, .. } => {
                readable.insert(step);
                if let Err(diff) = compare(writes, &writer, &files) {
                    problems.push(format!(
                        "{when}: the reader accepted step {step}, but its files differ from what \
                         was written: {diff}"
                    ));
                }
                if expect.must_not_read.contains(&step) {
                    problems.push(format!(
                        "{when}: the reader still accepts step {step}, which gc reported removed"
                    ));
                }
            }
            Read::Absent(why) => {
                if expect.must_read.contains(&step) {
                    problems.push(format!("{when}: step {step} was lost: {why}"));
                }
            }
        }
    }
    let top = expect.must_read.last().copied();
    match p.read(fs, clock, Target::Latest, WAIT_MS) {
        Read::Got {
            step,
            writer,
            files,
        } => match expect.known.get(&step) {
            None => problems.push(format!("{when}: latest is step {step}, which no one wrote")),
            Some(writes) => {
                if let Err(diff) = compare(writes, &writer, &files) {
                    problems.push(format!(
                        "{when}: latest accepted step {step}, but its files differ from what was \
                         written: {diff}"
                    ));
                }
                if let Some(top) = top
                    && step < top
                {
                    problems.push(format!(
                        "{when}: latest is step {step} although step {top} must be readable"
                    ));
                }
            }
        },
        Read::Absent(why) => {
            if let Some(top) = top {
                problems.push(format!(
                    "{when}: latest found nothing although step {top} must be readable: {why}"
                ));
            }
        }
    }
    match p.committed(fs) {
        Err(e) => problems.push(format!("{when}: listing the root failed: {e}")),
        Ok(steps) => {
            for step in steps.into_iter().filter(|s| !readable.contains(s)) {
                if !expect.known.contains_key(&step) {
                    problems.push(format!(
                        "{when}: the listing calls step {step} committed, which no one wrote"
                    ));
                } else if let Read::Absent(why) = p.read(fs, clock, Target::Step(step), WAIT_MS) {
                    problems.push(format!(
                        "{when}: the listing calls step {step} committed, but a reader cannot \
                         load it: {why}"
                    ));
                }
            }
        }
    }
}

/// A long-lived reader holds a pin on one of the steps it may be serving;
/// the steps it holds.
fn check_held(tree: &Tree, expect: &Expect, problems: &mut Vec<String>) -> BTreeSet<u64> {
    let Some((holder, steps)) = &expect.held else {
        return BTreeSet::new();
    };
    let held: BTreeSet<u64> = steps
        .iter()
        .copied()
        .filter(|&step| {
            let dir = handoff_core::layout::step_name(PREFIX, step);
            // Version 1: a pin file with content; version 2: a pin file
            // named for its holder in the step's own pin directory.
            let v1 = format!(".handoff/pins/{dir}/{holder}");
            let v2 = format!("{dir}/{}/{holder}+", handoff_core::layout::STEP_PINS_NAME);
            matches!(tree.get(&v1), Some(Node::File(data)) if !data.is_empty())
                || tree.range(v2.clone()..).next().is_some_and(|(path, node)| {
                    path.starts_with(&v2) && matches!(node, Node::File(_))
                })
        })
        .collect();
    if held.is_empty() {
        problems.push(format!(
            "after the crash, {holder} holds no pin on any of steps {steps:?}: the step it \
             serves is unprotected"
        ));
    }
    held
}

/// A pinned step's files are all there, whole.
fn check_protected(tree: &Tree, expect: &Expect, when: &str, problems: &mut Vec<String>) {
    for step in &expect.protected {
        let Some(written) = expect.known.get(step).and_then(|w| w.first()) else {
            continue;
        };
        for (path, data) in &written.files {
            let full = format!("{}/{path}", written.dir());
            match tree.get(&full) {
                Some(Node::File(got)) if got == data => {}
                Some(Node::File(got)) => problems.push(format!(
                    "{when}: step {step} is pinned, but {full} is {}",
                    show_bytes(got)
                )),
                _ => problems.push(format!("{when}: step {step} is pinned, but {full} is gone")),
            }
        }
    }
}

/// `fsck --repair` twice: the first leaves only complete committed versions,
/// no staging, no trash, and keeps what must be kept; the second changes
/// nothing.
fn check_repair<P: Protocol>(
    p: P,
    model: &Model,
    clock: &SimPlatform,
    expect: &Expect,
    problems: &mut Vec<String>,
) {
    let Some(first) = p.fsck_repair(model, clock) else {
        return;
    };
    if let Err(e) = first {
        problems.push(format!("fsck --repair failed after the crash: {e}"));
        return;
    }
    let tree = model.tree();
    for path in tree.keys() {
        let depth = path.split('/').count();
        if depth == 3
            && (path.starts_with(".handoff/staging/") || path.starts_with(".handoff/trash/"))
        {
            problems.push(format!("after fsck --repair, {path} is left"));
        }
    }
    for (name, node) in &tree {
        if name.contains('/') || *node != Node::Dir {
            continue;
        }
        let Some(step) = parse_step(PREFIX, name) else {
            continue;
        };
        match p.read(model, clock, Target::Step(step), WAIT_MS) {
            Read::Got { writer, files, .. } => match expect.known.get(&step) {
                None => problems.push(format!(
                    "after fsck --repair, {name} is committed but no one wrote it"
                )),
                Some(writes) => {
                    if let Err(diff) = compare(writes, &writer, &files) {
                        problems.push(format!(
                            "after fsck --repair, {name} differs from what was written: {diff}"
                        ));
                    }
                }
            },
            Read::Absent(why) => problems.push(format!(
                "after fsck --repair, {name} is left but is not a complete committed version: {why}"
            )),
        }
    }
    for step in expect.must_read.union(&expect.protected) {
        if !tree.contains_key(&handoff_core::layout::step_name(PREFIX, *step)) {
            let why = if expect.protected.contains(step) {
                "it is pinned"
            } else {
                "it was committed"
            };
            problems.push(format!("fsck --repair removed step {step}, but {why}"));
        }
    }
    match p.fsck_repair(model, clock) {
        None => {}
        Some(Err(e)) => problems.push(format!("a second fsck --repair failed: {e}")),
        Some(Ok(acted)) => {
            let after = model.tree();
            if acted > 0 || after != tree {
                problems.push(format!(
                    "a second fsck --repair was not a no-op: it acted on {acted} entries; {}",
                    tree_diff(&tree, &after)
                ));
            }
        }
    }
}

fn tree_diff(before: &Tree, after: &Tree) -> String {
    let mut parts = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => parts.push(format!("{path} removed")),
            Some(other) if other != node => parts.push(format!("{path} changed")),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        parts.push(format!("{path} added"));
    }
    if parts.is_empty() {
        "the tree is unchanged".to_string()
    } else {
        parts.join(", ")
    }
}

/// One interleaving of two processes: `first` from the start, `second` run
/// whole right after call `at` of `first` (0: before it).
struct Raced {
    scenario: Scenario,
    recording: Recording,
    first: Result<(), Error>,
    second: Result<(), Error>,
    /// The second's mutating calls are `recording.ops[range]`.
    second_calls: std::ops::Range<usize>,
    /// All its calls, reads included, are `recording.calls[range]`.
    second_all: std::ops::Range<usize>,
    /// gc inside pin (rather than pin inside gc).
    swapped: bool,
    /// The nodes the processes ran on, for traces.
    nodes: Vec<NodeView>,
}

struct RaceCase {
    scenario: Scenario,
    swapped: bool,
    first_name: String,
    first: Action,
    second_name: String,
    second: Action,
    second_clock: SimPlatform,
    /// The nodes the processes run on (none: both on the model itself).
    nodes: Vec<NodeView>,
}

/// A race: two processes, the second run whole in between two calls of the
/// first. gc and pin are raced in both nestings (`swapped`: gc inside pin).
/// gc and pin each run on a node of their own, through its caches
/// ([`NodeView`]); the pinning node read step 2 a moment before.
fn race_case<P: Protocol>(
    p: P,
    op: Operation,
    seed: u64,
    swapped: bool,
) -> Result<RaceCase, String> {
    match op {
        Operation::PublishRace => {
            let sc = Scenario::new(p, &[1]);
            let second_clock = sc.clock.fork(mix(seed ^ 0xb));
            let (a, b) = (Written::new(2, WRITER), Written::new(2, RIVAL));
            Ok(RaceCase {
                scenario: sc,
                swapped,
                first_name: format!("{WRITER} publishes step 2"),
                first: Box::new(move |m, c| Some(p.write(m, c, Commit::Publish(&a)))),
                second_name: format!("{RIVAL} publishes step 2"),
                second: Box::new(move |m, c| Some(p.write(m, c, Commit::Publish(&b)))),
                second_clock,
                nodes: Vec::new(),
            })
        }
        Operation::SealRace => {
            let mut sc = Scenario::new(p, &[1]);
            let second_clock = sc.clock.fork(mix(seed ^ 0xb));
            let (a, b) = sealers();
            a.write_in(&sc.model, &a.dir())
                .expect("the trainer's in-place write");
            sc.model.sync_all();
            sc.setup.push(format!(
                "the trainer wrote {}/ in place, then everything was synced",
                a.dir()
            ));
            Ok(RaceCase {
                scenario: sc,
                swapped,
                first_name: format!("{WRITER} seals step 2"),
                first: Box::new(move |m, c| Some(p.write(m, c, Commit::Seal(&a)))),
                second_name: format!("{RIVAL} seals step 2"),
                second: Box::new(move |m, c| Some(p.write(m, c, Commit::Seal(&b)))),
                second_clock,
                nodes: Vec::new(),
            })
        }
        Operation::RunRace => {
            let sc = Scenario::new(p, &[1]);
            let second_clock = sc.clock.fork(mix(seed ^ 0xb));
            let (old, new) = runners();
            Ok(RaceCase {
                scenario: sc,
                swapped,
                first_name: format!("{WRITER} publishes step 2 of run 0"),
                first: Box::new(move |m, c| Some(p.write(m, c, Commit::Publish(&old)))),
                second_name: format!("{RIVAL} begins run 1 and publishes its step 2"),
                second: Box::new(move |m, c| p.restart(m, c, 2, &new)),
                second_clock,
                nodes: Vec::new(),
            })
        }
        Operation::GcPinRace => {
            let sc = gc_scenario(p)?;
            let second_clock = sc.clock.fork(mix(seed ^ 0xb));
            let gc_node = NodeView::new("gc-node", &sc.model, &sc.clock, caches(seed, 0x9c));
            let pin_node = reader_node("pin-node", &sc.model, &sc.clock, seed, 2);
            let nodes = vec![gc_node.clone(), pin_node.clone()];
            let gc_name = format!("{} on gc-node", gc_action());
            let gc: Action = Box::new(move |_, c| p.gc(&gc_node, c, GC).map(|r| r.map(|_| ())));
            let pin_name = format!("{LATE_HOLDER} pins step 2 for {PIN_TTL_MS} ms on pin-node");
            let pin: Action = Box::new(move |_, c| {
                p.pin(
                    &pin_node,
                    c,
                    Pin {
                        step: 2,
                        holder: LATE_HOLDER,
                        ttl_ms: PIN_TTL_MS,
                    },
                )
            });
            let ((first_name, first), (second_name, second)) = if swapped {
                ((pin_name, pin), (gc_name, gc))
            } else {
                ((gc_name, gc), (pin_name, pin))
            };
            Ok(RaceCase {
                scenario: sc,
                swapped,
                first_name,
                first,
                second_name,
                second,
                second_clock,
                nodes,
            })
        }
        Operation::GcRace => {
            let sc = gc_scenario(p)?;
            let second_clock = sc.clock.fork(mix(seed ^ 0xb));
            let a = NodeView::new("gc-node-a", &sc.model, &sc.clock, caches(seed, 0xa));
            let b = NodeView::new("gc-node-b", &sc.model, &sc.clock, caches(seed, 0xb));
            let nodes = vec![a.clone(), b.clone()];
            Ok(RaceCase {
                scenario: sc,
                swapped,
                first_name: format!("{} on gc-node-a", gc_action()),
                first: Box::new(move |_, c| p.gc(&a, c, GC).map(|r| r.map(|_| ()))),
                second_name: format!("{} on gc-node-b", gc_action()),
                second: Box::new(move |_, c| p.gc(&b, c, GC).map(|r| r.map(|_| ()))),
                second_clock,
                nodes,
            })
        }
        _ => unreachable!("{} is not a race", op.name()),
    }
}

/// Two sealers of one payload written in place: the same files, each
/// sealing as itself, so the manifest must name the one that won.
fn sealers() -> (Written, Written) {
    let a = Written::new(2, WRITER);
    let b = Written {
        writer: RIVAL.to_string(),
        ..a.clone()
    };
    (a, b)
}

/// The old trainer's step 2 (run 0) and the restarted one's (run 1).
fn runners() -> (Written, Written) {
    let new = Written {
        step: RUN_SPAN + 2,
        ..Written::new(2, RIVAL)
    };
    (Written::new(2, WRITER), new)
}

/// Run a race case with the second process after call `at` of the first.
fn interleave(case: RaceCase, at: usize) -> Option<Raced> {
    let RaceCase {
        scenario,
        swapped,
        first,
        second,
        second_clock,
        nodes,
        ..
    } = case;
    let model = scenario.model.clone();
    type Second = (Option<Result<(), Error>>, [usize; 4]);
    let outcome: Rc<RefCell<Option<Second>>> = Rc::new(RefCell::new(None));
    let (ops_start, calls_start) = (model.ops_done(), model.calls_done());
    let run_second = {
        let model = model.clone();
        let outcome = Rc::clone(&outcome);
        move || {
            let before = [
                model.ops_done() - ops_start,
                model.calls_done() - calls_start,
            ];
            let result = second(&model, &second_clock);
            let after = [
                model.ops_done() - ops_start,
                model.calls_done() - calls_start,
            ];
            *outcome.borrow_mut() = Some((result, [before[0], after[0], before[1], after[1]]));
        }
    };
    model.start_recording();
    let first = if at == 0 {
        run_second();
        first(&model, &scenario.clock)
    } else {
        model.set_hook(at, run_second);
        first(&model, &scenario.clock)
    }?;
    let recording = model.take_recording();
    let (second, [from, to, all_from, all_to]) = outcome.borrow_mut().take()?;
    Some(Raced {
        scenario,
        recording,
        first,
        second: second?,
        second_calls: from..to,
        second_all: all_from..all_to,
        swapped,
        nodes,
    })
}

fn race<P: Protocol>(p: P, op: Operation, budget: &Budget, focus: &Focus) -> Outcome {
    let mut out = Outcome::new::<P>(op);
    let orders: &[bool] = if op == Operation::GcPinRace {
        &[false, true]
    } else {
        &[false]
    };
    // Interleavings that give the same calls and results are one case.
    let mut seen = HashSet::new();
    // Interleavings are numbered across both nestings.
    let mut index = 0;
    for &swapped in orders {
        let build = || race_case(p, op, budget.seed, swapped);
        // How many calls the first process makes alone: the interleaving points.
        let solo = match build() {
            Err(why) => {
                out.skipped = Some(why);
                return out;
            }
            Ok(case) => {
                let before = case.scenario.model.calls_done();
                if (case.first)(&case.scenario.model, &case.scenario.clock).is_none() {
                    out.skipped = Some(format!("{} has no {}", P::NAME, op.name()));
                    return out;
                }
                case.scenario.model.calls_done() - before
            }
        };
        for after in 0..=solo {
            let at = index;
            index += 1;
            if focus.interleave_at.is_some_and(|i| i != at) {
                continue;
            }
            let case = build().expect("built once already");
            let (first_name, second_name) = (case.first_name.clone(), case.second_name.clone());
            let Some(raced) = interleave(case, after) else {
                // The first finished before call `after`: same as running after it.
                continue;
            };
            let key = (
                swapped,
                raced.recording.ops.clone(),
                result_text(&raced.first),
                result_text(&raced.second),
            );
            if !seen.insert(key) && focus.interleave_at.is_none() {
                out.states += 1;
                continue;
            }
            let judged = judge_race(p, op, &raced);
            let sc = &raced.scenario;
            let calls = &raced.second_calls;
            let trace = |problems: &[String], crash: Option<(usize, usize, usize, &str, &Tree)>| {
                let mut t = trace_head::<P>(op, problems);
                let _ = write!(t, " interleave-at={at}");
                if let Some((k, i, _, _, _)) = crash {
                    let _ = write!(t, " crash-at={k} state={i}");
                }
                t.push_str("\nsetup:\n");
                for line in &sc.setup {
                    let _ = writeln!(t, "  {line}");
                }
                let _ = writeln!(
                    t,
                    "process a: {first_name} -> {}\nprocess b: {second_name} -> {}, run whole after \
                 call {after} of a (reads count)",
                    result_text(&raced.first),
                    result_text(&raced.second)
                );
                let _ = write!(
                    t,
                    "calls of a and b (reads too until b returned; [k]: crash point k is after \
                 this call):\n{}",
                    show_race_calls(&raced.recording, &raced.second_all, crash.map(|c| c.0))
                );
                if !raced.nodes.is_empty() {
                    let _ = write!(t, "nodes:\n{}", show_nodes(&raced.nodes));
                }
                match crash {
                    None => {
                        let _ = write!(
                            t,
                            "no crash; the tree at the end:\n{}",
                            show_tree(&sc.model.tree())
                        );
                    }
                    Some((_, i, total, description, tree)) => {
                        let _ = write!(t, "crash state {i} of {total}:\n{description}");
                        let _ = write!(t, "tree after the crash:\n{}", show_tree(tree));
                    }
                }
                let _ = write!(t, "problems:\n{}", show_problems(problems));
                let mut at_flags = vec![("interleave-at", at)];
                if let Some((k, i, _, _, _)) = crash {
                    at_flags.extend([("crash-at", k), ("state", i)]);
                }
                let _ = writeln!(t, "replay: {}", replay_command::<P>(op, budget, &at_flags));
                t
            };

            // The outcome without a crash.
            if focus.crash_at.is_none() {
                let mut problems = judged.problems.clone();
                check_reads(
                    p,
                    &sc.model,
                    &sc.clock,
                    &judged.end,
                    "at the end",
                    &mut problems,
                );
                check_protected(&sc.model.tree(), &judged.end, "at the end", &mut problems);
                for path in sc.model.tree().keys() {
                    if path.starts_with(".handoff/staging/") && path.split('/').count() == 3 {
                        problems.push(format!("at the end, {path} is left behind"));
                    }
                }
                out.record(&problems, focus.verbose, |problems| trace(problems, None));
            }

            // Crashes from the moment the second process started.
            let last = raced.recording.points.len() - 1;
            let recovery_ms = sc.clock.now_ms() + RECOVERY_GAP_MS;
            let first_point = match op {
                Operation::PublishRace | Operation::SealRace => last,
                _ => calls.start,
            };
            for k in first_point..=last {
                if focus.crash_at.is_some_and(|c| c != k) {
                    continue;
                }
                let expect = judged.at_point(k, last);
                let enumeration =
                    raced.recording.points[k].crash_states(&budget.crash_options(k as u64));
                let total = enumeration.states.len();
                out.crash_point(enumeration.exhaustive);
                for (i, state) in enumeration.states.into_iter().enumerate() {
                    if focus.state.is_some_and(|s| s != i) {
                        continue;
                    }
                    let tree = state.fs.tree();
                    let problems = check_state(
                        p,
                        &expect,
                        state.fs,
                        recovery_ms,
                        mix(budget.seed ^ i as u64),
                    );
                    out.record(&problems, focus.verbose, |problems| {
                        trace(problems, Some((k, i, total, &state.description, &tree)))
                    });
                }
            }
        }
    }
    out
}

/// What a race must have produced, and what must hold after crashes.
struct Judged {
    problems: Vec<String>,
    /// The crash point from which `after_second` holds.
    second_done: usize,
    /// At the end, without a crash.
    end: Expect,
    /// At crash points before the second process returned.
    before_second: Expect,
    /// At crash points after it returned, before the first did.
    after_second: Expect,
}

impl Judged {
    fn at_point(&self, k: usize, last: usize) -> Expect {
        if k == last {
            self.end.clone()
        } else if k >= self.second_done {
            self.after_second.clone()
        } else {
            self.before_second.clone()
        }
    }
}

fn judge_race<P: Protocol>(p: P, op: Operation, raced: &Raced) -> Judged {
    let sc = &raced.scenario;
    let mut problems = Vec::new();
    match op {
        Operation::PublishRace | Operation::SealRace => {
            let (a, b) = if op == Operation::SealRace {
                sealers()
            } else {
                (Written::new(2, WRITER), Written::new(2, RIVAL))
            };
            let conflict =
                |r: &Result<(), Error>| matches!(r, Err(e) if e.kind() == ErrorKind::Conflict);
            let winner = match (&raced.first, &raced.second) {
                (Ok(()), r) if conflict(r) => Some(a.clone()),
                (r, Ok(())) if conflict(r) => Some(b.clone()),
                (first, second) => {
                    problems.push(format!(
                        "exactly one writer must succeed and the other get a conflict; \
                         {WRITER} got {}, {RIVAL} got {}",
                        result_text(first),
                        result_text(second)
                    ));
                    [(first, &a), (second, &b)]
                        .into_iter()
                        .find(|(r, _)| r.is_ok())
                        .map(|(_, w)| w.clone())
                }
            };
            let mut end = sc.expect();
            let candidates = winner.clone().map_or_else(|| vec![a, b], |w| vec![w]);
            end.known.insert(2, candidates);
            if winner.is_some() {
                end.must_read.insert(2);
            }
            Judged {
                problems,
                second_done: raced.second_calls.end,
                before_second: end.clone(),
                after_second: end.clone(),
                end,
            }
        }
        Operation::RunRace => {
            let (old, new) = runners();
            if let Err(e) = &raced.second {
                problems.push(format!(
                    "the restarted trainer's begin and publish failed: {e}"
                ));
            }
            // The old trainer may succeed only if its commit (the rename to
            // step_2) came before the new run was begun.
            let ops = &raced.recording.ops;
            let committed_at = ops.iter().position(|op| op.ends_with("-> step_2"));
            let begun_at = raced.second_calls.start;
            let old_won = match &raced.first {
                Ok(()) if committed_at.is_some_and(|at| at > begun_at) => {
                    problems.push(
                        "the old trainer committed step 2 after the new run was begun, and was \
                         told it succeeded"
                            .to_string(),
                    );
                    true
                }
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::Conflict && e.message().contains("superseded") => {
                    false
                }
                Err(e) => {
                    problems.push(format!(
                        "the old trainer must publish or be told it is superseded, not: {e}"
                    ));
                    false
                }
            };
            // Whatever the old trainer managed, a watcher that has seen step
            // 1 is handed the new run's step, and so is the newest.
            let model = &sc.model;
            match p.next_after(model, &sc.clock, 1) {
                Some(step) if step == new.step => {}
                got => problems.push(format!(
                    "after step 1 a watcher was handed {got:?}, not the new run's step {}",
                    new.step
                )),
            }
            let mut base = sc.expect();
            base.known.insert(old.step, vec![old.clone()]);
            base.known.insert(new.step, vec![new.clone()]);
            let mut after_second = base.clone();
            after_second.must_read.insert(new.step);
            let mut end = after_second.clone();
            if old_won {
                end.must_read.insert(old.step);
            }
            Judged {
                problems,
                second_done: raced.second_calls.end,
                before_second: base,
                after_second,
                end,
            }
        }
        Operation::GcPinRace => {
            let (gc, pin) = if raced.swapped {
                (&raced.second, &raced.first)
            } else {
                (&raced.first, &raced.second)
            };
            if let Err(e) = gc {
                problems.push(format!("gc failed: {e}"));
            }
            let pinned = pin.is_ok();
            if let Err(e) = pin
                && e.kind() != ErrorKind::NotFound
            {
                problems.push(format!(
                    "a pin of a step being removed must succeed or say not-found, not: {e}"
                ));
            }
            let base = gc_expect(sc);
            let mut after_second = base.clone();
            if pinned {
                // The reader was told it holds step 2: gc must keep it whole.
                after_second.protected.insert(2);
            }
            let mut end = after_second.clone();
            if pinned {
                end.must_read.insert(2);
            } else if gc.is_ok() {
                end.must_not_read.insert(2);
            }
            Judged {
                problems,
                // The pin protects from the moment it returned.
                second_done: if raced.swapped {
                    raced.recording.points.len() - 1
                } else {
                    raced.second_calls.end
                },
                before_second: base,
                after_second,
                end,
            }
        }
        Operation::GcRace => {
            for (which, result) in [("first", &raced.first), ("second", &raced.second)] {
                if let Err(e) = result {
                    problems.push(format!(
                        "the {which} gc failed although the other gc only did the same work: {e}"
                    ));
                }
            }
            let base = gc_expect(sc);
            let mut end = base.clone();
            if raced.first.is_ok() || raced.second.is_ok() {
                end.must_not_read.insert(2);
            }
            Judged {
                problems,
                second_done: raced.second_calls.end,
                before_second: base.clone(),
                after_second: base,
                end,
            }
        }
        _ => unreachable!(),
    }
}

/// A reader on a lagging node while the writer publishes (or seals) step 2.
fn lagging<P: Protocol>(p: P, op: Operation, budget: &Budget, focus: &Focus) -> Outcome {
    let mut out = Outcome::new::<P>(op);
    let sc = Scenario::new(p, &[1]);
    let written = Written::new(2, WRITER);
    sc.model.start_recording();
    let result = if op == Operation::ReadLaggingSeal {
        written
            .write_in(&sc.model, &written.dir())
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
            .and_then(|()| p.write(&sc.model, &sc.clock, Commit::Seal(&written)))
    } else {
        p.write(&sc.model, &sc.clock, Commit::Publish(&written))
    };
    let recording = sc.model.take_recording();
    if let Err(e) = &result {
        out.skipped = Some(format!("the writer failed: {e}"));
        return out;
    }
    let timeline = Rc::new(Timeline::new(&recording, OP_MS));
    let mut known = sc.known.clone();
    known.insert(2, vec![written]);
    // Long enough for every lag and cached miss to run out after the writer
    // is done: a reader that retries must succeed by then.
    let timeout = timeline.end_ms() + 4 * (MAX_LAG_MS + NEGATIVE_TTL_MS) + SETTLE_MS;
    for run in 0..budget.view_runs {
        if focus.state.is_some_and(|s| s as u64 != run) {
            continue;
        }
        let seed = mix(budget.seed ^ mix(run ^ 0x1a9));
        let start = Rng::new(seed).below(timeline.end_ms() + MAX_LAG_MS + 1);
        let lags = Lags {
            seed,
            max_ms: MAX_LAG_MS,
            negative_ttl_ms: NEGATIVE_TTL_MS,
        };
        let mut problems = Vec::new();
        let mut views = Vec::new();
        for target in [Target::Step(2), Target::Latest] {
            let clock = SimPlatform::new(start, seed);
            let view = LaggingView::new(Rc::clone(&timeline), lags.clone(), &clock);
            let what = match target {
                Target::Step(_) => "wait for step 2",
                _ => "wait for the latest step",
            };
            match p.read(&view, &clock, target, timeout) {
                Read::Got {
                    step,
                    writer,
                    files,
                } => match known.get(&step) {
                    None => {
                        problems.push(format!("{what} accepted step {step}, which no one wrote"))
                    }
                    Some(writes) => {
                        if let Err(diff) = compare(writes, &writer, &files) {
                            problems.push(format!(
                                "{what} accepted step {step} at t={} ms, but its files differ \
                                 from what was written: {diff}",
                                clock.now_ms()
                            ));
                        }
                    }
                },
                Read::Absent(why) => {
                    if !P::REFERENCE {
                        problems.push(format!(
                            "{what} gave up although everything is visible {} ms after the \
                             writer finished: {why}",
                            MAX_LAG_MS + NEGATIVE_TTL_MS
                        ));
                    }
                }
            }
            views.push((what, view));
        }
        out.record(&problems, focus.verbose, |problems| {
            let mut t = trace_head::<P>(op, problems);
            let _ = write!(t, " run={run}\nsetup:\n");
            for line in &sc.setup {
                let _ = writeln!(t, "  {line}");
            }
            let _ = write!(
                t,
                "the writer's calls (one per ms from t=0):\n{}",
                timeline.show_calls()
            );
            let _ = write!(
                t,
                "the reader starts at t={start} ms; lag seed {seed:#x}; its cache lags by path:\n{}",
                views[0].1.show_lags()
            );
            for (what, view) in &views {
                let _ = write!(t, "the reader's calls ({what}):\n{}", view.show_log(30));
            }
            let _ = write!(t, "problems:\n{}", show_problems(problems));
            let _ = writeln!(
                t,
                "replay: {}",
                replay_command::<P>(op, budget, &[("state", run as usize)])
            );
            t
        });
    }
    out
}

/// The protocols, by name.
pub const PROTOCOLS: [&str; 4] = ["handoff", "naive", "stable-reader", "handoff-v1"];

/// Run `protocol`'s `op`, or `None` if there is no such protocol or it has no
/// such operation.
pub fn run_named(protocol: &str, op: Operation, budget: &Budget, focus: &Focus) -> Option<Outcome> {
    fn go<P: Protocol>(p: P, op: Operation, budget: &Budget, focus: &Focus) -> Option<Outcome> {
        P::OPERATIONS
            .contains(&op)
            .then(|| run(p, op, budget, focus))
    }
    match protocol {
        "handoff" => go(Handoff, op, budget, focus),
        "naive" => go(Naive {}, op, budget, focus),
        "stable-reader" => go(StableReader {}, op, budget, focus),
        "handoff-v1" => go(HandoffV1, op, budget, focus),
        _ => None,
    }
}

fn operations_of(protocol: &str) -> &'static [Operation] {
    match protocol {
        "handoff" => Handoff::OPERATIONS,
        "naive" => Naive::OPERATIONS,
        "stable-reader" => StableReader::OPERATIONS,
        "handoff-v1" => HandoffV1::OPERATIONS,
        _ => &[],
    }
}

/// Every (protocol, operation) of the report, on `threads` threads; results
/// in report order.
pub fn run_all(budget: &Budget, threads: usize) -> Vec<Outcome> {
    let jobs: Vec<(&str, Operation)> = PROTOCOLS
        .iter()
        .flat_map(|&p| operations_of(p).iter().map(move |&op| (p, op)))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(protocol, op)) = jobs.get(i) else {
                        break;
                    };
                    let outcome = run_named(protocol, op, budget, &Focus::default())
                        .expect("jobs name known protocols and operations");
                    results.lock().unwrap()[i] = Some(outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|o| o.expect("every job ran"))
        .collect()
}

/// The report's verdict.
#[derive(Debug)]
pub struct Verdict {
    /// handoff's (protocol, operation) pairs with no violation.
    pub passed: usize,
    /// handoff's pairs with a violation, or not checked.
    pub failed: usize,
    /// Reference protocols that showed no violation at all (each must).
    pub references_not_failing: Vec<&'static str>,
}

impl Verdict {
    /// Whether CI passes.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.references_not_failing.is_empty()
    }
}

/// Judge a report.
pub fn verdict(outcomes: &[Outcome]) -> Verdict {
    let mut verdict = Verdict {
        passed: 0,
        failed: 0,
        references_not_failing: Vec::new(),
    };
    let mut reference_violations: BTreeMap<&'static str, u64> = BTreeMap::new();
    for o in outcomes {
        if o.reference {
            *reference_violations.entry(o.protocol).or_default() += o.violations;
        } else if o.violations == 0 && o.skipped.is_none() {
            verdict.passed += 1;
        } else {
            verdict.failed += 1;
        }
    }
    verdict.references_not_failing = reference_violations
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(p, _)| p)
        .collect();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_passes_handoff_and_fails_the_references_on_a_reduced_budget() {
        let outcomes = run_all(&Budget::reduced(1), 2);
        for o in &outcomes {
            if !o.reference {
                assert_eq!(
                    o.violations,
                    0,
                    "{}\n{}",
                    o.line(),
                    o.first.as_deref().unwrap_or("")
                );
                assert!(o.skipped.is_none(), "{}", o.line());
                assert!(o.states > 0, "{}", o.line());
            }
        }
        let v = verdict(&outcomes);
        assert!(v.references_not_failing.is_empty(), "{v:?}");
        assert!(v.ok());
        // Each reference protocol fails where it should.
        let failing = |p: &str, op: Operation| {
            outcomes
                .iter()
                .any(|o| o.protocol == p && o.operation == op && o.violations > 0)
        };
        assert!(failing("naive", Operation::Publish), "naive loses crashes");
        assert!(failing("naive", Operation::ReadLagging));
        assert!(failing("stable-reader", Operation::ReadLagging));
        // v1's pin re-checks STABLE with a stat: a node's cache still shows
        // the STABLE gc removed, the pin returns Ok, gc deletes the step.
        assert!(failing("handoff-v1", Operation::GcPinRace));
        assert!(
            !failing("handoff-v1", Operation::Pin),
            "v1's pin alone is sound"
        );
    }

    #[test]
    fn a_violation_replays_to_the_same_trace() {
        let budget = Budget::reduced(1);
        let outcome = run_named("naive", Operation::Publish, &budget, &Focus::default()).unwrap();
        let first = outcome.first.expect("naive publish has a violation");
        let line = first.lines().next().unwrap();
        let number = |key: &str| -> usize {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap()
                .parse()
                .unwrap()
        };
        let focus = Focus {
            crash_at: Some(number("crash-at=")),
            state: Some(number("state=")),
            verbose: true,
            ..Focus::default()
        };
        let replayed = run_named("naive", Operation::Publish, &budget, &focus).unwrap();
        assert_eq!(replayed.states, 1);
        assert_eq!(replayed.violations, 1);
        assert_eq!(replayed.shown, vec![first]);
    }

    /// handoff with its `nth` flush (file or directory) turned into a no-op:
    /// a mutant the checker must catch wherever that flush is load-bearing.
    #[derive(Clone, Copy)]
    struct SkipSync {
        nth: usize,
    }

    struct Skipping<'a, S> {
        inner: &'a S,
        seen: Rc<std::cell::Cell<usize>>,
        nth: usize,
    }

    impl<S> Skipping<'_, S> {
        /// Whether this flush is the one to skip.
        fn skip(&self) -> bool {
            let i = self.seen.get();
            self.seen.set(i + 1);
            i == self.nth
        }
    }

    struct SkippingFile<'a, S: Storage> {
        fs: Skipping<'a, S>,
        inner: S::File,
    }

    impl<S: Storage> handoff_core::StorageFile for SkippingFile<'_, S> {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
            self.inner.write_at(buf, offset)
        }
        fn size(&mut self) -> std::io::Result<u64> {
            self.inner.size()
        }
        fn sync(&mut self) -> std::io::Result<()> {
            if self.fs.skip() {
                Ok(())
            } else {
                self.inner.sync()
            }
        }
    }

    impl<'a, S: Storage> Storage for Skipping<'a, S> {
        type File = SkippingFile<'a, S>;
        fn stat(&self, path: &str) -> std::io::Result<Option<handoff_core::Metadata>> {
            self.inner.stat(path)
        }
        fn read_dir(&self, path: &str) -> std::io::Result<Vec<handoff_core::DirEntry>> {
            self.inner.read_dir(path)
        }
        fn create_dir(&self, path: &str) -> std::io::Result<()> {
            self.inner.create_dir(path)
        }
        fn open(&self, path: &str) -> std::io::Result<Self::File> {
            self.wrap(self.inner.open(path)?)
        }
        fn create_new(&self, path: &str) -> std::io::Result<Self::File> {
            self.wrap(self.inner.create_new(path)?)
        }
        fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &str) -> std::io::Result<()> {
            self.inner.remove_file(path)
        }
        fn remove_dir(&self, path: &str) -> std::io::Result<()> {
            self.inner.remove_dir(path)
        }
        fn sync_dir(&self, path: &str) -> std::io::Result<()> {
            if self.skip() {
                Ok(())
            } else {
                self.inner.sync_dir(path)
            }
        }
        fn display(&self, path: &str) -> String {
            self.inner.display(path)
        }
    }

    impl<'a, S: Storage> Skipping<'a, S> {
        fn wrap(&self, inner: S::File) -> std::io::Result<SkippingFile<'a, S>> {
            Ok(SkippingFile {
                fs: Skipping {
                    inner: self.inner,
                    seen: Rc::clone(&self.seen),
                    nth: self.nth,
                },
                inner,
            })
        }
    }

    impl SkipSync {
        fn wrap<S: Storage>(self, fs: &S) -> Skipping<'_, S> {
            Skipping {
                inner: fs,
                seen: Rc::new(std::cell::Cell::new(0)),
                nth: self.nth,
            }
        }
    }

    impl Protocol for SkipSync {
        const NAME: &'static str = "handoff-skipping-a-sync";
        const REFERENCE: bool = false;
        const OPERATIONS: &'static [Operation] = &[Operation::Publish, Operation::Seal];
        const RETAINS: bool = true;

        fn write<S: Storage>(
            &self,
            fs: &S,
            clock: &SimPlatform,
            commit: Commit,
        ) -> Result<(), Error> {
            Handoff.write(&self.wrap(fs), clock, commit)
        }
    }

    /// Which of an operation's flushes the checker catches when skipped.
    fn caught_when_skipped(op: Operation) -> Vec<(String, bool)> {
        let case = crash_case(Handoff, op).unwrap();
        let sc = &case.scenario;
        sc.model.start_recording();
        (case.run)(&sc.model, &sc.clock).unwrap().unwrap();
        let syncs: Vec<String> = sc
            .model
            .take_recording()
            .ops
            .into_iter()
            .filter(|op| op.starts_with("fsync"))
            .collect();
        let budget = Budget::reduced(1);
        syncs
            .into_iter()
            .enumerate()
            .map(|(nth, sync)| {
                let outcome = run(SkipSync { nth }, op, &budget, &Focus::default());
                (sync, outcome.violations > 0)
            })
            .collect()
    }

    #[test]
    fn skipping_a_load_bearing_fsync_is_caught() {
        for op in [Operation::Publish, Operation::Seal] {
            let results = caught_when_skipped(op);
            assert!(results.len() >= 8, "{results:?}");
            for (i, (sync, caught)) in results.iter().enumerate() {
                // Not load-bearing for the invariants: STABLE is empty, so
                // its data flush changes nothing. In a staged publish, the
                // first flush of the staging directory only orders the
                // manifest's name before STABLE's inside a directory no
                // reader sees yet. (In seal the same flush also makes the
                // payload's names durable before STABLE: load-bearing.)
                // The seal claim's flush keeps its writer id through a power
                // loss only so that its sealer can take it over afterwards;
                // without it the claim is merely left empty, refusing every
                // sealer until removed: no invariant changes. The flush of
                // the staging directory after publish's rename is for
                // CephFS, whose client ties a rename to its source
                // directory; the model, by F4, ties it to the destination.
                let first_dir_flush = sync.starts_with("fsync-dir")
                    && results[i + 1..].iter().any(|(later, _)| later == sync);
                let ordering_only = sync.ends_with("/STABLE")
                    || sync.contains("/.handoff.seal.")
                    || sync == "fsync-dir .handoff/staging"
                    || (op == Operation::Publish && first_dir_flush);
                assert_eq!(
                    *caught,
                    !ordering_only,
                    "{}: skipping `{sync}` was {}caught; all: {results:#?}",
                    op.name(),
                    if *caught { "" } else { "not " }
                );
            }
        }
    }
}
