//! The reader's side: `wait`, `latest`, `list`.

use std::io;

use crate::error::{Error, Result};
use crate::layout::{check_prefix, parse_step, step_name};
use crate::manifest::{FileEntry, MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, STABLE_NAME};
use crate::retain::pin;
use crate::storage::{Clock, Kind, Storage, StorageFile, join};
use crate::write::hash_file;

/// A committed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The step number.
    pub step: u64,
    /// The step directory, as the storage displays it.
    pub path: String,
    /// Writer id from the manifest.
    pub writer: String,
    /// Creation time from the manifest, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Payload files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Version {
    pub(crate) fn from_manifest(path: String, manifest: Manifest) -> Version {
        Version {
            step: manifest.step,
            path,
            writer: manifest.writer,
            created_ms: manifest.created,
            files: manifest.files,
        }
    }
}

/// How much a reader checks before accepting a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Every listed file exists with the listed size.
    Size,
    /// As `Size`, and every hash matches.
    Hash,
}

/// Which version to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Exactly this step.
    Step(u64),
    /// The highest step that validates.
    Latest,
    /// The lowest step above this one that validates.
    After(u64),
}

/// A pin to take on the version a wait returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRequest {
    /// Who holds the pin.
    pub holder: String,
    /// How long it lasts.
    pub ttl_ms: u64,
}

/// Options of [`wait`].
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Step directory prefix.
    pub prefix: String,
    /// What to check.
    pub verify: Verify,
    /// Give up after this long; `None` waits without limit.
    pub timeout_ms: Option<u64>,
    /// How long a committed step that does not validate yet is retried before
    /// it is an integrity error (a lagging cache on a shared filesystem).
    pub settle_ms: u64,
    /// Longest pause between attempts.
    pub poll_ms: u64,
    /// Pin the version before returning it. The holder's pins on other
    /// steps stay: a reader still serving the previous version releases it
    /// (`unpin`) once it has switched over, never before.
    pub pin: Option<PinRequest>,
}

/// Where a step directory stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    /// `STABLE` and a valid manifest are present.
    Committed,
    /// No `STABLE`.
    Incomplete,
    /// `STABLE` present but the manifest is missing or invalid, or the
    /// payload does not match it.
    Corrupt,
    /// Being written under `.handoff/staging/`.
    Staging,
    /// Being deleted under `.handoff/trash/`.
    Trash,
    /// Not the protocol's.
    Stray,
}

impl StepState {
    /// The state's name, as the WIT and the CLI's output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Committed => "committed",
            StepState::Incomplete => "incomplete",
            StepState::Corrupt => "corrupt",
            StepState::Staging => "staging",
            StepState::Trash => "trash",
            StepState::Stray => "stray",
        }
    }
}

/// One entry of [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepInfo {
    /// The step number.
    pub step: u64,
    /// The step directory, as the storage displays it.
    pub path: String,
    /// Its state (from the manifest and `STABLE` alone; payload not opened).
    pub state: StepState,
    /// Files in the manifest, 0 without one.
    pub files: u32,
    /// Bytes in the manifest, 0 without one.
    pub bytes: u64,
}

/// Why one attempt to validate a step did not accept it.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// No `STABLE`: not committed (yet).
    NotCommitted(String),
    /// Committed, but something listed is not (yet) as the manifest says.
    /// On a shared filesystem this can be a lagging cache: retried.
    Mismatch(String),
    /// The manifest itself is unacceptable: retrying will not help.
    Unsafe(String),
    /// A filesystem error other than "not there".
    Failed(Error),
}

/// One attempt: open `STABLE`, the manifest and every listed file afresh, and
/// check them.
pub(crate) fn check<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
) -> Result<Version, Rejected> {
    let dir = step_name(prefix, step);
    let stable = join(&dir, STABLE_NAME);
    let committed = opens(fs, &stable)
        .map_err(|e| Rejected::Failed(Error::io("open", &fs.display(&stable), &e)))?;
    if !committed {
        return Err(Rejected::NotCommitted(format!(
            "step {step} is not committed: no {}",
            fs.display(&stable)
        )));
    }
    check_contents(fs, prefix, step, verify)
}

