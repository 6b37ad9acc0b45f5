//! The on-disk cache of compiled components given by path.
//!
//! The embedded component never comes here: its compiled code is built into
//! the binary. A component file (`--component`) is compiled once and its
//! artifact kept as `<dir>/<key>.cwasm`, where the key is the BLAKE3 hash of
//! the component bytes, the wasmtime version and the engine's compatibility
//! hash, so a different component, wasmtime or engine configuration never
//! picks up a stale artifact.
//!
//! A cache entry is native code that is run, so the cache trusts nothing it
//! has not checked:
//!
//! - the directory is used only if it belongs to this user (the effective
//!   uid) and is not writable by group or others; it is opened once and every
//!   entry is reached through that handle, so a rename above it changes
//!   nothing;
//! - an entry is opened without following a symbolic link and without
//!   blocking (a FIFO does not hang the open), and used only if it is a
//!   regular file of this user, not writable by group or others, and at most
//!   [`MAX_ENTRY`] bytes;
//! - the entry names, inside the file, the component and the engine it was
//!   compiled for (an artifact renamed to another key is refused), then the
//!   BLAKE3 hash of the artifact (a torn or corrupted file is refused).
//!
//! An entry that fails any check is ignored and replaced; a directory that
//! fails is neither read nor written.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::Dir;
use wasmtime::Engine;

/// Must match the `=` pin of wasmtime in the workspace Cargo.toml. The
/// engine's compatibility hash covers the version too; this keeps the key
/// readable to reason about.
const WASMTIME_VERSION: &str = "48.0.8";

/// First bytes of every cache file; bump the digit when the layout changes.
const MAGIC: &[u8; 8] = b"HOFFCW2\n";
const HASH_LEN: usize = 32;
/// Magic, engine hash, component hash, artifact hash.
const HEADER_LEN: usize = MAGIC.len() + 3 * HASH_LEN;

/// Largest cache entry read: the handoff component's artifact is about 2 MB.
pub(crate) const MAX_ENTRY: u64 = 64 * 1024 * 1024;

/// The cache directory: `$HANDOFF_CACHE_DIR`, else `$XDG_CACHE_HOME/handoff`,
/// else `~/.cache/handoff`; `None` when none of these is set.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    nonempty("HANDOFF_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("handoff")))
        .or_else(|| nonempty("HOME").map(|d| d.join(".cache").join("handoff")))
}

/// What a cache entry is bound to: the component and the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// BLAKE3 of the wasmtime version and the engine's compatibility hash.
    engine: [u8; HASH_LEN],
    /// BLAKE3 of the component bytes.
    component: [u8; HASH_LEN],
}

impl Key {
    pub(crate) fn new(engine: &Engine, wasm: &[u8]) -> Key {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        hasher.0.update(WASMTIME_VERSION.as_bytes());
        hasher.0.update(b"\0");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Key {
            engine: *hasher.0.finalize().as_bytes(),
            component: *blake3::hash(wasm).as_bytes(),
        }
    }

    /// The entry's file name.
    pub(crate) fn file_name(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"handoff-cwasm\0");
        hasher.update(&self.component);
        hasher.update(&self.engine);
        format!("{}.cwasm", hasher.finalize().to_hex())
    }
}

/// Feeds `Hash` output into BLAKE3: unlike `DefaultHasher`, the result is
/// stable across Rust releases and processes.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

/// A cache directory found trustworthy, held open.
pub(crate) struct Cache {
    path: PathBuf,
    dir: Dir,
}

