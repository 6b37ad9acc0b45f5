//! Loading a component: the embedded one from the native code built into
//! this binary, a component file from the cache when possible, else by
//! compiling it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::cache::{Cache, Key};
use crate::error::Error;

/// Largest component file read (`--component`): the handoff component is
/// about 100 KB.
pub(crate) const MAX_COMPONENT: u64 = 256 * 1024 * 1024;

/// How errors and [`LoadInfo`] name the embedded component.
const EMBEDDED: &str = "<embedded>";

/// How the component of a [`Runtime`](crate::Runtime) was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadInfo {
    /// The component file, or `<embedded>`.
    pub component: String,
    /// Whether the native code compiled for the embedded component when this
    /// crate was built was used (no compilation, no cache).
    pub precompiled: bool,
    /// Whether a cached compiled artifact was used.
    pub from_cache: bool,
    /// The cache file used or written, when caching is on.
    pub cache_file: Option<PathBuf>,
    /// Why the cache (or the embedded component's built-in native code)
    /// could not be used, if it could not: the component was compiled
    /// instead. Worth a warning: the component itself is fine.
    pub cache_problem: Option<String>,
    /// Time to load or compile the component and check it against the world.
    pub load_time: Duration,
}

impl LoadInfo {
    fn new(component: &str) -> LoadInfo {
        LoadInfo {
            component: component.to_string(),
            precompiled: false,
            from_cache: false,
            cache_file: None,
            cache_problem: None,
            load_time: Duration::ZERO,
        }
    }
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

/// Read a component file: a regular file (opened without blocking, so a
/// FIFO is refused rather than waited on) of at most [`MAX_COMPONENT`] bytes.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::BadComponent {
        path: path.display().to_string(),
        reason,
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(bad(format!(
            "it is {}, not a regular file",
            crate::describe_kind(meta.file_type())
        )));
    }
    let too_big = |size: u64| {
        bad(format!(
            "it is {size} bytes, over the {MAX_COMPONENT}-byte limit of a component"
        ))
    };
    if meta.len() > MAX_COMPONENT {
        return Err(too_big(meta.len()));
    }
    let mut wasm = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(MAX_COMPONENT + 1)
        .read_to_end(&mut wasm)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if wasm.len() as u64 > MAX_COMPONENT {
        return Err(too_big(wasm.len() as u64));
    }
    Ok(wasm)
}

/// Load the embedded component from `precompiled`, its native code built
/// with this crate, and check it with `resolve`. Should that code be refused
/// (a CPU without a feature it assumes), compile `wasm` in memory instead
/// and say so in [`LoadInfo::cache_problem`]: never fail for it.
pub(crate) fn load_embedded<T>(
    engine: &Engine,
    precompiled: &[u8],
    wasm: &[u8],
    resolve: impl Fn(&Component) -> wasmtime::Result<T>,
) -> Result<(T, LoadInfo), Error> {
    let mut info = LoadInfo::new(EMBEDDED);
    // SAFETY: `Component::deserialize` runs the native code it is given, so
    // the bytes must be what wasmtime's compiler produced. These are: the
    // build script of this crate compiled them with this wasmtime and this
    // engine configuration and they are part of this binary, as trusted as
    // the rest of its code (wasmtime still checks its version, the engine
    // configuration and the CPU features they need).
    let problem = match unsafe { Component::deserialize(engine, precompiled) } {
        Ok(component) => match resolve(&component) {
            Ok(resolved) => {
                info.precompiled = true;
                return Ok((resolved, info));
            }
            Err(e) => format!("it does not link: {e:#}"),
        },
        Err(e) => format!("{e:#}"),
    };
    info.cache_problem = Some(format!(
        "the native code built into this program for the embedded component was refused \
         ({problem}); compiled the component in memory instead"
    ));
    let (_, resolved) = compile(engine, EMBEDDED, wasm, &resolve)?;
    Ok((resolved, info))
}

