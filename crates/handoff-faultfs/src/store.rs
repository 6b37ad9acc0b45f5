//! The model behind every mount: one in-memory store of inodes ("the server"),
//! an optional durable layer (lazy mode), each file's growth history (what a
//! lagging node sees of its data) and each node's caches (what it sees of the
//! names). The rules are listed, with ids, in `docs/FILESYSTEM.md` (and how
//! this filesystem applies them in the crate documentation, `lib.rs`); this
//! module implements them, citing the ids, and the unit tests below pin them
//! without FUSE.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::rng::{SeededRng, hash};

/// An inode number, as the kernel sees it. Never reused within one store.
pub(crate) type Ino = u64;

/// Which mount (simulated node) a request came from: `0..nodes`.
pub type NodeId = usize;

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: Ino = 1;

/// The "author" of state that did not come from any node (loaded from the
/// backing directory, or what a crash left): visible to every node.
const NOBODY: NodeId = usize::MAX;

/// A `libc` errno value; the FUSE layer turns it into a reply.
pub(crate) type Errno = i32;
pub(crate) type Res<T> = Result<T, Errno>;

/// File or directory; nothing else is supported (symlinks, devices and hard
/// links are refused with `EPERM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

/// What `stat` shows one node.
#[derive(Clone, Debug)]
pub(crate) struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// How late other nodes see a node's changes (nodes mode), and how long each
/// node caches what it saw. All zero means "one coherent local filesystem".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delays {
    /// Longest time data written by another node stays unseen (each file's lag
    /// is drawn from the seed, per observing node), unless the writer flushes
    /// it earlier by fsyncing the file.
    pub data_lag_max: Duration,
    /// How long a node remembers that a name did not exist (NFS `lookupcache`).
    pub negative_ttl: Duration,
    /// How long a node keeps a name it resolved, even once the server removed
    /// or replaced it (NFS's cached dentries): `stat` still finds it, `open`
    /// does not.
    pub positive_ttl: Duration,
    /// How long a node reuses attributes (size, mtime) it fetched (NFS
    /// `acregmin`); `open` revalidates them (close-to-open).
    pub attr_ttl: Duration,
}

/// Why a node looks a name up, which decides what its caches may answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// `stat`, a path walk, an unlink: positive and negative entries answer.
    Stat,
    /// An open: the name is resolved again (close-to-open, NFSv4 opens by
    /// name), so a positive entry does not answer; a negative one still does.
    Open,
    /// A create that must not find the name (mkdir, a rename without
    /// replacing): the server answers, past every cache.
    Exclusive,
}

/// How often one node's view differed from the server's: evidence that a
/// scenario exercised the lag it claims to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Look-ups answered "no such name" from the node's negative cache.
    pub negative_hits: u64,
    /// Look-ups answered from the node's positive cache with an inode the
    /// name no longer has (removed or replaced since).
    pub stale_names: u64,
    /// Attributes served from the node's cache that no longer matched.
    pub stale_attrs: u64,
    /// Reads and attribute fetches that saw a file shorter than it is.
    pub short_views: u64,
}

/// One node's cache lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ttls {
    negative: Duration,
    positive: Duration,
    attr: Duration,
}

/// One node's caches over the server: what it resolved, what it found
/// missing, the attributes it fetched, each kept until it expires.
#[derive(Debug, Default)]
struct View {
    stats: Stats,
    /// This node's own TTLs instead of the shared ones in [`Delays`].
    ttls: Option<Ttls>,
    /// (dir, name) → until when "no such name" is answered.
    negative: HashMap<(Ino, OsString), Instant>,
    /// (dir, name) → the inode it resolved to, and until when.
    positive: HashMap<(Ino, OsString), (Ino, Instant)>,
    /// ino → attributes and until when they are reused.
    attrs: HashMap<Ino, (Attr, Instant)>,
}

/// What a seeded background writeback made durable before a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writeback {
    /// Directory-entry operations committed, from the oldest.
    pub entry_ops: usize,
    /// Directory-entry operations that were pending.
    pub pending: usize,
    /// Files whose unsynced data was partly or wholly written back.
    pub files: usize,
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    mode: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    nlink: u32,
    /// File contents, as the server holds them.
    data: Vec<u8>,
    /// Directory entries, as the server holds them.
    names: BTreeMap<OsString, Ino>,
    /// The node whose writes are not yet (all) visible to the others.
    writer: NodeId,
    /// The file's length after each of `writer`'s changes: what a lagging
    /// node sees is the length as of some moment in the past.
    growth: Vec<(Instant, u64)>,
    /// Bytes every node sees regardless of lag (the writer fsynced them).
    flushed_len: u64,
    /// Open handles per node. Only the node that removes the last name keeps
    /// an open file alive (POSIX locally, NFS "silly rename" across nodes):
    /// the others' handles go stale.
    opens: Vec<u32>,
    /// Written since its last fsync (lazy mode's background writeback).
    dirty: bool,
}

impl Inode {
    fn new(kind: Kind, mode: u32, nodes: usize, now: SystemTime) -> Inode {
        Inode {
            kind,
            mode,
            mtime: now,
            ctime: now,
            nlink: 1,
            data: Vec::new(),
            names: BTreeMap::new(),
            writer: NOBODY,
            growth: Vec::new(),
            flushed_len: 0,
            opens: vec![0; nodes],
            dirty: false,
        }
    }

    fn live(&self, name: &OsStr) -> Option<Ino> {
        self.names.get(name).copied()
    }

    fn is_empty_dir(&self) -> bool {
        self.names.is_empty()
    }
}

/// The durable image (lazy mode): what a crash leaves.
#[derive(Clone, Debug, Default)]
struct Durable {
    inodes: HashMap<Ino, DurableInode>,
    /// Directory-entry operations not yet durable, in the order they happened.
    pending: Vec<EntryOp>,
}

#[derive(Clone, Debug)]
struct DurableInode {
    kind: Kind,
    mode: u32,
    mtime: SystemTime,
    data: Vec<u8>,
    entries: BTreeMap<OsString, Ino>,
}

impl DurableInode {
    fn empty(kind: Kind, mode: u32) -> DurableInode {
        DurableInode {
            kind,
            mode,
            mtime: SystemTime::now(),
            data: Vec::new(),
            entries: BTreeMap::new(),
        }
    }
}

/// A name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    dir: Ino,
    name: OsString,
}

impl Entry {
    fn new(dir: Ino, name: &OsStr) -> Entry {
        Entry {
            dir,
            name: name.to_owned(),
        }
    }
}

/// The inode a name is linked to, as the durable layer creates it.
#[derive(Clone, Copy, Debug)]
struct Linked {
    ino: Ino,
    kind: Kind,
    mode: u32,
}

/// A change to directory entries, waiting for a directory fsync.
#[derive(Clone, Debug)]
enum EntryOp {
    Link {
        at: Entry,
        linked: Linked,
    },
    Unlink {
        at: Entry,
    },
    Rename {
        from: Entry,
        to: Entry,
        linked: Linked,
    },
}

impl EntryOp {
    /// The directory whose fsync makes this operation durable (F3, F4): the
    /// one holding the entry it leaves, so a rename's destination.
    fn durable_by(&self) -> Ino {
        match self {
            EntryOp::Link { at, .. } | EntryOp::Unlink { at } => at.dir,
            EntryOp::Rename { to, .. } => to.dir,
        }
    }

    /// The entries it reads or writes (F5).
    fn entries(&self) -> Vec<&Entry> {
        match self {
            EntryOp::Link { at, .. } | EntryOp::Unlink { at } => vec![at],
            EntryOp::Rename { from, to, .. } => vec![from, to],
        }
    }
}

impl Durable {
    fn ensure(&mut self, ino: Ino, kind: Kind, mode: u32) -> &mut DurableInode {
        self.inodes
            .entry(ino)
            .or_insert_with(|| DurableInode::empty(kind, mode))
    }

    fn link(&mut self, at: &Entry, linked: Linked) {
        self.ensure(linked.ino, linked.kind, linked.mode);
        self.ensure(at.dir, Kind::Dir, 0o755)
            .entries
            .insert(at.name.clone(), linked.ino);
    }