/// Whether `path` exists, found by opening it rather than by `stat`: an NFS
/// client may answer `stat` of a name from its caches (a `STABLE` another
/// node removed can look present for seconds), while an open goes to the
/// server (close-to-open consistency). A missing or non-directory parent,
/// and a handle the server no longer knows, all mean "not there".
pub(crate) fn opens<S: Storage>(fs: &S, path: &str) -> io::Result<bool> {
    match fs.open(path) {
        Ok(_) => Ok(true),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an error opening or creating a path means that it, or a
/// directory on the way, is not there (any more).
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::StaleNetworkFileHandle
    )
}

/// The part of [`check`] after `STABLE`: the manifest and every listed file.
pub(crate) fn check_contents<S: Storage>(
    fs: &S,
    prefix: &str,
    step: u64,
    verify: Verify,
) -> Result<Version, Rejected> {
    let dir = step_name(prefix, step);
    let manifest = read_manifest(fs, &dir)?;
    if manifest.step != step {
        return Err(Rejected::Unsafe(format!(
            "{} belongs to step {}, not {step}",
            fs.display(&join(&dir, MANIFEST_NAME)),
            manifest.step
        )));
    }
    for entry in &manifest.files {
        let path = join(&dir, &entry.path);
        let shown = || fs.display(&path);
        let mut file = match fs.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Rejected::Mismatch(format!(
                    "{} is missing (manifest lists {} bytes)",
                    shown(),
                    entry.size
                )));
            }
            Err(e) => {
                return Err(Rejected::Mismatch(format!("cannot open {}: {e}", shown())));
            }
        };
        let size = file
            .size()
            .map_err(|e| Rejected::Mismatch(format!("cannot inspect {}: {e}", shown())))?;
        if size != entry.size {
            let what = if size < entry.size {
                "short"
            } else {
                "too long"
            };
            return Err(Rejected::Mismatch(format!(
                "{} is {what}: {size} bytes, manifest lists {}",
                shown(),
                entry.size
            )));
        }
        if verify == Verify::Hash {
            let (read, hash) =
                hash_file(fs, &mut file, &path).map_err(|e| Rejected::Mismatch(e.to_string()))?;
            if read != entry.size || hash != entry.blake3 {
                return Err(Rejected::Mismatch(format!(
                    "{} does not match its hash: read {read} bytes with blake3 {hash}, \
                     manifest lists {} bytes with blake3 {}",
                    shown(),
                    entry.size,
                    entry.blake3
                )));
            }
        }
    }
    Ok(Version::from_manifest(fs.display(&dir), manifest))
}

/// Read and parse `<dir>/handoff.manifest.json` of a committed step.
pub(crate) fn read_manifest<S: Storage>(fs: &S, dir: &str) -> Result<Manifest, Rejected> {
    let path = join(dir, MANIFEST_NAME);
    let shown = fs.display(&path);
    let mut file = match fs.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Rejected::Mismatch(format!(
                "STABLE is present but {shown} is missing"
            )));
        }
        Err(e) => return Err(Rejected::Mismatch(format!("cannot open {shown}: {e}"))),
    };
    let size = file
        .size()
        .map_err(|e| Rejected::Mismatch(format!("cannot inspect {shown}: {e}")))?;
    if size > MAX_MANIFEST_BYTES {
        return Err(Rejected::Unsafe(format!(
            "{shown} is {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
        )));
    }
    let mut bytes = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Rejected::Mismatch(format!("cannot read {shown}: {e}"))),
        }
    }
    bytes.truncate(filled);
    Manifest::parse(&bytes).map_err(|why| {
        if why.starts_with("unsafe path") || why.starts_with("protocol version") {
            Rejected::Unsafe(format!("{shown}: {why}"))
        } else {
            // Possibly a short read through a stale cache: worth a retry.
            Rejected::Mismatch(format!("{shown}: {why}"))
        }
    })
}

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