/// Check the header, then load `wasm` from the cache under `cache_dir` or
/// compile it (and fill the cache), and check it with `resolve`. `name` is
/// how errors name the file. A cache that cannot be trusted or an entry
/// that is not right costs a compilation and a [`LoadInfo::cache_problem`],
/// never an error.
pub(crate) fn load<T>(
    engine: &Engine,
    name: &str,
    wasm: &[u8],
    cache_dir: Option<&Path>,
    resolve: impl Fn(&Component) -> wasmtime::Result<T>,
) -> Result<(T, LoadInfo), Error> {
    let start = Instant::now();
    check_header(name, wasm)?;
    let mut info = LoadInfo::new(name);
    let cache = match cache_dir.map(Cache::open) {
        None => None,
        Some(Ok(cache)) => Some(cache),
        Some(Err(problem)) => {
            info.cache_problem = Some(format!("{problem}; compiled the component in memory"));
            None
        }
    };
    let Some(cache) = cache else {
        let (_, resolved) = compile(engine, name, wasm, &resolve)?;
        info.load_time = start.elapsed();
        return Ok((resolved, info));
    };

    let key = Key::new(engine, wasm);
    let path = cache.path(&key);
    info.cache_file = Some(path.clone());
    let cached = cache.read(&key).and_then(|artifact| {
        let Some(artifact) = artifact else {
            return Ok(None);
        };
        let component = deserialize(engine, &artifact)
            .map_err(|e| format!("cache entry {} ignored: {e}", path.display()))?;
        resolve(&component).map(Some).map_err(|e| {
            format!(
                "cache entry {} ignored: it does not link: {e:#}",
                path.display()
            )
        })
    });
    match cached {
        Ok(Some(resolved)) => {
            info.from_cache = true;
            info.load_time = start.elapsed();
            return Ok((resolved, info));
        }
        Ok(None) => {}
        Err(problem) => info.cache_problem = Some(format!("{problem}; replaced it")),
    }

    let (component, resolved) = compile(engine, name, wasm, &resolve)?;
    let stored = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|artifact| {
            cache
                .write(&key, &artifact)
                .map_err(|e| format!("cannot write cache entry {}: {e}", path.display()))
        });
    if let Err(problem) = stored {
        info.cache_problem = Some(problem);
    }
    info.load_time = start.elapsed();
    Ok((resolved, info))
}

/// Refuse a core module or a file that is not WebAssembly, saying which.
fn check_header(name: &str, wasm: &[u8]) -> Result<(), Error> {
    let bad = |reason: String| Error::BadComponent {
        path: name.to_string(),
        reason,
    };
    match classify(wasm) {
        Kind::Component => Ok(()),
        Kind::CoreModule => Err(bad(
            "this is a core WebAssembly module, not a component (build it for wasm32-wasip2)"
                .to_string(),
        )),
        Kind::NotWasm => {
            let head: Vec<String> = wasm.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let seen = if head.is_empty() {
                "it is empty".to_string()
            } else {
                format!("it starts with {}", head.join(" "))
            };
            Err(bad(format!(
                "not a WebAssembly file ({seen}; a component starts with 00 61 73 6d 0d 00 01 00)"
            )))
        }
    }
}

/// Compile `wasm` in memory and check it with `resolve`: here a failure is
/// the component's own.
fn compile<T>(
    engine: &Engine,
    name: &str,
    wasm: &[u8],
    resolve: &impl Fn(&Component) -> wasmtime::Result<T>,
) -> Result<(Component, T), Error> {
    let bad = |reason: String| Error::BadComponent {
        path: name.to_string(),
        reason,
    };
    let component = Component::new(engine, wasm).map_err(|e| bad(format!("{e:#}")))?;
    let resolved = resolve(&component)
        .map_err(|e| bad(format!("it does not implement the handoff world: {e:#}")))?;
    Ok((component, resolved))
}

fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: `Component::deserialize` runs the native code in `artifact`, so
    // the bytes must be exactly what `Component::serialize` produced for
    // this component. `Cache::read` made sure of what it can: the directory
    // and the file belong to this user and only this user can write them
    // (so only this user, who could equally replace this program, put the
    // bytes there), the file names this component and this engine inside
    // it, and the BLAKE3 hash of the artifact matches (no torn or corrupted
    // file gets here). wasmtime checks its version and the engine
    // configuration again.
    unsafe { Component::deserialize(engine, artifact) }
        .map_err(|e| format!("wasmtime refused it: {e:#}"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// The smallest valid component: a header and no sections.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    /// Another valid component: the header and a custom section `x`.
    const OTHER_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00\x00\x02\x01x";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    fn any(_: &Component) -> wasmtime::Result<()> {
        Ok(())
    }

    fn load_any(name: &str, wasm: &[u8], dir: Option<&Path>) -> Result<LoadInfo, Error> {
        load(&Engine::default(), name, wasm, dir, any).map(|(_, info)| info)
    }

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
        let text = load_any("m.wasm", EMPTY_MODULE, None)
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("bad component m.wasm: "), "{text}");
        assert!(
            text.contains("core WebAssembly module, not a component"),
            "{text}"
        );
    }

    #[test]
    fn text_file_is_not_wasm() {
        let err = load_any("notes.txt", b"hello world", None).unwrap_err();
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
        let err = load_any("t.wasm", b"\0asm\x0d\x00\x01\x00\x01\x7f", None).unwrap_err();
        assert!(
            matches!(err, Error::BadComponent { ref path, .. } if path == "t.wasm"),
            "{err}"
        );
    }

    #[test]
    fn second_load_comes_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(!first.from_cache);
        assert_eq!(first.cache_problem, None);
        assert!(first.cache_file.as_ref().unwrap().exists());
        let second = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(second.from_cache);
        assert_eq!(second.cache_file, first.cache_file);
    }

    /// Load `EMPTY_COMPONENT` through the cache in `dir`, expecting the
    /// entry to be ignored with `problem` and replaced by a good one.
    fn assert_replaced(dir: &Path, problem: &str) {
        let second = load_any("c", EMPTY_COMPONENT, Some(dir)).unwrap();
        assert!(!second.from_cache);
        let text = second.cache_problem.unwrap();
        assert!(text.contains(problem), "{text}");
        assert!(text.contains("replaced it"), "{text}");
        let third = load_any("c", EMPTY_COMPONENT, Some(dir)).unwrap();
        assert!(third.from_cache, "the bad entry was replaced");
        assert_eq!(third.cache_problem, None);
    }

    #[test]
    fn corrupt_cache_file_falls_back_to_compiling_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let file = first.cache_file.unwrap();
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&file, bytes).unwrap();
        assert_replaced(dir.path(), "checksum mismatch");
    }

    #[test]
    fn truncated_cache_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(first.cache_file.unwrap())
            .unwrap();
        file.set_len(file.metadata().unwrap().len() / 2).unwrap();
        assert_replaced(dir.path(), "checksum mismatch");
    }

    #[test]
    fn an_artifact_of_another_component_under_the_key_is_never_loaded() {
        // Both compiled by the same engine: the other one's entry, renamed
        // to this component's key, would deserialize and run.
        let dir = tempfile::tempdir().unwrap();
        let mine = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let other = load_any("o", OTHER_COMPONENT, Some(dir.path())).unwrap();
        let (mine, other) = (mine.cache_file.unwrap(), other.cache_file.unwrap());
        assert_ne!(mine, other);
        fs::rename(&other, &mine).unwrap();

        // Refused on its header, before wasmtime sees it.
        assert_replaced(dir.path(), "compiled from another component");
    }

    #[test]
    fn a_cached_artifact_that_does_not_link_is_replaced_and_not_blamed_on_the_component() {
        let dir = tempfile::tempdir().unwrap();
        load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        // The first check (of the cached artifact) fails, as a cached
        // component of another world would; the recompiled one passes.
        let calls = Cell::new(0);
        let resolve = |_: &Component| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                wasmtime::bail!("no export `protocol`")
            }
            Ok(())
        };
        let (_, info) = load(
            &Engine::default(),
            "c",
            EMPTY_COMPONENT,
            Some(dir.path()),
            resolve,
        )
        .unwrap();
        assert_eq!(calls.get(), 2);
        assert!(!info.from_cache);
        let text = info.cache_problem.unwrap();
        assert!(text.contains("does not link: no export"), "{text}");
        assert!(text.starts_with("cache entry "), "{text}");
        let again = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(again.from_cache);
    }

    #[test]
    fn a_component_of_another_world_is_blamed_once_compiled_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(
            &Engine::default(),
            "c.wasm",
            EMPTY_COMPONENT,
            Some(dir.path()),
            |_| -> wasmtime::Result<()> { wasmtime::bail!("no export `protocol`") },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad component c.wasm: it does not implement the handoff world"),
            "{err}"
        );
        // Nothing was cached for it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_fifo_entry_does_not_hang_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let file = first.cache_file.unwrap();
        fs::remove_file(&file).unwrap();
        mkfifo(&file);
        assert_replaced(dir.path(), "it is a FIFO, not a regular file");
    }

    #[test]
    fn a_symlinked_entry_is_not_followed_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let file = first.cache_file.unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("entry");
        fs::rename(&file, &target).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        assert_replaced(dir.path(), "it is a symbolic link");
        assert!(fs::symlink_metadata(&file).unwrap().is_file());
        assert!(target.exists(), "the link's target was left alone");
    }

    #[test]
    fn a_group_writable_cache_dir_is_neither_read_nor_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
        let second = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(!second.from_cache);
        assert_eq!(second.cache_file, None);
        let text = second.cache_problem.unwrap();
        assert!(
            text.contains(&format!(
                "cache directory {} not used",
                dir.path().display()
            )),
            "{text}"
        );
        assert!(
            text.contains("writable by group or others (mode 775)"),
            "{text}"
        );
        // The entry was left as it was, and nothing was added.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(first.cache_file.unwrap().exists());
    }

    #[test]
    fn a_cache_dir_of_another_user_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        if !chown_to_nobody(dir.path()) {
            return;
        }
        let second = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert!(!second.from_cache);
        let text = second.cache_problem.unwrap();
        assert!(text.contains("belongs to uid 65534"), "{text}");
    }

    #[test]
    fn an_entry_of_another_user_is_not_used_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_any("c", EMPTY_COMPONENT, Some(dir.path())).unwrap();
        if !chown_to_nobody(&first.cache_file.unwrap()) {
            return;
        }
        assert_replaced(dir.path(), "belongs to uid 65534");
    }

    #[test]
    fn an_untrusted_or_unwritable_cache_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        // The cache "directory" is a file: the cache is skipped, loading is
        // not.
        let info = load_any("c", EMPTY_COMPONENT, Some(&blocker)).unwrap();
        assert!(!info.from_cache);
        assert!(info.cache_problem.is_some());
    }

    #[test]
    fn the_embedded_component_loads_from_its_built_in_code() {
        let engine = Engine::new(&crate::engine_config()).unwrap();
        let (_, info) = load_embedded(
            &engine,
            crate::PRECOMPILED_COMPONENT,
            crate::DEFAULT_COMPONENT,
            any,
        )
        .unwrap();
        assert!(info.precompiled, "{info:?}");
        assert_eq!(info.cache_problem, None);
        assert_eq!(info.cache_file, None);
    }

    #[test]
    fn refused_built_in_code_falls_back_to_compiling_and_says_so() {
        let engine = Engine::new(&crate::engine_config()).unwrap();
        // Code for another engine configuration: wasmtime refuses it.
        let foreign = Engine::default()
            .precompile_component(EMPTY_COMPONENT)
            .unwrap();
        for precompiled in [&b"not an artifact"[..], &foreign] {
            let (_, info) = load_embedded(&engine, precompiled, EMPTY_COMPONENT, any).unwrap();
            assert!(!info.precompiled);
            let text = info.cache_problem.unwrap();
            assert!(
                text.contains("compiled the component in memory instead"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_fifo_or_device_component_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("c.wasm");
        mkfifo(&fifo);
        let text = read_file(&fifo).unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "bad component {}: it is a FIFO, not a regular file",
                fifo.display()
            )
        );
        let text = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(
            text,
            "bad component /dev/zero: it is a character device, not a regular file"
        );
    }

    #[test]
    fn an_oversized_component_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wasm");
        // Sparse: no disk space used.
        fs::File::create(&path)
            .unwrap()
            .set_len(MAX_COMPONENT + 1)
            .unwrap();
        let text = read_file(&path).unwrap_err().to_string();
        assert!(text.contains("over the 268435456-byte limit"), "{text}");
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Give `path` to uid 65534; false (and the test is moot) unless root.
    fn chown_to_nobody(path: &Path) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: cannot test another user's files");
            return false;
        }
        std::os::unix::fs::chown(path, Some(65534), None).unwrap();
        true
    }
}
