//! A reader on another node: a read-only [`Storage`] that lags the writer.
//!
//! The writer runs first against a [`Model`](crate::model::Model) that records
//! its live tree after every call; call `i` happens at `i * op_ms` on the
//! shared virtual clock. The reader then sees that timeline through a client
//! cache whose staleness is drawn per path from a seed (the V rules of
//! `docs/FILESYSTEM.md`):
//!
//! - **V2 names** appear late and in any order: a lookup of path `p` at time `t`
//!   sees the writer's tree at `t - name_lag(p)`, so `STABLE` can be visible
//!   before the data files are (each component of a path is looked up in turn,
//!   as a client does);
//! - **V2 negative look-ups are cached**: once a lookup of `p` failed at `t`, it
//!   keeps failing until `t + negative_ttl_ms`, whatever the writer did;
//! - **V3 sizes are stale until open**: `stat` reports the size at
//!   `t - attr_lag(p)`;
//! - **V1, V5 data appears late**: an open file's size and bytes are those at
//!   `t - data_lag(p)`, read afresh on each call (close-to-open consistency,
//!   lagging).
//!
//! Every lag is at most `max_ms`, so once the writer is done and
//! `max_ms + negative_ttl_ms` has passed the reader sees the final tree: a
//! reader that retries long enough must succeed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::rc::Rc;

use handoff_core::{DirEntry, Kind, Metadata, Platform, Storage, StorageFile};

use crate::model::{Node, Recording, SimPlatform, Tree, mix};
use crate::trace::TraceLog;

/// The writer's live tree over time.
pub struct Timeline {
    trees: Vec<Tree>,
    calls: Vec<String>,
    op_ms: u64,
    /// Every name a directory ever held, for listings.
    children: BTreeMap<String, BTreeSet<String>>,
}

impl Timeline {
    /// The timeline of a recording, one call every `op_ms`.
    pub fn new(recording: &Recording, op_ms: u64) -> Timeline {
        let trees: Vec<Tree> = recording.points.iter().map(|p| p.tree()).collect();
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for tree in &trees {
            for path in tree.keys() {
                let (parent, name) = match path.rsplit_once('/') {
                    Some((parent, name)) => (parent.to_string(), name.to_string()),
                    None => (String::new(), path.clone()),
                };
                children.entry(parent).or_default().insert(name);
            }
        }
        Timeline {
            trees,
            calls: recording.ops.clone(),
            op_ms: op_ms.max(1),
            children,
        }
    }

    /// When the writer's last call happened.
    pub fn end_ms(&self) -> u64 {
        (self.trees.len() as u64 - 1) * self.op_ms
    }

    /// The writer's calls with their times, for traces.
    pub fn show_calls(&self) -> String {
        let mut out = String::new();
        for (i, call) in self.calls.iter().enumerate() {
            let _ = writeln!(out, "    t={:>4} ms  {call}", (i as u64 + 1) * self.op_ms);
        }
        out
    }

    fn at(&self, t_ms: u64) -> &Tree {
        let i = ((t_ms / self.op_ms) as usize).min(self.trees.len() - 1);
        &self.trees[i]
    }
}

/// How stale the reader's cache is, drawn per path from `seed`.
#[derive(Clone, Debug)]
pub struct Lags {
    /// The seed of every per-path lag.
    pub seed: u64,
    /// The largest lag of a name, a size or data.
    pub max_ms: u64,
    /// How long a failed lookup is remembered.
    pub negative_ttl_ms: u64,
}

#[derive(Clone, Copy)]
enum Aspect {
    Name = 1,
    Attr = 2,
    Data = 3,
}

impl Lags {
    fn lag(&self, path: &str, aspect: Aspect) -> u64 {
        // FNV-1a of the path, mixed with the seed and the aspect.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in path.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        mix(self.seed ^ h ^ (aspect as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % (self.max_ms + 1)
    }
}

struct ViewInner {
    timeline: Rc<Timeline>,
    lags: Lags,
    clock: SimPlatform,
    negative: RefCell<HashMap<String, u64>>,
    /// What the reader saw, timed as the writer's calls are.
    log: TraceLog,
}

