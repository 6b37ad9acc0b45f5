//! Run the handoff component in a native host.
//!
//! `handoff` publishes a directory of model weights on a shared filesystem so
//! that readers on other machines see it only once it is complete and
//! durable, waits for it, and retains it while readers hold it. The protocol
//! itself is a WebAssembly component (embedded in this crate); this crate
//! gives it the broadcast root as its only capability, answers its
//! durability calls with real `fsync`, and bounds its time and memory.
//!
//! ```no_run
//! use std::path::Path;
//! use handoff_runtime::{Backend, Runtime, Target, WaitOptions, WriteOptions, default_writer_id};
//!
//! # fn main() -> Result<(), handoff_runtime::Error> {
//! let runtime = Runtime::new()?;
//! let report = runtime.publish(Path::new("/shared/adapters"), 7, Path::new("out/step7"), &WriteOptions::new(default_writer_id()))?;
//! println!("published {} with {} fsyncs", report.version.path, report.fsyncs);
//!
//! // Elsewhere, a reader:
//! let version = runtime.wait(Path::new("/shared/adapters"), Target::Step(7), &WaitOptions::default())?;
//! println!("{} files ready in {}", version.files.len(), version.path);
//! # Ok(())
//! # }
//! ```
//!
//! A [`Runtime`] loads the component once: the embedded one from the native
//! code compiled for it when this crate was built, a custom one from the
//! on-disk cache or by compiling it; every call then gets a fresh, isolated instance that sees only the
//! root (read-write) and, for `publish`, the source (read-only), each at its
//! canonical absolute path. Its operations are the core's [`Backend`] trait,
//! and every value they take and return is the core's (re-exported here).
#![deny(missing_docs)]

mod abandon;
mod batch;
mod bindings;
mod cache;
mod component;
mod convert;
mod error;
mod imports;
mod overlap;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::abandon::{Draws, Recording};
use crate::bindings::{Handoff, HandoffPre, wit};
use crate::imports::CallState;

pub use crate::component::LoadInfo;
pub use crate::error::Error;
pub use crate::progress::{BulkWork, Progress};
// The protocol's types are the core's: one set from the component to the CLI.
pub use handoff_core::{
    Backend, DEFAULT_PREFIX, ErrorKind, FetchOptions, FetchReport, FileEntry, FsckEntry, GcOptions,
    GcReport, PinInfo, PinRequest, PublishReport, StepInfo, StepState, Target, Verify, Version,
    WaitOptions, WriteOptions,
};

/// A writer id naming this process: `<hostname>:<pid>`.
pub fn default_writer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", std::process::id())
}

/// The handoff component built from this workspace, embedded at build time.
pub const DEFAULT_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/handoff_guest.wasm"));

/// The embedded component compiled to native code by the build script, with
/// [`engine_config`] for the target's baseline CPU.
const PRECOMPILED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/handoff_guest.cwasm"));

include!("engine_config.rs");

/// How often the engine's epoch advances; the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits on one call into the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time limit of every call. `None` applies the defaults: for `wait`,
    /// its timeout plus [`Limits::WAIT_MARGIN`] (no limit when it waits
    /// without a timeout); for everything else [`Limits::DEFAULT_TIME_LIMIT`].
    pub time_limit: Option<Duration>,
    /// Largest linear memory the component may grow to, in bytes.
    pub memory: usize,
}

impl Limits {
    /// Default time limit of a call other than `wait`.
    pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(3600);
    /// Extra time a `wait` call gets beyond its own timeout.
    pub const WAIT_MARGIN: Duration = Duration::from_secs(60);
    /// Default memory limit: 512 MiB.
    pub const DEFAULT_MEMORY: usize = 512 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time_limit: None,
            memory: Limits::DEFAULT_MEMORY,
        }
    }
}

/// Configures and builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    component: Option<PathBuf>,
    cache: bool,
    cache_dir: Option<PathBuf>,
    limits: Limits,
    bulk: bool,
    progress: Option<progress::Hook>,
}

impl RuntimeBuilder {
    /// Use the component in this file instead of the embedded one.
    pub fn component(mut self, path: impl Into<PathBuf>) -> Self {
        self.component = Some(path.into());
        self
    }

