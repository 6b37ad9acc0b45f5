//! Two nodes over one store: the writer on node A, the reader on node B,
//! which sees A's data late (seeded) and A's names through its caches:
//! negative and positive look-ups and attributes.
//!
//! - handoff: `handoff publish` (or the trainer's in-place writes, then
//!   `handoff seal`) on A, while `handoff wait` polls on B from before the
//!   write starts. Broken: wait exits 0 and B's files are not exactly the
//!   payload right after.
//! - naive: write the files, touch STABLE (no fsync) on A; on B, poll
//!   `test -f STABLE`, then read at once. Broken: a file missing, short or
//!   different.
//!
//! - runs (`nodes_a_restarted_trainers_run_supersedes_the_old_one`): a
//!   restarted trainer on B begins run 1 while node A, where the old trainer
//!   and a watcher run, caches `.handoff/runs` as absent. Broken: A's old
//!   run publishes a step, or a reader on A returns anything but run 1's.
//!
//! `node_caches_through_the_kernel` checks, without handoff, that the
//! caches behave through a real mount as the crate's rules state.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use handoff_faultfs::{Delays, Mode, SeededRng};

use crate::util::{Payload, Rig, Tally, adapter, code, poll, run, seeds, serial, setup, stderr};

const DEADLINE: Duration = Duration::from_secs(60);

/// Hostile but bounded: every lag is far below the reader's settle time.
pub const DELAYS: Delays = Delays {
    data_lag_max: Duration::from_millis(120),
    negative_ttl: Duration::from_millis(60),
    positive_ttl: Duration::from_millis(60),
    attr_ttl: Duration::from_millis(60),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Staged (handoff publish; the naive writer writes a temporary
    /// directory, touches STABLE in it and renames it).
    Publish,
    /// In place, written slowly (a trainer saving the adapter), then handoff
    /// seal or the naive touch STABLE.
    Seal,
}

fn scenario_name(op: Op) -> &'static str {
    match op {
        Op::Publish => "nodes-publish",
        Op::Seal => "nodes-seal",
    }
}

pub fn two_nodes(label: &str, roots: &[String]) -> Rig {
    let rig = Rig::new(label, Mode::Nodes(2), |backing| {
        for root in roots {
            fs::create_dir(backing.join(root)).unwrap();
        }
    });
    rig.fs.set_delays(DELAYS);
    rig
}

/// The shared root as each node mounts it: A's for the writer, B's for the
/// reader.
struct Roots {
    a: PathBuf,
    b: PathBuf,
}

/// Runs `one` for each seed, on a rig of two nodes whose data lag is drawn
/// from the seed, and reports the tally with node B's cache statistics as
/// `tool`'s run of `op`.
fn each_seed(
    op: Op,
    tool: &str,
    label: &str,
    mut one: impl FnMut(u64, &Rig, &Roots, &mut Tally),
) -> Tally {
    let _serial = serial();
    let started = Instant::now();
    let rig = two_nodes(label, &["root".to_owned()]);
    let roots = Roots {
        a: rig.at(0).join("root"),
        b: rig.at(1).join("root"),
    };
    let mut tally = Tally::default();
    for seed in 0..seeds(50) {
        rig.fs.set_seed(seed);
        one(seed, &rig, &roots, &mut tally);
        tally.seeds += 1;
    }
    tally.add_stats("b", rig.fs.stats(1));
    tally.report(scenario_name(op), tool, started.elapsed());
    tally
}

/// How node B reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// `handoff wait`, then the files are read where they are.
    Wait,
    /// `handoff fetch` into a local root off the mount, which is read.
    Fetch,
}

