//! A FUSE test filesystem for handoff's crash and visibility tests.
//!
//! One in-memory store, loaded from a backing directory, is mounted one or
//! more times. **Lazy mode** (one mount) loses every change that was not
//! fsynced when told to crash, directory entries included: LazyFS, made to
//! catch a missing *directory* fsync too. **Nodes mode** (one mount per
//! simulated node) shows every node the others' changes late and out of order,
//! through per-node caches, the way NFS clients do. The tests drive it through
//! an in-process handle, [`FaultFs`]; the `handoff-faultfs` binary mounts it
//! for manual use.
//!
//! ```no_run
//! use handoff_faultfs::{FaultFs, Mode};
//! # fn main() -> std::io::Result<()> {
//! let fs = FaultFs::open("/tmp/backing", Mode::Lazy)?;
//! let mount = fs.mount(0, "/tmp/mnt".as_ref())?;
//! std::fs::write("/tmp/mnt/f", b"lost")?; // never fsynced
//! fs.crash()?; // /tmp/mnt/f is gone; /tmp/backing holds the durable image
//! drop(mount); // unmounts
//! # Ok(())
//! # }
//! ```
//!
//! # The rules
//!
//! These are the only place the model is stated; `store.rs` implements them
//! and its unit tests pin them.
//!
//! ## Lazy mode: what survives a crash
//!
//! 1. **Data.** write, truncate, chmod and utimes change the file at once, and
//!    are durable only when *that file* is fsynced (fdatasync alike): fsync
//!    makes its bytes and mode durable as they are then. It does not make the
//!    file's *name* durable. `close` flushes nothing.
//! 2. **Names.** create, mkdir, unlink, rmdir and rename are visible at once
//!    and durable only when a *directory they touch* is fsynced. fsync of a
//!    directory D commits every pending entry operation on D and, transitively,
//!    every operation entangled with those through a rename; they are applied
//!    in the order they happened. Operations left pending touch none of those
//!    directories, so the two sets commute and no impossible state arises.
//! 3. **Rename** touches its source and target directory and is one atomic
//!    operation, as in a journaling filesystem: it becomes durable when either
//!    parent is fsynced, and never half (never both names, never neither). An
//!    unsynced creation it depends on (mkdir of the staging directory) commits
//!    with it. So handoff's publish — rename staging into the root, then fsync
//!    the root — is durable once that fsync returns.
//! 4. A durable name whose file data was never fsynced is an **empty file**
//!    (an empty directory, for a directory whose own entries were never
//!    synced). A synced directory whose own name is not durable is unreachable.
//! 5. **Crash** ([`FaultFs::crash`]) drops everything volatile: the live tree
//!    becomes the durable image; inodes no durable name reaches are gone (as
//!    fsck of a real filesystem would do); open handles and node caches are
//!    forgotten. The image is also written to the backing directory, so a
//!    remount ([`FaultFs::reload`], then [`FaultFs::mount`]) shows the same.
//! 6. **Background writeback** ([`FaultFs::writeback`], called just before a
//!    crash when wanted) stands for the kernel's periodic journal commit and
//!    dirty-page flush at some moment before the crash. Seeded: with equal
//!    chance none, all, or an oldest-first prefix of the pending entry
//!    operations is committed; each file with unsynced data, with even chance,
//!    gets a page-aligned prefix of its contents written. This is how a writer
//!    that never fsyncs ends up with `STABLE` on disk and its data short or
//!    empty (ext4's delayed-allocation zero-length file).
//!
//! ## Nodes mode: what each node sees
//!
//! All mounts share one store (the "server"); every change reaches it at once
//! and the node that made it sees it at once. The others see it late:
//!
//! 1. **Names.** A name another node created, renamed or removed keeps its
//!    previous state for the observer during a delay drawn from the seed for
//!    each (observer, change), up to [`Delays::name_delay_max`] — so names
//!    appear out of order, and `STABLE` can be seen before the data files.
//!    The author's fsync of the parent directory publishes all its changes in
//!    that directory to every node at once.
//! 2. **Data.** Bytes another node wrote are seen as the file was `lag` ago,
//!    `lag` drawn per (observer, file) up to [`Delays::data_lag_max`]: a short
//!    file. The writer's fsync of the file publishes all its bytes; `close`
//!    does not (a write-back client).
//! 3. **Negative look-ups.** A node that looked up a missing name answers
//!    ENOENT for it for [`Delays::negative_ttl`], even once it exists.
//! 4. **Attributes.** A node reuses fetched attributes for
//!    [`Delays::attr_ttl`]: `stat` may show an old size or a file that is gone.
//!    `open` revalidates them (close-to-open); `read` returns what the node
//!    sees of the data at that moment.
//! 5. **Removal.** A file is freed when its last name goes, unless the node
//!    that removed it holds it open (POSIX; NFS's "silly rename"); other nodes'
//!    open handles then fail with ESTALE, as across NFS clients.
//! 6. The **kernel caches nothing** on its own: entry and attribute TTLs are 0
//!    and files are opened with direct I/O, so every cache is the model's.
//!
//! ## Kill switch
//!
//! [`FaultFs::arm_kill`]`(k)`: the state-changing request (create, mkdir,
//! unlink, rmdir, rename, write, setattr, fsync, fsyncdir) number `k`
//! (0-based) after arming is refused and its process gets SIGKILL; further
//! state changes are refused until [`FaultFs::disarm_kill`] (the dying
//! process's other threads may have requests in flight). A crash "at request
//! k" thus leaves exactly the effects of the first `k` requests.
//!
//! ## Other controls
//!
//! [`FaultFs::set_node_ttls`] gives one node its own cache TTLs (a node
//! mounted with other options). [`FaultFs::stall_unlink`] makes one node's
//! next unlink of a name wait, holding only that node's request thread: a
//! deterministic window for another node to act in. [`FaultFs::stats`]
//! counts how often a node's view lagged.
//!
//! Symbolic links, device nodes and hard links are refused with EPERM.
#![deny(missing_docs)]

