//! The storage model: an in-memory directory tree that can crash.
//!
//! # The rules
//!
//! The crash rules are listed, with ids, in `docs/FILESYSTEM.md`; this model
//! implements F1–F7 and the code below cites them. faultfs follows the same
//! list.
//!
//! The model keeps, for every inode, what the running process sees (*live*)
//! and what would survive a crash now (*synced*), plus a log of the directory
//! entry operations that are not yet durable (*pending*, in issue order).
//!
//! - **F1, F2** File data is durable only after [`StorageFile::sync`] of that
//!   file, which makes no name durable. After a crash a file with unsynced
//!   data holds its synced content (*lost*), its live content (*kept*), or
//!   the first half of its live content (*torn*, a prefix).
//! - **F3** `create_dir`, `create_new`, `remove_file`, `remove_dir` and
//!   `rename` each append one operation to the pending log;
//!   [`Storage::sync_dir`] of D makes durable every pending operation whose
//!   *resulting* entry lies in D.
//! - **F4** A rename is atomic and durable by a sync of its destination only;
//!   a directory rename carries its subtree; onto a non-empty directory it
//!   fails with `DirectoryNotEmpty`.
//! - **F5** Two pending operations on the same entry (directory, name) keep
//!   their order: making one durable makes the earlier ones durable too.
//! - **F6, F7** A crash state is the synced state plus any subset of the
//!   pending log closed under F5, replayed in order, plus one F1 choice for
//!   every reachable file with unsynced data; only what the root reaches
//!   survives.
//!
//! Enumeration is exhaustive while the number of candidate states is at most
//! [`CrashOptions::exhaustive_limit`], and a seeded random sample otherwise.
//! Equal resulting trees are counted once.
//!
//! Not modelled: symbolic links, hard links, permissions, metadata other than
//! size and mtime, zero-filled blocks (size durable but data not), and a failing
//! fsync.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::rc::Rc;

use handoff_core::{DirEntry, Kind, Metadata, Platform, Storage, StorageFile};

pub use handoff_testkit::{Rng, mix};

/// Virtual time and seeded randomness. `sleep_ms` advances time instantly, so
/// a `wait` with a deadline finishes at once. Clones share the same time.
#[derive(Clone, Debug)]
pub struct SimPlatform {
    now: Rc<Cell<u64>>,
    rng: Rc<RefCell<Rng>>,
}

impl SimPlatform {
    /// A clock at `start_ms` whose randomness starts from `seed`.
    pub fn new(start_ms: u64, seed: u64) -> SimPlatform {
        SimPlatform {
            now: Rc::new(Cell::new(start_ms)),
            rng: Rc::new(RefCell::new(Rng::new(seed))),
        }
    }

    /// A clock sharing this one's time but with its own randomness (a second
    /// process on the same machine).
    pub fn fork(&self, seed: u64) -> SimPlatform {
        SimPlatform {
            now: Rc::clone(&self.now),
            rng: Rc::new(RefCell::new(Rng::new(seed))),
        }
    }

    /// Move time forward.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }
}

impl Platform for SimPlatform {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }

    fn sleep_ms(&self, ms: u64) {
        self.advance(ms);
    }

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }
}

/// The prefixes of a relative path, shortest first: `a`, `a/b`, `a/b/c` for
/// `a/b/c`, the names a client looks up in turn.
pub fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(|(end, _)| &path[..end])
        .chain(std::iter::once(path))
        .filter(|prefix| !prefix.is_empty() && !prefix.ends_with('/'))
}

/// One object of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
}

/// A whole directory tree by path (the root itself is not listed): what a
/// state looks like, for comparing states and printing them.
pub type Tree = BTreeMap<String, Node>;

/// Print a tree, one path a line, with short contents.
pub fn show_tree(tree: &Tree) -> String {
    let mut out = String::new();
    for (path, node) in tree {
        match node {
            Node::Dir => {
                let _ = writeln!(out, "    {path}/");
            }
            Node::File(data) => {
                let _ = writeln!(out, "    {path}  {}", show_bytes(data));
            }
        }
    }
    if out.is_empty() {
        out.push_str("    (empty)\n");
    }
    out
}

/// Short printable form of file contents.
pub fn show_bytes(data: &[u8]) -> String {
    const SHOWN: usize = 40;
    let text: String = String::from_utf8_lossy(&data[..data.len().min(SHOWN)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    let more = if data.len() > SHOWN { "…" } else { "" };
    format!("({} bytes) {text:?}{more}", data.len())
}

type Ino = usize;
const ROOT: Ino = 0;

#[derive(Clone, Debug)]
enum Content {
    File {
        live: Vec<u8>,
        synced: Vec<u8>,
    },
    Dir {
        live: BTreeMap<String, Ino>,
        synced: BTreeMap<String, Ino>,
    },
}

#[derive(Clone, Debug)]
struct Inode {
    content: Content,
    mtime_ms: u64,
}

/// A directory entry operation that is not durable yet.
#[derive(Clone, Debug)]
struct EntryOp {
    change: Change,
    /// How the operation was issued, for traces.
    desc: String,
}

/// A name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    dir: Ino,
    name: String,
}

#[derive(Clone, Debug)]
enum Change {
    /// A name created: `create_dir` or `create_new`.
    Link { at: Entry, ino: Ino },
    /// A name removed: `remove_file` or `remove_dir`.
    Unlink { at: Entry, ino: Ino },
    /// A name moved, replacing whatever the destination held.
    Rename { from: Entry, to: Entry, ino: Ino },
}

impl Change {
    /// The entries this operation reads or writes (F5).
    fn entries(&self) -> Vec<&Entry> {
        match self {
            Change::Link { at, .. } | Change::Unlink { at, .. } => vec![at],
            Change::Rename { from, to, .. } => vec![from, to],
        }
    }

    /// The directory whose fsync makes this operation durable (F3): the one
    /// holding the entry it leaves, so a rename's destination (F4).
    fn durable_by(&self) -> Ino {
        match self {
            Change::Link { at, .. } | Change::Unlink { at, .. } => at.dir,
            Change::Rename { to, .. } => to.dir,
        }
    }
}

/// A state of the whole model: live and synced content of every inode and
/// the pending entry log. Cheap to clone (the payloads are a few bytes).
#[derive(Clone, Debug)]
pub struct FsState {
    inodes: Vec<Inode>,
    pending: Vec<EntryOp>,
}

/// Which side of the inodes an entry operation is applied to.
#[derive(Clone, Copy)]
enum Side {
    Live,
    Synced,
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{path:?}: no such file or directory"),
    )
}

