//! The FUSE side: one [`NodeFs`] per mount turns kernel requests into store
//! operations as seen by its node (the store keeps each node's caches), tells
//! the store why a name is looked up (the caller's system call), and runs the
//! kill switch that SIGKILLs a process at a chosen state-changing request.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::store::{Attr, Errno, Ino, Intent, Kind, NodeId, Res, Stats, Store};

/// What the kernel may cache by itself: nothing. Every look-up and `stat`
/// reaches the model, so the only caching is the one the model states.
const KERNEL_TTL: Duration = Duration::ZERO;

/// Which request the kill switch fired on, and whom it killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Killed {
    /// The process (thread-group id) that got SIGKILL.
    pub pid: u32,
    /// The index of the state-changing request it was making (0-based,
    /// counted from the arming). That request was refused, not applied.
    pub at: u64,
}

#[derive(Debug, Default)]
struct KillSwitch {
    /// Requests still allowed before the one that fires.
    armed: Option<u64>,
    /// Counted since arming.
    seen: u64,
    /// Once fired, every further state change is refused until disarmed: the
    /// dying process's other threads may still have requests in flight.
    fired: Option<Killed>,
}

/// One node's open handles.
#[derive(Debug, Default)]
struct Handles {
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

#[derive(Debug)]
enum Handle {
    File(Ino),
    /// A directory, with the listing taken when reading began.
    Dir(Ino, Vec<(OsString, Ino, Kind)>),
}

impl Handle {
    fn ino(&self) -> Ino {
        match self {
            Handle::File(ino) | Handle::Dir(ino, _) => *ino,
        }
    }
}

/// A one-shot stall: `node`'s next unlink of `name` waits before it runs.
#[derive(Debug)]
struct Stall {
    node: NodeId,
    name: OsString,
    duration: Duration,
}

/// Everything behind one lock: the store, every node's caches, the kill
/// switch. One lock keeps the model simple; FUSE requests are short.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) store: Store,
    caches: Vec<Handles>,
    kill: KillSwitch,
    stalls: Vec<Stall>,
    /// Names whose files fail to open, by node, with this errno.
    failing: Vec<(NodeId, OsString, i32)>,
    /// The inodes found under those names, by node: their opens fail.
    failing_inos: Vec<(NodeId, Ino, i32)>,
    /// Stalls that have begun (their request is waiting or went on).
    pub(crate) stalls_begun: u64,
    /// State-changing requests seen, from all nodes (for measuring a run).
    pub(crate) mutations: u64,
}

impl World {
    pub(crate) fn new(store: Store, nodes: usize) -> World {
        World {
            store,
            caches: (0..nodes).map(|_| Handles::default()).collect(),
            kill: KillSwitch::default(),
            stalls: Vec::new(),
            failing: Vec::new(),
            failing_inos: Vec::new(),
            stalls_begun: 0,
            mutations: 0,
        }
    }

    pub(crate) fn stall_unlink(&mut self, node: NodeId, name: &OsStr, duration: Duration) {
        self.stalls.push(Stall {
            node,
            name: name.to_owned(),
            duration,
        });
    }

    pub(crate) fn fail_opens(&mut self, node: NodeId, name: &OsStr, errno: Option<i32>) {
        self.failing.retain(|(n, f, _)| !(*n == node && f == name));
        self.failing_inos.retain(|(n, _, _)| *n != node);
        if let Some(errno) = errno {
            self.failing.push((node, name.to_owned(), errno));
        }
    }

    /// A look-up of `name` on `node` found `ino`: if the name's opens are
    /// to fail, so do the inode's.
    fn found(&mut self, node: NodeId, name: &OsStr, ino: Ino) {
        let failing = self
            .failing
            .iter()
            .find(|(n, f, _)| *n == node && f == name);
        if let Some(&(_, _, errno)) = failing {
            self.failing_inos.push((node, ino, errno));
        }
    }

    fn failing_open(&self, node: NodeId, ino: Ino) -> Option<i32> {
        self.failing_inos
            .iter()
            .find(|(n, i, _)| *n == node && *i == ino)
            .map(|(_, _, errno)| *errno)
    }

    fn take_stall(&mut self, node: NodeId, name: &OsStr) -> Option<Duration> {
        let i = self
            .stalls
            .iter()
            .position(|s| s.node == node && s.name == name)?;
        self.stalls_begun += 1;
        Some(self.stalls.remove(i).duration)
    }

    /// Forgets every cache and handle (after a crash or a reload: the old
    /// inodes are gone).
    pub(crate) fn reset_caches(&mut self) {
        self.store.reset_views();
        for cache in &mut self.caches {
            *cache = Handles::default();
        }
    }

    pub(crate) fn arm_kill(&mut self, after: u64) {
        self.kill = KillSwitch {
            armed: Some(after),
            seen: 0,
            fired: None,
        };
    }

    pub(crate) fn stats(&self, node: NodeId) -> Stats {
        self.store.stats(node)
    }