/// The reader's view: a read-only [`Storage`]. Clones share the cache.
#[derive(Clone)]
pub struct LaggingView {
    inner: Rc<ViewInner>,
}

fn read_only(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{path:?}: the reader's view is read-only"),
    )
}

impl LaggingView {
    /// A reader of `timeline` with `lags`, on `clock` (whose time is the
    /// timeline's).
    pub fn new(timeline: Rc<Timeline>, lags: Lags, clock: &SimPlatform) -> LaggingView {
        LaggingView {
            inner: Rc::new(ViewInner {
                timeline,
                lags,
                clock: clock.clone(),
                negative: RefCell::new(HashMap::new()),
                log: TraceLog::new(clock, 0),
            }),
        }
    }

    /// The lags of the paths the writer's final tree holds, for traces.
    pub fn show_lags(&self) -> String {
        let inner = &self.inner;
        let mut out = String::new();
        let last = inner.timeline.at(u64::MAX);
        for path in last.keys() {
            let _ = writeln!(
                out,
                "    {path}: name +{} ms, size +{} ms, data +{} ms",
                inner.lags.lag(path, Aspect::Name),
                inner.lags.lag(path, Aspect::Attr),
                inner.lags.lag(path, Aspect::Data)
            );
        }
        out
    }

    /// The reader's calls and what it saw, last `n` of them.
    pub fn show_log(&self, n: usize) -> String {
        self.inner.log.show(n)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn note(&self, line: String) {
        self.inner.log.note(line);
    }

    /// The writer's node at `path` as seen through `aspect`'s lag.
    fn seen(&self, path: &str, aspect: Aspect) -> Option<&Node> {
        let lag = self.inner.lags.lag(path, aspect);
        self.inner
            .timeline
            .at(self.now().saturating_sub(lag))
            .get(path)
    }

    /// Look `path` up component by component, through the negative cache.
    fn lookup(&self, path: &str) -> io::Result<Option<Kind>> {
        if path.is_empty() {
            return Ok(Some(Kind::Dir));
        }
        let now = self.now();
        let parts: Vec<&str> = path.split('/').collect();
        let mut prefix = String::new();
        for (i, part) in parts.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self
                .inner
                .negative
                .borrow()
                .get(&prefix)
                .is_some_and(|&until| now < until)
            {
                return Ok(None);
            }
            match self.seen(&prefix, Aspect::Name) {
                None => {
                    let until = now + self.inner.lags.negative_ttl_ms;
                    self.inner.negative.borrow_mut().insert(prefix, until);
                    return Ok(None);
                }
                Some(Node::File(_)) if i + 1 < parts.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{prefix:?}: not a directory"),
                    ));
                }
                Some(Node::File(_)) => return Ok(Some(Kind::File)),
                Some(Node::Dir) => {}
            }
        }
        Ok(Some(Kind::Dir))
    }

    fn data(&self, path: &str) -> Vec<u8> {
        match self.seen(path, Aspect::Data) {
            Some(Node::File(data)) => data.clone(),
            _ => Vec::new(),
        }
    }
}