    fn unlink(&mut self, at: &Entry) {
        self.ensure(at.dir, Kind::Dir, 0o755)
            .entries
            .remove(&at.name);
    }

    /// Makes one entry operation durable. A name whose inode never had its
    /// own data synced points to an empty file or directory: the name is
    /// durable, the contents are not (F1). A rename moves the name whole (F4).
    fn apply(&mut self, op: &EntryOp) {
        match op {
            EntryOp::Link { at, linked } => self.link(at, *linked),
            EntryOp::Unlink { at } => self.unlink(at),
            EntryOp::Rename { from, to, linked } => {
                self.unlink(from);
                self.link(to, *linked);
            }
        }
    }

    /// fsync of directory `dir` (F3): commits every pending operation whose
    /// resulting entry lies in `dir` (a rename only from its destination, F4),
    /// and every earlier operation on an entry one of those touches,
    /// transitively (F5), in their original order. What stays pending shares
    /// no entry with what was committed, so the two sets commute.
    fn sync_dir(&mut self, dir: Ino) {
        let entries: Vec<_> = self.pending.iter().map(EntryOp::entries).collect();
        let mut commit: Vec<bool> = self
            .pending
            .iter()
            .map(|op| op.durable_by() == dir)
            .collect();
        // Dependencies point backwards, so one backward pass is transitive.
        for later in (0..commit.len()).rev() {
            if commit[later] {
                for earlier in 0..later {
                    if entries[earlier].iter().any(|e| entries[later].contains(e)) {
                        commit[earlier] = true;
                    }
                }
            }
        }
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .zip(commit)
            .partition(|(_, commit)| *commit);
        self.pending = keep.into_iter().map(|(op, _)| op).collect();
        for (op, _) in &done {
            self.apply(op);
        }
    }

    /// A journal commit: the oldest `n` pending operations become durable
    /// (a prefix is closed under F5).
    fn commit_prefix(&mut self, n: usize) {
        let rest = self.pending.split_off(n.min(self.pending.len()));
        for op in std::mem::replace(&mut self.pending, rest) {
            self.apply(&op);
        }
    }
}

/// Which tree to write out to the backing directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Image {
    /// What a crash now would leave (lazy mode).
    Durable,
    /// The server's current tree.
    Live,
}

/// The whole filesystem state shared by every mount.
#[derive(Debug)]
pub(crate) struct Store {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    nodes: usize,
    pub(crate) seed: u64,
    pub(crate) delays: Delays,
    /// `Some` in lazy mode.
    durable: Option<Durable>,
    /// Every node's caches.
    views: Vec<View>,
}

impl Store {
    /// An empty store: a root directory and nothing else.
    pub(crate) fn new(nodes: usize, lazy: bool) -> Store {
        let mut root = Inode::new(Kind::Dir, 0o755, nodes.max(1), SystemTime::now());
        root.nlink = 2;
        let mut store = Store {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            nodes: nodes.max(1),
            seed: 0,
            delays: Delays::default(),
            durable: None,
            views: (0..nodes.max(1)).map(|_| View::default()).collect(),
        };
        if lazy {
            store.durable = Some(store.snapshot_durable());
        }
        store
    }

    /// A store holding the tree at `backing` (files and directories; other
    /// file types are skipped), all of it durable and visible to every node.
    pub(crate) fn load(backing: &Path, nodes: usize, lazy: bool) -> io::Result<Store> {
        let mut store = Store::new(nodes, false);
        store.import(ROOT, backing)?;
        if lazy {
            store.durable = Some(store.snapshot_durable());
        }
        Ok(store)
    }

    fn import(&mut self, dir: Ino, path: &Path) -> io::Result<()> {
        let mut children: Vec<_> = fs::read_dir(path)?.collect::<io::Result<_>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let meta = child.metadata()?;
            let kind = if meta.is_dir() {
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else {
                continue;
            };
            let ino = self.next_ino;
            self.next_ino += 1;
            let mut inode = Inode::new(
                kind,
                meta.permissions().mode() & 0o7777,
                self.nodes,
                SystemTime::now(),
            );
            inode.mtime = meta.modified().unwrap_or_else(|_| SystemTime::now());
            inode.ctime = inode.mtime;
            if kind == Kind::Dir {
                inode.nlink = 2;
            }
            if kind == Kind::File {
                inode.data = fs::read(child.path())?;
                inode.flushed_len = inode.data.len() as u64;
            }
            self.inodes.insert(ino, inode);
            self.link(dir, child.file_name(), Some(ino));
            if kind == Kind::Dir {
                self.import(ino, &child.path())?;
            }
        }
        Ok(())
    }

    /// The durable image equal to the live tree (right after load).
    fn snapshot_durable(&self) -> Durable {
        let inodes = self
            .inodes
            .iter()
            .map(|(ino, inode)| {
                let entries = inode.names.clone();
                let durable = DurableInode {
                    kind: inode.kind,
                    mode: inode.mode,
                    mtime: inode.mtime,
                    data: inode.data.clone(),
                    entries,
                };
                (*ino, durable)
            })
            .collect();
        Durable {
            inodes,
            pending: Vec::new(),
        }
    }

    // ---- visibility ------------------------------------------------------