    pub(crate) fn disarm_kill(&mut self) -> Option<Killed> {
        std::mem::take(&mut self.kill).fired
    }

    /// Admission of a state-changing request: counts it, and fires the kill
    /// switch on it when its turn has come.
    fn admit(&mut self, req: &Request) -> Res<()> {
        self.mutations += 1;
        if self.kill.fired.is_some() {
            return Err(libc::EIO);
        }
        let Some(remaining) = self.kill.armed else {
            return Ok(());
        };
        let at = self.kill.seen;
        self.kill.seen += 1;
        if remaining > 0 {
            self.kill.armed = Some(remaining - 1);
            return Ok(());
        }
        let pid = thread_group(req.pid());
        // Never the test process itself (it is the FUSE server too).
        if pid != 0 && pid != std::process::id() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        // The request is refused, not applied: the crash comes just before
        // it. The process never sees the error; SIGKILL is fatal on return.
        self.kill.armed = None;
        self.kill.fired = Some(Killed { pid, at });
        Err(libc::EIO)
    }

    fn new_handle(&mut self, node: NodeId, handle: Handle) -> FileHandle {
        let cache = &mut self.caches[node];
        cache.next_fh += 1;
        cache.handles.insert(cache.next_fh, handle);
        FileHandle(cache.next_fh)
    }
}

/// The thread-group id (process id) of a thread: FUSE reports the thread.
fn thread_group(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(tid)
}

/// Why the kernel is looking a name up, read from the system call the
/// calling thread is blocked in (`/proc/<tid>/syscall`): FUSE look-ups carry
/// no intent, NFS's do. Anything unreadable counts as a plain look-up.
fn intent(tid: u32) -> Intent {
    if tid == 0 {
        return Intent::Stat;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/syscall")) else {
        return Intent::Stat;
    };
    let mut fields = text.split_whitespace();
    let Some(Ok(nr)) = fields.next().map(str::parse::<libc::c_long>) else {
        return Intent::Stat;
    };
    let args: Vec<u64> = fields
        .take(6)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap_or(0))
        .collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    match nr {
        // An O_CREAT|O_EXCL open too: it skips positive entries, and a name
        // it finds absent is created by the server, which decides EEXIST.
        libc::SYS_openat | libc::SYS_openat2 => Intent::Open,
        libc::SYS_mkdirat | libc::SYS_mknodat | libc::SYS_symlinkat | libc::SYS_linkat => {
            Intent::Exclusive
        }
        libc::SYS_renameat2 if arg(4) & u64::from(libc::RENAME_NOREPLACE) != 0 => Intent::Exclusive,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open | libc::SYS_creat => Intent::Open,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir | libc::SYS_mknod | libc::SYS_symlink | libc::SYS_link => Intent::Exclusive,
        _ => Intent::Stat,
    }
}

/// One mount: the filesystem as node `node` sees it.
#[derive(Debug)]
pub(crate) struct NodeFs {
    pub(crate) node: NodeId,
    pub(crate) world: Arc<Mutex<World>>,
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

/// Opened files bypass the page cache, so every read reaches the model.
fn open_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl NodeFs {
    fn world(&self) -> MutexGuard<'_, World> {
        // A panic in one request must not wedge the mount for the rest.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn create_node(
        &self,
        req: &Request,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        exclusive: bool,
    ) -> Res<(Attr, bool)> {
        let now = Instant::now();
        let mut w = self.world();
        w.admit(req)?;
        let (ino, created) =
            w.store
                .create(self.node, parent, name, kind, mode & 0o7777, exclusive)?;
        w.store.changed(self.node, ino, &[(parent, name)]);
        Ok((w.store.cached_attr(self.node, ino, now)?, created))
    }
}

