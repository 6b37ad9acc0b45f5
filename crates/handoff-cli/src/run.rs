//! Running one subcommand against a [`Backend`]: the core's options from the
//! flags, the call, what to print.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use handoff_core::{
    ErrorKind, FetchOptions, FetchReport, GcOptions, GcReport, PinRequest, PublishReport, Target,
    WaitOptions, WriteOptions,
};

use crate::Backend;
use crate::flags::{Command, FetchArgs, GcArgs, Global, WaitArgs, WatchArgs, WriteArgs};
use crate::output::{Printer, Usage, gc_outcome};

/// Run one subcommand against `backend`, printing its output.
pub fn run<B: Backend>(backend: &B, global: &Global, command: Command) -> anyhow::Result<()> {
    let session = Session {
        backend,
        prefix: &global.prefix,
        print: Printer { json: global.json },
    };
    session.run(command)
}

/// One run of the CLI: the backend, the prefix every call uses, and where
/// the output goes.
struct Session<'a, B> {
    backend: &'a B,
    prefix: &'a str,
    print: Printer,
}

impl<B: Backend> Session<'_, B> {
    fn run(&self, command: Command) -> anyhow::Result<()> {
        let (backend, prefix, print) = (self.backend, self.prefix, &self.print);
        match command {
            Command::Publish {
                step,
                source,
                write,
            } => {
                check_run(&write, step.step)?;
                let start = Instant::now();
                let report = backend
                    .publish(&step.root, step.step, &source, &self.write_options(&write))
                    .with_context(|| {
                        let source = source.display();
                        format!("failed to publish step {} from {source}", step.step)
                    })?;
                let gc = self.gc_after(&step.root, &write, &report, "published")?;
                print.written("published", &report, start.elapsed(), gc.as_ref())?;
                gc_outcome(gc.as_ref())
            }
            Command::Seal { step, write } => {
                check_run(&write, step.step)?;
                let start = Instant::now();
                let report = backend
                    .seal(&step.root, step.step, &self.write_options(&write))
                    .with_context(|| format!("failed to seal step {}", step.step))?;
                let gc = self.gc_after(&step.root, &write, &report, "sealed")?;
                print.written("sealed", &report, start.elapsed(), gc.as_ref())?;
                gc_outcome(gc.as_ref())
            }
            Command::Begin { root } => {
                let run = backend
                    .begin(&root.root, prefix)
                    .context("failed to begin a run")?;
                print.begun(run)
            }
            Command::Wait(args) => self.wait(args),
            Command::Fetch(args) => self.fetch(args),
            Command::Watch(args) => self.watch(args),
            Command::Ls { root } => {
                let steps = backend
                    .list(&root.root, prefix)
                    .context("failed to list the root")?;
                print.steps(&steps)
            }
            Command::Pin { step, holder, ttl } => {
                let pin = backend
                    .pin(&step.root, prefix, step.step, &holder, ttl)
                    .with_context(|| format!("failed to pin step {}", step.step))?;
                print.pinned(&pin, ttl)
            }
            Command::Unpin { step, holder } => {
                backend
                    .unpin(&step.root, prefix, step.step, &holder)
                    .with_context(|| format!("failed to unpin step {}", step.step))?;
                print.released(step.step, &holder)
            }
            Command::Gc { root, gc } => {
                let report = self.gc(&root.root, &gc)?;
                print.gc(&report)?;
                gc_outcome(Some(&report))
            }
            Command::Fsck { root, repair } => {
                let entries = backend
                    .fsck(&root.root, prefix, repair)
                    .context("fsck failed")?;
                print.entries(&entries)
            }
        }
    }

    fn write_options(&self, write: &WriteArgs) -> WriteOptions {
        WriteOptions {
            prefix: self.prefix.to_string(),
            writer: write
                .writer
                .clone()
                .unwrap_or_else(|| self.backend.default_writer()),
            created_ms: write.created_ms,
            run: write.run,
        }
    }

    /// With `--keep`, the gc after a successful publish or seal.
    fn gc_after(
        &self,
        root: &Path,
        write: &WriteArgs,
        report: &PublishReport,
        verb: &str,
    ) -> anyhow::Result<Option<GcReport>> {
        self.keep_after(root, write.keep, report.version.step, verb)
    }

    /// With `keep`, the gc of `root` after step `step` was `verb`.
    fn keep_after(
        &self,
        root: &Path,
        keep: Option<u32>,
        step: u64,
        verb: &str,
    ) -> anyhow::Result<Option<GcReport>> {
        let Some(keep) = keep else {
            return Ok(None);
        };
        let args = GcArgs {
            keep,
            grace: GcOptions::DEFAULT_GRACE,
            skew: GcOptions::DEFAULT_SKEW,
        };
        self.gc(root, &args)
            .with_context(|| format!("step {step} was {verb}, but the gc after it failed"))
            .map(Some)
    }

    /// The core's options of a fetch.
    fn fetch_options(
        &self,
        timeout: Option<Duration>,
        settle: Duration,
        poll: Duration,
        holder: Option<&str>,
        ttl: Duration,
    ) -> FetchOptions {
        FetchOptions {
            prefix: self.prefix.to_string(),
            timeout,
            settle,
            poll,
            holder: holder.map_or_else(|| self.backend.default_writer(), str::to_string),
            ttl,
        }
    }

    /// One fetch of `target` into `to`, then the gc of `keep`.
    fn fetch_once(
        &self,
        root: &Path,
        to: &Path,
        target: Target,
        options: &FetchOptions,
        keep: Option<u32>,
    ) -> anyhow::Result<(FetchReport, Option<GcReport>)> {
        let report = self
            .backend
            .fetch(root, to, target, options)
            .with_context(|| failed_to("fetch", target))?;
        let gc = self.keep_after(to, keep, report.version.step, "fetched")?;
        Ok((report, gc))
    }

    fn fetch(&self, args: FetchArgs) -> anyhow::Result<()> {
        let target = args.target.target();
        let options = self.fetch_options(
            args.timeout,
            args.retry.settle,
            args.retry.poll,
            args.holder.as_deref(),
            args.ttl,
        );
        let start = Instant::now();
        let (report, gc) =
            self.fetch_once(&args.root.root, &args.to, target, &options, args.keep)?;
        self.print
            .fetched(&report, start.elapsed(), true, gc.as_ref())?;
        gc_outcome(gc.as_ref())
    }

    /// `watch --to`: fetch each new step, in step order, until interrupted.
    /// A gc of `--keep` that could not remove everything is printed with
    /// the step and does not stop the watch.
    fn watch_to(&self, args: &WatchArgs, to: &Path) -> anyhow::Result<()> {
        let root = &args.root.root;
        let options = self.fetch_options(
            None,
            args.read.retry.settle,
            args.read.retry.poll,
            args.holder.as_deref(),
            PinRequest::DEFAULT_TTL,
        );
        let mut target = match args.from {
            None => Target::Latest,
            Some(0) => {
                // As `watch`: look at step 0 once, then go on from there.
                let once = FetchOptions {
                    timeout: Some(Duration::ZERO),
                    ..options.clone()
                };
                match self.fetch_once(root, to, Target::Step(0), &once, args.keep) {
                    Ok((report, gc)) => {
                        self.print
                            .fetched(&report, Duration::ZERO, false, gc.as_ref())?;
                    }
                    Err(e)
                        if crate::classify::<B>(&e).map(|e| e.kind())
                            == Some(ErrorKind::TimedOut) => {}
                    Err(e) => return Err(e).context("failed to watch step 0"),
                }
                Target::After(0)
            }
            Some(n) => Target::After(n - 1),
        };
        loop {
            let start = Instant::now();
            let (report, gc) = self
                .fetch_once(root, to, target, &options, args.keep)
                .context("failed to watch for the next step")?;
            // A gc that could not remove everything is in the line printed
            // (`"error"` with --json); the watch goes on.
            self.print
                .fetched(&report, start.elapsed(), false, gc.as_ref())?;
            target = Target::After(report.version.step);
        }
    }

    fn gc(&self, root: &Path, args: &GcArgs) -> anyhow::Result<GcReport> {
        let options = GcOptions {
            prefix: self.prefix.to_string(),
            keep: args.keep,
            grace: args.grace,
            skew: args.skew,
        };
        self.backend.gc(root, &options).context("gc failed")
    }

    fn wait(&self, args: WaitArgs) -> anyhow::Result<()> {
        let target = args.target.target();
        let options = args.read.options(self.prefix, args.timeout);
        let start = Instant::now();
        let version = self
            .backend
            .wait(&args.root.root, target, &options)
            .with_context(|| failed_to("wait for", target))?;
        self.print.ready(&version, start.elapsed(), true)
    }

    fn watch(&self, args: WatchArgs) -> anyhow::Result<()> {
        if let Some(to) = &args.to {
            return self.watch_to(&args, to);
        }
        let (backend, prefix, print) = (self.backend, self.prefix, &self.print);
        let options = args.read.options(prefix, None);
        let root = &args.root.root;
        let holder = args.read.pin.as_deref();
        // With --pin, the step printed last stays pinned until the consumer
        // asks for the next one, and is released only once that one is
        // pinned: the consumer is never left holding nothing. While the
        // consumer uses it, the pin is renewed every half ttl, so serving one
        // step for longer than the ttl does not let gc take it.
        let mut held: Option<u64> = None;
        let ttl = args.read.ttl;
        let next_requested = |step: u64| -> anyhow::Result<bool> {
            let renew = || {
                let holder = holder.expect("a held step has a holder");
                backend
                    .pin(root, prefix, step, holder, ttl)
                    .map(drop)
                    .with_context(|| {
                        format!(
                            "failed to renew the pin on step {step}: it is no longer protected \
                             from gc"
                        )
                    })
            };
            next_line(renew, (ttl / 2).max(Duration::from_millis(100)))
        };
        let mut target = match args.from {
            None => Target::Latest,
            Some(0) => {
                // `after` cannot say ">= 0": look at step 0 once, then go on
                // from there.
                let once = WaitOptions {
                    timeout: Some(Duration::ZERO),
                    ..options.clone()
                };
                match backend.wait(root, Target::Step(0), &once) {
                    Ok(version) => {
                        print.ready(&version, Duration::ZERO, false)?;
                        if holder.is_some() {
                            held = Some(0);
                            if !next_requested(0)? {
                                return Ok(());
                            }
                        }
                    }
                    Err(e) if B::kind(&e) == Some(ErrorKind::TimedOut) => {}
                    Err(e) => return Err(e).context("failed to watch step 0"),
                }
                Target::After(0)
            }
            Some(n) => Target::After(n - 1),
        };
        loop {
            let start = Instant::now();
            let version = backend
                .wait(root, target, &options)
                .context("failed to watch for the next step")?;
            if let (Some(previous), Some(holder)) = (held, holder) {
                self.release(root, previous, holder)?;
            }
            print.ready(&version, start.elapsed(), false)?;
            target = Target::After(version.step);
            if holder.is_some() {
                held = Some(version.step);
                if !next_requested(version.step)? {
                    // stdin closed: no more asks. The pin stays until it
                    // expires or is unpinned; the consumer may still read it.
                    return Ok(());
                }
            }
        }
    }

    /// Releases `holder`'s pin on `step`; already gone (expired and
    /// collected, or unpinned by hand) is fine.
    fn release(&self, root: &Path, step: u64, holder: &str) -> anyhow::Result<()> {
        match self.backend.unpin(root, self.prefix, step, holder) {
            Err(e) if B::kind(&e) != Some(ErrorKind::NotFound) => {
                Err(e).with_context(|| format!("failed to release {holder}'s pin on step {step}"))
            }
            _ => Ok(()),
        }
    }
}