fn run_handoff(op: Op, reader: Reader) {
    let Some(setup) = setup() else { return };
    let tool = match reader {
        Reader::Wait => "handoff",
        Reader::Fetch => "handoff-fetch",
    };
    let tally = each_seed(op, tool, "nodes", |seed, rig, roots, tally| {
        let (root_a, root_b) = (&roots.a, &roots.b);
        let mut rng = SeededRng::new(seed);
        let step = (seed + 1).to_string();
        let step_dir = format!("step_{step}");
        let payload = adapter(&format!("{op:?}-{seed}"));
        let src = rig.dir.join(format!("src{seed}"));
        payload.write_to(&src).unwrap();
        let verify = if rng.below(2) == 0 { "size" } else { "hash" };
        // A fetch's local root: off the mount, on the real disk.
        let local = rig.dir.join(format!("local{seed}"));
        let read_at = match reader {
            Reader::Wait => root_b.join(&step_dir),
            Reader::Fetch => local.join(&step_dir),
        };
        let waited = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut args = vec![
                    "--step",
                    &step,
                    "--timeout",
                    "20s",
                    "--settle",
                    "10s",
                    "--poll",
                    "20ms",
                ];
                match reader {
                    Reader::Wait => {
                        args.extend(["--verify", verify]);
                        run(setup.cmd("wait", root_b, &args), DEADLINE)
                    }
                    Reader::Fetch => {
                        args.extend(["--to", local.to_str().unwrap()]);
                        run(setup.cmd("fetch", root_b, &args), DEADLINE)
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            let out = match op {
                Op::Publish => run(
                    setup.cmd("publish", root_a, &["--step", &step, src.to_str().unwrap()]),
                    DEADLINE,
                ),
                Op::Seal => {
                    payload
                        .write_slowly(&root_a.join(&step_dir), 64 * 1024, Duration::from_millis(3))
                        .unwrap();
                    run(setup.cmd("seal", root_a, &["--step", &step]), DEADLINE)
                }
            };
            assert!(
                out.status.success(),
                "seed {seed}: {op:?} on node A failed: {}",
                stderr(&out)
            );
            reader.join().unwrap()
        });
        if waited.status.success() {
            tally.count("accepted");
            if let Err(why) = payload.check(&read_at) {
                tally.broken(format!(
                    "seed={seed} {reader:?} verify={verify}: accepted, then on B: {why}"
                ));
            }
        } else {
            tally.count(&format!("wait_exit_{}", code(&waited)));
            eprintln!("seed {seed}: wait on B failed: {}", stderr(&waited));
        }
    });
    assert_eq!(
        tally.accepted_broken, 0,
        "handoff wait accepted a broken version: {:?}",
        tally.examples
    );
    assert_eq!(
        tally.get("accepted"),
        tally.seeds,
        "wait on B did not accept every complete version: {:?}",
        tally.detail
    );
}

fn run_naive(op: Op) {
    if setup().is_none() {
        return;
    }
    let tally = each_seed(op, "naive", "nodes-naive", |seed, _, roots, tally| {
        let step_dir = format!("step_{}", seed + 1);
        let payload = adapter(&format!("naive-{op:?}-{seed}"));
        let done = AtomicBool::new(false);
        let seen = std::thread::scope(|scope| {
            scope.spawn(|| {
                naive_write(op, &payload, &roots.a, &step_dir);
                done.store(true, Ordering::SeqCst);
            });
            naive_read(&payload, &roots.b.join(&step_dir), &done)
        });
        match seen {
            Some(Ok(())) => tally.count("accepted"),
            Some(Err(why)) => {
                tally.count("accepted");
                tally.broken(format!("seed={seed}: STABLE seen on B, then {why}"));
            }
            None => tally.count("never_seen"),
        }
    });
    assert!(
        tally.accepted_broken >= 1,
        "the naive reader never hit a missing or short file: the test cannot fail ({:?})",
        tally.detail
    );
}

/// prime-rl's writer: files, then STABLE, no fsync anywhere.
fn naive_write(op: Op, payload: &Payload, root: &Path, step_dir: &str) {
    match op {
        Op::Publish => {
            let tmp = root.join(format!(".tmp-{step_dir}"));
            payload.write_to(&tmp).unwrap();
            fs::write(tmp.join("STABLE"), b"").unwrap();
            fs::rename(&tmp, root.join(step_dir)).unwrap();
        }
        Op::Seal => {
            let dir = root.join(step_dir);
            payload
                .write_slowly(&dir, 64 * 1024, Duration::from_millis(3))
                .unwrap();
            fs::write(dir.join("STABLE"), b"").unwrap();
        }
    }
}