fn err(kind: io::ErrorKind, path: &str, what: &str) -> io::Error {
    io::Error::new(kind, format!("{path:?}: {what}"))
}

/// The components of a relative path; the empty path is the root.
fn components(path: &str) -> io::Result<Vec<&str>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(err(
            io::ErrorKind::InvalidInput,
            path,
            "not a plain relative path",
        ));
    }
    Ok(parts)
}

impl Default for FsState {
    fn default() -> Self {
        FsState::new()
    }
}

impl FsState {
    /// An empty root directory, durable.
    pub fn new() -> FsState {
        FsState {
            inodes: vec![Inode {
                content: Content::Dir {
                    live: BTreeMap::new(),
                    synced: BTreeMap::new(),
                },
                mtime_ms: 0,
            }],
            pending: Vec::new(),
        }
    }

    fn dir(&self, ino: Ino, side: Side) -> Option<&BTreeMap<String, Ino>> {
        match (&self.inodes[ino].content, side) {
            (Content::Dir { live, .. }, Side::Live) => Some(live),
            (Content::Dir { synced, .. }, Side::Synced) => Some(synced),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino, side: Side) -> &mut BTreeMap<String, Ino> {
        match (&mut self.inodes[ino].content, side) {
            (Content::Dir { live, .. }, Side::Live) => live,
            (Content::Dir { synced, .. }, Side::Synced) => synced,
            _ => panic!("inode {ino} is not a directory"),
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.inodes[ino].content, Content::Dir { .. })
    }

    /// The inode at `path` in the live tree; `Ok(None)` if nothing is there,
    /// `NotADirectory` if a non-final component is a file.
    fn resolve(&self, path: &str) -> io::Result<Option<Ino>> {
        let mut ino = ROOT;
        for part in components(path)? {
            let Some(entries) = self.dir(ino, Side::Live) else {
                return Err(err(io::ErrorKind::NotADirectory, path, "not a directory"));
            };
            match entries.get(part) {
                Some(&child) => ino = child,
                None => return Ok(None),
            }
        }
        Ok(Some(ino))
    }

    /// The live parent directory of `path` and the final name.
    fn parent(&self, path: &str) -> io::Result<Entry> {
        let mut parts = components(path)?;
        let Some(name) = parts.pop() else {
            return Err(err(
                io::ErrorKind::InvalidInput,
                path,
                "the root has no parent",
            ));
        };
        let parent = parts.join("/");
        match self.resolve(&parent)? {
            None => Err(not_found(path)),
            Some(ino) if !self.is_dir(ino) => {
                Err(err(io::ErrorKind::NotADirectory, path, "not a directory"))
            }
            Some(dir) => Ok(Entry {
                dir,
                name: name.to_string(),
            }),
        }
    }

    /// What `at` names in the live tree.
    fn named(&self, at: &Entry) -> Option<Ino> {
        self.dir(at.dir, Side::Live).unwrap().get(&at.name).copied()
    }

    fn touch(&mut self, ino: Ino, now: u64) {
        self.inodes[ino].mtime_ms = now;
    }

    /// Apply one entry operation to the live or the synced side.
    fn apply(&mut self, change: &Change, side: Side) {
        match change {
            Change::Link { at, ino } => self.link(at, *ino, side),
            Change::Unlink { at, ino } => self.unlink(at, *ino, side),
            Change::Rename { from, to, ino } => {
                self.unlink(from, *ino, side);
                self.link(to, *ino, side);
            }
        }
    }

    /// Make `at` name `ino`, replacing whatever it named.
    fn link(&mut self, at: &Entry, ino: Ino, side: Side) {
        self.dir_mut(at.dir, side).insert(at.name.clone(), ino);
    }

    /// Remove `at` if it still names `ino`.
    fn unlink(&mut self, at: &Entry, ino: Ino, side: Side) {
        let entries = self.dir_mut(at.dir, side);
        if entries.get(&at.name) == Some(&ino) {
            entries.remove(&at.name);
        }
    }

    fn log(&mut self, change: Change, desc: String, now: u64) {
        self.apply(&change, Side::Live);
        for at in change.entries() {
            self.touch(at.dir, now);
        }
        self.pending.push(EntryOp { change, desc });
    }

    fn new_inode(&mut self, content: Content, now: u64) -> Ino {
        self.inodes.push(Inode {
            content,
            mtime_ms: now,
        });
        self.inodes.len() - 1
    }

    fn create(&mut self, path: &str, dir: bool, now: u64) -> io::Result<Ino> {
        let at = self.parent(path)?;
        if self.named(&at).is_some() {
            return Err(err(io::ErrorKind::AlreadyExists, path, "already exists"));
        }
        let content = if dir {
            Content::Dir {
                live: BTreeMap::new(),
                synced: BTreeMap::new(),
            }
        } else {
            Content::File {
                live: Vec::new(),
                synced: Vec::new(),
            }
        };
        let ino = self.new_inode(content, now);
        let verb = if dir { "mkdir" } else { "create" };
        self.log(Change::Link { at, ino }, format!("{verb} {path}"), now);
        Ok(ino)
    }

    /// Is `inner` inside the live subtree of directory `outer` (or equal)?
    fn contains(&self, outer: Ino, inner: Ino) -> bool {
        if outer == inner {
            return true;
        }
        self.dir(outer, Side::Live)
            .is_some_and(|entries| entries.values().any(|&c| self.contains(c, inner)))
    }

    /// F4, and V6: the checks are the server's, on what it holds.
    fn rename(&mut self, from: &str, to: &str, now: u64) -> io::Result<()> {
        let source = self.parent(from)?;
        let Some(ino) = self.named(&source) else {
            return Err(not_found(from));
        };
        let dest = self.parent(to)?;
        if source == dest {
            return Ok(());
        }
        let moving_dir = self.is_dir(ino);
        if moving_dir && self.contains(ino, dest.dir) {
            return Err(err(
                io::ErrorKind::InvalidInput,
                to,
                "inside the directory being moved",
            ));
        }
        if let Some(target) = self.named(&dest) {
            self.replaceable(target, moving_dir, to)?;
        }
        self.log(
            Change::Rename {
                from: source,
                to: dest,
                ino,
            },
            format!("rename {from} -> {to}"),
            now,
        );
        Ok(())
    }

    /// Whether inode `ino` (at `path`) may be removed, or replaced by a
    /// rename, as a directory (`dir`) or a file: `rmdir` and a directory
    /// rename need an empty directory, `unlink` and a file rename a file (V6).
    fn replaceable(&self, ino: Ino, dir: bool, path: &str) -> io::Result<()> {
        match (dir, self.dir(ino, Side::Live)) {
            (false, Some(_)) => Err(err(io::ErrorKind::IsADirectory, path, "is a directory")),
            (true, None) => Err(err(io::ErrorKind::NotADirectory, path, "not a directory")),
            (true, Some(entries)) if !entries.is_empty() => Err(err(
                io::ErrorKind::DirectoryNotEmpty,
                path,
                "directory not empty",
            )),
            _ => Ok(()),
        }
    }

    fn remove(&mut self, path: &str, dir: bool, now: u64) -> io::Result<()> {
        let at = self.parent(path)?;
        let Some(ino) = self.named(&at) else {
            return Err(not_found(path));
        };
        self.replaceable(ino, dir, path)?;
        let verb = if dir { "rmdir" } else { "unlink" };
        self.log(Change::Unlink { at, ino }, format!("{verb} {path}"), now);
        Ok(())
    }

    /// Direct dependencies (F5): for each pending op, the earlier ones
    /// touching one of its entries.
    fn dependencies(&self) -> Vec<Vec<usize>> {
        let entries: Vec<_> = self.pending.iter().map(|op| op.change.entries()).collect();
        (0..self.pending.len())
            .map(|b| {
                (0..b)
                    .filter(|&a| entries[a].iter().any(|e| entries[b].contains(e)))
                    .collect()
            })
            .collect()
    }

    /// Add to `keep` everything the kept operations depend on.
    fn close(keep: &mut [bool], deps: &[Vec<usize>]) {
        // Dependencies point backwards, so one backward pass is transitive.
        for b in (0..keep.len()).rev() {
            if keep[b] {
                for &a in &deps[b] {
                    keep[a] = true;
                }
            }
        }
    }

    /// F3: make durable what an fsync of directory `ino` covers.
    fn sync_dir(&mut self, ino: Ino) {
        let mut durable: Vec<bool> = self
            .pending
            .iter()
            .map(|op| op.change.durable_by() == ino)
            .collect();
        FsState::close(&mut durable, &self.dependencies());
        let pending = std::mem::take(&mut self.pending);
        for (op, durable) in pending.into_iter().zip(durable) {
            if durable {
                self.apply(&op.change, Side::Synced);
            } else {
                self.pending.push(op);
            }
        }
    }

    /// F1, F2: make a file's data durable, and nothing else.
    fn sync_file(&mut self, ino: Ino) {
        if let Content::File { live, synced } = &mut self.inodes[ino].content {
            synced.clone_from(live);
        }
    }

    fn write(&mut self, ino: Ino, buf: &[u8], offset: u64, now: u64) {
        if let Content::File { live, .. } = &mut self.inodes[ino].content {
            let start = offset as usize;
            if live.len() < start + buf.len() {
                live.resize(start + buf.len(), 0);
            }
            live[start..start + buf.len()].copy_from_slice(buf);
        }
        self.touch(ino, now);
    }

    /// Make everything durable, as if the machine had idled long enough for
    /// the kernel to write everything back. Used to set up a scenario's
    /// starting point.
    pub fn sync_all(&mut self) {
        for inode in &mut self.inodes {
            match &mut inode.content {
                Content::File { live, synced } => synced.clone_from(live),
                Content::Dir { live, synced } => synced.clone_from(live),
            }
        }
        self.pending.clear();
    }

    /// Reachable inodes of one side with their paths, parents first (F6).
    fn reachable(&self, side: Side) -> Vec<(Ino, String)> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([ROOT]);
        let mut queue = vec![(ROOT, String::new())];
        while let Some((ino, path)) = queue.pop() {
            if let Some(entries) = self.dir(ino, side) {
                for (name, &child) in entries.iter().rev() {
                    if seen.insert(child) {
                        let child_path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}/{name}")
                        };
                        queue.push((child, child_path));
                    }
                }
            }
            if ino != ROOT {
                out.push((ino, path));
            }
        }
        out
    }

    /// The live tree.
    pub fn tree(&self) -> Tree {
        self.reachable(Side::Live)
            .into_iter()
            .map(|(ino, path)| {
                let node = match &self.inodes[ino].content {
                    Content::Dir { .. } => Node::Dir,
                    Content::File { live, .. } => Node::File(live.clone()),
                };
                (path, node)
            })
            .collect()
    }

    /// The directories after a crash that kept the pending operations marked
    /// in `keep` (closed under F5): synced entries plus the kept ones,
    /// replayed in order, on the live side of a copy. File data is untouched.
    fn entries_after(&self, keep: &[bool]) -> FsState {
        let mut image = self.clone();
        for inode in &mut image.inodes {
            if let Content::Dir { live, synced } = &mut inode.content {
                live.clone_from(synced);
            }
        }
        for (op, &kept) in self.pending.iter().zip(keep) {
            if kept {
                image.apply(&op.change, Side::Live);
            }
        }
        image.pending.clear();
        image
    }

    /// Reachable files of `image` whose data is not durable, with the
    /// contents a crash may leave them (F1).
    fn data_choices(image: &FsState) -> Vec<DataChoice> {
        let mut out = Vec::new();
        for (ino, path) in image.reachable(Side::Live) {
            if let Content::File { live, synced } = &image.inodes[ino].content
                && live != synced
            {
                let mut options = vec![(Fate::Kept, live.clone()), (Fate::Lost, synced.clone())];
                let torn = live[..live.len() / 2].to_vec();
                if torn != *live && torn != *synced {
                    options.push((Fate::Torn, torn));
                }
                out.push(DataChoice { ino, path, options });
            }
        }
        out
    }

    /// The quiescent state a crash leaves: `image` with the chosen data,
    /// everything durable, nothing pending.
    fn settle(mut image: FsState, data: &[DataChoice], picks: &[usize]) -> FsState {
        for (choice, &pick) in data.iter().zip(picks) {
            if let Content::File { live, .. } = &mut image.inodes[choice.ino].content {
                live.clone_from(&choice.options[pick].1);
            }
        }
        image.sync_all();
        image
    }

    /// The states a crash right now may leave (F7).
    pub fn crash_states(&self, options: &CrashOptions) -> Enumeration {
        let n = self.pending.len();
        let deps = self.dependencies();
        let describe = |keep: &[bool], data: &[DataChoice], picks: &[usize]| {
            let mut text = String::new();
            for (op, &kept) in self.pending.iter().zip(keep) {
                let verdict = if kept { "kept" } else { "lost" };
                let _ = writeln!(text, "    {verdict:<5} {}", op.desc);
            }
            for (choice, &pick) in data.iter().zip(picks) {
                let (fate, bytes) = &choice.options[pick];
                let _ = writeln!(
                    text,
                    "    data  {}: {} ({} bytes survive)",
                    choice.path,
                    fate.word(),
                    bytes.len()
                );
            }
            if text.is_empty() {
                text.push_str("    nothing was pending: the crash state is the live state\n");
            }
            text
        };
        let mut seen = HashSet::new();
        let mut states = Vec::new();
        let mut push = |fs: FsState, description: String| {
            if seen.insert(fs.tree()) {
                states.push(CrashState { fs, description });
            }
        };

        // Exhaustive when the candidates are few enough: every closed subset
        // (fewest kept first, so the first violation found is a small one),
        // times every data choice.
        if n < 20 && (1usize << n) <= options.exhaustive_limit {
            let mut masks: Vec<u32> = (0..1u32 << n)
                .filter(|&mask| {
                    let keep = bits(mask, n);
                    let mut closed = keep.clone();
                    FsState::close(&mut closed, &deps);
                    closed == keep
                })
                .collect();
            masks.sort_by_key(|m| (m.count_ones(), *m));
            let images: Vec<_> = masks
                .iter()
                .map(|&mask| {
                    let keep = bits(mask, n);
                    let image = self.entries_after(&keep);
                    let data = FsState::data_choices(&image);
                    (keep, image, data)
                })
                .collect();
            let total: usize = images
                .iter()
                .map(|(_, _, data)| data.iter().map(|d| d.options.len()).product::<usize>())
                .sum();
            if total <= options.exhaustive_limit {
                for (keep, image, data) in images {
                    let mut picks = vec![0; data.len()];
                    loop {
                        let description = describe(&keep, &data, &picks);
                        push(FsState::settle(image.clone(), &data, &picks), description);
                        if !next_pick(&mut picks, &data) {
                            break;
                        }
                    }
                }
                return Enumeration {
                    states,
                    exhaustive: true,
                };
            }
        }

        // Otherwise a seeded sample: a random subset closed under F5, and
        // a random fate for each dirty file.
        let mut rng = Rng::new(options.seed);
        for _ in 0..options.samples {
            let mut keep: Vec<bool> = (0..n).map(|_| rng.below(2) == 1).collect();
            FsState::close(&mut keep, &deps);
            let image = self.entries_after(&keep);
            let data = FsState::data_choices(&image);
            let picks: Vec<usize> = data
                .iter()
                .map(|d| rng.below(d.options.len() as u64) as usize)
                .collect();
            let description = describe(&keep, &data, &picks);
            push(FsState::settle(image, &data, &picks), description);
        }
        Enumeration {
            states,
            exhaustive: false,
        }
    }
}