/// "failed to `verb` step N" (the latest step, a step after N): the
/// context of a failed wait or fetch.
fn failed_to(verb: &str, target: Target) -> String {
    match target {
        Target::Step(n) => format!("failed to {verb} step {n}"),
        Target::Latest => format!("failed to {verb} the latest step"),
        Target::After(n) => format!("failed to {verb} a step after {n}"),
    }
}

/// `--run G --step N` that name no step (a run above the highest, a step
/// of a run other than 0 beyond its span): a usage error, before anything
/// is called.
fn check_run(write: &WriteArgs, step: u64) -> anyhow::Result<()> {
    handoff_core::layout::run_step(write.run, step)
        .map(drop)
        .map_err(|e| Usage(format!("--run, --step: {e}")).into())
}

/// Waits for the consumer of `watch --pin` to ask for the next version: a
/// line on stdin. False at end of input. Calls `renew` every `every` while
/// it waits; where threads are not available (a WASI command), it only
/// waits.
fn next_line(
    mut renew: impl FnMut() -> anyhow::Result<()>,
    every: Duration,
) -> anyhow::Result<bool> {
    use std::sync::mpsc::RecvTimeoutError;
    let context = "failed to read the request for the next step from stdin";
    let Some(lines) = stdin_lines() else {
        let mut line = String::new();
        return Ok(std::io::stdin().read_line(&mut line).context(context)? > 0);
    };
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match lines.recv_timeout(every) {
            Ok(read) => return Ok(read.context(context)? > 0),
            Err(RecvTimeoutError::Timeout) => renew()?,
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
    }
}

/// Lines of stdin read by a thread of their own (their lengths; 0 at end of
/// input), so a wait for one can time out. `None` where no thread can be
/// started.
fn stdin_lines()
-> Option<&'static std::sync::Mutex<std::sync::mpsc::Receiver<std::io::Result<usize>>>> {
    use std::sync::{Mutex, OnceLock, mpsc};
    static LINES: OnceLock<Option<Mutex<mpsc::Receiver<std::io::Result<usize>>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let (send, receive) = mpsc::channel();
            std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        let read = std::io::stdin().read_line(&mut line);
                        let done = !matches!(read, Ok(n) if n > 0);
                        if send.send(read).is_err() || done {
                            return;
                        }
                    }
                })
                .ok()
                .map(|_| Mutex::new(receive))
        })
        .as_ref()
}