    /// Whether to load and store a custom [`component`](Self::component)'s
    /// compiled code in the on-disk cache (on by default). Without it every
    /// build compiles that component. The embedded component never uses the
    /// cache: its compiled code is part of this crate.
    ///
    /// The cache is used only where its directory and entries are the
    /// user's and not writable by group or others; anywhere else the
    /// component is compiled in memory and [`LoadInfo::cache_problem`] says
    /// why.
    pub fn cache(mut self, enabled: bool) -> Self {
        self.cache = enabled;
        self
    }

    /// Cache directory to use instead of the default (`$HANDOFF_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/handoff`, else `~/.cache/handoff`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Time and memory limits of each call.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether this host hashes and copies payload files natively for the
    /// component (the `bulk` import; on by default). Off, the component
    /// does both itself through WASI, as under the Python and Node hosts:
    /// the same results, slower. For comparison, and for a filesystem whose
    /// `copy_file_range` is not to be trusted.
    pub fn bulk(mut self, enabled: bool) -> Self {
        self.bulk = enabled;
        self
    }

    /// Report how far the host's own hashing and copying has got, file by
    /// file, to `progress` (none by default).
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress::Hook(progress));
        self
    }

    /// Create the engine, load the component and check it against the
    /// `handoff` world.
    pub fn build(self) -> Result<Runtime, Error> {
        let start = Instant::now();
        let engine = Engine::new(&engine_config()).map_err(|e| Error::Setup(format!("{e:#}")))?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Setup(format!("{e:#}")))?;
        bindings::durability::add_to_linker::<_, wasmtime::component::HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| Error::Setup(format!("{e:#}")))?;
        bindings::bulk::add_to_linker::<_, wasmtime::component::HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| Error::Setup(format!("{e:#}")))?;
        // Resolve imports and exports now, once, so a component of another
        // world is reported here and each call only instantiates.
        let resolve = |component: &wasmtime::component::Component| {
            HandoffPre::new(linker.instantiate_pre(component)?)
        };

        let (pre, mut load) = match &self.component {
            None => component::load_embedded(
                &engine,
                PRECOMPILED_COMPONENT,
                DEFAULT_COMPONENT,
                resolve,
            )?,
            Some(path) => {
                let name = path.display().to_string();
                let wasm = component::read_file(path)?;
                let cache_dir = if self.cache {
                    self.cache_dir.or_else(cache::default_dir)
                } else {
                    None
                };
                component::load(&engine, &name, &wasm, cache_dir.as_deref(), resolve)?
            }
        };
        load.load_time = start.elapsed();

        start_epoch_ticker(&engine)?;
        Ok(Runtime {
            engine,
            pre,
            limits: self.limits,
            bulk: self.bulk,
            progress: self.progress,
            load,
        })
    }
}

/// Advance the engine's epoch in the background so deadlines expire. The
/// thread holds the engine weakly and ends once the engine is gone.
fn start_epoch_ticker(engine: &Engine) -> Result<(), Error> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("handoff-epoch".to_string())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| Error::Setup(format!("cannot start the deadline thread: {e}")))?;
    Ok(())
}

/// The engine and the compiled, checked component: build once, then call it
/// any number of times, from any number of threads.
pub struct Runtime {
    engine: Engine,
    pre: HandoffPre<CallState>,
    limits: Limits,
    bulk: bool,
    progress: Option<progress::Hook>,
    load: LoadInfo,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .field("bulk", &self.bulk)
            .field("load", &self.load)
            .finish_non_exhaustive()
    }
}

/// A directory handed to the component.
#[derive(Debug)]
struct Preopen {
    /// Canonical host path; also the path the guest sees.
    path: String,
    perms: FsPerms,
}

/// What one call produced besides its result.
struct CallStats {
    fsync: imports::FsyncStats,
}