fn bits(mask: u32, n: usize) -> Vec<bool> {
    (0..n).map(|i| mask & (1 << i) != 0).collect()
}

/// Advance a mixed-radix counter over the data choices; false when done.
fn next_pick(picks: &mut [usize], data: &[DataChoice]) -> bool {
    for (pick, choice) in picks.iter_mut().zip(data) {
        *pick += 1;
        if *pick < choice.options.len() {
            return true;
        }
        *pick = 0;
    }
    false
}

/// What a crash did to one file's unsynced data (F1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Kept,
    Lost,
    Torn,
}

impl Fate {
    fn word(self) -> &'static str {
        match self {
            Fate::Kept => "kept",
            Fate::Lost => "lost",
            Fate::Torn => "torn",
        }
    }
}

struct DataChoice {
    ino: Ino,
    path: String,
    options: Vec<(Fate, Vec<u8>)>,
}

/// How many crash states to look at.
#[derive(Clone, Debug)]
pub struct CrashOptions {
    /// Enumerate every state while there are at most this many candidates.
    pub exhaustive_limit: usize,
    /// Otherwise draw this many random states.
    pub samples: usize,
    /// The sampling seed.
    pub seed: u64,
}

/// One state a crash may leave.
#[derive(Clone, Debug)]
pub struct CrashState {
    /// The recovered state: everything in it is durable.
    pub fs: FsState,
    /// Which pending operations were kept or lost and what happened to each
    /// file's unsynced data.
    pub description: String,
}