    fn delay(&self, max: Duration, parts: &[u64], bytes: &[u8]) -> Duration {
        let max = max.as_micros() as u64;
        if max == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(hash(self.seed, parts, bytes) % (max + 1))
        }
    }

    fn data_lag(&self, observer: NodeId, ino: Ino) -> Duration {
        self.delay(self.delays.data_lag_max, &[2, observer as u64, ino], &[])
    }

    /// How many bytes of a file `observer` sees.
    fn visible_len(&self, observer: NodeId, ino: Ino, inode: &Inode, now: Instant) -> u64 {
        let len = inode.data.len() as u64;
        if observer == inode.writer || inode.writer == NOBODY {
            return len;
        }
        let then = match now.checked_sub(self.data_lag(observer, ino)) {
            Some(cutoff) => inode
                .growth
                .iter()
                .take_while(|(t, _)| *t <= cutoff)
                .last()
                .map_or(0, |(_, l)| *l),
            None => 0,
        };
        then.max(inode.flushed_len).min(len)
    }

    /// Points `name` in `dir` at `target`, or removes it (`None`).
    fn link(&mut self, dir: Ino, name: OsString, target: Option<Ino>) {
        let names = &mut self.inodes.get_mut(&dir).expect("parent exists").names;
        match target {
            Some(ino) => names.insert(name, ino),
            None => names.remove(&name),
        };
    }

    // ---- reads -------------------------------------------------------------

    fn inode(&self, ino: Ino) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(libc::ESTALE)
    }

    fn dir(&self, ino: Ino) -> Res<&Inode> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(inode)
    }

    /// The inode the server has under `name`, whatever any node caches.
    fn server_lookup(&self, parent: Ino, name: &OsStr) -> Res<Ino> {
        self.dir(parent)?
            .live(name)
            .filter(|t| self.inodes.contains_key(t))
            .ok_or(libc::ENOENT)
    }

    /// A file's length on the server.
    pub(crate) fn live_len(&self, ino: Ino) -> Option<u64> {
        self.inodes
            .get(&ino)
            .filter(|i| i.kind == Kind::File)
            .map(|i| i.data.len() as u64)
    }

    /// The attributes `node` sees (its size may lag the writer's).
    pub(crate) fn attr(&self, node: NodeId, ino: Ino, now: Instant) -> Res<Attr> {
        let inode = self.inode(ino)?;
        let size = match inode.kind {
            Kind::File => self.visible_len(node, ino, inode, now),
            Kind::Dir => 4096,
        };
        Ok(Attr {
            ino,
            kind: inode.kind,
            size,
            mode: inode.mode,
            nlink: inode.nlink,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    /// The names the server has in `dir`, sorted.
    fn listing(&self, dir: Ino) -> Res<Vec<(OsString, Ino, Kind)>> {
        let inode = self.dir(dir)?;
        Ok(inode
            .names
            .iter()
            .filter_map(|(name, ino)| Some((name.clone(), *ino, self.inodes.get(ino)?.kind)))
            .collect())
    }

    /// Up to `size` bytes at `offset`, of what `node` sees of the file.
    pub(crate) fn read(
        &self,
        node: NodeId,
        ino: Ino,
        offset: u64,
        size: u32,
        now: Instant,
    ) -> Res<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(libc::EISDIR);
        }
        let len = self.visible_len(node, ino, inode, now);
        let start = offset.min(len) as usize;
        let end = offset.saturating_add(u64::from(size)).min(len) as usize;
        Ok(inode.data[start..end].to_vec())
    }

    // ---- each node's caches (nodes mode, V1-V4) -----------------------------

    /// Gives `node` its own TTLs instead of the shared ones in [`Delays`].
    pub(crate) fn set_ttls(
        &mut self,
        node: NodeId,
        negative: Duration,
        positive: Duration,
        attr: Duration,
    ) {
        if let Some(view) = self.views.get_mut(node) {
            view.ttls = Some(Ttls {
                negative,
                positive,
                attr,
            });
        }
    }

    fn ttls(&self, node: NodeId) -> Ttls {
        self.views[node].ttls.unwrap_or(Ttls {
            negative: self.delays.negative_ttl,
            positive: self.delays.positive_ttl,
            attr: self.delays.attr_ttl,
        })
    }

    pub(crate) fn stats(&self, node: NodeId) -> Stats {
        self.views
            .get(node)
            .map_or_else(Stats::default, |v| v.stats)
    }

    /// Counts a read that returned less than the server holds.
    pub(crate) fn count_short_view(&mut self, node: NodeId) {
        self.views[node].stats.short_views += 1;
    }

    /// Forgets every node's cached entries, keeping their stats and TTLs
    /// (after a crash: the old inodes are gone).
    pub(crate) fn reset_views(&mut self) {
        for view in &mut self.views {
            *view = View {
                stats: view.stats,
                ttls: view.ttls,
                ..View::default()
            };
        }
    }

    /// Takes over `old`'s per-node stats and TTLs (a reload), caches emptied.
    pub(crate) fn adopt_views(&mut self, old: &mut Store) {
        if old.views.len() == self.views.len() {
            self.views = std::mem::take(&mut old.views);
        }
        self.reset_views();
    }

    /// What `node` answers for `name` in `parent`, through its caches as
    /// `intent` allows (V1-V4).
    pub(crate) fn lookup(
        &mut self,
        node: NodeId,
        parent: Ino,
        name: &OsStr,
        intent: Intent,
        now: Instant,
    ) -> Res<Attr> {
        let key = (parent, name.to_owned());
        if intent == Intent::Exclusive {
            let view = &mut self.views[node];
            view.negative.remove(&key);
            view.positive.remove(&key);
            return match self.server_lookup(parent, name) {
                Ok(ino) => self.attr(node, ino, now),
                Err(libc::ESTALE) => {
                    self.forget(node, parent);
                    Err(libc::ESTALE)
                }
                Err(e) => Err(e),
            };
        }
        let view = &mut self.views[node];
        match view.negative.get(&key) {
            Some(until) if *until > now => {
                view.stats.negative_hits += 1;
                return Err(libc::ENOENT);
            }
            Some(_) => {
                view.negative.remove(&key);
            }
            None => {}
        }
        match view.positive.get(&key).copied() {
            Some((ino, until)) if intent == Intent::Stat && until > now => {
                match self.cached_attr(node, ino, now) {
                    Ok(attr) => {
                        if self.server_lookup(parent, name) != Ok(ino) {
                            self.views[node].stats.stale_names += 1;
                        }
                        return Ok(attr);
                    }
                    // The inode is gone and its attributes are not cached:
                    // the entry is dropped (`cached_attr` forgot it) and the
                    // name resolved again, as NFS does on ESTALE.
                    Err(libc::ESTALE) => {}
                    Err(e) => return Err(e),
                }
            }
            Some((_, until)) if until <= now => {
                view.positive.remove(&key);
            }
            _ => {}
        }
        let ttls = self.ttls(node);
        match self.server_lookup(parent, name) {
            Ok(ino) => {
                let view = &mut self.views[node];
                if ttls.positive.is_zero() {
                    view.positive.remove(&key);
                } else {
                    view.positive.insert(key, (ino, now + ttls.positive));
                }
                self.cached_attr(node, ino, now)
            }
            Err(libc::ENOENT) => {
                let view = &mut self.views[node];
                view.positive.remove(&key);
                if !ttls.negative.is_zero() {
                    view.negative.insert(key, now + ttls.negative);
                }
                Err(libc::ENOENT)
            }
            Err(libc::ESTALE) => {
                self.forget(node, parent);
                Err(libc::ESTALE)
            }
            Err(e) => Err(e),
        }
    }

    /// Attributes through `node`'s cache: reused until they expire, even if
    /// the file changed or went away meanwhile (a stale `stat`).
    pub(crate) fn cached_attr(&mut self, node: NodeId, ino: Ino, now: Instant) -> Res<Attr> {
        if let Some((attr, until)) = self.views[node].attrs.get(&ino)
            && *until > now
        {
            let attr = attr.clone();
            if self
                .attr(node, ino, now)
                .map_or(true, |fresh| fresh.size != attr.size)
            {
                self.views[node].stats.stale_attrs += 1;
            }
            return Ok(attr);
        }
        let attr = match self.attr(node, ino, now) {
            Ok(attr) => attr,
            Err(e) => {
                if e == libc::ESTALE {
                    self.forget(node, ino);
                }
                return Err(e);
            }
        };
        if self.live_len(ino).is_some_and(|len| len > attr.size) {
            self.views[node].stats.short_views += 1;
        }
        let ttl = self.ttls(node).attr;
        if !ttl.is_zero() {
            self.views[node]
                .attrs
                .insert(ino, (attr.clone(), now + ttl));
        }
        Ok(attr)
    }

    /// `node` learnt that `ino` is gone from the server (ESTALE): it drops
    /// every name it resolved to it and its attributes, so the next look-up
    /// asks the server (the kernel retries a path walk that met ESTALE once).
    fn forget(&mut self, node: NodeId, ino: Ino) {
        let view = &mut self.views[node];
        view.attrs.remove(&ino);
        view.positive.retain(|_, (target, _)| *target != ino);
    }

    /// A node's own change invalidates its own cached view of it (others'
    /// caches stay stale: that is the point).
    pub(crate) fn changed(&mut self, node: NodeId, ino: Ino, names: &[(Ino, &OsStr)]) {
        let view = &mut self.views[node];
        view.attrs.remove(&ino);
        for (dir, name) in names {
            let key = (*dir, name.to_os_string());
            view.attrs.remove(dir);
            view.negative.remove(&key);
            view.positive.remove(&key);
        }
    }

    /// Listing `dir` on `node` (V4): the names the server has there (no delay
    /// applies). Listing revalidates the directory for that node: its
    /// negative entries there are dropped, and so are its positive entries
    /// there that the listing contradicts.
    pub(crate) fn readdir(&mut self, node: NodeId, dir: Ino) -> Res<Vec<(OsString, Ino, Kind)>> {
        let listing = match self.listing(dir) {
            Ok(listing) => listing,
            Err(e) => {
                if e == libc::ESTALE {
                    self.forget(node, dir);
                }
                return Err(e);
            }
        };
        let view = &mut self.views[node];
        view.negative.retain(|(d, _), _| *d != dir);
        view.positive.retain(|(d, name), (ino, _)| {
            *d != dir
                || listing
                    .binary_search_by(|(n, _, _)| n.as_os_str().cmp(name))
                    .is_ok_and(|i| listing[i].1 == *ino)
        });
        Ok(listing)
    }

    // ---- changes -----------------------------------------------------------

    fn alloc(&mut self, kind: Kind, mode: u32) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(kind, mode, self.nodes, SystemTime::now());
        if kind == Kind::Dir {
            inode.nlink = 2;
        }
        self.inodes.insert(ino, inode);
        ino
    }

    fn touch_dir(&mut self, dir: Ino) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            d.mtime = SystemTime::now();
            d.ctime = d.mtime;
        }
    }

    fn record(&mut self, op: EntryOp) {
        if let Some(durable) = &mut self.durable {
            durable.pending.push(op);
        }
    }

    /// Removes one name of `ino`; frees it when that was the last one and
    /// `node` does not hold it open (V8).
    fn drop_link(&mut self, node: NodeId, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.nlink = if inode.kind == Kind::Dir {
            0
        } else {
            inode.nlink.saturating_sub(1)
        };
        if inode.nlink == 0 && inode.opens.get(node).copied().unwrap_or(0) == 0 {
            self.inodes.remove(&ino);
        }
    }

    /// The directory a name operation by `node` works in, as the server has
    /// it: ESTALE if it is gone (and `node` forgets it), ENOENT if it was
    /// removed but the remover still holds it open (no names in a removed
    /// directory).
    fn parent_dir(&mut self, node: NodeId, parent: Ino) -> Res<&Inode> {
        match self.dir(parent) {
            Err(libc::ESTALE) => {
                self.forget(node, parent);
                Err(libc::ESTALE)
            }
            Err(e) => Err(e),
            Ok(dir) if dir.nlink == 0 => Err(libc::ENOENT),
            Ok(_) => Ok(&self.inodes[&parent]),
        }
    }

    /// Creates `name` in `parent`. An existing file is returned as is unless
    /// `exclusive` (O_EXCL): `(ino, created)`. The server decides (V6); the
    /// name is pending until `parent` is fsynced (F3).
    pub(crate) fn create(
        &mut self,
        node: NodeId,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        exclusive: bool,
    ) -> Res<(Ino, bool)> {
        let dir = self.parent_dir(node, parent)?;
        if let Some(existing) = dir.live(name) {
            if exclusive || kind == Kind::Dir {
                return Err(libc::EEXIST);
            }
            if self.inodes[&existing].kind == Kind::Dir {
                return Err(libc::EISDIR);
            }
            return Ok((existing, false));
        }
        let ino = self.alloc(kind, mode);
        self.link(parent, name.to_owned(), Some(ino));
        self.touch_dir(parent);
        self.record(EntryOp::Link {
            at: Entry::new(parent, name),
            linked: Linked { ino, kind, mode },
        });
        Ok((ino, true))
    }

    /// unlink (`dir` false) or rmdir (`dir` true): decided by the server
    /// (V6), pending until `parent` is fsynced (F3).
    pub(crate) fn remove(&mut self, node: NodeId, parent: Ino, name: &OsStr, dir: bool) -> Res<()> {
        let target = self
            .parent_dir(node, parent)?
            .live(name)
            .ok_or(libc::ENOENT)?;
        let inode = self.inode(target)?;
        match (dir, inode.kind) {
            (true, Kind::File) => return Err(libc::ENOTDIR),
            (false, Kind::Dir) => return Err(libc::EISDIR),
            (true, Kind::Dir) if !inode.is_empty_dir() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.link(parent, name.to_owned(), None);
        self.touch_dir(parent);
        self.record(EntryOp::Unlink {
            at: Entry::new(parent, name),
        });
        self.drop_link(node, target);
        Ok(())
    }

    /// rename(2), with `noreplace` for RENAME_NOREPLACE: decided by the server
    /// (V6), atomic, pending until `to` is fsynced (F4).
    pub(crate) fn rename(
        &mut self,
        node: NodeId,
        from: Ino,
        from_name: &OsStr,
        to: Ino,
        to_name: &OsStr,
        noreplace: bool,
    ) -> Res<()> {
        let source = self
            .parent_dir(node, from)?
            .live(from_name)
            .ok_or(libc::ENOENT)?;
        let replaced = self.parent_dir(node, to)?.live(to_name);
        if from == to && from_name == to_name {
            return Ok(());
        }
        let kind = self.inode(source)?.kind;
        if let Some(old) = replaced {
            if noreplace {
                return Err(libc::EEXIST);
            }
            if old == source {
                return Ok(());
            }
            let old = self.inode(old)?;
            match (kind, old.kind) {
                (Kind::Dir, Kind::File) => return Err(libc::ENOTDIR),
                (Kind::File, Kind::Dir) => return Err(libc::EISDIR),
                (Kind::Dir, Kind::Dir) if !old.is_empty_dir() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        let mode = self.inodes[&source].mode;
        self.link(from, from_name.to_owned(), None);
        self.link(to, to_name.to_owned(), Some(source));
        self.touch_dir(from);
        self.touch_dir(to);
        self.record(EntryOp::Rename {
            from: Entry::new(from, from_name),
            to: Entry::new(to, to_name),
            linked: Linked {
                ino: source,
                kind,
                mode,
            },
        });
        if let Some(old) = replaced {
            self.drop_link(node, old);
        }
        Ok(())
    }

    /// Makes `node` the file's writer; the previous writer's data counts as
    /// flushed (the model tracks one writer's lag at a time).
    fn writable(&mut self, node: NodeId, ino: Ino) -> Res<&mut Inode> {
        let inode = self.inodes.get_mut(&ino).ok_or(libc::ESTALE)?;
        if inode.kind != Kind::File {
            return Err(libc::EISDIR);
        }
        if inode.writer != node {
            inode.writer = node;
            inode.flushed_len = inode.data.len() as u64;
            inode.growth.clear();
        }
        Ok(inode)
    }

    fn record_growth(inode: &mut Inode, now: Instant, lag_max: Duration) {
        let len = inode.data.len() as u64;
        inode.growth.push((now, len));
        // Keep one entry older than any lag so "length as of then" stays known.
        if let Some(cutoff) = now.checked_sub(lag_max) {
            let old = inode.growth.iter().take_while(|(t, _)| *t < cutoff).count();
            if old > 1 {
                inode.growth.drain(..old - 1);
            }
        }
    }

    pub(crate) fn write(
        &mut self,
        node: NodeId,
        ino: Ino,
        offset: u64,
        data: &[u8],
        now: Instant,
    ) -> Res<usize> {
        let lag_max = self.delays.data_lag_max;
        let inode = self.writable(node, ino)?;
        let offset = usize::try_from(offset).map_err(|_| libc::EFBIG)?;
        let end = offset.checked_add(data.len()).ok_or(libc::EFBIG)?;
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[offset..end].copy_from_slice(data);
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        inode.dirty = true;
        Self::record_growth(inode, now, lag_max);
        Ok(data.len())
    }

    /// truncate / chmod / utimes.
    pub(crate) fn setattr(
        &mut self,
        node: NodeId,
        ino: Ino,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<SystemTime>,
        now: Instant,
    ) -> Res<()> {
        let lag_max = self.delays.data_lag_max;
        if let Some(size) = size {
            let inode = self.writable(node, ino)?;
            inode
                .data
                .resize(usize::try_from(size).map_err(|_| libc::EFBIG)?, 0);
            inode.flushed_len = inode.flushed_len.min(size);
            inode.mtime = SystemTime::now();
            inode.dirty = true;
            Self::record_growth(inode, now, lag_max);
        }
        let inode = self.inodes.get_mut(&ino).ok_or(libc::ESTALE)?;
        if let Some(mode) = mode {
            inode.mode = mode & 0o7777;
        }
        if let Some(mtime) = mtime {
            inode.mtime = mtime;
        }
        inode.ctime = SystemTime::now();
        Ok(())
    }

    /// Opens `ino` on `node`, revalidating its attributes (close-to-open):
    /// they are fetched afresh and cached.
    pub(crate) fn open(&mut self, node: NodeId, ino: Ino, now: Instant) -> Res<Kind> {
        self.views[node].attrs.remove(&ino);
        let reachable = self
            .inodes
            .get(&ino)
            // Only the node that removed it may still reach an orphan.
            .is_some_and(|inode| inode.nlink > 0 || inode.opens[node] > 0);
        if !reachable {
            self.forget(node, ino);
            return Err(libc::ESTALE);
        }
        self.cached_attr(node, ino, now)?;
        let inode = self.inodes.get_mut(&ino).expect("reachable");
        inode.opens[node] += 1;
        Ok(inode.kind)
    }

    pub(crate) fn release(&mut self, node: NodeId, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.opens[node] = inode.opens[node].saturating_sub(1);
        if inode.nlink == 0 && inode.opens[node] == 0 {
            self.inodes.remove(&ino);
        }
    }

    /// fsync of a file (F1, F2; V5: its bytes reach every node) or a
    /// directory (F3) by `node`.
    pub(crate) fn fsync(&mut self, node: NodeId, ino: Ino) -> Res<()> {
        let inode = self.inodes.get_mut(&ino).ok_or(libc::ESTALE)?;
        match inode.kind {
            Kind::File => {
                // Nodes: the writer's data reaches every node.
                if inode.writer == node {
                    inode.flushed_len = inode.data.len() as u64;
                }
                inode.dirty = false;
                if let Some(durable) = &mut self.durable {
                    let d = durable.ensure(ino, Kind::File, inode.mode);
                    d.data.clone_from(&inode.data);
                    d.mode = inode.mode;
                    d.mtime = inode.mtime;
                }
            }
            Kind::Dir => {
                // Nodes: nothing changes for the other nodes (V1); the
                // names were on the server already.
                let (mode, mtime) = (inode.mode, inode.mtime);
                if let Some(durable) = &mut self.durable {
                    durable.sync_dir(ino);
                    let d = durable.ensure(ino, Kind::Dir, mode);
                    d.mode = mode;
                    d.mtime = mtime;
                }
            }
        }
        Ok(())
    }

    // ---- crash (lazy mode) -------------------------------------------------

    /// Directory-entry operations not yet durable.
    pub(crate) fn pending_entry_ops(&self) -> usize {
        self.durable.as_ref().map_or(0, |d| d.pending.len())
    }

    /// A seeded background writeback: the kernel's periodic journal commit
    /// and dirty-page flush that ran at some moment before the crash.
    /// Metadata: with equal chance nothing, everything, or an oldest-first
    /// prefix of the pending entry operations. Data: each unsynced file, with
    /// even chance, gets a page-aligned prefix of its contents written (F1,
    /// F7).
    pub(crate) fn writeback(&mut self, seed: u64) -> Writeback {
        let Some(durable) = &mut self.durable else {
            return Writeback::default();
        };
        let mut rng = SeededRng::new(seed);
        let pending = durable.pending.len();
        let entry_ops = match rng.below(3) {
            0 => 0,
            1 => pending,
            _ => rng.below(pending as u64 + 1) as usize,
        };
        durable.commit_prefix(entry_ops);
        let mut dirty: Vec<Ino> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.dirty && i.kind == Kind::File)
            .map(|(ino, _)| *ino)
            .collect();
        dirty.sort_unstable();
        let mut files = 0;
        for ino in dirty {
            if rng.below(2) == 0 {
                continue;
            }
            let inode = &self.inodes[&ino];
            let pages = inode.data.len() as u64 / 4096 + 1;
            let keep = (rng.below(pages + 1) * 4096).min(inode.data.len() as u64) as usize;
            let d = durable.ensure(ino, Kind::File, inode.mode);
            d.data = inode.data[..keep].to_vec();
            files += 1;
        }
        Writeback {
            entry_ops,
            pending,
            files,
        }
    }

    /// The crash: everything not durable is gone. The live tree becomes the
    /// durable image; inodes no durable name reaches are dropped (what fsck
    /// of a real filesystem does with orphans: F6, F7).
    pub(crate) fn crash(&mut self) -> Res<()> {
        let durable = self.durable.as_mut().ok_or(libc::EINVAL)?;
        durable.pending.clear();
        let mut reachable = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(d) = durable.inodes.get(&ino) {
                for child in d.entries.values() {
                    if reachable.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        durable.inodes.retain(|ino, _| reachable.contains(ino));
        let durable = durable.clone();
        let mut nlinks: HashMap<Ino, u32> = HashMap::new();
        for d in durable.inodes.values() {
            for child in d.entries.values() {
                *nlinks.entry(*child).or_default() += 1;
            }
        }
        self.inodes.clear();
        for (ino, d) in &durable.inodes {
            let mut inode = Inode::new(d.kind, d.mode, self.nodes, d.mtime);
            inode.data.clone_from(&d.data);
            inode.flushed_len = inode.data.len() as u64;
            inode.nlink = match d.kind {
                Kind::Dir => 2,
                Kind::File => nlinks.get(ino).copied().unwrap_or(1),
            };
            self.inodes.insert(*ino, inode);
        }
        for (ino, d) in &durable.inodes {
            self.inodes.get_mut(ino).expect("durable dir").names = d.entries.clone();
        }
        self.durable = Some(durable);
        Ok(())
    }

    // ---- the backing directory ---------------------------------------------

    /// Replaces the contents of `dest` with the chosen tree.
    pub(crate) fn export(&self, image: Image, dest: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dest)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        match (image, &self.durable) {
            (Image::Durable, Some(durable)) => {
                export_durable(durable, ROOT, dest, &mut HashSet::new())
            }
            _ => self.export_live(ROOT, dest),
        }
    }

    fn export_live(&self, dir: Ino, dest: &Path) -> io::Result<()> {
        let inode = &self.inodes[&dir];
        for name in inode.names.keys() {
            let Some(child) = inode
                .live(name)
                .and_then(|c| self.inodes.get(&c).map(|i| (c, i)))
            else {
                continue;
            };
            let path = dest.join(name);
            match child.1.kind {
                Kind::File => write_file(&path, &child.1.data, child.1.mode, child.1.mtime)?,
                Kind::Dir => {
                    fs::create_dir(&path)?;
                    self.export_live(child.0, &path)?;
                    set_meta(&path, child.1.mode, child.1.mtime);
                }
            }
        }
        Ok(())
    }
}

fn export_durable(
    durable: &Durable,
    dir: Ino,
    dest: &Path,
    seen: &mut HashSet<Ino>,
) -> io::Result<()> {
    seen.insert(dir);
    for (name, child) in &durable.inodes[&dir].entries {
        let Some(d) = durable.inodes.get(child) else {
            continue;
        };
        let path = dest.join(name);
        match d.kind {
            Kind::File => write_file(&path, &d.data, d.mode, d.mtime)?,
            // A directory reachable twice cannot be written as a tree; the
            // entry rules never create one, so this only guards the walk.
            Kind::Dir if seen.contains(child) => {}
            Kind::Dir => {
                fs::create_dir(&path)?;
                export_durable(durable, *child, &path, seen)?;
                set_meta(&path, d.mode, d.mtime);
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32, mtime: SystemTime) -> io::Result<()> {
    fs::write(path, data)?;
    set_meta(path, mode, mtime);
    Ok(())
}

/// Best effort: the tree's contents matter, its metadata only helps gc's
/// staging-age rule behave the same after a remount.
fn set_meta(path: &Path, mode: u32, mtime: SystemTime) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777));
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(mtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = 0;
    const B: NodeId = 1;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn mkdir(s: &mut Store, parent: Ino, n: &str) -> Ino {
        s.create(A, parent, name(n), Kind::Dir, 0o755, true)
            .unwrap()
            .0
    }

    fn mkfile(s: &mut Store, parent: Ino, n: &str, data: &[u8]) -> Ino {
        let (ino, _) = s
            .create(A, parent, name(n), Kind::File, 0o644, true)
            .unwrap();
        s.write(A, ino, 0, data, Instant::now()).unwrap();
        ino
    }

    fn tree(s: &Store) -> Vec<(String, usize)> {
        fn walk(s: &Store, dir: Ino, prefix: &str, out: &mut Vec<(String, usize)>) {
            for (n, ino, kind) in s.listing(dir).unwrap() {
                let path = format!("{prefix}{}", n.to_string_lossy());
                match kind {
                    Kind::File => out.push((path, s.inodes[&ino].data.len())),
                    Kind::Dir => {
                        out.push((format!("{path}/"), 0));
                        walk(s, ino, &format!("{path}/"), out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(s, ROOT, "", &mut out);
        out
    }

    fn entries(v: &[(&str, usize)]) -> Vec<(String, usize)> {
        v.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    /// One step of a [`CRASH_CASES`] row, by node A, on paths from the root
    /// (`""` is the root).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Mkdir(&'static str),
        /// Create a file holding these bytes.
        File(&'static str, &'static [u8]),
        /// Write these bytes at this offset.
        Write(&'static str, u64, &'static [u8]),
        Fsync(&'static str),
        /// Rename without replacing, as a publish does.
        Rename(&'static str, &'static str),
        Unlink(&'static str),
        Crash,
        /// The live tree is now this.
        Tree(&'static [(&'static str, usize)]),
        /// This many entry operations are waiting for a directory fsync.
        Pending(usize),
        /// Steps several rows share.
        Steps(&'static [Step]),
    }

    use Step::*;

    /// `staging/v.tmp/f` written and synced, file and directory, then
    /// `staging/v.tmp` renamed to `step_1`: a publish up to its last fsync.
    const STAGED_AND_RENAMED: &[Step] = &[
        Mkdir("staging"),
        Fsync(""),
        Mkdir("staging/v.tmp"),
        File("staging/v.tmp/f", b"payload"),
        Fsync("staging/v.tmp/f"),
        Fsync("staging/v.tmp"),
        Rename("staging/v.tmp", "step_1"),
    ];

    /// What survives a crash after each history: a row a rule of the
    /// durable layer.
    const CRASH_CASES: &[(&str, &[Step])] = &[
        (
            "unsynced names and data vanish on crash",
            &[
                Mkdir("d"),
                File("d/f", b"hello"),
                Tree(&[("d/", 0), ("d/f", 5)]),
                Crash,
                Tree(&[]),
            ],
        ),
        (
            "a synced name without synced data is an empty file",
            &[
                Mkdir("d"),
                File("d/f", b"hello"),
                Fsync("d"),
                Fsync(""),
                Crash,
                Tree(&[("d/", 0), ("d/f", 0)]),
            ],
        ),
        (
            "synced data without a synced name is an orphan: gone",
            &[File("g", b"data"), Fsync("g"), Crash, Tree(&[])],
        ),
        (
            // The name is durable; the data as of the file's own fsync.
            "file fsync then dir fsync is durable",
            &[
                File("f", b"hello"),
                Fsync("f"),
                Write("f", 5, b" world"),
                Fsync(""),
                Crash,
                Tree(&[("f", 5)]),
            ],
        ),
        (
            // d's own entries were synced, but d's name in the root was not.
            "a child directory needs its parent synced",
            &[
                Mkdir("d"),
                File("d/f", b"x"),
                Fsync("d/f"),
                Fsync("d"),
                Crash,
                Tree(&[]),
            ],
        ),
        (
            // F4, F5: the creation of v.tmp in staging was never synced on
            // its own: it commits with the rename that depends on it.
            "rename is durable on fsync of its destination",
            &[
                Steps(STAGED_AND_RENAMED),
                Fsync(""),
                Crash,
                Tree(&[("staging/", 0), ("step_1/", 0), ("step_1/f", 7)]),
            ],
        ),
        (
            // F4: the source's fsync commits the mkdir of v.tmp, not the
            // rename out of it. Never two names, never none.
            "rename is atomic: its source's fsync does not commit it",
            &[
                Steps(STAGED_AND_RENAMED),
                Fsync("staging"),
                Crash,
                Tree(&[
                    ("staging/", 0),
                    ("staging/v.tmp/", 0),
                    ("staging/v.tmp/f", 7),
                ]),
            ],
        ),
        (
            "an unsynced rename leaves the old name",
            &[
                File("tmp", b"m"),
                Fsync("tmp"),
                Fsync(""),
                Rename("tmp", "final"),
                Crash,
                Tree(&[("tmp", 1)]),
            ],
        ),
        (
            "syncing one directory leaves unrelated ones pending",
            &[
                Mkdir("a"),
                Mkdir("b"),
                Fsync(""),
                File("a/x", b""),
                File("b/y", b""),
                Fsync("a"),
                Pending(1),
                Crash,
                Tree(&[("a/", 0), ("a/x", 0), ("b/", 0)]),
            ],
        ),
        (
            "unlink is durable only after dir fsync",
            &[
                File("STABLE", b""),
                Fsync("STABLE"),
                Fsync(""),
                Unlink("STABLE"),
                Crash,
                Tree(&[("STABLE", 0)]),
                Unlink("STABLE"),
                Fsync(""),
                Crash,
                Tree(&[]),
            ],
        ),
    ];

    /// The inode at `path` in the live tree.
    fn find(s: &Store, path: &str) -> Ino {
        path.split('/')
            .filter(|part| !part.is_empty())
            .fold(ROOT, |dir, part| {
                let listing = s.listing(dir).unwrap();
                let found = listing.iter().find(|(n, _, _)| n == part);
                found.unwrap_or_else(|| panic!("{path}: no {part}")).1
            })
    }

    /// The directory holding `path` and its last name.
    fn entry<'p>(s: &Store, path: &'p str) -> (Ino, &'p OsStr) {
        match path.rsplit_once('/') {
            Some((dir, last)) => (find(s, dir), name(last)),
            None => (ROOT, name(path)),
        }
    }

    fn play(s: &mut Store, case: &str, steps: &[Step]) {
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Mkdir(path) => {
                    let (dir, n) = entry(s, path);
                    s.create(A, dir, n, Kind::Dir, 0o755, true).unwrap();
                }
                File(path, data) => {
                    let (dir, n) = entry(s, path);
                    let (ino, _) = s.create(A, dir, n, Kind::File, 0o644, true).unwrap();
                    s.write(A, ino, 0, data, Instant::now()).unwrap();
                }
                Write(path, offset, data) => {
                    let ino = find(s, path);
                    s.write(A, ino, offset, data, Instant::now()).unwrap();
                }
                Fsync(path) => s.fsync(A, find(s, path)).unwrap(),
                Rename(from, to) => {
                    let ((from_dir, from_name), (to_dir, to_name)) = (entry(s, from), entry(s, to));
                    s.rename(A, from_dir, from_name, to_dir, to_name, true)
                        .unwrap();
                }
                Unlink(path) => {
                    let (dir, n) = entry(s, path);
                    s.remove(A, dir, n, false).unwrap();
                }
                Crash => s.crash().unwrap(),
                Tree(expected) => assert_eq!(tree(s), entries(expected), "{case}, step {i}"),
                Pending(n) => assert_eq!(s.pending_entry_ops(), n, "{case}, step {i}"),
                Steps(shared) => play(s, case, shared),
            }
        }
    }

    #[test]
    fn crash_cases() {
        for (case, steps) in CRASH_CASES {
            play(&mut Store::new(1, true), case, steps);
        }
    }

    #[test]
    fn writeback_commits_metadata_in_order_and_data_partly() {
        // The naive writer's failure: names reach the disk, data does not.
        let mut committed_everything = false;
        for seed in 0..40 {
            let mut s = Store::new(1, true);
            let d = mkdir(&mut s, ROOT, "step_1");
            mkfile(&mut s, d, "model", &vec![7u8; 3 * 4096 + 5]);
            mkfile(&mut s, d, "STABLE", b"");
            let wb = s.writeback(seed);
            assert_eq!(wb.pending, 3);
            s.crash().unwrap();
            let t = tree(&s);
            // Always a prefix of the history: STABLE never without step_1 or model.
            let names: Vec<&str> = t.iter().map(|(p, _)| p.as_str()).collect();
            let expected = [
                &["step_1/", "step_1/STABLE", "step_1/model"][..],
                &["step_1/", "step_1/model"],
                &["step_1/"],
                &[],
            ];
            assert!(expected.contains(&names.as_slice()), "seed {seed}: {t:?}");
            if wb.entry_ops == 3 {
                committed_everything = true;
            }
        }
        assert!(committed_everything);
    }

    #[test]
    fn crash_without_durable_layer_is_refused() {
        let mut s = Store::new(2, false);
        assert_eq!(s.crash(), Err(libc::EINVAL));
    }

    #[test]
    fn a_new_name_shows_on_a_fresh_look_up_and_a_directory_fsync_pushes_nothing() {
        let mut s = Store::new(2, false);
        s.delays.negative_ttl = Duration::from_secs(30);
        let t0 = Instant::now();
        let look = |s: &mut Store, n, intent| s.lookup(B, ROOT, name(n), intent, t0).map(|a| a.ino);
        assert_eq!(look(&mut s, "g", Intent::Stat), Err(libc::ENOENT));
        let (f, _) = s
            .create(A, ROOT, name("f"), Kind::File, 0o644, true)
            .unwrap();
        let (g, _) = s
            .create(A, ROOT, name("g"), Kind::File, 0o644, true)
            .unwrap();
        // Never looked up on B: it shows at once, stat and open alike.
        assert_eq!(look(&mut s, "f", Intent::Stat), Ok(f));
        // Looked up before: absent, and the author's directory fsync, which
        // makes the names durable, changes nothing for B.
        s.fsync(A, ROOT).unwrap();
        assert_eq!(look(&mut s, "g", Intent::Stat), Err(libc::ENOENT));
        assert_eq!(look(&mut s, "g", Intent::Open), Err(libc::ENOENT));
        // The server has it: B's exclusive create fails.
        assert_eq!(
            s.create(B, ROOT, name("g"), Kind::File, 0o644, true),
            Err(libc::EEXIST)
        );
        assert_eq!(look(&mut s, "g", Intent::Exclusive), Ok(g));
    }

    #[test]
    fn negative_entries_show_names_out_of_order() {
        // B looked for the data file before it existed, never for STABLE:
        // it sees STABLE and not the data file.
        let mut s = Store::new(2, false);
        s.delays.negative_ttl = Duration::from_secs(30);
        let t0 = Instant::now();
        let look = |s: &mut Store, n| s.lookup(B, ROOT, name(n), Intent::Stat, t0).map(|a| a.ino);
        assert_eq!(look(&mut s, "model"), Err(libc::ENOENT));
        mkfile(&mut s, ROOT, "model", b"weights");
        let stable = mkfile(&mut s, ROOT, "STABLE", b"");
        assert_eq!(look(&mut s, "STABLE"), Ok(stable));
        assert_eq!(look(&mut s, "model"), Err(libc::ENOENT));
    }

    #[test]
    fn other_nodes_see_data_late_unless_fsynced() {
        let mut s = Store::new(2, false);
        s.seed = 1;
        s.delays.data_lag_max = Duration::from_secs(10);
        let t0 = Instant::now();
        let (f, _) = s
            .create(A, ROOT, name("f"), Kind::File, 0o644, true)
            .unwrap();
        s.write(A, f, 0, b"0123456789", t0).unwrap();
        let lag = s.data_lag(B, f);
        assert_eq!(s.attr(A, f, t0).unwrap().size, 10);
        if lag > Duration::ZERO {
            assert_eq!(s.attr(B, f, t0).unwrap().size, 0);
            assert_eq!(s.read(B, f, 0, 100, t0).unwrap(), b"");
        }
        assert_eq!(s.read(B, f, 0, 100, t0 + lag).unwrap(), b"0123456789");
        s.write(A, f, 10, b"abc", t0).unwrap();
        s.fsync(A, f).unwrap();
        assert_eq!(s.read(B, f, 0, 100, t0).unwrap(), b"0123456789abc");
    }

    #[test]
    fn removal_by_another_node_frees_the_inode_under_open_handles() {
        let mut s = Store::new(2, false);
        let t0 = Instant::now();
        let (f, _) = s
            .create(A, ROOT, name("f"), Kind::File, 0o644, true)
            .unwrap();
        s.fsync(A, ROOT).unwrap();
        s.open(B, f, Instant::now()).unwrap();
        s.remove(A, ROOT, name("f"), false).unwrap();
        assert_eq!(s.read(B, f, 0, 10, t0), Err(libc::ESTALE));
        // But the remover's own open handle keeps it (POSIX; NFS silly rename).
        let (g, _) = s
            .create(A, ROOT, name("g"), Kind::File, 0o644, true)
            .unwrap();
        s.write(A, g, 0, b"x", t0).unwrap();
        s.open(A, g, Instant::now()).unwrap();
        s.remove(A, ROOT, name("g"), false).unwrap();
        assert_eq!(s.read(A, g, 0, 10, t0).unwrap(), b"x");
        s.release(A, g);
        assert_eq!(s.read(A, g, 0, 10, t0), Err(libc::ESTALE));
    }

    fn ttl(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A store with node caches and no delays: every node sees the server
    /// at once unless its caches say otherwise.
    fn cached_nodes(negative: u64, positive: u64, attr: u64) -> Store {
        let mut s = Store::new(2, false);
        s.delays.negative_ttl = ttl(negative);
        s.delays.positive_ttl = ttl(positive);
        s.delays.attr_ttl = ttl(attr);
        s
    }

    fn ino(r: Res<Attr>) -> Res<Ino> {
        r.map(|a| a.ino)
    }

    /// Node B looks up `f` in the root at `t`.
    fn b_looks_up_f(s: &mut Store, intent: Intent, t: Instant) -> Res<Ino> {
        ino(s.lookup(B, ROOT, name("f"), intent, t))
    }

    /// A store with positive and attribute caches (TTLs in ms) in which A
    /// made file `f` holding `data` and B looked it up, with `intent`, at the
    /// instant returned.
    fn f_seen_by_b(positive: u64, attr: u64, data: &[u8], intent: Intent) -> (Store, Ino, Instant) {
        let mut s = cached_nodes(0, positive, attr);
        let t0 = Instant::now();
        let f = mkfile(&mut s, ROOT, "f", data);
        assert_eq!(b_looks_up_f(&mut s, intent, t0), Ok(f));
        (s, f, t0)
    }

    #[test]
    fn a_negative_entry_holds_for_stat_and_open_until_it_expires() {
        let mut s = cached_nodes(1000, 0, 0);
        let t0 = Instant::now();
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Err(libc::ENOENT));
        let (f, _) = s
            .create(A, ROOT, name("f"), Kind::File, 0o644, true)
            .unwrap();
        s.fsync(A, f).unwrap();
        s.fsync(A, ROOT).unwrap();
        // Whatever A synced, B answers from its negative entry.
        let t1 = t0 + ttl(500);
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t1), Err(libc::ENOENT));
        assert_eq!(b_looks_up_f(&mut s, Intent::Open, t1), Err(libc::ENOENT));
        assert_eq!(s.stats(B).negative_hits, 2);
        // An exclusive create asks the server.
        assert_eq!(b_looks_up_f(&mut s, Intent::Exclusive, t1), Ok(f));
        // Expired: the name shows.
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0 + ttl(1000)), Ok(f));
    }

    #[test]
    fn listing_a_directory_drops_its_negative_entries() {
        let mut s = cached_nodes(1000, 0, 0);
        let t0 = Instant::now();
        let d = mkdir(&mut s, ROOT, "d");
        for (dir, n) in [(ROOT, "f"), (d, "g")] {
            assert_eq!(
                ino(s.lookup(B, dir, name(n), Intent::Stat, t0)),
                Err(libc::ENOENT)
            );
        }
        let f = mkfile(&mut s, ROOT, "f", b"x");
        let g = mkfile(&mut s, d, "g", b"x");
        let listing = s.readdir(B, ROOT).unwrap();
        assert!(listing.iter().any(|(n, i, _)| n == "f" && *i == f));
        assert_eq!(ino(s.lookup(B, ROOT, name("f"), Intent::Open, t0)), Ok(f));
        // Only the listed directory is revalidated.
        assert_eq!(
            ino(s.lookup(B, d, name("g"), Intent::Open, t0)),
            Err(libc::ENOENT)
        );
        s.readdir(B, d).unwrap();
        assert_eq!(ino(s.lookup(B, d, name("g"), Intent::Open, t0)), Ok(g));
    }

    #[test]
    fn a_positive_entry_answers_stat_not_open() {
        let (mut s, f, t0) = f_seen_by_b(1000, 300, b"x", Intent::Stat);
        s.remove(A, ROOT, name("f"), false).unwrap();
        // stat: B still has the name and its attributes.
        let t1 = t0 + ttl(100);
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t1), Ok(f));
        assert_eq!(s.stats(B).stale_names, 1);
        // open resolves the name again: gone.
        assert_eq!(b_looks_up_f(&mut s, Intent::Open, t1), Err(libc::ENOENT));
        // (and an open of the inode the kernel already holds fails too)
        assert_eq!(s.open(B, f, Instant::now()), Err(libc::ESTALE));
    }

    #[test]
    fn attributes_hold_for_their_ttl_from_the_last_look_up_or_open() {
        // B's look-up of f at 0 ms, its open of f (ms), then A removes f and
        // B stats it (ms): found while the 300 ms attributes hold. Once they
        // expire, the freed inode is noticed (ESTALE from the server) and
        // the name resolved again, within the positive entry's TTL.
        let cases = [
            (Intent::Stat, None, 400, false),
            (Intent::Open, Some(200), 400, true),
            (Intent::Open, Some(200), 600, false),
        ];
        for (intent, opened_at, stat_at, found) in cases {
            let (mut s, f, t0) = f_seen_by_b(1000, 300, b"x", intent);
            if let Some(ms) = opened_at {
                s.open(B, f, t0 + ttl(ms)).unwrap();
                s.release(B, f);
            }
            s.remove(A, ROOT, name("f"), false).unwrap();
            let expected = if found { Ok(f) } else { Err(libc::ENOENT) };
            let stat = b_looks_up_f(&mut s, Intent::Stat, t0 + ttl(stat_at));
            assert_eq!(stat, expected, "opened at {opened_at:?}, stat at {stat_at}");
        }
    }

    #[test]
    fn a_positive_entry_outlives_a_replacement_until_open_or_listing() {
        let (mut s, old, t0) = f_seen_by_b(1000, 0, b"old", Intent::Stat);
        // A moves the old file aside (it stays alive) and puts a new one there.
        s.rename(A, ROOT, name("f"), ROOT, name("aside"), false)
            .unwrap();
        let new = mkfile(&mut s, ROOT, "f", b"new");
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Ok(old));
        assert_eq!(b_looks_up_f(&mut s, Intent::Open, t0), Ok(new));
        // The open refreshed B's entry.
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Ok(new));
        // Again, revalidated by a listing this time.
        s.rename(A, ROOT, name("f"), ROOT, name("aside2"), false)
            .unwrap();
        let newer = mkfile(&mut s, ROOT, "f", b"newer");
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Ok(new));
        s.readdir(B, ROOT).unwrap();
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Ok(newer));
        // And by expiry.
        s.rename(A, ROOT, name("f"), ROOT, name("aside3"), false)
            .unwrap();
        assert_eq!(b_looks_up_f(&mut s, Intent::Stat, t0), Ok(newer));
        assert_eq!(
            b_looks_up_f(&mut s, Intent::Stat, t0 + ttl(1000)),
            Err(libc::ENOENT)
        );
    }

    #[test]
    fn the_server_decides_exclusive_create_unlink_rmdir_and_rename() {
        let mut s = cached_nodes(1000, 1000, 1000);
        let step = mkdir(&mut s, ROOT, "step_1");
        let pins = mkdir(&mut s, step, "pins");
        let t1 = Instant::now();
        let look = |s: &mut Store, dir, n, intent| ino(s.lookup(B, dir, name(n), intent, t1));
        assert_eq!(look(&mut s, step, "pins", Intent::Stat), Ok(pins));
        assert_eq!(look(&mut s, pins, "p1", Intent::Stat), Err(libc::ENOENT));
        // A pins: B does not see it (negative entry) and yet may neither
        // remove the directory nor create the same name.
        let (p1, _) = s
            .create(A, pins, name("p1"), Kind::File, 0o644, true)
            .unwrap();
        assert_eq!(look(&mut s, pins, "p1", Intent::Open), Err(libc::ENOENT));
        assert_eq!(s.remove(B, step, name("pins"), true), Err(libc::ENOTEMPTY));
        assert_eq!(look(&mut s, pins, "p1", Intent::Exclusive), Ok(p1));
        assert_eq!(
            s.create(B, pins, name("p1"), Kind::File, 0o644, true),
            Err(libc::EEXIST)
        );
        // A unpins and removes the directory; B still caches it for stat.
        s.remove(A, pins, name("p1"), false).unwrap();
        s.remove(A, step, name("pins"), true).unwrap();
        assert_eq!(look(&mut s, step, "pins", Intent::Stat), Ok(pins));
        // Creating in it fails: the exclusive create's look-up asks the
        // server (ENOENT); a create on the stale inode gets ESTALE, after
        // which B resolves the name again (the kernel's one retry): ENOENT.
        assert_eq!(
            look(&mut s, step, "pins", Intent::Exclusive),
            Err(libc::ENOENT)
        );
        assert_eq!(
            s.create(B, pins, name("p2"), Kind::File, 0o644, true),
            Err(libc::ESTALE)
        );
        assert_eq!(look(&mut s, step, "pins", Intent::Stat), Err(libc::ENOENT));
        // Unlink, rmdir and rename of names B still sees are refused.
        assert_eq!(s.remove(B, step, name("pins"), true), Err(libc::ENOENT));
        assert_eq!(
            s.rename(B, step, name("pins"), ROOT, name("x"), false),
            Err(libc::ENOENT)
        );
    }

    #[test]
    fn a_removed_directory_held_open_by_its_remover_takes_no_names() {
        let mut s = Store::new(2, false);
        let d = mkdir(&mut s, ROOT, "d");
        let create_in_d =
            |s: &mut Store, node| s.create(node, d, name("f"), Kind::File, 0o644, true);
        s.open(A, d, Instant::now()).unwrap();
        s.remove(A, ROOT, name("d"), true).unwrap();
        assert_eq!(create_in_d(&mut s, A), Err(libc::ENOENT));
        assert_eq!(create_in_d(&mut s, B), Err(libc::ENOENT));
        s.release(A, d);
        assert_eq!(create_in_d(&mut s, A), Err(libc::ESTALE));
    }

    #[test]
    fn rename_rules() {
        let mut s = Store::new(1, false);
        let d = mkdir(&mut s, ROOT, "d");
        mkfile(&mut s, d, "f", b"x");
        mkdir(&mut s, ROOT, "e");
        mkfile(&mut s, ROOT, "g", b"");
        // From, to, no-replace, and why the rename is refused.
        let refused = [
            ("e", "d", false, libc::ENOTEMPTY),
            ("g", "e", false, libc::EISDIR),
            ("e", "g", false, libc::ENOTDIR),
            ("g", "d", true, libc::EEXIST),
        ];
        for (from, to, noreplace, errno) in refused {
            let renamed = s.rename(A, ROOT, name(from), ROOT, name(to), noreplace);
            assert_eq!(renamed, Err(errno), "{from} -> {to}");
        }
        s.rename(A, ROOT, name("d"), ROOT, name("e"), false)
            .unwrap();
        assert_eq!(tree(&s), entries(&[("e/", 0), ("e/f", 1), ("g", 0)]));
    }

    #[test]
    fn export_and_load_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::new(1, true);
        let d = mkdir(&mut s, ROOT, "d");
        let f = mkfile(&mut s, d, "f", b"durable");
        mkfile(&mut s, d, "volatile", b"lost");
        s.fsync(A, f).unwrap();
        s.fsync(A, ROOT).unwrap();
        s.export(Image::Durable, tmp.path()).unwrap();
        let loaded = Store::load(tmp.path(), 1, true).unwrap();
        assert_eq!(tree(&loaded), entries(&[("d/", 0)]));
        s.export(Image::Live, tmp.path()).unwrap();
        let loaded = Store::load(tmp.path(), 1, true).unwrap();
        assert_eq!(
            tree(&loaded),
            entries(&[("d/", 0), ("d/f", 7), ("d/volatile", 4)])
        );
    }
}