impl Filesystem for NodeFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let intent = intent(req.pid());
        let mut w = self.world();
        match w
            .store
            .lookup(self.node, parent.0, name, intent, Instant::now())
        {
            Ok(attr) => {
                w.found(self.node, name, attr.ino);
                reply.entry(&KERNEL_TTL, &file_attr(&attr), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .world()
            .store
            .cached_attr(self.node, ino.0, Instant::now())
        {
            Ok(attr) => reply.attr(&KERNEL_TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let now = Instant::now();
        let mut w = self.world();
        let result = w.admit(req).and_then(|()| {
            w.store
                .setattr(self.node, ino.0, size, mode, mtime.map(time), now)
        });
        match result {
            Ok(()) => {
                w.store.changed(self.node, ino.0, &[]);
                match w.store.cached_attr(self.node, ino.0, now) {
                    Ok(attr) => reply.attr(&KERNEL_TTL, &file_attr(&attr)),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.create_node(req, parent.0, name, Kind::Dir, mode & !umask, true) {
            Ok((attr, _)) => reply.entry(&KERNEL_TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn symlink(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _t: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _p: INodeNo, _n: &OsStr, reply: ReplyEntry) {
        reply.error(fuser::Errno::EPERM);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent.0, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent.0, name, true, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(fuser::Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let mut w = self.world();
        let result = w.admit(req).and_then(|()| {
            w.store
                .rename(self.node, parent.0, name, newparent.0, newname, noreplace)
        });
        match result {
            Ok(()) => {
                w.store.changed(
                    self.node,
                    parent.0,
                    &[(parent.0, name), (newparent.0, newname)],
                );
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Some(errno) = self.world().failing_open(self.node, ino.0) {
            return reply.error(fuser::Errno::from_i32(errno));
        }
        match self.open_as(ino.0, Kind::File) {
            Ok(fh) => reply.opened(fh, open_flags()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let exclusive = flags & libc::O_EXCL != 0;
        let result = self
            .create_node(req, parent.0, name, Kind::File, mode & !umask, exclusive)
            .and_then(|(attr, _)| {
                let mut w = self.world();
                w.store.open(self.node, attr.ino, Instant::now())?;
                Ok((
                    attr.clone(),
                    w.new_handle(self.node, Handle::File(attr.ino)),
                ))
            });
        match result {
            Ok((attr, fh)) => reply.created(
                &KERNEL_TTL,
                &file_attr(&attr),
                Generation(0),
                fh,
                open_flags(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut w = self.world();
        match w.store.read(self.node, ino.0, offset, size, Instant::now()) {
            Ok(data) => {
                let wanted = w
                    .store
                    .live_len(ino.0)
                    .unwrap_or(0)
                    .saturating_sub(offset)
                    .min(u64::from(size));
                if (data.len() as u64) < wanted {
                    w.store.count_short_view(self.node);
                }
                reply.data(&data)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let now = Instant::now();
        let mut w = self.world();
        match w
            .admit(req)
            .and_then(|()| w.store.write(self.node, ino.0, offset, data, now))
        {
            Ok(n) => {
                w.store.changed(self.node, ino.0, &[]);
                reply.written(n as u32);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) flushes nothing: only fsync makes data durable or visible.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.close(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(req, ino.0, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_as(ino.0, Kind::Dir) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut w = self.world();
        let node = self.node;
        if offset == 0 {
            match w.store.readdir(node, ino.0) {
                Ok(listing) => {
                    w.caches[node]
                        .handles
                        .insert(fh.0, Handle::Dir(ino.0, listing));
                }
                Err(e) => return reply.error(errno(e)),
            }
        }
        let Some(Handle::Dir(_, listing)) = w.caches[node].handles.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        let dots = [
            (OsStr::new("."), ino.0, Kind::Dir),
            (OsStr::new(".."), ino.0, Kind::Dir),
        ];
        let entries = dots
            .into_iter()
            .chain(listing.iter().map(|(n, i, k)| (n.as_os_str(), *i, *k)));
        for (index, (name, child, kind)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), index as u64 + 1, file_type(kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.close(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(req, ino.0, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

impl NodeFs {
    fn remove(&self, req: &Request, parent: Ino, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        // A stall holds only this mount's request thread: other nodes go on.
        let stall = self.world().take_stall(self.node, name);
        if let Some(duration) = stall {
            std::thread::sleep(duration);
        }
        let mut w = self.world();
        match w
            .admit(req)
            .and_then(|()| w.store.remove(self.node, parent, name, dir))
        {
            Ok(()) => {
                w.store.changed(self.node, parent, &[(parent, name)]);
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Opens `ino` for this node as a `kind` (`EISDIR` or `ENOTDIR` when it
    /// is the other kind) and returns the new handle.
    fn open_as(&self, ino: Ino, kind: Kind) -> Res<FileHandle> {
        let mut w = self.world();
        // Close-to-open: the store revalidates the node's cached attributes.
        let found = w.store.open(self.node, ino, Instant::now())?;
        let handle = match (kind, found) {
            (Kind::File, Kind::File) => Handle::File(ino),
            (Kind::Dir, Kind::Dir) => {
                // Opening a directory revalidates it for this node, as a
                // listing does (the listing itself is taken on the first read).
                let _ = w.store.readdir(self.node, ino);
                Handle::Dir(ino, Vec::new())
            }
            (Kind::File, Kind::Dir) | (Kind::Dir, Kind::File) => {
                w.store.release(self.node, ino);
                return Err(match found {
                    Kind::Dir => libc::EISDIR,
                    Kind::File => libc::ENOTDIR,
                });
            }
        };
        Ok(w.new_handle(self.node, handle))
    }

    fn sync(&self, req: &Request, ino: Ino, reply: ReplyEmpty) {
        let mut w = self.world();
        match w.admit(req).and_then(|()| w.store.fsync(self.node, ino)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn close(&self, fh: FileHandle) {
        let mut w = self.world();
        if let Some(handle) = w.caches[self.node].handles.remove(&fh.0) {
            w.store.release(self.node, handle.ino());
        }
    }
}