/// The crash states of one crash point.
#[derive(Debug)]
pub struct Enumeration {
    /// Distinct states, in a reproducible order.
    pub states: Vec<CrashState>,
    /// Whether these are all of them (or a seeded sample).
    pub exhaustive: bool,
}

/// What a model recorded while an operation ran: the mutating storage calls
/// in order, and the state before the first and after each.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The mutating calls, e.g. `fsync-dir step_2`: crash point `k` is after
    /// the first `k` of them.
    pub ops: Vec<String>,
    /// `points[k]` is the state after the first `k` mutating calls.
    pub points: Vec<FsState>,
    /// Every call, reads included, with the crash point a mutating call
    /// leads to: the interleaving points of a race.
    pub calls: Vec<(String, Option<usize>)>,
}

struct Hook {
    due: usize,
    run: Box<dyn FnOnce()>,
}

struct Inner {
    fs: FsState,
    /// Mutating calls so far: crash points.
    ops_done: usize,
    /// Every storage call so far, reads included: interleaving points.
    calls_done: usize,
    recording: Option<Recording>,
}

struct Shared {
    inner: RefCell<Inner>,
    hook: RefCell<Option<Hook>>,
    clock: SimPlatform,
}

/// The model as a [`Storage`]: what the running process sees. Clones share
/// the same tree.
#[derive(Clone)]
pub struct Model {
    shared: Rc<Shared>,
}