/// prime-rl's reader: poll for STABLE, then load at once. `None` if STABLE
/// never showed up.
fn naive_read(
    payload: &Payload,
    dir: &Path,
    writer_done: &AtomicBool,
) -> Option<Result<(), String>> {
    let mut done_at = None;
    poll(Duration::from_secs(20), Duration::from_millis(2), || {
        if dir.join("STABLE").exists() {
            return Some(Some(payload.check(dir)));
        }
        // Give the lagging view its full delay after the writer finished.
        if done_at.is_none() && writer_done.load(Ordering::SeqCst) {
            done_at = Some(Instant::now());
        }
        done_at
            .filter(|t| t.elapsed() > Duration::from_secs(2))
            .map(|_| None)
    })
    .flatten()
}

/// Each scenario with its control: handoff's `wait` on node B accepts only
/// complete versions, and the naive reader, in the same scenario, is caught
/// (so the scenario can fail).
#[test]
fn nodes_wait_returns_only_complete_versions_where_a_naive_reader_is_caught() {
    for op in [Op::Publish, Op::Seal] {
        run_handoff(op, Reader::Wait);
        run_naive(op);
    }
}

/// `handoff fetch` on node B, from before the writer starts on A: it
/// commits a local copy only of the complete version (each copy hashed
/// against the manifest, retried while B's view lags), and always one. The
/// naive reader of the test above is its control: B's lagging view is what
/// it fails on.
#[test]
fn nodes_fetch_commits_only_complete_local_copies() {
    for op in [Op::Publish, Op::Seal] {
        run_handoff(op, Reader::Fetch);
    }
}