mod fs;
mod mount;
mod rng;
mod store;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use fs::{Killed, Stats};
pub use mount::{FS_NAME, Mount, fuse_available, owned_dir, sweep_stale_mounts};
pub use rng::SeededRng;
pub use store::{Delays, NodeId, Writeback};

use fs::World;
use store::{Image, Store};

/// Which model a [`FaultFs`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One node; unsynced changes are lost on [`FaultFs::crash`].
    Lazy,
    /// This many nodes, each mounted separately, seeing each other late.
    Nodes(usize),
}

impl Mode {
    fn nodes(self) -> usize {
        match self {
            Mode::Lazy => 1,
            Mode::Nodes(n) => n.max(1),
        }
    }
}

/// A filesystem instance and its control channel: mount it, crash it, set its
/// seed and delays, arm its kill switch.
#[derive(Debug, Clone)]
pub struct FaultFs {
    world: Arc<Mutex<World>>,
    backing: PathBuf,
    mode: Mode,
    active: Arc<AtomicUsize>,
}

impl FaultFs {
    /// A filesystem holding the tree in `backing` (an existing directory),
    /// all of it durable and visible to every node.
    pub fn open(backing: impl Into<PathBuf>, mode: Mode) -> io::Result<FaultFs> {
        let backing = backing.into();
        let store = Store::load(&backing, mode.nodes(), mode == Mode::Lazy)?;
        Ok(FaultFs {
            world: Arc::new(Mutex::new(World::new(store, mode.nodes()))),
            backing,
            mode,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The mode it runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Mounts node `node`'s view at `mountpoint` (an existing empty
    /// directory, not itself on a FUSE mount of this filesystem). FUSE requests
    /// are served on a background thread until the returned [`Mount`] drops.
    pub fn mount(&self, node: NodeId, mountpoint: &Path) -> io::Result<Mount> {
        if node >= self.mode.nodes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no node {node} in {:?}", self.mode),
            ));
        }
        Mount::new(
            Arc::clone(&self.world),
            node,
            mountpoint,
            Arc::clone(&self.active),
        )
    }

