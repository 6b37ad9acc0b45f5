//! Running one subcommand against a [`Backend`]: the core's options from the
//! flags, the call, what to print.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use handoff_core::{
    ErrorKind, GcOptions, GcReport, PublishReport, Target, WaitOptions, WriteOptions,
};

use crate::Backend;
use crate::flags::{Command, GcArgs, Global, WaitArgs, WatchArgs, WriteArgs};
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
        let Some(keep) = write.keep else {
            return Ok(None);
        };
        let args = GcArgs {
            keep,
            grace: GcOptions::DEFAULT_GRACE,
            skew: GcOptions::DEFAULT_SKEW,
        };
        let step = report.version.step;
        self.gc(root, &args)
            .with_context(|| format!("step {step} was {verb}, but the gc after it failed"))
            .map(Some)
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
        let target = match (args.step, args.latest, args.after) {
            (Some(step), _, _) => Target::Step(step),
            (_, _, Some(after)) => Target::After(after),
            _ => Target::Latest,
        };
        let options = args.read.options(self.prefix, args.timeout);
        let start = Instant::now();
        let version = self
            .backend
            .wait(&args.root.root, target, &options)
            .with_context(|| match target {
                Target::Step(n) => format!("failed to wait for step {n}"),
                Target::Latest => "failed to wait for the latest step".to_string(),
                Target::After(n) => format!("failed to wait for a step after {n}"),
            })?;
        self.print.ready(&version, start.elapsed(), true)
    }

    fn watch(&self, args: WatchArgs) -> anyhow::Result<()> {
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
