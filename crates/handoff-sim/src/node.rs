//! A process on one node of a shared filesystem: a [`Storage`] over the
//! shared [`Model`] (the server) through that node's client caches, which
//! follow what the Linux NFS client was measured to do (the V rules of
//! `docs/FILESYSTEM.md`):
//!
//! - **V3 `stat` may be answered from the cache**: a node that holds an entry for
//!   the path younger than `attr_ttl_ms` answers from it, without asking the
//!   server; that includes "present, with these attributes" for a name the
//!   server has removed since;
//! - **V2 failed look-ups are cached**: a look-up that finds nothing leaves a
//!   negative entry on the first missing component for `negative_ttl_ms`;
//!   while it lives, `stat` of that path or of any path under it says
//!   "nothing", and `open`, `read_dir`, `remove_file`, `remove_dir` and
//!   `sync_dir` fail with `NotFound`, all without asking the server;
//! - **V1 `open` revalidates** (close-to-open): unless a negative entry is live it
//!   goes to the server, and the node caches what the server answered;
//! - **V4 listing revalidates the directory**: `read_dir` goes to the server,
//!   shows the current names, and drops the node's negative entries for the
//!   directory's children (positive entries are left as they are);
//! - **V6 the server decides names**: `create_dir`, `create_new` and `rename` go
//!   to the server even over a negative entry, and so do `remove_file` and
//!   `remove_dir` when no negative entry is live; whatever the server answers
//!   about a name replaces the node's entry for it: a name created (or found
//!   to exist) is cached as present, a name removed (or found missing) as
//!   absent, a name renamed away is forgotten with everything under it and
//!   the new name cached as present;
//! - open files (reads, writes, sizes, flushes) go to the server.
//!
//! Entries are stamped with the virtual clock and age only as it moves, which
//! is when a process sleeps: in a race that does not sleep every entry stays
//! live throughout. A node may start warm ([`NodeView::warm`]): a reader that
//! read a step a moment before has its names cached as present. The TTLs are
//! drawn from a seed ([`NodeCaches::drawn`]). Answers given from the cache
//! are logged for traces; calls that reach the server are the model's own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use handoff_core::{DirEntry, Kind, Metadata, Platform, Storage};

use crate::model::{Model, ModelFile, Rng, SimPlatform, prefixes};
use crate::trace::TraceLog;

/// How long a node's cache entries live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeCaches {
    /// A positive entry answers `stat` while younger than this.
    pub attr_ttl_ms: u64,
    /// A negative entry lives this long.
    pub negative_ttl_ms: u64,
}

impl NodeCaches {
    /// TTLs in the ranges measured on Linux clients: attributes 3–60 s
    /// (`acregmin`..`acregmax`), negative look-ups 30–60 s.
    pub fn drawn(seed: u64) -> NodeCaches {
        let mut rng = Rng::new(seed);
        NodeCaches {
            attr_ttl_ms: 3_000 + rng.below(57_001),
            negative_ttl_ms: 30_000 + rng.below(30_001),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    /// The name was there, with these attributes, at `at`.
    Present { meta: Metadata, at: u64 },
    /// The name was missing at `at`.
    Absent { at: u64 },
}

struct NodeInner {
    name: String,
    model: Model,
    clock: SimPlatform,
    caches: NodeCaches,
    entries: RefCell<HashMap<String, Entry>>,
    /// The answers given from the cache, timed from when the node was made.
    log: TraceLog,
}

/// One node's view of the shared model. Clones share the cache.
#[derive(Clone)]
pub struct NodeView {
    inner: Rc<NodeInner>,
}

/// `path` is `dir` or lies under it.
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{path:?}: not found (the node's negative look-up cache)"),
    )
}

impl NodeView {
    /// Node `name` over `model`, with an empty cache.
    pub fn new(name: &str, model: &Model, clock: &SimPlatform, caches: NodeCaches) -> NodeView {
        NodeView {
            inner: Rc::new(NodeInner {
                name: name.to_string(),
                model: model.clone(),
                clock: clock.clone(),
                caches,
                entries: RefCell::new(HashMap::new()),
                log: TraceLog::new(clock, clock.now_ms()),
            }),
        }
    }