/// Two sealers of one step written in place, one on each node, at once,
/// each seeing the other's names through its node's caches: exactly one
/// commits the step, with its own manifest; the other exits 5 (conflict).
#[test]
fn nodes_two_sealers_of_one_step_one_wins_with_its_own_manifest() {
    let Some(setup) = setup() else { return };
    let _serial = serial();
    let started = Instant::now();
    let rig = two_nodes("seal-race", &["root".to_owned()]);
    let roots = [rig.at(0).join("root"), rig.at(1).join("root")];
    let mut tally = Tally::default();
    for seed in 0..seeds(20) {
        rig.fs.set_seed(seed);
        tally.seeds += 1;
        let step = (seed + 1).to_string();
        let step_dir = format!("step_{step}");
        let payload = adapter(&format!("seal-race-{seed}"));
        payload.write_to(&roots[0].join(&step_dir)).unwrap();
        // Past every lag: both sealers see the whole payload (a sealer that
        // cannot is a different failure).
        std::thread::sleep(DELAYS.data_lag_max * 2);
        let outs: Vec<_> = std::thread::scope(|scope| {
            let sealers: Vec<_> = ["a", "b"]
                .iter()
                .zip(&roots)
                .map(|(writer, root)| {
                    let cmd = setup.cmd("seal", root, &["--step", &step, "--writer", writer]);
                    scope.spawn(move || run(cmd, DEADLINE))
                })
                .collect();
            sealers.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let codes: Vec<i32> = outs.iter().map(code).collect();
        let winner = match codes[..] {
            [0, 5] => "a",
            [5, 0] => "b",
            _ => {
                tally.broken(format!(
                    "seed={seed}: exit codes {codes:?}: {} / {}",
                    stderr(&outs[0]),
                    stderr(&outs[1])
                ));
                continue;
            }
        };
        tally.count(&format!("won_{winner}"));
        let waited = run(
            setup.cmd(
                "wait",
                &roots[1],
                &[
                    "--step",
                    &step,
                    "--verify",
                    "hash",
                    "--timeout",
                    "10s",
                    "--json",
                ],
            ),
            DEADLINE,
        );
        let writer = serde_json::from_slice::<serde_json::Value>(&waited.stdout)
            .ok()
            .and_then(|v| v["writer"].as_str().map(str::to_owned));
        if writer.as_deref() != Some(winner) {
            tally.broken(format!(
                "seed={seed}: {winner} won, but wait on B gave writer {writer:?}: {}",
                stderr(&waited)
            ));
        }
    }
    tally.report("nodes-seal-race", "handoff", started.elapsed());
    assert_eq!(tally.accepted_broken, 0, "{:?}", tally.examples);
}

/// Step 2 of run 1, as every reader must number it.
const RUN_1_STEP_2: u64 = 1_000_000_000_002;

/// The step a `wait --json` printed, or its exit code and stderr.
fn waited_step(out: &std::process::Output) -> Result<u64, String> {
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["step"].as_u64())
        .ok_or_else(|| format!("exit {}: {}", code(out), stderr(out)))
}

/// A trainer restarted from step 1 on node B begins run 1 and publishes its
/// step 2 while the old trainer on node A is still at work, and node A
/// holds `.handoff/runs` as absent from a look-up made before the run
/// existed (an NFS negative look-up, kept up to a minute). A's next publish
/// is superseded; a watcher on A from before the begin, a `wait --after 3`
/// after it and `--latest` all give run 1's step 2, never an old step.
#[test]
fn nodes_a_restarted_trainers_run_supersedes_the_old_one() {
    let Some(setup) = setup() else { return };
    let _serial = serial();
    let started = Instant::now();
    let seeds = seeds(20);
    // A root per seed: a run, once begun, stays.
    let names: Vec<String> = (0..seeds).map(|seed| format!("root{seed}")).collect();
    let rig = two_nodes("runs", &names);
    // Negative entries outlive a whole seed, so A's absent `runs` is still
    // cached when the old trainer publishes again.
    rig.fs.set_delays(Delays {
        negative_ttl: Duration::from_secs(30),
        ..DELAYS
    });
    let mut tally = Tally::default();
    for (seed, name) in (0..seeds).zip(&names) {
        rig.fs.set_seed(seed);
        tally.seeds += 1;
        let mut rng = SeededRng::new(seed);
        let (a, b) = (rig.at(0).join(name), rig.at(1).join(name));
        let (old, new) = (
            adapter(&format!("runs-old-{seed}")),
            adapter(&format!("runs-new-{seed}")),
        );
        let (old_src, new_src) = (
            rig.dir.join(format!("old{seed}")),
            rig.dir.join(format!("new{seed}")),
        );
        old.write_to(&old_src).unwrap();
        new.write_to(&new_src).unwrap();
        let publish = |root: &Path, args: &[&str], src: &Path| {
            let mut args = args.to_vec();
            args.push(src.to_str().unwrap());
            run(setup.cmd("publish", root, &args), DEADLINE)
        };
        // In odd seeds the old trainer's step 4 committed before the begin,
        // so `wait --after 3` on A finds it at once and must still see, past
        // A's cache, that run 1 has superseded it.
        let last_old = 3 + seed % 2;
        let (last, refused) = (last_old.to_string(), (last_old + 1).to_string());
        for step in 1..=last_old {
            let step = step.to_string();
            let out = publish(&a, &["--step", &step], &old_src);
            assert!(
                out.status.success(),
                "seed {seed}: run 0 step {step}: {}",
                stderr(&out)
            );
        }
        // B looks before the run exists: its caches hold the absent names.
        let out = run(
            setup.cmd("wait", &b, &["--after", &last, "--timeout", "100ms"]),
            DEADLINE,
        );
        assert_eq!(code(&out), 3, "seed {seed}: wait on B: {}", stderr(&out));
        let out = run(setup.cmd("ls", &b, &[]), DEADLINE);
        assert!(
            out.status.success(),
            "seed {seed}: ls on B: {}",
            stderr(&out)
        );
        // So does A, as any tool looking for runs would (handoff itself
        // lists `.handoff` instead).
        let runs_at_a = a.join(".handoff/runs");
        assert!(
            fs::metadata(&runs_at_a).is_err(),
            "seed {seed}: runs before begin"
        );
        let outs = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let args = [
                    "--after",
                    &last,
                    "--json",
                    "--timeout",
                    "20s",
                    "--poll",
                    "20ms",
                ];
                run(setup.cmd("wait", &a, &args), DEADLINE)
            });
            let begun = run(setup.cmd("begin", &b, &["--json"]), DEADLINE);
            let run_no = serde_json::from_slice::<serde_json::Value>(&begun.stdout)
                .ok()
                .and_then(|v| v["run"].as_u64());
            assert_eq!(
                run_no,
                Some(1),
                "seed {seed}: begin on B: {}",
                stderr(&begun)
            );
            // The scenario is hostile only if A still holds `runs` absent.
            if fs::metadata(&runs_at_a).is_err() {
                tally.count("a_cached_no_runs");
            }
            // The begin is done: however the two interleave, A's run 0 is
            // superseded before its publish starts.
            let pause = Duration::from_millis(rng.below(40));
            let (a, old_src, refused) = (&a, &old_src, &refused);
            let old_step = scope.spawn(move || {
                std::thread::sleep(pause);
                publish(a, &["--step", refused], old_src)
            });
            let new_step = publish(&b, &["--run", "1", "--step", "2"], &new_src);
            [new_step, old_step.join().unwrap(), watcher.join().unwrap()]
        });
        let [new_step, old_step, watched] = &outs;
        if new_step.status.success() {
            tally.count("new_published");
        } else {
            tally.broken(format!(
                "seed={seed}: run 1 step 2 on B: {}",
                stderr(new_step)
            ));
        }
        if code(old_step) == 5 && stderr(old_step).contains("superseded") {
            tally.count("old_refused");
        } else {
            tally.broken(format!(
                "seed={seed}: run 0 step {refused} on A after run 1 began: exit {}: {}",
                code(old_step),
                stderr(old_step)
            ));
        }
        if fs::read_dir(&b)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_str() == Some(&format!("step_{refused}")))
        {
            tally.broken(format!("seed={seed}: step_{refused} is on the server"));
        }
        let after = run(
            setup.cmd("wait", &a, &["--after", "3", "--json", "--timeout", "5s"]),
            DEADLINE,
        );
        let latest = run(
            setup.cmd("wait", &a, &["--latest", "--json", "--timeout", "5s"]),
            DEADLINE,
        );
        for (what, out) in [("watcher", watched), ("after", &after), ("latest", &latest)] {
            match waited_step(out) {
                Ok(RUN_1_STEP_2) => tally.count(&format!("{what}_run_1")),
                got => tally.broken(format!("seed={seed}: {what} on A gave {got:?}")),
            }
        }
        if let Err(why) = new.check(&a.join(format!("step_{RUN_1_STEP_2}"))) {
            tally.broken(format!("seed={seed}: run 1 step 2 read on A: {why}"));
        }
    }
    tally.add_stats("a", rig.fs.stats(0));
    tally.add_stats("b", rig.fs.stats(1));
    tally.report("nodes-runs", "handoff", started.elapsed());
    assert_eq!(tally.accepted_broken, 0, "{:?}", tally.examples);
    assert_eq!(
        tally.get("a_cached_no_runs"),
        tally.seeds,
        "node A saw the run begun on B at once: the scenario cannot fail ({:?})",
        tally.detail
    );
}