impl Cache {
    /// Create `path` if missing (mode 0700) and open it, or say why it is
    /// not to be used.
    pub(crate) fn open(path: &Path) -> Result<Cache, String> {
        let not_used = |why: String| format!("cache directory {} not used: {why}", path.display());
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(path)
            .map_err(|e| not_used(format!("cannot create it: {e}")))?;
        let handle = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| not_used(format!("cannot open it: {e}")))?;
        let meta = handle
            .metadata()
            .map_err(|e| not_used(format!("cannot stat it: {e}")))?;
        trusted(&meta).map_err(not_used)?;
        Ok(Cache {
            path: path.to_path_buf(),
            dir: Dir::from_std_file(handle),
        })
    }

    /// Where the entry of `key` lives.
    pub(crate) fn path(&self, key: &Key) -> PathBuf {
        self.path.join(key.file_name())
    }

    /// The artifact stored for `key`: `Ok(None)` when there is none, an
    /// error saying why when the entry is not to be used.
    pub(crate) fn read(&self, key: &Key) -> Result<Option<Vec<u8>>, String> {
        let name = key.file_name();
        let path = self.path(key);
        let bad = |why: String| format!("cache entry {} ignored: {why}", path.display());
        let mut options = cap_std::fs::OpenOptions::new();
        options.read(true).follow(FollowSymlinks::No);
        cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
        let file = match self.dir.open_with(&name, &options) {
            Ok(file) => file.into_std(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(bad("it is a symbolic link".to_string()));
            }
            Err(e) => return Err(bad(format!("cannot open it: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| bad(format!("cannot stat it: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(bad(format!(
                "it is {}, not a regular file",
                crate::describe_kind(meta.file_type())
            )));
        }
        trusted(&meta).map_err(bad)?;
        if meta.len() > MAX_ENTRY {
            return Err(bad(format!(
                "it is {} bytes, over the {MAX_ENTRY}-byte limit",
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_ENTRY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        decode(bytes, key).map(Some).map_err(bad)
    }

    /// Store `artifact` for `key` atomically: a reader sees the old entry,
    /// none, or the complete new one. Whatever was at the name (a bad entry,
    /// a symbolic link, a FIFO) is replaced, not written through.
    pub(crate) fn write(&self, key: &Key, artifact: &[u8]) -> io::Result<()> {
        let name = key.file_name();
        // Unique enough: `create_new` refuses a name already taken, which
        // only costs this write.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = format!(".{}.{}.{nanos}.tmp", &name[..16], std::process::id());
        let mut options = cap_std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        cap_std::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = self
            .dir
            .open_with(&tmp, &options)
            .and_then(|mut file| file.write_all(&encode(key, artifact)))
            // Without fsync a crash may leave a file that fails
            // verification; that only costs a recompilation.
            .and_then(|()| self.dir.rename(&tmp, &self.dir, &name));
        if written.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        written
    }
}

/// Owned by the effective user and not writable by group or others.
fn trusted(meta: &fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "it belongs to uid {}, not to this user (uid {euid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn encode(key: &Key, artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + artifact.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.engine);
    out.extend_from_slice(&key.component);
    out.extend_from_slice(blake3::hash(artifact).as_bytes());
    out.extend_from_slice(artifact);
    out
}

fn decode(mut bytes: Vec<u8>, key: &Key) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a handoff cache file".to_string());
    }
    let field = |n: usize| &bytes[MAGIC.len() + n * HASH_LEN..MAGIC.len() + (n + 1) * HASH_LEN];
    if field(0) != key.engine {
        return Err("compiled for another wasmtime or engine configuration".to_string());
    }
    if field(1) != key.component {
        return Err("compiled from another component".to_string());
    }
    if blake3::hash(&bytes[HEADER_LEN..]).as_bytes() != field(2) {
        return Err("checksum mismatch (truncated or corrupted)".to_string());
    }
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(wasm: &[u8]) -> Key {
        Key::new(&Engine::default(), wasm)
    }

    #[test]
    fn encode_decode_round_trip() {
        let artifact = b"compiled code".to_vec();
        assert_eq!(
            decode(encode(&key(b"a"), &artifact), &key(b"a")).unwrap(),
            artifact
        );
    }

    #[test]
    fn decode_rejects_corruption_truncation_and_foreign_files() {
        let k = key(b"a");
        let mut flipped = encode(&k, b"compiled code");
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            decode(flipped, &k)
                .unwrap_err()
                .contains("checksum mismatch")
        );

        let mut short = encode(&k, b"compiled code");
        short.truncate(short.len() - 1);
        assert!(decode(short, &k).unwrap_err().contains("checksum mismatch"));

        let mut header_only = encode(&k, b"compiled code");
        header_only.truncate(HEADER_LEN - 1);
        assert!(
            decode(header_only, &k)
                .unwrap_err()
                .contains("not a handoff cache file")
        );

        let mut foreign = vec![0u8; 200];
        foreign[..4].copy_from_slice(b"\x7fELF");
        assert!(
            decode(foreign, &k)
                .unwrap_err()
                .contains("not a handoff cache file")
        );
    }

    #[test]
    fn decode_rejects_an_entry_of_another_component_or_engine() {
        let other_component = encode(&key(b"b"), b"compiled code");
        assert_eq!(
            decode(other_component, &key(b"a")).unwrap_err(),
            "compiled from another component"
        );
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let epoch = Key::new(&Engine::new(&config).unwrap(), b"a");
        assert_eq!(
            decode(encode(&epoch, b"compiled code"), &key(b"a")).unwrap_err(),
            "compiled for another wasmtime or engine configuration"
        );
    }

    #[test]
    fn file_name_depends_on_the_component_bytes_and_is_stable() {
        assert_eq!(key(b"a").file_name(), key(b"a").file_name());
        assert_ne!(key(b"a").file_name(), key(b"b").file_name());
        assert_eq!(key(b"a").file_name().len(), 64 + ".cwasm".len());
    }

    #[test]
    fn file_name_depends_on_the_engine_configuration() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let epoch = Engine::new(&config).unwrap();
        assert_ne!(key(b"a").file_name(), Key::new(&epoch, b"a").file_name());
    }

    #[test]
    fn write_then_read_leaves_only_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        let cache = Cache::open(&dir).unwrap();
        let k = key(b"a");
        assert_eq!(cache.read(&k).unwrap(), None);
        cache.write(&k, b"artifact").unwrap();
        assert_eq!(cache.read(&k).unwrap().unwrap(), b"artifact");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(k.file_name())]);
        let meta = fs::metadata(cache.path(&k)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_group_writable_entry_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap();
        let k = key(b"a");
        cache.write(&k, b"artifact").unwrap();
        fs::set_permissions(cache.path(&k), fs::Permissions::from_mode(0o664)).unwrap();
        let text = cache.read(&k).unwrap_err();
        assert!(
            text.starts_with(&format!(
                "cache entry {} ignored: ",
                cache.path(&k).display()
            )),
            "{text}"
        );
        assert!(
            text.contains("writable by group or others (mode 664)"),
            "{text}"
        );
    }

    #[test]
    fn an_oversized_entry_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap();
        let k = key(b"a");
        // Sparse: no disk space used.
        fs::File::create(cache.path(&k))
            .unwrap()
            .set_len(MAX_ENTRY + 1)
            .unwrap();
        let text = cache.read(&k).unwrap_err();
        assert!(text.contains("over the 67108864-byte limit"), "{text}");
    }

    #[test]
    fn a_directory_at_the_entry_name_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap();
        let k = key(b"a");
        fs::create_dir(cache.path(&k)).unwrap();
        let text = cache.read(&k).unwrap_err();
        assert!(
            text.contains("it is a directory, not a regular file"),
            "{text}"
        );
    }
}
