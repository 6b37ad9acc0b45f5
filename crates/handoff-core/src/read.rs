//! The reader's side: `wait`, `latest`, `list`.

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{check_prefix, parse_step, run_of, step_name};
use crate::manifest::STABLE_NAME;
use crate::retain::pin;
use crate::runs::newest_run;
use crate::storage::{Kind, Platform, Storage, join};
use crate::types::{StepInfo, StepState, Target, Verify, Version, WaitOptions, millis};
use crate::validate::{Rejected, check, read_manifest};

/// The steps present in the root, highest first, and the root listing's
/// names (for `list`).
fn steps_desc<S: Storage>(fs: &S, prefix: &str) -> Result<Vec<u64>> {
    let entries = fs
        .read_dir("")
        .map_err(|e| Error::io("list", &fs.display(""), &e))?;
    let mut steps: Vec<u64> = entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .filter_map(|e| parse_step(prefix, &e.name))
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    Ok(steps)
}

/// The highest committed step that validates, in one pass.
pub fn latest<S: Storage>(fs: &S, prefix: &str, verify: Verify) -> Result<Option<Version>> {
    check_prefix(prefix)?;
    first_valid(fs, prefix, verify, steps_desc(fs, prefix)?, false)
}

/// How often a wait for the step after N lists the whole root, in
/// milliseconds; in between, each attempt looks up only step N + 1.
pub(crate) const LIST_EVERY_MS: u64 = 1000;

/// The lowest committed step above `after` that validates, in one pass;
/// once a newer run has committed a step, only steps of the newest such run
/// count (an older run's are superseded, whatever their numbers).
fn next_after<S: Storage>(
    fs: &S,
    prefix: &str,
    verify: Verify,
    after: u64,
    relist: bool,
) -> Result<Option<Version>> {
    let mut steps = steps_desc(fs, prefix)?;
    steps.retain(|&s| s > after);
    if let (Some(&highest), Some(&lowest)) = (steps.first(), steps.last())
        && run_of(highest) != run_of(lowest)
    {
        let Some(newest) = first_valid(fs, prefix, verify, steps.clone(), relist)? else {
            return Ok(None);
        };
        steps.retain(|&s| run_of(s) == run_of(newest.step));
    }
    steps.reverse();
    first_valid(fs, prefix, verify, steps, relist)
}

/// The first of `steps` that is committed and validates. With `relist`, a
/// step found uncommitted is listed and checked once more: an NFS client may
/// hold its `STABLE` as absent from a look-up made while it was being
/// written (in place), and listing the step makes it look again.
fn first_valid<S: Storage>(
    fs: &S,
    prefix: &str,
    verify: Verify,
    steps: Vec<u64>,
    relist: bool,
) -> Result<Option<Version>> {
    let mut skipped = Vec::new();
    for step in steps {
        let checked = match check(fs, prefix, step, verify) {
            Err(Rejected::NotCommitted(_)) if relist => {
                let _ = fs.read_dir(&step_name(prefix, step));
                check(fs, prefix, step, verify)
            }
            other => other,
        };
        match checked {
            Ok(mut version) => {
                version.warnings = skipped;
                return Ok(Some(version));
            }
            // A step being written does not hide older ones.
            Err(Rejected::NotCommitted(_)) => {}
            // Nor does one lagging, broken or unreadable: it is passed over,
            // and said so.
            Err(Rejected::Mismatch(e) | Rejected::Unsafe(e) | Rejected::Failed(e)) => {
                skipped.push(format!("step {step} skipped: {}", e.message()));
            }
        }
    }
    Ok(None)
}

