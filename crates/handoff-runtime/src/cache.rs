//! The on-disk cache of compiled components.
//!
//! Compiling the component takes tens of milliseconds; loading a compiled
//! artifact well under one. Each artifact is stored as
//! `<dir>/<key>.cwasm`, where the key is the BLAKE3 hash of the component
//! bytes, the wasmtime version and the engine's compatibility hash, so a
//! different component, wasmtime or engine configuration never picks up a
//! stale artifact. The file is `MAGIC`, then the BLAKE3 hash of the artifact,
//! then the artifact: a torn or corrupted file is detected before wasmtime
//! sees it.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use wasmtime::Engine;

/// Must match the `=` pin of wasmtime in the workspace Cargo.toml. The
/// engine's compatibility hash covers the version too; this keeps the key
/// readable to reason about.
const WASMTIME_VERSION: &str = "48.0.8";

/// First bytes of every cache file; bump the digit when the layout changes.
const MAGIC: &[u8; 8] = b"HOFFCW1\n";
const HASH_LEN: usize = 32;

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

/// The cache file of `wasm` compiled by `engine`, under `dir`.
pub(crate) fn path_for(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    dir.join(format!("{}.cwasm", key(engine, wasm)))
}

fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    hasher.0.update(b"handoff-cwasm\0");
    hasher.0.update(blake3::hash(wasm).as_bytes());
    hasher.0.update(WASMTIME_VERSION.as_bytes());
    hasher.0.update(b"\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().to_hex().to_string()
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

/// Read and verify a cache file, returning the compiled artifact.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Store `artifact` at `path` atomically: a reader sees the old file, no
/// file, or the complete new one.
pub(crate) fn write(path: &Path, artifact: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    create_private_dir(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&encode(artifact))?;
    // Without fsync a crash may leave a file that fails verification; that
    // only costs a recompilation, so skip the flush.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The cache holds native code that is loaded and run: keep it the user's.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn encode(artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + HASH_LEN + artifact.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(blake3::hash(artifact).as_bytes());
    out.extend_from_slice(artifact);
    out
}

fn decode(mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let header = MAGIC.len() + HASH_LEN;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a handoff cache file".to_string());
    }
    let recorded = &bytes[MAGIC.len()..header];
    if blake3::hash(&bytes[header..]).as_bytes() != recorded {
        return Err("checksum mismatch (truncated or corrupted)".to_string());
    }
    bytes.drain(..header);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let artifact = b"compiled code".to_vec();
        assert_eq!(decode(encode(&artifact)).unwrap(), artifact);
    }

    #[test]
    fn decode_rejects_corruption_truncation_and_foreign_files() {
        let mut flipped = encode(b"compiled code");
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(flipped).unwrap_err().contains("checksum mismatch"));

        let mut short = encode(b"compiled code");
        short.truncate(short.len() - 1);
        assert!(decode(short).unwrap_err().contains("checksum mismatch"));

        assert!(
            decode(b"HOFF".to_vec())
                .unwrap_err()
                .contains("not a handoff cache file")
        );
        let mut foreign = vec![0u8; 64];
        foreign[..4].copy_from_slice(b"\x7fELF");
        assert!(
            decode(foreign)
                .unwrap_err()
                .contains("not a handoff cache file")
        );
    }

    #[test]
    fn key_depends_on_the_component_bytes_and_is_stable() {
        let engine = Engine::default();
        assert_eq!(key(&engine, b"a"), key(&engine, b"a"));
        assert_ne!(key(&engine, b"a"), key(&engine, b"b"));
        assert_eq!(key(&engine, b"a").len(), 64);
    }

    #[test]
    fn key_depends_on_the_engine_configuration() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let epoch = Engine::new(&config).unwrap();
        assert_ne!(key(&Engine::default(), b"a"), key(&epoch, b"a"));
    }

    #[test]
    fn write_then_read_leaves_only_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join("k.cwasm");
        write(&path, b"artifact").unwrap();
        assert_eq!(read(&path).unwrap(), b"artifact");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.cwasm")]);
    }

    #[test]
    fn read_names_the_file() {
        let missing = Path::new("/nonexistent/handoff/k.cwasm");
        assert!(
            read(missing)
                .unwrap_err()
                .contains("/nonexistent/handoff/k.cwasm")
        );
    }
}