impl Runtime {
    /// A builder, with the embedded component, the cache on and default limits.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            component: None,
            cache: true,
            cache_dir: None,
            limits: Limits::default(),
            bulk: true,
            progress: None,
        }
    }

    /// The embedded component with the cache on and default limits.
    pub fn new() -> Result<Runtime, Error> {
        Runtime::builder().build()
    }

    /// How the component was loaded (cache use, load time).
    pub fn load_info(&self) -> &LoadInfo {
        &self.load
    }

    fn time_limit(&self, call: CallKind) -> Option<Duration> {
        call_time_limit(&self.limits, call)
    }

    /// Run one call in a fresh store and instance that sees only
    /// `preopens`, mapping traps, deadlines and the WIT error.
    fn call<R>(
        &self,
        preopens: &[Preopen],
        time_limit: Option<Duration>,
        f: impl FnOnce(
            &Handoff,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, bindings::wit_types::Error>>,
    ) -> Result<(R, CallStats), Error> {
        self.call_recording(preopens, time_limit, None, f)
    }

    /// [`call`](Runtime::call), recording in `draws` the random numbers the
    /// component draws.
    fn call_recording<R>(
        &self,
        preopens: &[Preopen],
        time_limit: Option<Duration>,
        draws: Option<&Draws>,
        f: impl FnOnce(
            &Handoff,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, bindings::wit_types::Error>>,
    ) -> Result<(R, CallStats), Error> {
        let mut wasi = WasiCtx::builder();
        // Blocking on this thread avoids a round trip through a thread pool
        // for every file operation; calls are synchronous anyway. Stderr is
        // inherited so a panicking component can say why.
        wasi.allow_blocking_current_thread(true).inherit_stderr();
        if let Some(draws) = draws {
            wasi.secure_random(Recording::new(draws));
        }
        for p in preopens {
            wasi.preopened_dir(&p.path, &p.path, p.perms)
                .map_err(|e| Error::Setup(format!("cannot open {}: {e:#}", p.path)))?;
        }
        let mut store = Store::new(
            &self.engine,
            CallState::new(
                wasi.build(),
                self.limits.memory,
                time_limit.and_then(|d| Instant::now().checked_add(d)),
                self.bulk,
                self.progress.clone(),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(time_limit.map_or(u64::MAX / 2, epoch_ticks));

        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        match outcome {
            Ok(Ok(value)) => Ok((
                value,
                CallStats {
                    fsync: store.data().fsync,
                },
            )),
            Ok(Err(protocol)) => Err(Error::Protocol(protocol.into())),
            Err(e) => Err(self.host_failure(e, &store, time_limit)),
        }
    }

    /// Turn a trap or host error into the most telling [`Error`].
    fn host_failure(
        &self,
        e: wasmtime::Error,
        store: &Store<CallState>,
        time_limit: Option<Duration>,
    ) -> Error {
        if store.data().limiter.exceeded {
            return Error::MemoryExceeded {
                limit: self.limits.memory,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::DeadlineExceeded {
                limit: time_limit.unwrap_or(Duration::MAX),
            },
            Some(trap) => Error::Trap(trap.to_string()),
            None => Error::Trap(format!("{e:#}")),
        }
    }
}

/// The protocol's operations, each run in a fresh instance of the component
/// that sees only the directories the call names.
impl Backend for Runtime {
    type Error = Error;

    fn protocol_error(error: &Error) -> Option<&handoff_core::Error> {
        error.protocol()
    }

    fn kind_name(error: &Error) -> &'static str {
        error.kind_name()
    }

    fn path(error: &Error) -> Option<String> {
        error.path()
    }

    /// `<hostname>:<pid>` ([`default_writer_id`]).
    fn default_writer(&self) -> String {
        default_writer_id()
    }

    /// Copy the payload under `source` into staging under `root`, seal it
    /// and rename it to `<root>/<prefix><step>`. Durable and visible once
    /// `Ok` is returned; on error earlier versions are untouched.
    fn publish(
        &self,
        root: &Path,
        step: u64,
        source: &Path,
        options: &WriteOptions,
    ) -> Result<PublishReport, Error> {
        let root = preopen_root(root)?;
        let source_path = source;
        let source = preopen_dir(source, FsPerms::ReadOnly)
            .map_err(|(path, reason, kind)| Error::Source { path, reason, kind })?;
        let source_error = |reason: String| Error::Source {
            path: source_path.to_path_buf(),
            reason,
            kind: ErrorKind::InvalidInput,
        };
        match overlap::describe(Path::new(&root.path), Path::new(&source.path)) {
            Ok(None) => {}
            Ok(Some(reason)) => return Err(source_error(reason)),
            Err(e) => return Err(source_error(e.to_string())),
        }
        let guest_root = root.path.clone();
        let guest_source = source.path.clone();
        let draws = Draws::default();
        let called = self.call_recording(
            &[root, source],
            self.time_limit(CallKind::Other),
            Some(&draws),
            |h, store| {
                h.handoff_protocol_protocol().call_publish(
                    store,
                    &guest_root,
                    step,
                    &guest_source,
                    &options.into(),
                )
            },
        );
        if let Err(Error::DeadlineExceeded { .. }) = &called {
            // Best effort, as the component's own clean-up is; gc removes
            // what is left after its grace period.
            let _ = abandon::publish(Path::new(&guest_root), &options.prefix, step, &draws);
        }
        let (report, stats) = called?;
        Ok(publish_report(report, stats))
    }

    /// Seal a payload already written in `<root>/<prefix><step>`: flush it,
    /// write the manifest and `STABLE`, flush the directories.
    fn seal(&self, root: &Path, step: u64, options: &WriteOptions) -> Result<PublishReport, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let draws = Draws::default();
        let called = self.call_recording(
            &[root],
            self.time_limit(CallKind::Other),
            Some(&draws),
            |h, store| {
                h.handoff_protocol_protocol()
                    .call_seal(store, &guest_root, step, &options.into())
            },
        );
        if let Err(Error::DeadlineExceeded { .. }) = &called {
            let root = Path::new(&guest_root);
            let _ = abandon::seal(root, &options.prefix, step, &options.writer, &draws);
        }
        let (report, stats) = called?;
        Ok(publish_report(report, stats))
    }

    /// Begin a new run on `root`: its number.
    fn begin(&self, root: &Path, prefix: &str) -> Result<u64, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (run, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_begin(store, &guest_root, prefix)
        })?;
        Ok(run)
    }

    /// Wait until `target` is committed under `root` and validates.
    fn wait(&self, root: &Path, target: Target, options: &WaitOptions) -> Result<Version, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let time_limit = self.time_limit(CallKind::Wait(options.timeout));
        let (version, _) = self.call(&[root], time_limit, |h, store| {
            h.handoff_protocol_protocol().call_wait(
                store,
                &guest_root,
                target.into(),
                &options.into(),
            )
        })?;
        Ok(version.into())
    }

    /// Wait for `target` under `root`, pinned, and copy it, verified, into
    /// the local root `to`, which is created if missing. Both are preopened
    /// read-write (the pin is written under `root`); `to` equal to `root`,
    /// inside it or containing it is refused before anything is written.
    /// The time limit is the wait's timeout plus the default limit of a
    /// call for the copy (none when it waits without limit), or
    /// [`Limits::time_limit`]; a fetch stopped by it has its staging copy
    /// removed here, and its pin expires after its ttl.
    fn fetch(
        &self,
        root: &Path,
        to: &Path,
        target: Target,
        options: &FetchOptions,
    ) -> Result<FetchReport, Error> {
        let root = preopen_root(root)?;
        let local_error = |reason: String, kind| Error::Local {
            path: to.to_path_buf(),
            reason,
            kind,
        };
        let absolute = std::path::absolute(to)
            .map_err(|e| local_error(e.to_string(), ErrorKind::InvalidInput))?;
        let refuse = |found: std::io::Result<Option<String>>| match found {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(local_error(reason, ErrorKind::InvalidInput)),
            Err(e) => Err(local_error(e.to_string(), ErrorKind::Io)),
        };
        refuse(overlap::describe_local(Path::new(&root.path), &absolute))?;
        std::fs::create_dir_all(&absolute)
            .map_err(|e| local_error(format!("cannot create it: {e}"), ErrorKind::Io))?;
        let local = preopen_dir(&absolute, FsPerms::ReadWrite)
            .map_err(|(_, reason, kind)| local_error(reason, kind))?;
        // Again, now that it exists: a symbolic link may lead anywhere.
        refuse(overlap::describe_local(
            Path::new(&root.path),
            Path::new(&local.path),
        ))?;
        let guest_root = root.path.clone();
        let guest_local = local.path.clone();
        let draws = Draws::default();
        let called = self.call_recording(
            &[root, local],
            self.time_limit(CallKind::Fetch(options.timeout)),
            Some(&draws),
            |h, store| {
                h.handoff_protocol_protocol().call_fetch(
                    store,
                    &guest_root,
                    &guest_local,
                    target.into(),
                    &options.into(),
                )
            },
        );
        if let Err(Error::DeadlineExceeded { .. }) = &called {
            let _ = abandon::fetch(Path::new(&guest_local), &draws);
        }
        let (report, stats) = called?;
        Ok(FetchReport {
            version: report.version.into(),
            source: report.source,
            copied: report.copied,
            bytes_copied: report.bytes_copied,
            fsyncs: stats.fsync.count,
            fsync_ms: stats.fsync.time.as_secs_f64() * 1000.0,
            warnings: report.warnings,
        })
    }

    /// The highest committed step that validates, in one attempt.
    fn latest(&self, root: &Path, prefix: &str, verify: Verify) -> Result<Option<Version>, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (version, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_latest(store, &guest_root, prefix, verify.into())
        })?;
        Ok(version.map(Version::from))
    }

    /// Every step directory under `root`, in step order, with its state.
    fn list(&self, root: &Path, prefix: &str) -> Result<Vec<StepInfo>, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (steps, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_list(store, &guest_root, prefix)
        })?;
        Ok(steps.into_iter().map(StepInfo::from).collect())
    }

    /// Pin a committed step for `holder` for `ttl`; pinning again renews the
    /// pin (a reader loading for longer than `ttl` pins again in time).
    fn pin(
        &self,
        root: &Path,
        prefix: &str,
        step: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<PinInfo, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (pin, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol().call_pin(
                store,
                &guest_root,
                prefix,
                step,
                holder,
                handoff_core::millis(ttl),
            )
        })?;
        Ok(pin.into())
    }

    /// Release `holder`'s pin on `step`.
    fn unpin(&self, root: &Path, prefix: &str, step: u64, holder: &str) -> Result<(), Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_unpin(store, &guest_root, prefix, step, holder)
        })?;
        Ok(())
    }

    /// Remove committed steps beyond the newest `keep` that no pin holds,
    /// and abandoned staging directories.
    fn gc(&self, root: &Path, options: &GcOptions) -> Result<GcReport, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (report, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_gc(store, &guest_root, &options.into())
        })?;
        Ok(report.into())
    }

    /// Classify every entry under `root`; with `repair`, finish or undo what
    /// a crash left.
    fn fsck(&self, root: &Path, prefix: &str, repair: bool) -> Result<Vec<FsckEntry>, Error> {
        let root = preopen_root(root)?;
        let guest_root = root.path.clone();
        let (entries, _) = self.call(&[root], self.time_limit(CallKind::Other), |h, store| {
            h.handoff_protocol_protocol()
                .call_fsck(store, &guest_root, prefix, repair)
        })?;
        Ok(entries.into_iter().map(FsckEntry::from).collect())
    }
}

