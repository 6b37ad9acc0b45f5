//! Folders of files to publish.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::Rng;

/// A folder of files held in memory: what a writer publishes, and what a
/// reader must find. Paths are relative and may name subdirectories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// Each file's relative path and contents, in writing order.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Payload {
    /// An empty folder.
    pub fn new() -> Payload {
        Payload::default()
    }

    /// This folder with one more file.
    pub fn with(mut self, path: &str, data: impl Into<Vec<u8>>) -> Payload {
        self.files.push((path.to_owned(), data.into()));
        self
    }

    /// Writes the files into `dir`, creating it and their directories, the
    /// way a trainer does: no fsync.
    pub fn write_to(&self, dir: &Path) -> io::Result<()> {
        self.write_each(dir, |file, data| file.write_all(data))
    }

    /// Writes the files in `chunk`-byte writes with a pause after each, so a
    /// reader elsewhere can catch them half-written.
    pub fn write_slowly(&self, dir: &Path, chunk: usize, pause: Duration) -> io::Result<()> {
        self.write_each(dir, |file, data| {
            for part in data.chunks(chunk) {
                file.write_all(part)?;
                std::thread::sleep(pause);
            }
            Ok(())
        })
    }

    fn write_each(
        &self,
        dir: &Path,
        mut write: impl FnMut(&mut File, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        for (name, data) in &self.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            write(&mut File::create(path)?, data)?;
        }
        Ok(())
    }

    /// Whether `dir` holds these files with these bytes (other files may be
    /// there too); `Err` says what differs.
    pub fn check(&self, dir: &Path) -> Result<(), String> {
        for (name, data) in &self.files {
            match fs::read(dir.join(name)) {
                Err(e) => return Err(format!("{name}: {e}")),
                Ok(got) if got.len() != data.len() => {
                    return Err(format!(
                        "{name}: {} bytes, expected {}",
                        got.len(),
                        data.len()
                    ));
                }
                Ok(got) if got != *data => {
                    return Err(format!("{name}: same size, different bytes"));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// Writes `size` random bytes to `path` (created or truncated) in 1 MiB
/// writes, not synced: a file too big to hold in memory.
pub fn write_random(path: &Path, size: u64, rng: &mut Rng) -> io::Result<()> {
    let mut block = vec![0u8; 1 << 20];
    let mut out = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let len = left.min(block.len() as u64) as usize;
        rng.fill(&mut block[..len]);
        out.write_all(&block[..len])?;
        left -= len as u64;
    }
    Ok(())
}

/// Sets every time in the tree at `path` `by` back: a tree last written that
/// long ago, as gc and fsck judge abandoned trees. Symbolic links are left.
pub fn age_tree(path: &Path, by: Duration) -> io::Result<()> {
    let then = std::time::SystemTime::now() - by;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            age_tree(&entry?.path(), by)?;
        }
    }
    let times = fs::FileTimes::new().set_accessed(then).set_modified(then);
    File::open(path)?.set_times(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_payloads_check_and_changes_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("step");
        let payload = Payload::new()
            .with("a.bin", Rng::new(1).bytes(10_000))
            .with("sub/b.json", "{}");
        payload.write_to(&dir).unwrap();
        assert_eq!(payload.check(&dir), Ok(()));

        fs::write(dir.join("sub/b.json"), "{}\n").unwrap();
        assert_eq!(
            payload.check(&dir),
            Err("sub/b.json: 3 bytes, expected 2".into())
        );
        fs::write(dir.join("sub/b.json"), "[]").unwrap();
        assert_eq!(
            payload.check(&dir),
            Err("sub/b.json: same size, different bytes".into())
        );
        let slow = tmp.path().join("slow");
        payload
            .write_slowly(&slow, 4096, Duration::from_millis(1))
            .unwrap();
        assert_eq!(payload.check(&slow), Ok(()));
    }

    #[test]
    fn write_random_writes_the_asked_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big");
        let size = (1 << 20) + 5;
        write_random(&path, size, &mut Rng::new(2)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), Rng::new(2).bytes(size as usize));
    }
}
