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
//! The rules are listed, with ids, in `docs/FILESYSTEM.md`, which the model
//! checker (`handoff-sim`) follows too; below is how this filesystem applies
//! them. `store.rs` implements them, citing the ids, and its unit tests pin
//! them.
//!
//! ## Lazy mode: what survives a crash
//!
//! 1. **Data** (F1, F2). write, truncate, chmod and utimes change the file at
//!    once, and are durable only when *that file* is fsynced (fdatasync
//!    alike): fsync makes its bytes and mode durable as they are then. It
//!    does not make the file's *name* durable. `close` flushes nothing.
//! 2. **Names** (F3, F5). create, mkdir, unlink, rmdir and rename are visible
//!    at once and durable only when the directory holding the entry they
//!    leave is fsynced. fsync of a directory D commits every pending entry
//!    operation whose resulting entry lies in D and, transitively, every
//!    earlier operation on an entry one of those touches; they are applied
//!    in the order they happened. What stays pending shares no entry with
//!    what was committed, so the two sets commute and no impossible state
//!    arises.
//! 3. **Rename** (F4) is one atomic operation: never half (never both names,
//!    never neither). It becomes durable when its *destination* directory is
//!    fsynced; the source's fsync alone leaves it pending (ext4 and xfs would
//!    commit it; see `docs/FILESYSTEM.md` for why the models do not). An
//!    unsynced creation it depends on (mkdir of the staging directory)
//!    commits with it. So handoff's publish — rename staging into the root,
//!    then fsync the root — is durable once that fsync returns.
//! 4. (F1, F6) A durable name whose file data was never fsynced is an **empty file**
//!    (an empty directory, for a directory whose own entries were never
//!    synced). A synced directory whose own name is not durable is unreachable.
//! 5. **Crash** (F7, [`FaultFs::crash`]) drops everything volatile: the live tree
//!    becomes the durable image; inodes no durable name reaches are gone (as
//!    fsck of a real filesystem would do); open handles and node caches are
//!    forgotten. The image is also written to the backing directory, so a
//!    remount ([`FaultFs::reload`], then [`FaultFs::mount`]) shows the same.
//! 6. **Background writeback** (F7, [`FaultFs::writeback`], called just before a
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
//! and the node that made it sees it at once. The others see it late, through
//! their own caches and a lag on data:
//!
//! 1. **Names** (V2, V6). A node that asks the server — a look-up its caches do not
//!    answer, a listing, an exclusive create — gets the server's names at
//!    once. The lag is all in its caches (rule 3): a name shows late to a
//!    node that cached it as absent, and names can show out of order
//!    (`STABLE` before a data file the node looked for earlier). The author's
//!    fsync of a directory makes its names durable; it pushes nothing into
//!    other nodes' caches.
//! 2. **Data** (V5). Bytes another node wrote are seen as the file was `lag` ago,
//!    `lag` drawn per (observer, file) up to [`Delays::data_lag_max`]: a short
//!    file. The writer's fsync of the file publishes all its bytes; `close`
//!    does not (a write-back client).
//! 3. **Look-up caches** (V1–V4). Each node keeps what its look-ups found until the
//!    entry expires, whatever the server does meanwhile: a **negative** entry
//!    ("no such name", [`Delays::negative_ttl`]) and a **positive** one (the
//!    inode a name resolved to, [`Delays::positive_ttl`]). What they answer
//!    depends on why the name is looked up:
//!    - `stat` and path walks: both answer. A name the server no longer has
//!      (removed or replaced) still stats as the old file while its
//!      attributes are cached (rule 4); once they are not, the server's
//!      ESTALE drops the entry and the name is resolved again.
//!    - `open`: the name is resolved again (close-to-open; NFSv4 opens by
//!      name), so an open of a removed name fails with ENOENT and an open of
//!      a replaced one opens the new file. A negative entry still answers: the
//!      open fails with ENOENT until the entry expires or a listing drops it
//!      (with `O_CREAT`, the server then creates the name or, with `O_EXCL`,
//!      says EEXIST).
//!    - `mkdir` and a rename that must not replace: the server answers, past
//!      every cache (NFS's `LOOKUP_EXCL`).
//!
//!    **Listing** a directory (opening it, or reading it) revalidates it for
//!    that node: its negative entries there are dropped, and so are its
//!    positive entries there that the listing contradicts. A node's own
//!    change of a name drops its own entries for it. FUSE look-ups carry no
//!    intent, so the mount reads it from the system call the caller is
//!    blocked in (`/proc/<tid>/syscall`); when it cannot, the look-up counts
//!    as a `stat`.
//! 4. **Attributes** (V3). A node reuses fetched attributes for
//!    [`Delays::attr_ttl`]: `stat` may show an old size or a file that is gone.
//!    `open` revalidates them (close-to-open); `read` returns what the node
//!    sees of the data at that moment.
//! 5. **The server decides** (V6) exclusive create (`O_EXCL`, `mkdir`), unlink,
//!    rmdir and rename on what it holds, not on what the node sees: `rmdir`
//!    of a directory with names the node does not see fails with ENOTEMPTY;
//!    creating in a directory another node removed fails with ENOENT even
//!    while the node still caches the directory (an open or `mkdir` resolves
//!    its path at the server; any other request on the stale directory gets
//!    ESTALE, which drops the node's entry, and the kernel's one retry of the
//!    path walk resolves it afresh); nothing can be created in a removed
//!    directory that is still open. Only the look-ups before them are the
//!    node's: unlinking a name the node caches as absent fails with ENOENT
//!    without asking the server, as on NFS.
//! 6. **Removal** (V8). A file is freed when its last name goes, unless the node
//!    that removed it holds it open (POSIX; NFS's "silly rename"); other nodes'
//!    open handles then fail with ESTALE, as across NFS clients.
//! 7. The **kernel caches nothing** on its own: entry and attribute TTLs are 0
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
//! deterministic window for another node to act in.
//! [`FaultFs::fail_opens`] makes one node's opens of files of a name fail
//! with an errno (`EIO` as from a soft mount). [`FaultFs::stats`]
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