fn kind<T>(r: std::io::Result<T>) -> Result<(), std::io::ErrorKind> {
    r.map(|_| ()).map_err(|e| e.kind())
}

/// `O_CREAT|O_EXCL` through the openat2 system call.
fn create_new_openat2(path: &Path) -> std::io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let how: [u64; 3] = [
        (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC) as u64,
        0o644,
        0,
    ];
    // SAFETY: `path` and `how` outlive the call; the size is `how`'s.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            how.as_ptr(),
            size_of_val(&how),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this function owns.
    Ok(unsafe { fs::File::from_raw_fd(fd as i32) })
}

/// The cache rules through the kernel: `stat`, `open`, exclusive creates,
/// listings and rmdir as a process on node B sees them.
#[test]
fn node_caches_through_the_kernel() {
    use std::io::ErrorKind;
    if setup().is_none() {
        return;
    }
    let _serial = serial();
    let rig = two_nodes("caches", &["root".to_owned()]);
    let ttl = Duration::from_secs(5);
    rig.fs.set_delays(Delays {
        negative_ttl: ttl,
        positive_ttl: ttl,
        attr_ttl: ttl,
        ..Delays::default()
    });
    let (a, b) = (rig.at(0).join("root"), rig.at(1).join("root"));

    // Negative entry: neither stat nor open sees A's synced file, until B
    // lists the directory.
    assert_eq!(kind(fs::metadata(b.join("f"))), Err(ErrorKind::NotFound));
    let f = fs::File::create(a.join("f")).unwrap();
    f.sync_all().unwrap();
    fs::File::open(&a).unwrap().sync_all().unwrap();
    assert_eq!(kind(fs::metadata(b.join("f"))), Err(ErrorKind::NotFound));
    assert_eq!(kind(fs::File::open(b.join("f"))), Err(ErrorKind::NotFound));
    // ... but an exclusive create asks the server.
    assert_eq!(
        kind(fs::File::create_new(b.join("f"))),
        Err(ErrorKind::AlreadyExists)
    );
    let listed: Vec<_> = fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["f"]);
    assert_eq!(kind(fs::metadata(b.join("f"))), Ok(()));
    assert_eq!(kind(fs::File::open(b.join("f"))), Ok(()));

    // Positive entry: B still stats a file A removed; opening it fails.
    fs::remove_file(a.join("f")).unwrap();
    assert_eq!(kind(fs::metadata(b.join("f"))), Ok(()));
    assert_eq!(kind(fs::File::open(b.join("f"))), Err(ErrorKind::NotFound));
    // ... and creating it exclusively is the server's to decide.
    fs::write(a.join("h"), b"").unwrap();
    assert_eq!(kind(fs::metadata(b.join("h"))), Ok(()));
    fs::remove_file(a.join("h")).unwrap();
    assert_eq!(kind(fs::metadata(b.join("h"))), Ok(()));
    assert_eq!(kind(fs::File::create_new(b.join("h"))), Ok(()));
    // The same through openat2 (how handoff creates a pin).
    fs::write(a.join("h2"), b"").unwrap();
    assert_eq!(kind(fs::metadata(b.join("h2"))), Ok(()));
    fs::remove_file(a.join("h2")).unwrap();
    assert_eq!(kind(fs::metadata(b.join("h2"))), Ok(()));
    assert_eq!(kind(create_new_openat2(&b.join("h2"))), Ok(()));
    // A name A replaced while its old file lives on elsewhere: stat shows
    // the old file, open the new one.
    fs::write(a.join("g"), b"old").unwrap();
    assert_eq!(fs::metadata(b.join("g")).unwrap().len(), 3);
    fs::rename(a.join("g"), a.join("g.aside")).unwrap();
    fs::write(a.join("g"), b"newer").unwrap();
    assert_eq!(fs::metadata(b.join("g")).unwrap().len(), 3);
    assert_eq!(fs::read(b.join("g")).unwrap(), b"newer");

    // A directory A removed while B caches it takes no names from B, and
    // B's mkdir of it is the server's to decide.
    fs::create_dir_all(a.join("step/pins")).unwrap();
    assert_eq!(kind(fs::metadata(b.join("step/pins"))), Ok(()));
    fs::remove_dir(a.join("step/pins")).unwrap();
    assert_eq!(kind(fs::metadata(b.join("step/pins"))), Ok(()));
    assert_eq!(
        kind(fs::File::create_new(b.join("step/pins/p"))),
        Err(ErrorKind::NotFound)
    );
    assert_eq!(kind(fs::create_dir(b.join("step/pins"))), Ok(()));
    // rmdir of a directory with a name B does not know of: ENOTEMPTY.
    assert_eq!(
        kind(fs::metadata(b.join("step/pins/p1"))),
        Err(ErrorKind::NotFound)
    );
    fs::write(a.join("step/pins/p1"), b"").unwrap();
    assert_eq!(
        kind(fs::remove_dir(b.join("step/pins"))),
        Err(ErrorKind::DirectoryNotEmpty)
    );
    let stats = rig.fs.stats(1);
    assert!(stats.negative_hits >= 3, "{stats:?}");
    assert!(stats.stale_names >= 2, "{stats:?}");
}