impl Storage for LaggingView {
    type File = ViewFile;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        let found = self.lookup(path)?;
        let meta = found.map(|kind| {
            let size = match self.seen(path, Aspect::Attr) {
                Some(Node::File(data)) if kind == Kind::File => data.len() as u64,
                _ => 0,
            };
            Metadata {
                kind,
                size,
                modified_ms: 0,
            }
        });
        self.note(match &meta {
            Some(m) => format!("stat {path}: {:?}, {} bytes", m.kind, m.size),
            None => format!("stat {path}: not found"),
        });
        Ok(meta)
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        match self.lookup(path)? {
            Some(Kind::Dir) => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{path:?}: not a directory"),
                ));
            }
            None => {
                self.note(format!("list {path}: not found"));
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{path:?}: not found"),
                ));
            }
        }
        let names = self
            .inner
            .timeline
            .children
            .get(path)
            .cloned()
            .unwrap_or_default();
        let mut entries = Vec::new();
        for name in names {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            // A listing is fetched fresh, but each name still shows up with
            // its own lag: new names appear in any order.
            if let Some(node) = self.seen(&child, Aspect::Name) {
                let kind = match node {
                    Node::Dir => Kind::Dir,
                    Node::File(_) => Kind::File,
                };
                entries.push(DirEntry { name, kind });
            }
        }
        let shown: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        self.note(format!("list {path}: {shown:?}"));
        Ok(entries)
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        Err(read_only(path))
    }

    fn open(&self, path: &str) -> io::Result<ViewFile> {
        let found = self.lookup(path)?;
        self.note(format!(
            "open {path}: {}",
            match found {
                Some(Kind::File) => "ok",
                Some(_) => "not a file",
                None => "not found",
            }
        ));
        match found {
            Some(Kind::File) => Ok(ViewFile {
                view: self.clone(),
                path: path.to_string(),
            }),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{path:?}: is a directory"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path:?}: not found"),
            )),
        }
    }

    fn create_new(&self, path: &str) -> io::Result<ViewFile> {
        Err(read_only(path))
    }

    fn rename(&self, from: &str, _to: &str) -> io::Result<()> {
        Err(read_only(from))
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        Err(read_only(path))
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        Err(read_only(path))
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        Err(read_only(path))
    }

    fn display(&self, path: &str) -> String {
        format!("/view/{path}")
    }
}

/// An open file of the reader's view.
pub struct ViewFile {
    view: LaggingView,
    path: String,
}

impl StorageFile for ViewFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.view.data(&self.path);
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        if offset == 0 {
            self.view
                .note(format!("read {}: {} bytes", self.path, data.len()));
        }
        Ok(n)
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<usize> {
        Err(read_only(&self.path))
    }

    fn size(&mut self) -> io::Result<u64> {
        let size = self.view.data(&self.path).len() as u64;
        self.view.note(format!("size {}: {size} bytes", self.path));
        Ok(size)
    }

    fn sync(&mut self) -> io::Result<()> {
        Err(read_only(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    /// A writer that creates `d/a` with data, then `d/STABLE`.
    fn timeline() -> Rc<Timeline> {
        let clock = SimPlatform::new(0, 1);
        let m = Model::new(&clock);
        m.start_recording();
        m.create_dir("d").unwrap();
        let mut f = m.create_new("d/a").unwrap();
        f.write_at(b"hello", 0).unwrap();
        m.create_new("d/STABLE").unwrap();
        Rc::new(Timeline::new(&m.take_recording(), 1))
    }

    #[test]
    fn names_appear_in_any_order_and_converge() {
        let t = timeline();
        let mut stable_first = false;
        for seed in 0..200 {
            let clock = SimPlatform::new(t.end_ms(), seed);
            let lags = Lags {
                seed,
                max_ms: 10,
                negative_ttl_ms: 5,
            };
            let v = LaggingView::new(Rc::clone(&t), lags, &clock);
            let stable = v.stat("d/STABLE").unwrap().is_some();
            let data = v.stat("d/a").unwrap().is_some();
            stable_first |= stable && !data;
            // After every lag and the negative cache have run out, all is seen.
            clock.advance(20);
            let mut f = v.open("d/a").unwrap();
            assert_eq!(f.size().unwrap(), 5);
        }
        assert!(stable_first, "some seed shows STABLE before the data");
    }

    #[test]
    fn negative_lookups_are_cached() {
        let t = timeline();
        let clock = SimPlatform::new(0, 1);
        let lags = Lags {
            seed: 3,
            max_ms: 0,
            negative_ttl_ms: 50,
        };
        let v = LaggingView::new(Rc::clone(&t), lags, &clock);
        assert!(v.stat("d/a").unwrap().is_none());
        clock.advance(10);
        assert!(v.stat("d").unwrap().is_none(), "still cached as missing");
        clock.advance(50);
        assert!(v.stat("d/a").unwrap().is_some());
    }
}
