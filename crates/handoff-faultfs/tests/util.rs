//! What every scenario shares: the skip check, the real `handoff` binary,
//! payloads, mounts that always unmount, child processes with deadlines, and
//! the `faultfs:` report lines.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use handoff_faultfs::{FaultFs, Mode, Mount, Stats, fuse_available, owned_dir, sweep_stale_mounts};
pub use handoff_testkit::Payload;
use handoff_testkit::Rng;
use handoff_testkit::proc::{self, run_within};
pub use handoff_testkit::proc::{code, stderr};

/// Where every mount point and backing store of these tests lives.
pub fn base() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("faultfs")
}

/// What a scenario needs from the machine.
#[derive(Debug)]
pub struct Setup {
    /// The real `handoff` binary.
    pub handoff: PathBuf,
    /// Its compiled-component cache, outside every FUSE mount.
    pub cache: PathBuf,
}

/// The setup, or `None` after printing why these tests cannot run here.
pub fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            if let Err(why) = fuse_available() {
                report_line(&format!(
                    "faultfs: SKIPPED: {why}; the FUSE scenarios need root and /dev/fuse"
                ));
                return None;
            }
            for point in sweep_stale_mounts(&base()).expect("sweep of stale mounts") {
                report_line(&format!(
                    "faultfs: detached stale mount {}",
                    point.display()
                ));
            }
            let setup = Setup {
                handoff: snapshot(&handoff_binary()),
                cache: base().join("handoff-cache"),
            };
            // Fill the component cache once, so no seed pays for compiling it.
            let warm = owned_dir(&base(), "warm").unwrap();
            let out = run(setup.cmd("fsck", &warm, &[]), Duration::from_secs(120));
            assert!(
                out.status.success(),
                "handoff does not run: {}",
                stderr(&out)
            );
            let _ = fs::remove_dir_all(warm);
            Some(setup)
        })
        .as_ref()
}

/// `$HANDOFF_BIN`, else the workspace's `handoff` built in this test's
/// profile (built now, so a `cargo test -p handoff-faultfs` never runs a
/// stale binary).
fn handoff_binary() -> PathBuf {
    let bin = proc::handoff_binary();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Err(why) = proc::build_handoff(&workspace) {
        assert!(
            bin.exists(),
            "cannot build handoff and none is built:\n{why}"
        );
        report_line(&format!(
            "faultfs: WARNING: testing the existing {}: {why}",
            bin.display()
        ));
    }
    bin
}

/// A private link to (or copy of) the binary, so a concurrent `cargo build`
/// replacing it cannot pull it from under a running scenario.
fn snapshot(bin: &Path) -> PathBuf {
    let dir = owned_dir(&base(), "bin").unwrap();
    let copy = dir.join("handoff");
    if fs::hard_link(bin, &copy).is_err() {
        fs::copy(bin, &copy).unwrap_or_else(|e| panic!("cannot copy {}: {e}", bin.display()));
    }
    copy
}

impl Setup {
    /// `handoff <sub> --root <root> <args>`.
    pub fn cmd(&self, sub: &str, root: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.handoff);
        cmd.arg(sub)
            .arg("--root")
            .arg(root)
            .args(args)
            .env("HANDOFF_CACHE_DIR", &self.cache);
        cmd
    }
}