/// The component's report, with the flushes as this host made and timed
/// them.
fn publish_report(report: wit::PublishReport, stats: CallStats) -> PublishReport {
    PublishReport {
        version: report.version.into(),
        fsyncs: stats.fsync.count,
        fsync_ms: stats.fsync.time.as_secs_f64() * 1000.0,
        warnings: report.warnings,
    }
}

/// Which default time limit a call gets.
#[derive(Debug, Clone, Copy)]
enum CallKind {
    /// A `wait` with this timeout.
    Wait(Option<Duration>),
    /// A `fetch` whose wait has this timeout.
    Fetch(Option<Duration>),
    /// Anything else.
    Other,
}

/// The time limit of a call: the configured one, else for `wait` its
/// timeout plus a margin (none without a timeout: waiting forever was
/// asked for), else the general default.
fn call_time_limit(limits: &Limits, call: CallKind) -> Option<Duration> {
    match (limits.time_limit, call) {
        (Some(d), _) => Some(d),
        (None, CallKind::Wait(Some(timeout))) => Some(timeout.saturating_add(Limits::WAIT_MARGIN)),
        (None, CallKind::Wait(None) | CallKind::Fetch(None)) => None,
        (None, CallKind::Fetch(Some(timeout))) => {
            Some(timeout.saturating_add(Limits::DEFAULT_TIME_LIMIT))
        }
        (None, CallKind::Other) => Some(Limits::DEFAULT_TIME_LIMIT),
    }
}

