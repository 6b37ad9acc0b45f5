//! Runs: a restarted trainer's new timeline, which supersedes older ones.
//!
//! `begin` claims run G by creating `.handoff/runs/<G>` exclusively (the
//! server lets exactly one of two `begin`s have a number). Step n of run G is
//! the step numbered `G * RUN_SPAN + n`, so every reader orders steps by
//! (run, step) by their numbers alone. A writer checks that its run is the
//! newest begun before it starts and again just before its commit point.

use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{
    HANDOFF_DIR, MAX_RUN, RUN_SPAN, RUNS_DIR, check_prefix, join, parse_step, run_of,
};
use crate::storage::{Kind, Storage};
use crate::tree::{Flusher, ensure_dir};

/// The newest run begun on the root (0 if none was). `.handoff` is listed
/// first, not `.handoff/runs` looked up: this node may answer a look-up
/// for a name it found absent before the first `begin` made it (an NFS
/// negative look-up), where a listing is the server's answer.
pub(crate) fn newest_run<S: Storage>(fs: &S) -> Result<u64> {
    let list = |dir: &str| match fs.read_dir(dir) {
        Ok(entries) => Ok(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", &fs.display(dir), &e)),
    };
    let begun = list(HANDOFF_DIR)?
        .iter()
        .any(|e| join(HANDOFF_DIR, &e.name) == RUNS_DIR);
    if !begun {
        return Ok(0);
    }
    Ok(list(RUNS_DIR)?
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .filter_map(|e| parse_step("", &e.name))
        .max()
        .unwrap_or(0))
}

/// Refuse a writer of `run` unless it is the newest run begun: an older one
/// is superseded (a restarted trainer's zombie), a newer one was never begun.
pub(crate) fn check_run<S: Storage>(fs: &S, run: u64, step: u64) -> Result<()> {
    let newest = newest_run(fs)?;
    if run < newest {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "superseded: run {newest} has begun on {}, so run {run} may not write \
                 step {step} any more",
                fs.display("")
            ),
        ));
    }
    if run > newest {
        let path = join(RUNS_DIR, &run.to_string());
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "run {run} was never begun on {} (no {}): `handoff begin` gives the next run",
                fs.display(""),
                fs.display(&path)
            ),
        ));
    }
    Ok(())
}

/// Begin a new run on the root and return its number: one above every run
/// begun and every step present under `prefix` (so its steps supersede all
/// of them), claimed by an exclusive create and made durable.
pub fn begin<S: Storage>(fs: &S, prefix: &str) -> Result<u64> {
    check_prefix(prefix)?;
    let mut flush = Flusher::new(fs);
    ensure_dir(&mut flush, HANDOFF_DIR, "")?;
    ensure_dir(&mut flush, RUNS_DIR, HANDOFF_DIR)?;
    let root = fs
        .read_dir("")
        .map_err(|e| Error::io("list", &fs.display(""), &e))?;
    let highest_step = root
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .filter_map(|e| parse_step(prefix, &e.name))
        .max();
    let mut run = newest_run(fs)?.max(highest_step.map_or(0, run_of)) + 1;
    loop {
        if run > MAX_RUN {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "no run left to begin on {}: runs go up to {MAX_RUN} (steps of run G \
                     are numbered G * {RUN_SPAN} + n)",
                    fs.display("")
                ),
            ));
        }
        let path = join(RUNS_DIR, &run.to_string());
        match fs.create_dir(&path) {
            Ok(()) => break,
            // Another begin took this number: the next one is ours to try.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => run += 1,
            Err(e) => return Err(Error::io("create", &fs.display(&path), &e)),
        }
    }
    // A run reported begun is one every writer of an older run sees.
    flush.dir(RUNS_DIR)?;
    Ok(run)
}
