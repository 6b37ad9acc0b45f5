//! The core's storage trait over `wasi:filesystem` descriptors, with flushes
//! routed through the host's `durability` import.

use std::io;

use handoff_core::{Clock, DirEntry, Kind, Metadata, Storage, StorageFile};
use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
};

use crate::bindings::handoff::protocol::durability::{self, SyncError};

/// A directory the component was given: a preopen, or a directory beneath one.
pub struct WasiDir {
    base: Descriptor,
    /// The directory's guest path, for messages.
    shown: String,
}

impl WasiDir {
    /// Open `path`, the guest path of a preopen or of a directory beneath
    /// one. The longest matching preopen wins.
    pub fn open(path: &str) -> io::Result<WasiDir> {
        let wanted = path.trim_end_matches('/');
        let mut best: Option<(Descriptor, String, String)> = None;
        for (descriptor, name) in preopens::get_directories() {
            let name_trimmed = name.trim_end_matches('/');
            let rest = if wanted == name_trimmed {
                Some(String::new())
            } else if name_trimmed.is_empty() {
                // The preopen is "/": everything absolute is beneath it.
                wanted.strip_prefix('/').map(str::to_string)
            } else {
                wanted
                    .strip_prefix(name_trimmed)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_string)
            };
            if let Some(rest) = rest {
                let better = best.as_ref().is_none_or(|(_, n, _)| name.len() > n.len());
                if better {
                    best = Some((descriptor, name, rest));
                }
            }
        }
        let Some((preopen, _, rest)) = best else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} is not a directory this component was given"),
            ));
        };
        let base = if rest.is_empty() {
            preopen
        } else {
            preopen
                .open_at(
                    PathFlags::empty(),
                    &rest,
                    OpenFlags::DIRECTORY,
                    DescriptorFlags::READ,
                )
                .map_err(error)?
        };
        Ok(WasiDir {
            base,
            shown: wanted.to_string(),
        })
    }

    fn open_dir(&self, path: &str) -> io::Result<Descriptor> {
        let path = if path.is_empty() { "." } else { path };
        self.base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::DIRECTORY,
                DescriptorFlags::READ,
            )
            .map_err(error)
    }
}

impl Storage for WasiDir {
    type File = WasiFile;

    fn stat(&self, path: &str) -> io::Result<Option<Metadata>> {
        let stat = if path.is_empty() {
            self.base.stat()
        } else {
            self.base.stat_at(PathFlags::empty(), path)
        };
        match stat {
            Ok(stat) => Ok(Some(Metadata {
                kind: kind(stat.type_),
                size: stat.size,
                modified_ms: stat
                    .data_modification_timestamp
                    .map(|t| t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000)
                    .unwrap_or(0),
            })),
            Err(ErrorCode::NoEntry) => Ok(None),
            Err(code) => Err(error(code)),
        }
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let dir = self.open_dir(path)?;
        let stream = dir.read_directory().map_err(error)?;
        let mut entries = Vec::new();
        loop {
            let entry = match stream.read_directory_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                // The host stats each entry as it lists; one removed meanwhile
                // (gc moving a step to trash) is simply no longer there.
                Err(ErrorCode::NoEntry) => continue,
                Err(code) => return Err(error(code)),
            };
            let kind = match entry.type_ {
                // Some filesystems do not say; ask without following links.
                DescriptorType::Unknown => dir
                    .stat_at(PathFlags::empty(), &entry.name)
                    .map(|s| kind(s.type_))
                    .unwrap_or(Kind::Other),
                other => kind(other),
            };
            entries.push(DirEntry {
                name: entry.name,
                kind,
            });
        }
        Ok(entries)
    }

    fn create_dir(&self, path: &str) -> io::Result<()> {
        self.base.create_directory_at(path).map_err(error)
    }

    fn open(&self, path: &str) -> io::Result<WasiFile> {
        let file = self
            .base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .map_err(error)?;
        // open-at without symlink-follow still opens a directory; the
        // protocol wants regular files only.
        match file.get_type() {
            Ok(DescriptorType::RegularFile) => Ok(WasiFile(file)),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.display(path)),
            )),
            Err(code) => Err(error(code)),
        }
    }

    fn create_new(&self, path: &str) -> io::Result<WasiFile> {
        self.base
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            )
            .map(WasiFile)
            .map_err(error)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.base.rename_at(from, &self.base, to).map_err(error)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.base.unlink_file_at(path).map_err(error)
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.base.remove_directory_at(path).map_err(error)
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        // Open afresh: a preopen may be held without read access (O_PATH),
        // and jco refuses to sync a preopen.
        let dir = self.open_dir(path)?;
        match durability::sync_directory(&dir) {
            Ok(()) => Ok(()),
            Err(SyncError::Unsupported) => match dir.sync() {
                Ok(()) => Ok(()),
                Err(ErrorCode::Invalid | ErrorCode::Unsupported) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the filesystem refuses directory fsync",
                )),
                Err(code) => Err(error(code)),
            },
            Err(SyncError::Refused(why)) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
            Err(SyncError::Failed(why)) => Err(io::Error::other(why)),
        }
    }

    fn display(&self, path: &str) -> String {
        match (self.shown.as_str(), path) {
            (base, "") => base.to_string(),
            ("", rel) => rel.to_string(),
            (base, rel) => format!("{base}/{rel}"),
        }
    }
}

/// An open file.
pub struct WasiFile(Descriptor);

impl StorageFile for WasiFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (data, _eof) = self.0.read(buf.len() as u64, offset).map_err(error)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let n = self.0.write(buf, offset).map_err(error)?;
        Ok(n as usize)
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.stat().map_err(error)?.size)
    }

    fn sync(&mut self) -> io::Result<()> {
        match durability::sync_file(&self.0) {
            Ok(()) => Ok(()),
            Err(SyncError::Unsupported) => self.0.sync().map_err(error),
            Err(SyncError::Refused(why) | SyncError::Failed(why)) => Err(io::Error::other(why)),
        }
    }
}

/// Time and randomness from WASI.
pub struct WasiClock;

impl Clock for WasiClock {
    fn now_ms(&self) -> u64 {
        let now = wasip2::clocks::wall_clock::now();
        now.seconds * 1000 + u64::from(now.nanoseconds) / 1_000_000
    }

    fn sleep_ms(&self, ms: u64) {
        wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    }

    fn random_u64(&self) -> u64 {
        wasip2::random::random::get_random_u64()
    }
}

fn kind(t: DescriptorType) -> Kind {
    match t {
        DescriptorType::RegularFile => Kind::File,
        DescriptorType::Directory => Kind::Dir,
        DescriptorType::SymbolicLink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A WASI error code as an `io::Error` whose kind the core understands.
fn error(code: ErrorCode) -> io::Error {
    use io::ErrorKind as K;
    let kind = match code {
        ErrorCode::NoEntry => K::NotFound,
        ErrorCode::Exist => K::AlreadyExists,
        ErrorCode::NotEmpty => K::DirectoryNotEmpty,
        ErrorCode::NotDirectory => K::NotADirectory,
        ErrorCode::IsDirectory => K::IsADirectory,
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => K::PermissionDenied,
        ErrorCode::Invalid => K::InvalidInput,
        ErrorCode::Unsupported => K::Unsupported,
        ErrorCode::InsufficientSpace => K::StorageFull,
        ErrorCode::Quota => K::QuotaExceeded,
        ErrorCode::FileTooLarge => K::FileTooLarge,
        _ => K::Other,
    };
    io::Error::new(kind, code.message())
}