    /// Cache every path of the model's tree under `dir` (and `dir` itself)
    /// for which `keep` holds as present, as looked up `age_ms` ago: what a
    /// reader that just read those files has.
    pub fn warm(&self, dir: &str, age_ms: u64, keep: impl Fn(&str) -> bool) {
        let inner = &self.inner;
        let at = inner.clock.now_ms().saturating_sub(age_ms);
        let mut warmed = Vec::new();
        let mut entries = inner.entries.borrow_mut();
        for path in inner.model.tree().keys() {
            if !under(path, dir) || !keep(path) {
                continue;
            }
            if let Some(meta) = inner.model.peek(path) {
                entries.insert(path.clone(), Entry::Present { meta, at });
                warmed.push(path.clone());
            }
        }
        drop(entries);
        self.note(format!(
            "(warm: {} cached as present {age_ms} ms ago)",
            warmed.join(", ")
        ));
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node's TTLs.
    pub fn caches(&self) -> NodeCaches {
        self.inner.caches
    }

    /// The answers this node gave from its cache, for traces.
    pub fn show_log(&self) -> String {
        self.inner.log.show(usize::MAX)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn note(&self, line: String) {
        self.inner.log.note(line);
    }

    /// A live negative entry on `path` or one of its prefixes: the prefix and
    /// the entry's age.
    fn negative(&self, path: &str) -> Option<(String, u64)> {
        let now = self.now();
        let entries = self.inner.entries.borrow();
        for prefix in prefixes(path) {
            if let Some(Entry::Absent { at }) = entries.get(prefix)
                && now < at + self.inner.caches.negative_ttl_ms
            {
                return Some((prefix.to_string(), now - at));
            }
        }
        None
    }

    /// A positive entry on `path` young enough to answer `stat`.
    fn fresh(&self, path: &str) -> Option<(Metadata, u64)> {
        let now = self.now();
        match self.inner.entries.borrow().get(path) {
            Some(&Entry::Present { meta, at }) if now < at + self.inner.caches.attr_ttl_ms => {
                Some((meta, now - at))
            }
            _ => None,
        }
    }

    /// Fail locally if a negative entry covers `path`.
    fn refuse_if_negative(&self, call: &str, path: &str) -> io::Result<()> {
        match self.negative(path) {
            Some((prefix, age)) => {
                self.note(format!(
                    "{call} {path} -> NotFound (cached: {prefix} missing, {age} ms ago)"
                ));
                Err(not_found(path))
            }
            None => Ok(()),
        }
    }

    fn forget_under(&self, dir: &str) {
        self.inner
            .entries
            .borrow_mut()
            .retain(|path, _| !under(path, dir));
    }

    fn set_present(&self, path: &str, meta: Metadata) {
        let at = self.now();
        self.inner
            .entries
            .borrow_mut()
            .insert(path.to_string(), Entry::Present { meta, at });
    }

    /// The server found `path` missing, its first missing component being
    /// `missing` (looked up before the call).
    fn set_absent(&self, missing: Option<String>) {
        if let Some(missing) = missing {
            self.forget_under(&missing);
            let at = self.now();
            self.inner
                .entries
                .borrow_mut()
                .insert(missing, Entry::Absent { at });
        }
    }

    /// What the server holds for `path` just before a counted call (the
    /// call may let another process run before it returns): its attributes,
    /// or where its look-up stops.
    fn before(&self, path: &str) -> (Option<Metadata>, Option<String>) {
        let model = &self.inner.model;
        (model.peek(path), model.first_missing(path))
    }
}

impl Storage for NodeView {
    type File = ModelFile;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        if let Some((prefix, age)) = self.negative(path) {
            self.note(format!(
                "stat {path} -> nothing (cached: {prefix} missing, {age} ms ago)"
            ));
            return Ok(None);
        }
        if let Some((meta, age)) = self.fresh(path) {
            self.note(format!(
                "stat {path} -> {:?} (cached {age} ms ago)",
                meta.kind
            ));
            return Ok(Some(meta));
        }
        let (_, missing) = self.before(path);
        let result = self.inner.model.stat(path);
        match &result {
            Ok(Some(meta)) => self.set_present(path, *meta),
            Ok(None) => self.set_absent(missing),
            Err(_) => {}
        }
        result
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.refuse_if_negative("list", path)?;
        let (_, missing) = self.before(path);
        let result = self.inner.model.read_dir(path);
        match &result {
            Ok(_) => self.inner.entries.borrow_mut().retain(|child, entry| {
                !(matches!(entry, Entry::Absent { .. })
                    && !child.is_empty()
                    && parent_of(child) == path)
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.set_absent(missing),
            Err(_) => {}
        }
        result
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        let (meta, missing) = self.before(path);
        let result = self.inner.model.create_dir(path);
        match &result {
            Ok(()) => {
                self.forget_under(path);
                self.set_present(
                    path,
                    Metadata {
                        kind: Kind::Dir,
                        size: 0,
                        modified_ms: self.now(),
                    },
                );
            }
            Err(e) => self.learn(path, e.kind(), meta, missing),
        }
        result
    }

    fn open(&self, path: &str) -> io::Result<ModelFile> {
        self.refuse_if_negative("open", path)?;
        let (meta, missing) = self.before(path);
        let result = self.inner.model.open(path);
        match &result {
            Ok(_) => {
                if let Some(meta) = meta {
                    self.set_present(path, meta);
                }
            }
            Err(e) => self.learn(path, e.kind(), meta, missing),
        }
        result
    }

    fn create_new(&self, path: &str) -> io::Result<ModelFile> {
        let (meta, missing) = self.before(path);
        let result = self.inner.model.create_new(path);
        match &result {
            Ok(_) => {
                self.forget_under(path);
                self.set_present(
                    path,
                    Metadata {
                        kind: Kind::File,
                        size: 0,
                        modified_ms: self.now(),
                    },
                );
            }
            Err(e) => self.learn(path, e.kind(), meta, missing),
        }
        result
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (meta, missing) = self.before(from);
        let result = self.inner.model.rename(from, to);
        match &result {
            Ok(()) => {
                self.forget_under(from);
                self.forget_under(to);
                if let Some(meta) = meta {
                    self.set_present(to, meta);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && meta.is_none() => {
                self.set_absent(missing)
            }
            Err(_) => {}
        }
        result
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.remove(path, false)
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.remove(path, true)
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        self.refuse_if_negative("fsync-dir", path)?;
        self.inner.model.sync_dir(path)
    }

    fn display(&self, path: &str) -> String {
        self.inner.model.display(path)
    }
}

impl NodeView {
    fn remove(&self, path: &str, dir: bool) -> io::Result<()> {
        self.refuse_if_negative(if dir { "rmdir" } else { "unlink" }, path)?;
        let (meta, missing) = self.before(path);
        let result = if dir {
            self.inner.model.remove_dir(path)
        } else {
            self.inner.model.remove_file(path)
        };
        match &result {
            Ok(()) => self.set_absent(Some(path.to_string())),
            Err(e) => self.learn(path, e.kind(), meta, missing),
        }
        result
    }

    /// A call on `path` failed with `kind`: cache what that told the node.
    fn learn(
        &self,
        path: &str,
        kind: io::ErrorKind,
        meta: Option<Metadata>,
        missing: Option<String>,
    ) {
        match (kind, meta) {
            (io::ErrorKind::NotFound, None) => self.set_absent(missing),
            (io::ErrorKind::AlreadyExists, Some(meta)) => self.set_present(path, meta),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHES: NodeCaches = NodeCaches {
        attr_ttl_ms: 3_000,
        negative_ttl_ms: 30_000,
    };

    fn setup() -> (Model, SimPlatform) {
        let clock = SimPlatform::new(1_000_000, 1);
        let m = Model::new(&clock);
        m.create_dir("d").unwrap();
        m.create_new("d/STABLE").unwrap();
        (m, clock)
    }

    #[test]
    fn stat_answers_from_the_cache_but_open_asks_the_server() {
        let (m, clock) = setup();
        let a = NodeView::new("a", &m, &clock, CACHES);
        a.warm("d", 100, |_| true);
        m.remove_file("d/STABLE").unwrap(); // another node
        assert!(
            a.stat("d/STABLE").unwrap().is_some(),
            "stale positive entry"
        );
        assert!(a.open("d/STABLE").is_err(), "open revalidates");
        assert!(
            a.stat("d/STABLE").unwrap().is_none(),
            "the open's answer is cached"
        );
        let b = NodeView::new("b", &m, &clock, CACHES);
        m.create_new("d/STABLE").unwrap();
        b.warm("d", 0, |_| true);
        m.remove_file("d/STABLE").unwrap();
        assert!(b.stat("d/STABLE").unwrap().is_some());
        clock.advance(CACHES.attr_ttl_ms);
        assert!(
            b.stat("d/STABLE").unwrap().is_none(),
            "expired: the server answers"
        );
    }

    #[test]
    fn negative_entries_hold_until_a_listing_or_their_ttl() {
        let (m, clock) = setup();
        let a = NodeView::new("a", &m, &clock, CACHES);
        assert!(a.stat("d/x/y").unwrap().is_none());
        m.create_dir("d/x").unwrap();
        m.create_new("d/x/y").unwrap();
        assert!(a.stat("d/x/y").unwrap().is_none(), "d/x cached as missing");
        assert!(a.open("d/x/y").is_err());
        assert!(a.remove_file("d/x/y").is_err(), "refused locally");
        assert!(m.peek("d/x/y").is_some());
        a.read_dir("d").unwrap();
        assert!(
            a.open("d/x/y").is_ok(),
            "listing d dropped the entry for d/x"
        );
        assert!(a.stat("d/z").unwrap().is_none());
        m.create_new("d/z").unwrap();
        clock.advance(CACHES.negative_ttl_ms - 1);
        assert!(a.stat("d/z").unwrap().is_none());
        clock.advance(1);
        assert!(a.stat("d/z").unwrap().is_some());
    }

    #[test]
    fn the_server_decides_creates_and_its_answer_is_cached() {
        let (m, clock) = setup();
        let a = NodeView::new("a", &m, &clock, CACHES);
        assert!(a.stat("d/p").unwrap().is_none());
        m.create_dir("d/p").unwrap(); // another node
        assert_eq!(
            a.create_dir("d/p").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(a.stat("d/p").unwrap().unwrap().kind, Kind::Dir);
        a.create_new("d/p/f").unwrap();
        a.rename("d/p/f", "d/p/g").unwrap();
        assert!(a.stat("d/p/f").unwrap().is_none());
        assert!(a.stat("d/p/g").unwrap().is_some());
        a.remove_file("d/p/g").unwrap();
        assert!(a.stat("d/p/g").unwrap().is_none());
    }
}