impl Model {
    /// An empty, durable root.
    pub fn new(clock: &SimPlatform) -> Model {
        Model::from_state(FsState::new(), clock)
    }

    /// A model starting from `fs` (e.g. a crash state).
    pub fn from_state(fs: FsState, clock: &SimPlatform) -> Model {
        Model {
            shared: Rc::new(Shared {
                inner: RefCell::new(Inner {
                    fs,
                    ops_done: 0,
                    calls_done: 0,
                    recording: None,
                }),
                hook: RefCell::new(None),
                clock: clock.clone(),
            }),
        }
    }

    /// A copy of the whole state.
    pub fn state(&self) -> FsState {
        self.shared.inner.borrow().fs.clone()
    }

    /// The live tree.
    pub fn tree(&self) -> Tree {
        self.shared.inner.borrow().fs.tree()
    }

    /// Make everything durable (see [`FsState::sync_all`]).
    pub fn sync_all(&self) {
        self.shared.inner.borrow_mut().fs.sync_all();
    }

    /// Start recording calls and crash points.
    pub fn start_recording(&self) {
        let mut inner = self.shared.inner.borrow_mut();
        let start = inner.fs.clone();
        inner.recording = Some(Recording {
            ops: Vec::new(),
            points: vec![start],
            calls: Vec::new(),
        });
    }

    /// Stop recording and return what was recorded.
    pub fn take_recording(&self) -> Recording {
        self.shared
            .inner
            .borrow_mut()
            .recording
            .take()
            .unwrap_or_default()
    }