/// Wait until `target` is committed and validates.
///
/// Each attempt opens everything afresh, so a shared filesystem's client
/// revalidates its caches. Between attempts the pause grows from a few
/// milliseconds to `poll_ms`, with jitter so many readers do not poll in step.
/// A step that is committed but does not validate is retried for `settle_ms`
/// (a lagging cache), then reported as an integrity error; a step never
/// committed before the deadline is `TimedOut`.
pub fn wait<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    target: Target,
    options: &WaitOptions,
) -> Result<Version> {
    check_prefix(&options.prefix)?;
    check_root(fs, "root")?;
    let start = platform.now_ms();
    let deadline = options.timeout.map(|t| start.saturating_add(millis(t)));
    let mut first_mismatch: Option<u64> = None;
    let mut listed_at: Option<u64> = None;
    let mut listed: Vec<u64> = Vec::new();
    let mut pause = 2u64.min(millis(options.poll).max(1));
    loop {
        let found = |v: Option<Version>, what: String| {
            v.ok_or_else(|| {
                Rejected::NotCommitted(format!(
                    "{what} under {} is committed and valid",
                    fs.display("")
                ))
            })
        };
        let mut outcome = match target {
            Target::Step(step) => match check(fs, &options.prefix, step, options.verify) {
                // An NFS client keeps a failed look-up of `step_N` for up to
                // a minute (negative look-up cache) and answers later ones
                // from it, but listing the root makes it revalidate the
                // directory and drop that entry. So once per LIST_EVERY_MS a
                // step not found is looked for again after a listing, and
                // so is a `STABLE` not found in a step that is listed (an
                // in-place writer creates it last).
                Err(Rejected::NotCommitted(_))
                    if listed_at
                        .is_none_or(|at| platform.now_ms().saturating_sub(at) >= LIST_EVERY_MS) =>
                {
                    listed_at = Some(platform.now_ms());
                    let dir = step_name(&options.prefix, step);
                    let root = fs
                        .read_dir("")
                        .map_err(|e| Error::io("list", &fs.display(""), &e))?;
                    if root.iter().any(|entry| entry.name == dir) {
                        let _ = fs.read_dir(&dir);
                    }
                    check(fs, &options.prefix, step, options.verify)
                }
                other => other,
            },
            Target::Latest => {
                // The root and the steps in it not committed yet are listed
                // at most once per LIST_EVERY_MS; in between, the steps of
                // the last listing are looked up again. (A reader listing a
                // directory many times a second was seen to hold up the
                // writer's own open of it, on the Linux NFS client.)
                let now = platform.now_ms();
                let relist = listed_at.is_none_or(|at| now.saturating_sub(at) >= LIST_EVERY_MS);
                if relist {
                    listed_at = Some(now);
                    listed = steps_desc(fs, &options.prefix)?;
                }
                found(
                    first_valid(fs, &options.prefix, options.verify, listed.clone(), relist)?,
                    "no step".into(),
                )
            }
            Target::After(after) => {
                // The next step is the lowest candidate there can be, and
                // looking it up costs one call. Listing the root costs one
                // per entry and more, so it is done on the first attempt and
                // then once per LIST_EVERY_MS, to find a later step when the
                // next one was skipped.
                let next = after
                    .checked_add(1)
                    .map(|next| check(fs, &options.prefix, next, options.verify));
                let now = platform.now_ms();
                match next {
                    // Unless a newer run has begun (or `.handoff` cannot be
                    // read to tell): then the listing below decides, by the
                    // committed steps alone, whether one has superseded it.
                    // A next step that cannot be read is left to the
                    // listing too, which passes over it with a warning.
                    Some(Ok(version))
                        if newest_run(fs).is_ok_and(|newest| run_of(version.step) >= newest) =>
                    {
                        Ok(version)
                    }
                    _ if listed_at.is_none_or(|at| now.saturating_sub(at) >= LIST_EVERY_MS) => {
                        listed_at = Some(now);
                        found(
                            next_after(fs, &options.prefix, options.verify, after, true)?,
                            format!("no step above {after}"),
                        )
                    }
                    _ => found(None, format!("no step above {after}")),
                }
            }
        };
        if let (Ok(version), Some(request)) = (&outcome, &options.pin) {
            outcome = match pin(
                fs,
                platform,
                &options.prefix,
                version.step,
                &request.holder,
                request.ttl,
            ) {
                Ok(_) => outcome,
                // gc unpublished it between our check and our pin: look again.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Err(Rejected::NotCommitted(e.message().to_string()))
                }
                Err(e) => return Err(e),
            };
        }
        let now = platform.now_ms();
        let expired = deadline.is_some_and(|d| now >= d);
        match outcome {
            Ok(version) => return Ok(version),
            Err(Rejected::Failed(e) | Rejected::Unsafe(e)) => return Err(e),
            Err(Rejected::Mismatch(e)) => {
                let since = *first_mismatch.get_or_insert(now);
                if expired || now.saturating_sub(since) >= millis(options.settle) {
                    return Err(e);
                }
            }
            Err(Rejected::NotCommitted(why)) => {
                first_mismatch = None;
                if expired {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!("timed out after {} ms: {why}", now.saturating_sub(start)),
                    ));
                }
            }
        }
        // Jitter: between half and all of the pause.
        let jittered = pause / 2 + platform.random_u64() % (pause / 2 + 1);
        let sleep = match deadline {
            Some(d) => jittered.min(d.saturating_sub(now)).max(1),
            None => jittered.max(1),
        };
        platform.sleep_ms(sleep);
        pause = (pause * 2).min(millis(options.poll).max(1));
    }
}

/// That the storage's root, called `what` in the error, is a directory.
pub(crate) fn check_root<S: Storage>(fs: &S, what: &str) -> Result<()> {
    match fs.stat("") {
        Ok(Some(m)) if m.kind == Kind::Dir => Ok(()),
        Ok(_) => Err(Error::new(
            ErrorKind::NotFound,
            format!("{what} {} is not a directory", fs.display("")),
        )),
        Err(e) => Err(Error::io(&format!("inspect {what}"), &fs.display(""), &e)),
    }
}

/// Every step directory in the root, in step order, with its state.
pub fn list<S: Storage>(fs: &S, prefix: &str) -> Result<Vec<StepInfo>> {
    check_prefix(prefix)?;
    let mut steps = steps_desc(fs, prefix)?;
    steps.reverse();
    let mut infos = Vec::with_capacity(steps.len());
    for step in steps {
        let dir = step_name(prefix, step);
        let mut info = StepInfo {
            step,
            path: fs.display(&dir),
            state: StepState::Incomplete,
            files: 0,
            bytes: 0,
            detail: None,
        };
        // Only a regular file commits; one step that cannot be looked at
        // does not hide the others.
        let stable = join(&dir, STABLE_NAME);
        let committed = match fs.stat(&stable) {
            Ok(meta) => meta.is_some_and(|m| m.kind == Kind::File),
            Err(e) => {
                info.state = StepState::Corrupt;
                info.detail = Some(
                    Error::io("inspect", &fs.display(&stable), &e)
                        .message()
                        .into(),
                );
                false
            }
        };
        if committed {
            match read_manifest(fs, &dir) {
                Ok(m) if m.step == step => {
                    info.state = StepState::Committed;
                    info.files = m.files.len() as u32;
                    info.bytes = m.bytes();
                }
                Ok(m) => {
                    info.state = StepState::Corrupt;
                    info.detail = Some(format!("its manifest belongs to step {}", m.step));
                }
                Err(Rejected::Mismatch(e) | Rejected::Unsafe(e) | Rejected::Failed(e)) => {
                    info.state = StepState::Corrupt;
                    info.detail = Some(e.to_string());
                }
                Err(Rejected::NotCommitted(why)) => {
                    info.state = StepState::Corrupt;
                    info.detail = Some(why);
                }
            }
        }
        infos.push(info);
    }
    Ok(infos)
}