pub use fs::Killed;
pub use mount::{FS_NAME, Mount, fuse_available, owned_dir, sweep_stale_mounts};
pub use rng::SeededRng;
pub use store::{Delays, NodeId, Stats, Writeback};

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

    /// Lazy mode: the crash (lazy rule 5; F7). Everything not durable is dropped, and
    /// the durable image is written to the backing directory.
    pub fn crash(&self) -> io::Result<()> {
        let mut w = self.world();
        w.store
            .crash()
            .map_err(|_| io::Error::new(io::ErrorKind::Unsupported, "crash needs lazy mode"))?;
        w.reset_caches();
        w.store.export(Image::Durable, &self.backing)
    }

    /// Lazy mode: a seeded background writeback (lazy rule 6; F7). A no-op in nodes mode.
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
        store.adopt_views(&mut w.store);
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

    /// Gives node `node` its own negative-look-up, positive-look-up and
    /// attribute TTLs instead of the shared ones in [`Delays`] (a node mounted
    /// with other cache options, e.g. NFS `lookupcache=positive`).
    pub fn set_node_ttls(
        &self,
        node: NodeId,
        negative_ttl: Duration,
        positive_ttl: Duration,
        attr_ttl: Duration,
    ) {
        self.world()
            .store
            .set_ttls(node, negative_ttl, positive_ttl, attr_ttl);
    }

    /// Makes node `node`'s next unlink (or rmdir) of an entry named `name`
    /// wait `duration` before it runs, holding only that node's request
    /// thread: a deterministic window for another node to act in.
    pub fn stall_unlink(&self, node: NodeId, name: &str, duration: Duration) {
        self.world()
            .stall_unlink(node, std::ffi::OsStr::new(name), duration);
    }

    /// Makes node `node`'s opens of every file named `name` fail with
    /// `errno` (`None`: work again), as a soft NFS mount answers a read with
    /// `EIO` when the server does not, or a client with `ESTALE` or
    /// `EACCES`; look-ups and `stat` still work.
    pub fn fail_opens(&self, node: NodeId, name: &str, errno: Option<i32>) {
        self.world()
            .fail_opens(node, std::ffi::OsStr::new(name), errno);
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