    /// Run `hook` once, right after the `after`-th storage call from now
    /// (`after` ≥ 1; reads count too): how a second process is interleaved
    /// with the first.
    pub fn set_hook(&self, after: usize, hook: impl FnOnce() + 'static) {
        let due = self.shared.inner.borrow().calls_done + after;
        *self.shared.hook.borrow_mut() = Some(Hook {
            due,
            run: Box::new(hook),
        });
    }

    /// Mutating calls done so far.
    pub fn ops_done(&self) -> usize {
        self.shared.inner.borrow().ops_done
    }

    /// Storage calls done so far, reads included.
    pub fn calls_done(&self) -> usize {
        self.shared.inner.borrow().calls_done
    }

    /// What is at `path` right now, without counting a call or running a
    /// hook: for a node's cache, which learns a name's attributes along with
    /// the counted call that touched it. `None` if nothing (or an error).
    pub fn peek(&self, path: &str) -> Option<Metadata> {
        self.stat_now(path).ok().flatten()
    }

    /// The shortest prefix of `path` (the path itself included) that names
    /// nothing right now, without counting a call: where a client's failed
    /// look-up stops. `None` if every component is there, or one is not a
    /// directory.
    pub fn first_missing(&self, path: &str) -> Option<String> {
        let inner = self.shared.inner.borrow();
        for prefix in prefixes(path) {
            match inner.fs.resolve(prefix) {
                Ok(Some(_)) => {}
                Ok(None) => return Some(prefix.to_string()),
                Err(_) => return None,
            }
        }
        None
    }

    /// Count a call that changed nothing, and run a hook that came due.
    fn read_call<T>(&self, value: T, desc: impl FnOnce(&T) -> String) -> T {
        let hook = {
            let mut inner = self.shared.inner.borrow_mut();
            inner.calls_done += 1;
            if let Some(recording) = &mut inner.recording {
                recording.calls.push((desc(&value), None));
            }
            self.due_hook(inner.calls_done)
        };
        if let Some(hook) = hook {
            (hook.run)();
        }
        value
    }

    fn due_hook(&self, calls_done: usize) -> Option<Hook> {
        let mut hook = self.shared.hook.borrow_mut();
        if hook.as_ref().is_some_and(|h| calls_done >= h.due) {
            hook.take()
        } else {
            None
        }
    }

    fn now(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Run a mutation and count it as a call; on success it is also a crash
    /// point. Then run a hook that has come due (outside any borrow, since
    /// the hook calls back into the model).
    fn mutate<T>(
        &self,
        desc: impl FnOnce() -> String,
        f: impl FnOnce(&mut FsState, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let now = self.now();
        let (result, hook) = {
            let mut inner = self.shared.inner.borrow_mut();
            let inner = &mut *inner;
            let result = f(&mut inner.fs, now);
            inner.calls_done += 1;
            if result.is_ok() {
                inner.ops_done += 1;
            }
            if let Some(recording) = &mut inner.recording {
                let desc = desc();
                match &result {
                    Ok(_) => {
                        recording
                            .calls
                            .push((desc.clone(), Some(recording.points.len())));
                        recording.ops.push(desc);
                        recording.points.push(inner.fs.clone());
                    }
                    Err(e) => recording
                        .calls
                        .push((format!("{desc} -> {:?}", e.kind()), None)),
                }
            }
            (result, self.due_hook(inner.calls_done))
        };
        if let Some(hook) = hook {
            (hook.run)();
        }
        result
    }

    fn inode_of(&self, path: &str) -> io::Result<Ino> {
        self.shared
            .inner
            .borrow()
            .fs
            .resolve(path)?
            .ok_or_else(|| not_found(path))
    }
}

/// The reads themselves, before they are counted as calls.
impl Model {
    fn stat_now(&self, path: &str) -> io::Result<Option<Metadata>> {
        let inner = self.shared.inner.borrow();
        let Some(ino) = inner.fs.resolve(path)? else {
            return Ok(None);
        };
        let inode = &inner.fs.inodes[ino];
        let (kind, size) = match &inode.content {
            Content::File { live, .. } => (Kind::File, live.len() as u64),
            Content::Dir { .. } => (Kind::Dir, 0),
        };
        Ok(Some(Metadata {
            kind,
            size,
            modified_ms: inode.mtime_ms,
        }))
    }

    fn read_dir_now(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let inner = self.shared.inner.borrow();
        let ino = inner.fs.resolve(path)?.ok_or_else(|| not_found(path))?;
        let entries = inner
            .fs
            .dir(ino, Side::Live)
            .ok_or_else(|| err(io::ErrorKind::NotADirectory, path, "not a directory"))?;
        Ok(entries
            .iter()
            .map(|(name, &child)| DirEntry {
                name: name.clone(),
                kind: if inner.fs.is_dir(child) {
                    Kind::Dir
                } else {
                    Kind::File
                },
            })
            .collect())
    }

    fn open_now(&self, path: &str) -> io::Result<ModelFile> {
        let ino = self.inode_of(path)?;
        if self.shared.inner.borrow().fs.is_dir(ino) {
            return Err(err(io::ErrorKind::IsADirectory, path, "is a directory"));
        }
        Ok(ModelFile {
            model: self.clone(),
            ino,
            path: path.to_string(),
            writable: false,
        })
    }
}

impl Storage for Model {
    type File = ModelFile;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        let result = self.stat_now(path);
        self.read_call(result, |r| match r {
            Ok(Some(m)) => format!("stat {path} -> {:?}, {} bytes", m.kind, m.size),
            Ok(None) => format!("stat {path} -> nothing"),
            Err(e) => format!("stat {path} -> {:?}", e.kind()),
        })
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let result = self.read_dir_now(path);
        self.read_call(result, |r| match r {
            Ok(entries) => {
                let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                format!(
                    "list {} -> {names:?}",
                    if path.is_empty() { "." } else { path }
                )
            }
            Err(e) => format!("list {path} -> {:?}", e.kind()),
        })
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        self.mutate(
            || format!("mkdir {path}"),
            |fs, now| fs.create(path, true, now),
        )
        .map(|_| ())
    }

    fn open(&self, path: &str) -> io::Result<ModelFile> {
        let result = self.open_now(path);
        self.read_call(result, |r| match r {
            Ok(_) => format!("open {path}"),
            Err(e) => format!("open {path} -> {:?}", e.kind()),
        })
    }

    fn create_new(&self, path: &str) -> io::Result<ModelFile> {
        let ino = self.mutate(
            || format!("create {path}"),
            |fs, now| fs.create(path, false, now),
        )?;
        Ok(ModelFile {
            model: self.clone(),
            ino,
            path: path.to_string(),
            writable: true,
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.mutate(
            || format!("rename {from} -> {to}"),
            |fs, now| fs.rename(from, to, now),
        )
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.mutate(
            || format!("unlink {path}"),
            |fs, now| fs.remove(path, false, now),
        )
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.mutate(
            || format!("rmdir {path}"),
            |fs, now| fs.remove(path, true, now),
        )
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        let ino = self.inode_of(path)?;
        if !self.shared.inner.borrow().fs.is_dir(ino) {
            return Err(err(io::ErrorKind::NotADirectory, path, "not a directory"));
        }
        let shown = if path.is_empty() { "." } else { path };
        self.mutate(
            || format!("fsync-dir {shown}"),
            |fs, _| {
                fs.sync_dir(ino);
                Ok(())
            },
        )
    }

    fn display(&self, path: &str) -> String {
        format!("/sim/{path}")
    }
}

/// An open file of a [`Model`]. Like a POSIX descriptor it follows the inode,
/// not the name: it stays usable after a rename or unlink.
pub struct ModelFile {
    model: Model,
    ino: Ino,
    path: String,
    writable: bool,
}

impl StorageFile for ModelFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = {
            let inner = self.model.shared.inner.borrow();
            let Content::File { live, .. } = &inner.fs.inodes[self.ino].content else {
                return Err(err(
                    io::ErrorKind::IsADirectory,
                    &self.path,
                    "is a directory",
                ));
            };
            let start = (offset as usize).min(live.len());
            let n = buf.len().min(live.len() - start);
            buf[..n].copy_from_slice(&live[start..start + n]);
            n
        };
        let path = &self.path;
        Ok(self
            .model
            .read_call(n, |n| format!("read {path} at {offset} -> {n} bytes")))
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(err(
                io::ErrorKind::PermissionDenied,
                &self.path,
                "opened read-only",
            ));
        }
        let ino = self.ino;
        let path = &self.path;
        self.model.mutate(
            || format!("write {path} [{offset}..{})", offset + buf.len() as u64),
            |fs, now| {
                fs.write(ino, buf, offset, now);
                Ok(buf.len())
            },
        )
    }

