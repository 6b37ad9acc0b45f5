//! Loading a component: from the cache when possible, else by compiling it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::cache;
use crate::error::Error;

/// How the component of a [`Runtime`](crate::Runtime) was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadInfo {
    /// The component file, or `<embedded>`.
    pub component: String,
    /// Whether a cached compiled artifact was used.
    pub from_cache: bool,
    /// The cache file used or written, when caching is on.
    pub cache_file: Option<PathBuf>,
    /// Why the cache could not be used, if it could not (the component was
    /// compiled instead).
    pub cache_problem: Option<String>,
    /// Time to load or compile the component and check it against the world.
    pub load_time: Duration,
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Component,
    CoreModule,
    NotWasm,
}

/// Tell a component from a core module from anything else by the header:
/// `\0asm`, then version 1 layer 0 for a core module, or layer 1 for a
/// component (whatever its pre-1.0 version number).
pub(crate) fn classify(bytes: &[u8]) -> Kind {
    match bytes {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => Kind::CoreModule,
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Kind::Component,
        _ => Kind::NotWasm,
    }
}

/// Check the header, then load `wasm` from the cache under `cache_dir` or
/// compile it (and fill the cache). `name` is how errors name the file.
pub(crate) fn load(
    engine: &Engine,
    name: &str,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Component, LoadInfo), Error> {
    let start = Instant::now();
    let bad = |reason: String| Error::BadComponent {
        path: name.to_string(),
        reason,
    };
    match classify(wasm) {
        Kind::Component => {}
        Kind::CoreModule => {
            return Err(bad(
                "this is a core WebAssembly module, not a component (build it for wasm32-wasip2)"
                    .to_string(),
            ));
        }
        Kind::NotWasm => {
            let head: Vec<String> = wasm.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let seen = if head.is_empty() {
                "it is empty".to_string()
            } else {
                format!("it starts with {}", head.join(" "))
            };
            return Err(bad(format!(
                "not a WebAssembly file ({seen}; a component starts with 00 61 73 6d 0d 00 01 00)"
            )));
        }
    }

    let mut info = LoadInfo {
        component: name.to_string(),
        from_cache: false,
        cache_file: None,
        cache_problem: None,
        load_time: Duration::ZERO,
    };
    let cache_file = cache_dir.map(|dir| cache::path_for(dir, engine, wasm));
    if let Some(path) = &cache_file {
        info.cache_file = Some(path.clone());
        if path.exists() {
            match cache::read(path).and_then(|artifact| deserialize(engine, &artifact)) {
                Ok(component) => {
                    info.from_cache = true;
                    info.load_time = start.elapsed();
                    return Ok((component, info));
                }
                Err(problem) => info.cache_problem = Some(problem),
            }
        }
    }

    let component = Component::new(engine, wasm).map_err(|e| bad(format!("{e:#}")))?;
    if let Some(path) = &cache_file {
        let stored = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|artifact| {
                cache::write(path, &artifact)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            });
        if let Err(problem) = stored {
            info.cache_problem = Some(problem);
        }
    }
    info.load_time = start.elapsed();
    Ok((component, info))
}

fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: `Component::deserialize` runs the native code in `artifact`, so
    // the bytes must be exactly what `Component::serialize` produced. They
    // are: `cache::read` checked the BLAKE3 hash written next to them, so a
    // torn or corrupted file never gets here, and the file name is keyed by
    // the component bytes, the wasmtime version and the engine's
    // compatibility hash, so it was compiled from this component for an
    // equivalent engine (wasmtime checks its version and configuration
    // header again). The cache directory is private to the user, who could
    // equally replace this program; it is not a trust boundary.
    unsafe { Component::deserialize(engine, artifact) }
        .map_err(|e| format!("cached artifact rejected: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: a header and no sections.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    #[test]
    fn classify_tells_components_modules_and_other_files_apart() {
        assert_eq!(classify(EMPTY_COMPONENT), Kind::Component);
        assert_eq!(classify(EMPTY_MODULE), Kind::CoreModule);
        assert_eq!(classify(b"\x7fELF\x02\x01\x01\x00"), Kind::NotWasm);
        assert_eq!(classify(b""), Kind::NotWasm);
        assert_eq!(classify(b"\0asm"), Kind::NotWasm);
    }

    #[test]
    fn core_module_is_a_bad_component() {
        let err = load(&Engine::default(), "m.wasm", EMPTY_MODULE, None).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad component m.wasm: "), "{text}");
        assert!(
            text.contains("core WebAssembly module, not a component"),
            "{text}"
        );
    }

    #[test]
    fn text_file_is_not_wasm() {
        let err = load(&Engine::default(), "notes.txt", b"hello world", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("bad component notes.txt: not a WebAssembly file"),
            "{err}"
        );
    }

    #[test]
    fn truncated_component_names_the_file() {
        // A component header followed by a section that claims more bytes
        // than there are.
        let err = load(
            &Engine::default(),
            "t.wasm",
            b"\0asm\x0d\x00\x01\x00\x01\x7f",
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::BadComponent { ref path, .. } if path == "t.wasm"),
            "{err}"
        );
    }

    #[test]
    fn second_load_comes_from_the_cache() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = load(&engine, "c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(!first.from_cache);
        assert_eq!(first.cache_problem, None);
        assert!(first.cache_file.as_ref().unwrap().exists());
        let (_, second) = load(&engine, "c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(second.from_cache);
        assert_eq!(second.cache_file, first.cache_file);
    }

    #[test]
    fn corrupt_cache_file_falls_back_to_compiling_and_is_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = load(&engine, "c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let file = first.cache_file.unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();

        let (_, second) = load(&engine, "c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(!second.from_cache);
        assert!(second.cache_problem.unwrap().contains("checksum mismatch"));
        let (_, third) = load(&engine, "c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(third.from_cache, "the bad file was replaced");
    }

    #[test]
    fn unwritable_cache_still_loads() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        // The cache "directory" is a file: writing fails, loading does not.
        let (_, info) = load(&engine, "c", EMPTY_COMPONENT, Some(&blocker)).unwrap();
        assert!(!info.from_cache);
        assert!(info.cache_problem.is_some());
    }
}