/// The lowest committed step above `after` that validates, in one pass.
fn next_after<S: Storage>(
    fs: &S,
    prefix: &str,
    verify: Verify,
    after: u64,
    relist: bool,
) -> Result<Option<Version>> {
    let mut steps = steps_desc(fs, prefix)?;
    steps.retain(|&s| s > after);
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
    for step in steps {
        let checked = match check(fs, prefix, step, verify) {
            Err(Rejected::NotCommitted(_)) if relist => {
                let _ = fs.read_dir(&step_name(prefix, step));
                check(fs, prefix, step, verify)
            }
            other => other,
        };
        match checked {
            Ok(version) => return Ok(Some(version)),
            // A step being written, lagging or broken does not hide older ones.
            Err(Rejected::NotCommitted(_) | Rejected::Mismatch(_) | Rejected::Unsafe(_)) => {}
            Err(Rejected::Failed(e)) => return Err(e),
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
pub fn wait<S: Storage, C: Clock>(
    fs: &S,
    clock: &C,
    target: Target,
    options: &WaitOptions,
) -> Result<Version> {
    check_prefix(&options.prefix)?;
    match fs.stat("") {
        Ok(Some(m)) if m.kind == Kind::Dir => {}
        Ok(_) => {
            return Err(Error::NotFound(format!(
                "root {} is not a directory",
                fs.display("")
            )));
        }
        Err(e) => return Err(Error::io("inspect root", &fs.display(""), &e)),
    }
    let start = clock.now_ms();
    let deadline = options.timeout_ms.map(|t| start.saturating_add(t));
    let mut first_mismatch: Option<u64> = None;
    let mut listed_at: Option<u64> = None;
    let mut listed: Vec<u64> = Vec::new();
    let mut pause = 2u64.min(options.poll_ms.max(1));
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
                        .is_none_or(|at| clock.now_ms().saturating_sub(at) >= LIST_EVERY_MS) =>
                {
                    listed_at = Some(clock.now_ms());
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
                let now = clock.now_ms();
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
                let now = clock.now_ms();
                match next {
                    Some(Ok(version)) => Ok(version),
                    Some(Err(Rejected::Failed(e))) => return Err(e),
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
                clock,
                &options.prefix,
                version.step,
                &request.holder,
                request.ttl_ms,
            ) {
                Ok(_) => outcome,
                // gc unpublished it between our check and our pin: look again.
                Err(Error::NotFound(why)) => Err(Rejected::NotCommitted(why)),
                Err(e) => return Err(e),
            };
        }
        let now = clock.now_ms();
        let expired = deadline.is_some_and(|d| now >= d);
        match outcome {
            Ok(version) => return Ok(version),
            Err(Rejected::Failed(e)) => return Err(e),
            Err(Rejected::Unsafe(why)) => return Err(Error::Integrity(why)),
            Err(Rejected::Mismatch(why)) => {
                let since = *first_mismatch.get_or_insert(now);
                if expired || now.saturating_sub(since) >= options.settle_ms {
                    return Err(Error::Integrity(why));
                }
            }
            Err(Rejected::NotCommitted(why)) => {
                first_mismatch = None;
                if expired {
                    return Err(Error::TimedOut(format!(
                        "timed out after {} ms: {why}",
                        now.saturating_sub(start)
                    )));
                }
            }
        }
        // Jitter: between half and all of the pause.
        let jittered = pause / 2 + clock.random_u64() % (pause / 2 + 1);
        let sleep = match deadline {
            Some(d) => jittered.min(d.saturating_sub(now)).max(1),
            None => jittered.max(1),
        };
        clock.sleep_ms(sleep);
        pause = (pause * 2).min(options.poll_ms.max(1));
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
        let committed = fs
            .stat(&join(&dir, STABLE_NAME))
            .map_err(|e| Error::io("inspect", &fs.display(&dir), &e))?
            .is_some();
        let mut info = StepInfo {
            step,
            path: fs.display(&dir),
            state: StepState::Incomplete,
            files: 0,
            bytes: 0,
        };
        if committed {
            match read_manifest(fs, &dir) {
                Ok(m) if m.step == step => {
                    info.state = StepState::Committed;
                    info.files = m.files.len() as u32;
                    info.bytes = m.bytes();
                }
                Ok(_)
                | Err(Rejected::Mismatch(_) | Rejected::Unsafe(_) | Rejected::NotCommitted(_)) => {
                    info.state = StepState::Corrupt;
                }
                Err(Rejected::Failed(e)) => return Err(e),
            }
        }
        infos.push(info);
    }
    Ok(infos)
}