    fn size(&mut self) -> io::Result<u64> {
        let size = match &self.model.shared.inner.borrow().fs.inodes[self.ino].content {
            Content::File { live, .. } => live.len() as u64,
            Content::Dir { .. } => 0,
        };
        let path = &self.path;
        Ok(self
            .model
            .read_call(size, |size| format!("size {path} -> {size} bytes")))
    }

    fn sync(&mut self) -> io::Result<()> {
        let ino = self.ino;
        let path = &self.path;
        self.model.mutate(
            || format!("fsync {path}"),
            |fs, _| {
                fs.sync_file(ino);
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model::new(&SimPlatform::new(1_000, 7))
    }

    fn write(m: &Model, path: &str, data: &[u8]) -> ModelFile {
        let mut f = m.create_new(path).unwrap();
        f.write_at(data, 0).unwrap();
        f
    }

    fn all_states(m: &Model) -> Vec<Tree> {
        let options = CrashOptions {
            exhaustive_limit: 1 << 12,
            samples: 0,
            seed: 0,
        };
        let e = m.state().crash_states(&options);
        assert!(e.exhaustive);
        e.states.iter().map(|s| s.fs.tree()).collect()
    }

    fn file(data: &[u8]) -> Node {
        Node::File(data.to_vec())
    }

    #[test]
    fn an_unsynced_create_is_lost_in_some_crash_state() {
        let m = model();
        write(&m, "a", b"xy");
        let states = all_states(&m);
        assert!(states.iter().any(|t| !t.contains_key("a")));
        assert!(states.iter().any(|t| t.get("a") == Some(&file(b"xy"))));
    }

    #[test]
    fn a_synced_file_keeps_its_data_but_not_its_name() {
        let m = model();
        let mut f = write(&m, "a", b"data");
        f.sync().unwrap();
        let states = all_states(&m);
        // The name may still be lost (no fsync of the root) ...
        assert!(states.iter().any(|t| !t.contains_key("a")));
        // ... but where the name survives, the data is whole.
        for t in &states {
            if let Some(node) = t.get("a") {
                assert_eq!(node, &file(b"data"));
            }
        }
        m.sync_dir("").unwrap();
        assert_eq!(
            all_states(&m),
            vec![Tree::from([("a".into(), file(b"data"))])]
        );
    }

    #[test]
    fn unsynced_data_is_kept_lost_or_torn() {
        let m = model();
        write(&m, "a", b"abcd");
        m.sync_dir("").unwrap();
        let mut seen: Vec<_> = all_states(&m).into_iter().map(|t| t["a"].clone()).collect();
        seen.sort_by_key(|n| format!("{n:?}"));
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(&file(b"")));
        assert!(seen.contains(&file(b"ab")));
        assert!(seen.contains(&file(b"abcd")));
    }

    #[test]
    fn rename_is_all_or_nothing() {
        let m = model();
        let mut f = write(&m, "tmp", b"new");
        f.sync().unwrap();
        m.sync_dir("").unwrap();
        let mut g = write(&m, "dst", b"old");
        g.sync().unwrap();
        m.sync_dir("").unwrap();
        m.rename("tmp", "dst").unwrap();
        let states = all_states(&m);
        assert_eq!(states.len(), 2);
        for t in &states {
            let old = t.get("dst") == Some(&file(b"old")) && t.contains_key("tmp");
            let new = t.get("dst") == Some(&file(b"new")) && !t.contains_key("tmp");
            assert!(old || new, "{t:?}");
        }
    }

    #[test]
    fn a_rename_needs_its_destination_synced_and_carries_its_subtree() {
        let m = model();
        m.create_dir("stage").unwrap();
        m.sync_dir("").unwrap();
        m.create_dir("stage/x").unwrap();
        let mut f = write(&m, "stage/x/a", b"1");
        f.sync().unwrap();
        m.sync_dir("stage/x").unwrap();
        m.rename("stage/x", "step_1").unwrap();
        // F4: syncing the source directory does not make the rename durable.
        m.sync_dir("stage").unwrap();
        assert!(all_states(&m).iter().any(|t| !t.contains_key("step_1")));
        m.sync_dir("").unwrap();
        // Now the rename, and the never-synced mkdir it depends on, are
        // durable: the subtree arrives whole under its new name only.
        let states = all_states(&m);
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].get("step_1/a"), Some(&file(b"1")));
        assert!(!states[0].contains_key("stage/x"));
    }

    #[test]
    fn a_file_in_a_lost_directory_cannot_survive() {
        let m = model();
        m.create_dir("d").unwrap();
        let mut f = write(&m, "d/a", b"1");
        f.sync().unwrap();
        m.sync_dir("d").unwrap();
        for t in all_states(&m) {
            assert_eq!(t.contains_key("d/a"), t.contains_key("d"), "{t:?}");
        }
    }

    #[test]
    fn operations_on_one_entry_keep_their_order() {
        let m = model();
        write(&m, "a", b"1");
        m.rename("a", "b").unwrap();
        m.rename("b", "c").unwrap();
        for t in all_states(&m) {
            let names = ["a", "b", "c"]
                .iter()
                .filter(|n| t.contains_key(**n))
                .count();
            assert!(names <= 1, "one inode, at most one name: {t:?}");
        }
    }

    #[test]
    fn posix_rename_and_remove_errors() {
        let m = model();
        m.create_dir("full").unwrap();
        write(&m, "full/x", b"1");
        m.create_dir("empty").unwrap();
        m.create_dir("src").unwrap();
        write(&m, "f", b"1");
        write(&m, "g", b"2");
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(m.rename("src", "full")),
            io::ErrorKind::DirectoryNotEmpty
        );
        assert_eq!(kind(m.rename("src", "f")), io::ErrorKind::NotADirectory);
        assert_eq!(kind(m.rename("f", "empty")), io::ErrorKind::IsADirectory);
        assert_eq!(kind(m.rename("nope", "x")), io::ErrorKind::NotFound);
        assert_eq!(kind(m.rename("src", "src/in")), io::ErrorKind::InvalidInput);
        assert_eq!(kind(m.create_dir("f")), io::ErrorKind::AlreadyExists);
        assert_eq!(kind(m.create_dir("f/x")), io::ErrorKind::NotADirectory);
        assert_eq!(kind(m.remove_dir("full")), io::ErrorKind::DirectoryNotEmpty);
        assert_eq!(kind(m.remove_file("full")), io::ErrorKind::IsADirectory);
        assert!(m.stat("nope/deeper").unwrap().is_none());
        m.rename("src", "empty").unwrap();
        m.rename("f", "g").unwrap();
        let t = m.tree();
        assert!(t.contains_key("empty") && !t.contains_key("src"));
        assert_eq!(t.get("g"), Some(&file(b"1")));
        assert!(!t.contains_key("f"));
    }

    #[test]
    fn sampling_is_reproducible_and_closed() {
        let m = model();
        for i in 0..12 {
            write(&m, &format!("f{i}"), b"xyz");
        }
        m.rename("f0", "g0").unwrap();
        let options = CrashOptions {
            exhaustive_limit: 64,
            samples: 50,
            seed: 99,
        };
        let a = m.state().crash_states(&options);
        let b = m.state().crash_states(&options);
        assert!(!a.exhaustive);
        let trees = |e: &Enumeration| e.states.iter().map(|s| s.fs.tree()).collect::<Vec<_>>();
        assert_eq!(trees(&a), trees(&b));
        assert!(a.states.len() > 10);
        for t in trees(&a) {
            assert!(!(t.contains_key("f0") && t.contains_key("g0")), "{t:?}");
        }
    }
}