    /// Lazy mode: the crash (rule 5). Everything not durable is dropped, and
    /// the durable image is written to the backing directory.
    pub fn crash(&self) -> io::Result<()> {
        let mut w = self.world();
        w.store
            .crash()
            .map_err(|_| io::Error::new(io::ErrorKind::Unsupported, "crash needs lazy mode"))?;
        w.reset_caches();
        w.store.export(Image::Durable, &self.backing)
    }

    /// Lazy mode: a seeded background writeback (rule 6). A no-op in nodes mode.
    pub fn writeback(&self, seed: u64) -> Writeback {
        self.world().store.writeback(seed)
    }

    /// Directory-entry operations not yet durable (lazy mode).
    pub fn pending_entry_ops(&self) -> usize {
        self.world().store.pending_entry_ops()
    }

    /// Reloads the store from the backing directory, as a fresh mount after a
    /// reboot would see it. Refused while mounted.
    pub fn reload(&self) -> io::Result<()> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "unmount every node before reloading",
            ));
        }
        let mut store = Store::load(&self.backing, self.mode.nodes(), self.mode == Mode::Lazy)?;
        let mut w = self.world();
        store.seed = w.store.seed;
        store.delays = w.store.delays;
        w.store = store;
        w.reset_caches();
        Ok(())
    }

    /// Writes the current (live) tree to the backing directory: what a clean
    /// shutdown, which syncs everything, leaves.
    pub fn persist(&self) -> io::Result<()> {
        self.world().store.export(Image::Live, &self.backing)
    }

    /// Sets the seed of every delay (nodes mode).
    pub fn set_seed(&self, seed: u64) {
        self.world().store.seed = seed;
    }

    /// Sets how late nodes see each other's changes and how long they cache.
    pub fn set_delays(&self, delays: Delays) {
        self.world().store.delays = delays;
    }

    /// Gives node `node` its own negative-look-up and attribute TTLs instead
    /// of the shared ones in [`Delays`] (a node mounted with other cache
    /// options, e.g. NFS `lookupcache=positive`).
    pub fn set_node_ttls(&self, node: NodeId, negative_ttl: Duration, attr_ttl: Duration) {
        self.world().set_ttls(node, negative_ttl, attr_ttl);
    }

    /// Makes node `node`'s next unlink (or rmdir) of an entry named `name`
    /// wait `duration` before it runs, holding only that node's request
    /// thread: a deterministic window for another node to act in.
    pub fn stall_unlink(&self, node: NodeId, name: &str, duration: Duration) {
        self.world()
            .stall_unlink(node, std::ffi::OsStr::new(name), duration);
    }

    /// How many stalls set with [`FaultFs::stall_unlink`] have begun.
    pub fn stalls_begun(&self) -> u64 {
        self.world().stalls_begun
    }

    /// The current delays.
    pub fn delays(&self) -> Delays {
        self.world().store.delays
    }

    /// Arms the kill switch: state-changing request number `at` (0-based,
    /// counted from now) is refused and its process SIGKILLed.
    pub fn arm_kill(&self, at: u64) {
        self.world().arm_kill(at);
    }

    /// Disarms the kill switch, saying whether and where it fired.
    pub fn disarm_kill(&self) -> Option<Killed> {
        self.world().disarm_kill()
    }

    /// How often node `node`'s view lagged the server's so far.
    pub fn stats(&self, node: NodeId) -> Stats {
        self.world().stats(node)
    }

    /// State-changing requests received so far, from every node.
    pub fn mutations(&self) -> u64 {
        self.world().mutations
    }
}