/// Epoch ticks covering `d`, at least one.
fn epoch_ticks(d: Duration) -> u64 {
    let ticks = d.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    u64::try_from(ticks)
        .unwrap_or(u64::MAX / 2)
        .min(u64::MAX / 2)
}

fn preopen_root(root: &Path) -> Result<Preopen, Error> {
    preopen_dir(root, FsPerms::ReadWrite).map_err(|(path, reason, kind)| Error::Root {
        path,
        reason,
        kind,
    })
}

/// Resolve `path` to a canonical absolute directory the guest can be given
/// under the same name, so paths in its messages are real paths. A failure
/// is the path, what was seen, and its kind (`not-found` for a missing one).
fn preopen_dir(
    path: &Path,
    perms: FsPerms,
) -> Result<Preopen, (PathBuf, String, handoff_core::ErrorKind)> {
    use handoff_core::ErrorKind as K;
    let fail = |reason: String, kind| (path.to_path_buf(), reason, kind);
    let io = |e: std::io::Error| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => K::NotFound,
            _ => K::Io,
        };
        fail(e.to_string(), kind)
    };
    let canonical = std::fs::canonicalize(path).map_err(io)?;
    let meta = std::fs::metadata(&canonical).map_err(io)?;
    if !meta.is_dir() {
        return Err(fail("not a directory".to_string(), K::InvalidInput));
    }
    let text = canonical.to_str().ok_or_else(|| {
        fail(
            "the path is not valid UTF-8, which WASI paths must be".to_string(),
            K::InvalidInput,
        )
    })?;
    Ok(Preopen {
        path: text.to_string(),
        perms,
    })
}