/// One scenario at a time: they measure timing-sensitive behaviour on 2 cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seeds per scenario: at least 50, more with `FAULTFS_SEEDS`.
pub fn seeds(at_least: u64) -> u64 {
    std::env::var("FAULTFS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
        .max(at_least)
}

/// Writes straight to the process's stdout, past the test harness's capture,
/// so `cargo test` shows the report without `--nocapture`.
pub fn report_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The counts one scenario run reports.
#[derive(Debug, Default)]
pub struct Tally {
    pub seeds: u64,
    pub accepted_broken: u64,
    /// Outcome counts for the detail line (`committed`, `absent`, ...).
    pub detail: BTreeMap<String, u64>,
    /// The first few broken acceptances, for the failure message.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn count(&mut self, what: &str) {
        *self.detail.entry(what.to_owned()).or_default() += 1;
    }

    pub fn get(&self, what: &str) -> u64 {
        self.detail.get(what).copied().unwrap_or(0)
    }

    pub fn broken(&mut self, example: String) {
        self.accepted_broken += 1;
        if self.examples.len() < 5 {
            self.examples.push(example);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.seeds += other.seeds;
        self.accepted_broken += other.accepted_broken;
        for (k, v) in other.detail {
            *self.detail.entry(k).or_default() += v;
        }
        self.examples.extend(other.examples);
        self.examples.truncate(5);
    }

    /// Records how often a node's view lagged (see [`Stats`]).
    pub fn add_stats(&mut self, node: &str, stats: Stats) {
        let Stats {
            negative_hits,
            stale_names,
            stale_attrs,
            short_views,
        } = stats;
        for (what, n) in [
            ("negative_hits", negative_hits),
            ("stale_names", stale_names),
            ("stale_attrs", stale_attrs),
            ("short_views", short_views),
        ] {
            self.detail.insert(format!("{node}_{what}"), n);
        }
    }

    /// Prints the `faultfs:` line and a detail line.
    pub fn report(&self, scenario: &str, tool: &str, elapsed: Duration) {
        report_line(&format!(
            "faultfs: scenario={scenario} tool={tool} seeds={} accepted_broken={}",
            self.seeds, self.accepted_broken
        ));
        let detail: Vec<String> = self
            .detail
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        report_line(&format!(
            "faultfs-detail: scenario={scenario} tool={tool} {} elapsed={:.1}s",
            detail.join(" "),
            elapsed.as_secs_f64()
        ));
        for example in &self.examples {
            report_line(&format!(
                "faultfs-example: scenario={scenario} tool={tool} {example}"
            ));
        }
    }
}

/// A model-weights payload: `adapter_config.json` (1 KiB) and
/// `adapter_model.safetensors` (256 KiB), contents derived from `tag`.
pub fn adapter(tag: &str) -> Payload {
    let mut rng = Rng::from_tag(tag);
    Payload::new()
        .with("adapter_config.json", rng.bytes(1024))
        .with("adapter_model.safetensors", rng.bytes(256 * 1024))
}

/// Runs a command to completion, SIGKILLing it past `deadline`.
pub fn run(mut cmd: Command, deadline: Duration) -> Output {
    run_within(&mut cmd, deadline).unwrap_or_else(|out| {
        panic!(
            "{cmd:?} did not finish within {deadline:?}; killed. stderr: {}",
            stderr(&out)
        )
    })
}

/// The state `handoff fsck --json` gives entry `name`, or "absent".
pub fn fsck_state(setup: &Setup, root: &Path, name: &str) -> String {
    let out = run(
        setup.cmd("fsck", root, &["--json"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "fsck failed: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("fsck --json prints JSON");
    json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == name)
        .map_or_else(
            || "absent".to_owned(),
            |e| e["state"].as_str().unwrap_or("?").to_owned(),
        )
}

/// A filesystem with its mounts; unmounts in `Drop`, so a failing assertion
/// never leaves a mount behind.
pub struct Rig {
    pub fs: FaultFs,
    pub dir: PathBuf,
    mounts: Vec<Mount>,
}

impl Rig {
    /// A new rig under [`base`]: `backing/` seeded by `init`, one mount point
    /// per node, all mounted.
    pub fn new(label: &str, mode: Mode, init: impl FnOnce(&Path)) -> Rig {
        let dir = owned_dir(&base(), label).unwrap();
        let backing = dir.join("backing");
        fs::create_dir(&backing).unwrap();
        init(&backing);
        let fs = FaultFs::open(&backing, mode).unwrap();
        let mut rig = Rig {
            fs,
            dir,
            mounts: Vec::new(),
        };
        rig.mount_all();
        rig
    }

    fn nodes(&self) -> usize {
        match self.fs.mode() {
            Mode::Lazy => 1,
            Mode::Nodes(n) => n,
        }
    }

    /// Node `node`'s mount point.
    pub fn at(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}"))
    }

    fn mount_all(&mut self) {
        for node in 0..self.nodes() {
            let point = self.at(node);
            fs::create_dir_all(&point).unwrap();
            self.mounts.push(self.fs.mount(node, &point).unwrap());
        }
    }

    /// Unmounts every node, reloads the store from the backing directory, and
    /// mounts again: a reboot.
    pub fn remount(&mut self) {
        for mount in self.mounts.drain(..) {
            mount.unmount().unwrap();
        }
        self.fs.reload().unwrap();
        self.mount_all();
    }

    /// Unmounts, replaces the backing directory's contents with `init`'s,
    /// and mounts again.
    pub fn reset(&mut self, init: impl FnOnce(&Path)) {
        for mount in self.mounts.drain(..) {
            mount.unmount().unwrap();
        }
        let backing = self.fs.backing().to_path_buf();
        fs::remove_dir_all(&backing).unwrap();
        fs::create_dir(&backing).unwrap();
        init(&backing);
        self.fs.reload().unwrap();
        self.mount_all();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.mounts.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Copies a directory tree (plain files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Polls `f` every `every` until it returns `Some` or `deadline` passes.
pub fn poll<T>(deadline: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
