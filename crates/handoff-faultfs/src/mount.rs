//! Mounting and unmounting, and the sweep of mounts a dead test left behind.
//!
//! Every mount point lives in a directory named `<pid>-<n>-<label>` under a
//! base directory, so a sweep can tell a live process's mounts (left alone)
//! from a dead one's (detached).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

use crate::fs::{NodeFs, World};
use crate::store::NodeId;

/// The source name shown in `/proc/mounts` (the type there is `fuse`).
pub const FS_NAME: &str = "handoff-faultfs";

/// A mounted node view. Dropping it unmounts, also during a panic's unwind.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
    node: NodeId,
    session: Option<BackgroundSession>,
    /// The FUSE connection's number under /sys/fs/fuse/connections.
    connection: Option<u64>,
    active: Arc<AtomicUsize>,
}

impl Mount {
    pub(crate) fn new(
        world: Arc<Mutex<World>>,
        node: NodeId,
        path: &Path,
        active: Arc<AtomicUsize>,
    ) -> io::Result<Mount> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(FS_NAME.to_owned()),
            MountOption::Subtype(FS_NAME.to_owned()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(NodeFs { node, world }, path, &config)?;
        active.fetch_add(1, Ordering::SeqCst);
        let connection = fs::metadata(path).ok().and_then(|m| {
            // fusectl names a connection by its (anonymous) device number.
            let dev = m.dev();
            (libc::major(dev) == 0).then(|| u64::from(libc::minor(dev)))
        });
        Ok(Mount {
            path: path.to_path_buf(),
            node,
            session: Some(session),
            connection,
            active,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which node's view it shows.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Unmounts now, reporting failure. If a process still uses the mount, the
    /// connection is aborted and the mount detached anyway.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.active.fetch_sub(1, Ordering::SeqCst);
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(err) => {
                // EBUSY: the kernel still holds something of the mount for a
                // moment after a killed writer exits (an asynchronous
                // release). The connection is ours alone: abort and detach
                // it, and go on if that worked.
                force_unmount(&self.path, self.connection);
                if is_fuse_mount_point(&self.path) {
                    return Err(err);
                }
                eprintln!(
                    "handoff-faultfs: unmount of {} failed ({err}); aborted and detached it",
                    self.path.display()
                );
                Ok(())
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            eprintln!(
                "handoff-faultfs: unmount of {} failed ({err}); detached it",
                self.path.display()
            );
        }
    }
}

/// Whether a FUSE filesystem is mounted at `path`.
fn is_fuse_mount_point(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return true;
    };
    mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let (_, point, fstype) = (fields.next(), fields.next(), fields.next());
        fstype.is_some_and(|t| t.starts_with("fuse"))
            && point.is_some_and(|p| Path::new(&unescape_mount_field(p)) == path)
    })
}

/// Aborts the FUSE connection (processes blocked on it get ENOTCONN) and
/// lazily detaches the mount point.
fn force_unmount(path: &Path, connection: Option<u64>) {
    if let Some(c) = connection {
        let _ = fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), "1");
    }
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A fresh directory `<base>/<pid>-<n>-<label>` for a test's mount points and
/// backing store, owned by this process for [`sweep_stale_mounts`].
pub fn owned_dir(base: &Path, label: &str) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(base)?;
    let dir = base.join(format!(
        "{}-{}-{label}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir(&dir)?;
    Ok(dir)
}

/// Detaches every FUSE mount under `base` whose owning process (the `<pid>`
/// of [`owned_dir`]) is gone, and removes dead owners' directories. Returns
/// the mount points detached. Mounts of live processes, this one included,
/// are left alone.
pub fn sweep_stale_mounts(base: &Path) -> io::Result<Vec<PathBuf>> {
    let Ok(base) = base.canonicalize() else {
        return Ok(Vec::new());
    };
    let mut swept = Vec::new();
    for line in fs::read_to_string("/proc/self/mounts")?.lines() {
        let mut fields = line.split(' ');
        let (Some(_source), Some(point), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = PathBuf::from(unescape_mount_field(point));
        if !fstype.starts_with("fuse") {
            continue;
        }
        let Ok(rel) = point.strip_prefix(&base) else {
            continue;
        };
        if owner(rel).is_some_and(alive) {
            continue;
        }
        force_unmount(&point, None);
        swept.push(point);
    }
    for entry in fs::read_dir(&base)? {
        let entry = entry?;
        if owner(Path::new(&entry.file_name())).is_some_and(|pid| !alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(swept)
}

/// The pid in the first component `<pid>-…` of a path relative to the base.
fn owner(rel: &Path) -> Option<u32> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    first.split('-').next()?.parse().ok()
}

/// Whether `pid` is a running process: a zombie (killed, not yet reaped)
/// serves no mount any more.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// `/proc/mounts` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(code as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this machine can run FUSE tests: root, /dev/fuse, and fuse in
/// /proc/filesystems. `Err` says what is missing.
pub fn fuse_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "not running as root (the pure-Rust FUSE mount needs CAP_SYS_ADMIN)".to_owned(),
        );
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".to_owned());
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        return Err("the kernel has no fuse filesystem (modprobe fuse)".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_unescape() {
        assert_eq!(unescape_mount_field(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_field(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount_field(r"/tmp/x\"), r"/tmp/x\");
    }

    #[test]
    fn owners_come_from_the_first_component() {
        assert_eq!(owner(Path::new("123-0-crash/mnt")), Some(123));
        assert_eq!(owner(Path::new("junk/mnt")), None);
        assert!(alive(std::process::id()));
    }
}