/// A file type as a noun, for messages: "a FIFO".
pub(crate) fn describe_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ticks_round_up() {
        assert_eq!(epoch_ticks(Duration::ZERO), 1);
        assert_eq!(epoch_ticks(Duration::from_millis(1)), 1);
        assert_eq!(epoch_ticks(Duration::from_millis(25)), 3);
        assert_eq!(epoch_ticks(Duration::MAX), u64::MAX / 2);
    }

    #[test]
    fn preopen_dir_refuses_missing_paths_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, reason, kind) =
            preopen_dir(&tmp.path().join("missing"), FsPerms::ReadOnly).unwrap_err();
        assert!(path.ends_with("missing"));
        assert!(reason.contains("No such file"), "{reason}");
        assert_eq!(kind, handoff_core::ErrorKind::NotFound);

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let (_, reason, kind) = preopen_dir(&file, FsPerms::ReadOnly).unwrap_err();
        assert_eq!(reason, "not a directory");
        assert_eq!(kind, handoff_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn preopen_dir_canonicalizes() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("r")).unwrap();
        let p = preopen_dir(&tmp.path().join("r/../r/."), FsPerms::ReadWrite).unwrap();
        assert_eq!(
            Path::new(&p.path),
            std::fs::canonicalize(tmp.path().join("r")).unwrap()
        );
    }

    #[test]
    fn root_errors_name_the_path() {
        let err = preopen_root(Path::new("/nonexistent/handoff-root")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("root /nonexistent/handoff-root: "),
            "{err}"
        );
    }

    #[test]
    fn component_of_another_world_is_a_bad_component() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("empty.wasm");
        // A valid component that exports nothing.
        std::fs::write(&path, b"\0asm\x0d\x00\x01\x00").unwrap();
        let err = Runtime::builder()
            .component(&path)
            .cache(false)
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("bad component {}: ", path.display())),
            "{text}"
        );
        assert!(
            text.contains("does not implement the handoff world"),
            "{text}"
        );
    }

    #[test]
    fn missing_component_file_is_a_bad_component() {
        let err = Runtime::builder()
            .component("/nonexistent/h.wasm")
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("bad component /nonexistent/h.wasm: cannot read it: "),
            "{text}"
        );
    }

    #[test]
    fn time_limit_defaults() {
        let limits = |time_limit| Limits {
            time_limit,
            memory: Limits::DEFAULT_MEMORY,
        };
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(call_time_limit(&limits(None), CallKind::Other), secs(3600));
        assert_eq!(
            call_time_limit(&limits(None), CallKind::Wait(secs(5))),
            secs(65)
        );
        assert_eq!(call_time_limit(&limits(None), CallKind::Wait(None)), None);
        assert_eq!(
            call_time_limit(&limits(secs(1)), CallKind::Wait(None)),
            secs(1)
        );
        assert_eq!(call_time_limit(&limits(secs(1)), CallKind::Other), secs(1));
    }

    /// These run the embedded guest component.
    mod with_guest {
        use handoff_testkit::Payload;
        use handoff_testkit::proc::assert_within;

        use super::*;

        fn runtime(limits: Limits) -> Runtime {
            let cache = tempfile::tempdir().unwrap();
            Runtime::builder()
                .cache_dir(cache.path())
                .limits(limits)
                .build()
                .unwrap()
        }

        fn payload(dir: &Path) {
            Payload::new()
                .with("a.bin", vec![7u8; 10_000])
                .with("sub/b.json", "{}")
                .write_to(dir)
                .unwrap();
        }

        #[test]
        fn publish_then_wait_counts_real_fsyncs() {
            let tmp = tempfile::tempdir().unwrap();
            let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
            std::fs::create_dir(&root).unwrap();
            payload(&src);
            let rt = runtime(Limits::default());
            let report = rt
                .publish(&root, 3, &src, &WriteOptions::new(default_writer_id()))
                .unwrap();
            assert_eq!(report.version.step, 3);
            assert_eq!(
                Path::new(&report.version.path),
                root.canonicalize().unwrap().join("step_3")
            );
            assert!(report.fsyncs >= 6, "{report:?}");
            assert!(report.warnings.is_empty(), "{report:?}");
            let options = WaitOptions {
                verify: Verify::Hash,
                timeout: Some(Duration::from_secs(1)),
                ..WaitOptions::default()
            };
            let version = rt.wait(&root, Target::Step(3), &options).unwrap();
            assert_eq!(version, report.version);
            let again = rt
                .publish(&root, 3, &src, &WriteOptions::new(default_writer_id()))
                .unwrap_err();
            assert_eq!(again.kind(), Some(ErrorKind::Conflict), "{again}");
        }

        #[test]
        fn the_guest_cannot_follow_a_symlink_out_of_the_root() {
            let tmp = tempfile::tempdir().unwrap();
            let (root, src) = (tmp.path().join("root"), tmp.path().join("src"));
            let outside = tmp.path().join("outside");
            std::fs::create_dir(&root).unwrap();
            std::fs::create_dir(&outside).unwrap();
            payload(&src);
            let rt = runtime(Limits::default());
            rt.publish(&outside, 1, &src, &WriteOptions::new(default_writer_id()))
                .unwrap();
            // A committed step elsewhere, linked into the root: valid on
            // disk, but outside the only directory the guest was given.
            std::os::unix::fs::symlink(outside.join("step_1"), root.join("step_1")).unwrap();
            let options = WaitOptions {
                timeout: Some(Duration::from_millis(200)),
                settle: Duration::from_millis(200),
                ..WaitOptions::default()
            };
            assert!(rt.wait(&root, Target::Step(1), &options).is_err());
        }

        #[test]
        fn a_call_past_its_deadline_is_stopped() {
            let tmp = tempfile::tempdir().unwrap();
            let rt = runtime(Limits {
                time_limit: Some(Duration::from_millis(100)),
                ..Limits::default()
            });
            let start = Instant::now();
            let err = rt
                .wait(tmp.path(), Target::Step(1), &WaitOptions::default())
                .unwrap_err();
            assert_eq!(
                err,
                Error::DeadlineExceeded {
                    limit: Duration::from_millis(100)
                }
            );
            assert_eq!(
                err.to_string(),
                "component exceeded its time limit of 100ms"
            );
            assert_within(start, Duration::from_secs(2));
        }

        #[test]
        fn a_component_over_its_memory_limit_is_stopped() {
            let tmp = tempfile::tempdir().unwrap();
            let rt = runtime(Limits {
                memory: 64 * 1024,
                ..Limits::default()
            });
            let err = rt.list(tmp.path(), DEFAULT_PREFIX).unwrap_err();
            assert_eq!(err, Error::MemoryExceeded { limit: 64 * 1024 });
        }

        #[test]
        fn a_runtime_is_reusable_across_threads() {
            let tmp = tempfile::tempdir().unwrap();
            let rt = runtime(Limits::default());
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| assert_eq!(rt.list(tmp.path(), DEFAULT_PREFIX).unwrap(), vec![]));
                }
            });
        }
    }
}
