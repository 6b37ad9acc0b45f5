//! Retention: reader pins, gc, and fsck.
//!
//! Protocol version 2 lets the server decide between gc and a reader, so no
//! client's cache can make both think they won. Every step has a pin
//! directory, `step_N/.handoff.pins/`, created before `STABLE`:
//! - a reader pins by an exclusive create of a uniquely named file in it;
//! - gc claims the step by removing the directory, which the server refuses
//!   while it holds a pin; once it is gone, every later pin's create fails.
//!
//! Whichever of the create and the removal the server does first wins. Pin
//! ages are read from the times the server stamps on files, never from a
//! node's clock.
//!
//! Steps of version 1 have no pin directory; their pins live in
//! `.handoff/pins/` and the race is closed by ordering, as in Dekker's
//! algorithm: the reader writes its pin, then opens `STABLE`; gc removes
//! `STABLE`, then reads the pins. docs/PROTOCOL.md argues both.

use std::io;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{
    CLOCK_PREFIX, FETCH_ROOT_MARKER, FETCH_STAGING_GRACE, HANDOFF_DIR, PINS_DIR, STAGING_DIR,
    STEP_PINS_NAME, TRASH_DIR, check_prefix, is_other_prefix_staging, parse_step, step_name,
};
use crate::manifest::STABLE_NAME;
use crate::storage::{Kind, Platform, Storage, join, write_all_at};
use crate::tree::{Flusher, ensure_dir, remove_tree};
use crate::types::{
    FsckEntry, FsckOptions, GcFailure, GcOptions, GcReport, PinInfo, StepState, Verify, millis,
};
use crate::validate::{
    ReadErrors, Rejected, check, check_as, check_contents, is_absent, opens, read_manifest,
};

/// Check a pin holder id: it becomes a file name.
pub fn check_holder(holder: &str) -> Result<()> {
    let ok = !holder.is_empty()
        && holder.len() <= 128
        && !holder.starts_with('.')
        && holder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "invalid holder {holder:?}: use 1 to 128 letters, digits, `.`, `_`, `-`, `:` or `@`, \
             not starting with `.`"
            ),
        ))
    }
}

fn pin_dir(prefix: &str, step: u64) -> String {
    join(PINS_DIR, &step_name(prefix, step))
}

/// The pin directory inside a version 2 step.
fn step_pins_dir(prefix: &str, step: u64) -> String {
    join(&step_name(prefix, step), STEP_PINS_NAME)
}

/// A version 2 pin's file name, `<holder>+<ttl_ms>+<16 hex digits>`: the
/// whole pin, so that one exclusive create makes it (no content to be read
/// half-written). `+` cannot occur in a holder.
pub(crate) fn pin_file_name(holder: &str, ttl_ms: u64, unique: u64) -> String {
    format!("{holder}+{ttl_ms}+{unique:016x}")
}

/// The holder and ttl of a version 2 pin's file name.
pub(crate) fn parse_pin_file_name(name: &str) -> Option<(&str, u64)> {
    let mut parts = name.rsplitn(3, '+');
    let unique = parts.next()?;
    let ttl = parts.next()?;
    let holder = parts.next()?;
    let ok = unique.len() == 16
        && unique.bytes().all(|b| b.is_ascii_hexdigit())
        && !ttl.is_empty()
        && ttl.bytes().all(|b| b.is_ascii_digit())
        && check_holder(holder).is_ok();
    Some((holder, ttl.parse().ok()?)).filter(|_| ok)
}

/// The protocol version of `step`'s manifest.
fn step_protocol<S: Storage>(fs: &S, prefix: &str, step: u64) -> Result<u32, Rejected> {
    read_manifest(fs, &step_name(prefix, step)).map(|m| m.version)
}

/// Pin committed `step` for `holder` for `ttl`. Pinning again renews the
/// pin: a new one is made, then the holder's older ones on the step removed.
///
/// On a version 2 step the pin's expiry is by the server's clock (the time it
/// stamped on the pin file); on a version 1 step, by this node's.
pub fn pin<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    prefix: &str,
    step: u64,
    holder: &str,
    ttl: Duration,
) -> Result<PinInfo> {
    let ttl_ms = millis(ttl);
    check_prefix(prefix)?;
    check_holder(holder)?;
    let not_committed = |why: String| {
        Error::new(
            ErrorKind::NotFound,
            format!("cannot pin step {step}: {why}"),
        )
    };
    let protocol =
        match check(fs, prefix, step, Verify::Size).and_then(|_| step_protocol(fs, prefix, step)) {
            Ok(protocol) => protocol,
            Err(Rejected::NotCommitted(why)) => return Err(not_committed(why)),
            Err(Rejected::Mismatch(e) | Rejected::Unsafe(e)) => {
                return Err(not_committed(e.message().to_string()));
            }
            Err(Rejected::Failed(e)) => return Err(e),
        };
    if protocol < 2 {
        return pin_v1(fs, platform, prefix, step, holder, ttl_ms);
    }
    let dir = step_pins_dir(prefix, step);
    let path = join(&dir, &pin_file_name(holder, ttl_ms, platform.random_u64()));
    let claimed = || {
        not_committed(format!(
            "gc has claimed it for removal: no {}",
            fs.display(&dir)
        ))
    };
    // The create is the decision: it fails once gc has removed the directory.
    let mut listed = false;
    let file = loop {
        match fs.create_new(&path) {
            Ok(file) => break file,
            Err(e) if is_absent(&e) => {
                // This node may hold the directory as absent from a look-up
                // before the step was sealed (an NFS negative look-up):
                // listing the step makes it look again.
                if listed {
                    return Err(claimed());
                }
                listed = true;
                let step_dir = step_name(prefix, step);
                let entries = fs
                    .read_dir(&step_dir)
                    .map_err(|e| Error::io("list", &fs.display(&step_dir), &e))?;
                if !entries.iter().any(|e| e.name == STEP_PINS_NAME) {
                    return Err(claimed());
                }
            }
            Err(e) => return Err(Error::io("create pin", &fs.display(&path), &e)),
        }
    };
    drop(file);
    let mut flush = Flusher::new(fs);
    let stamped = flush.dir(&dir).and_then(|()| {
        fs.stat(&path)
            .map_err(|e| Error::io("inspect", &fs.display(&path), &e))
    });
    let created_ms = match stamped {
        Ok(Some(meta)) if meta.modified_ms > 0 => meta.modified_ms,
        Ok(Some(_)) => platform.now_ms(),
        Ok(None) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot pin step {step}: {} was removed as soon as it was made \
                 (a ttl of {ttl_ms} ms is too short for gc's clock skew allowance)",
                    fs.display(&path)
                ),
            ));
        }
        Err(e) => {
            let _ = fs.remove_file(&path);
            return Err(e);
        }
    };
    // Renewal: the new pin holds the step, so the older ones can go.
    let ours = path.rsplit('/').next().unwrap_or_default();
    for (name, _) in holder_pins(fs, &dir, holder)? {
        if name != ours {
            let _ = fs.remove_file(&join(&dir, &name));
        }
    }
    Ok(PinInfo {
        step,
        holder: holder.to_string(),
        expires_ms: created_ms.saturating_add(ttl_ms),
    })
}

/// `holder`'s version 2 pins in pin directory `dir`: file names and ttls.
fn holder_pins<S: Storage>(fs: &S, dir: &str, holder: &str) -> Result<Vec<(String, u64)>> {
    Ok(list_or_empty(fs, dir)?
        .into_iter()
        .filter_map(|entry| {
            let (h, ttl) = parse_pin_file_name(&entry.name)?;
            (h == holder).then(|| (entry.name.clone(), ttl))
        })
        .collect())
}

/// Pin a version 1 step: the pin file in `.handoff/pins/`, then `STABLE`
/// opened again (see the module docs).
fn pin_v1<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    prefix: &str,
    step: u64,
    holder: &str,
    ttl_ms: u64,
) -> Result<PinInfo> {
    let not_committed = |why: String| {
        Error::new(
            ErrorKind::NotFound,
            format!("cannot pin step {step}: {why}"),
        )
    };
    let info = PinInfo {
        step,
        holder: holder.to_string(),
        expires_ms: platform.now_ms().saturating_add(ttl_ms),
    };
    let mut flush = Flusher::new(fs);
    ensure_dir(&mut flush, HANDOFF_DIR, "")?;
    ensure_dir(&mut flush, PINS_DIR, HANDOFF_DIR)?;
    let dir = pin_dir(prefix, step);
    let path = join(&dir, holder);
    // Written whole under a temporary name and renamed: gc never reads a
    // half-written pin. Another holder's unpin may remove the (then empty)
    // directory between our mkdir and our create: make it again.
    let tmp = join(
        &dir,
        &format!(".{holder}.{:016x}.tmp", platform.random_u64()),
    );
    let mut attempts = 0;
    let mut file = loop {
        ensure_dir(&mut flush, &dir, PINS_DIR)?;
        match fs.create_new(&tmp) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
            Err(e) => return Err(Error::io("create", &fs.display(&tmp), &e)),
        }
    };
    let result = (|| {
        let bytes = serde_json::to_vec(&info).expect("a pin always serializes");
        write_all_at(&mut file, &bytes, 0)
            .map_err(|e| Error::io("write", &fs.display(&tmp), &e))?;
        flush.file(&mut file, &tmp)?;
        drop(file);
        fs.rename(&tmp, &path)
            .map_err(|e| Error::io("rename pin to", &fs.display(&path), &e))?;
        flush.dir(&dir)
    })();
    if let Err(e) = result {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    // The pin is in place; only now may the step be used, if gc has not
    // already unpublished it (see the module docs).
    // Opened, not `stat`ed: a client's cached attributes could still show
    // a `STABLE` gc removed a moment ago on another node.
    let stable = join(&step_name(prefix, step), STABLE_NAME);
    match opens(fs, &stable) {
        Ok(true) => Ok(info),
        Ok(false) => {
            let _ = fs.remove_file(&path);
            Err(not_committed(format!(
                "it was removed while pinning: no {}",
                fs.display(&stable)
            )))
        }
        Err(e) => Err(Error::io("open", &fs.display(&stable), &e)),
    }
}

/// Release `holder`'s pins on `step`.
pub fn unpin<S: Storage>(fs: &S, prefix: &str, step: u64, holder: &str) -> Result<()> {
    check_prefix(prefix)?;
    check_holder(holder)?;
    let dir = step_pins_dir(prefix, step);
    let mut released = Vec::new();
    for (name, _) in holder_pins(fs, &dir, holder)? {
        let path = join(&dir, &name);
        match fs.remove_file(&path) {
            Ok(()) => released.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &fs.display(&path), &e)),
        }
    }
    // A version 1 pin. Its directory stays while the step does: gc relies
    // on it existing (see gc).
    let v1 = join(&pin_dir(prefix, step), holder);
    match fs.remove_file(&v1) {
        Ok(()) => released.push(pin_dir(prefix, step)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) => {}
        Err(e) => return Err(Error::io("remove", &fs.display(&v1), &e)),
    }
    if released.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "{holder} holds no pin on step {step}: none in {} or {}",
                fs.display(&dir),
                fs.display(&pin_dir(prefix, step))
            ),
        ));
    }
    // Durable release is not needed for safety (a lost unpin only delays gc
    // until the pin expires), but flush anyway so gc can act sooner.
    released.dedup();
    for dir in released {
        let _ = fs.sync_dir(&dir);
    }
    Ok(())
}

/// A step's pin holders with their parsed pins.
type Holders = Vec<(String, Option<PinInfo>)>;

/// Every pin directory: step and its holders with their parsed pins (`None`
/// for a malformed pin, which counts as held: a broken pin must not let gc
/// delete what a reader may be using; fsck reports it).
fn pins<S: Storage>(fs: &S, prefix: &str) -> Result<Vec<(u64, Holders)>> {
    let entries = match fs.read_dir(PINS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &fs.display(PINS_DIR), &e)),
    };
    let mut all = Vec::new();
    for entry in entries {
        let Some(step) = parse_step(prefix, &entry.name) else {
            continue;
        };
        if entry.kind != Kind::Dir {
            continue;
        }
        all.push((step, step_pins(fs, prefix, step)?));
    }
    all.sort_by_key(|(step, _)| *step);
    Ok(all)
}

fn step_pins<S: Storage>(fs: &S, prefix: &str, step: u64) -> Result<Holders> {
    let dir = pin_dir(prefix, step);
    let entries = match fs.read_dir(&dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(Error::io("list", &fs.display(&dir), &e)),
    };
    let mut holders = Vec::new();
    for entry in entries {
        if entry.name.starts_with('.') {
            continue; // a pin being written
        }
        let parsed = match entry.kind {
            Kind::File => match read_pin(fs, &join(&dir, &entry.name)) {
                PinRead::Gone => continue, // unpinned while we listed
                PinRead::Malformed => None,
                PinRead::Pin(p) => Some(p).filter(|p| p.step == step && p.holder == entry.name),
            },
            _ => None,
        };
        holders.push((entry.name, parsed));
    }
    Ok(holders)
}

enum PinRead {
    Pin(PinInfo),
    Malformed,
    Gone,
}

fn read_pin<S: Storage>(fs: &S, path: &str) -> PinRead {
    use crate::storage::StorageFile;
    let mut file = match crate::storage::open_file(fs, path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return PinRead::Gone,
        Err(_) => return PinRead::Malformed,
    };
    let Ok(size) = file.size() else {
        return PinRead::Malformed;
    };
    if size > 4096 {
        return PinRead::Malformed;
    }
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    match serde_json::from_slice(&buf[..filled]) {
        Ok(pin) => PinRead::Pin(pin),
        Err(_) => PinRead::Malformed,
    }
}

/// Whether an unexpired (or unreadable) pin holds `step`.
fn is_pinned<S: Storage>(fs: &S, prefix: &str, step: u64, now: u64, skew_ms: u64) -> Result<bool> {
    Ok(step_pins(fs, prefix, step)?
        .iter()
        .any(|(_, pin)| match pin {
            Some(pin) => now < pin.expires_ms.saturating_add(skew_ms),
            None => true,
        }))
}

/// Step directories in the root, ascending, each with whether it holds
/// `STABLE` (or why that could not be told). Only a root that cannot be
/// listed is an error.
fn step_dirs<S: Storage>(fs: &S, prefix: &str) -> Result<Vec<(u64, Result<bool>)>> {
    let entries = fs
        .read_dir("")
        .map_err(|e| Error::io("list", &fs.display(""), &e))?;
    let mut steps = Vec::new();
    for entry in entries {
        if entry.kind != Kind::Dir {
            continue;
        }
        if let Some(step) = parse_step(prefix, &entry.name) {
            let stable = join(&entry.name, STABLE_NAME);
            // Only a regular file commits (a directory named STABLE does not).
            let committed = fs
                .stat(&stable)
                .map(|meta| meta.is_some_and(|m| m.kind == Kind::File))
                .map_err(|e| Error::io("inspect", &fs.display(&stable), &e));
            steps.push((step, committed));
        }
    }
    steps.sort_unstable_by_key(|(step, _)| *step);
    Ok(steps)
}

/// How gc finds a version 2 step beyond `keep`.
pub(crate) enum Claim {
    /// An unexpired (or unreadable) pin holds it.
    Pinned,
    /// gc removed its pin directory: no pin can be made any more.
    Claimed,
    /// Another gc removed the pin directory meanwhile and removes the step.
    Taken,
}

/// The server's time: the modification time it stamps on a file created
/// now. Pin files carry times stamped the same way, so comparing the two
/// never mixes clocks of different nodes. Falls back to this node's clock on
/// a storage that reports no times. `None`: no room for the file (the
/// filesystem or the quota is full).
fn server_now<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
) -> Result<Option<u64>> {
    let fs = flush.fs;
    if !ensure_dir_if_room(flush, HANDOFF_DIR, "")? {
        return Ok(None);
    }
    let path = format!("{CLOCK_PREFIX}{:016x}", platform.random_u64());
    match fs.create_new(&path) {
        Ok(file) => drop(file),
        Err(e) if is_full(&e) => return Ok(None),
        Err(e) => return Err(Error::io("create", &fs.display(&path), &e)),
    }
    let meta = fs.stat(&path);
    let _ = fs.remove_file(&path);
    match meta {
        Ok(Some(meta)) if meta.modified_ms > 0 => Ok(Some(meta.modified_ms)),
        Ok(_) => Ok(Some(platform.now_ms())),
        Err(e) => Err(Error::io("inspect", &fs.display(&path), &e)),
    }
}

/// The time gc measures every age against (pins, abandoned staging).
struct Clock {
    now: u64,
    /// Read from this node's clock: there was no room for a clock file.
    local: bool,
}

impl Clock {
    /// The server's time where there is room for a clock file. A full
    /// filesystem is when gc is needed most, so without room it takes this
    /// node's clock less the skew allowance: no later than the server's
    /// while the clocks differ by less than the allowance (what version 1
    /// pins already assume). An early reading only keeps a pin or a staging
    /// directory longer.
    fn read<S: Storage, P: Platform>(
        flush: &mut Flusher<'_, S>,
        platform: &P,
        skew_ms: u64,
    ) -> Result<Clock> {
        Ok(match server_now(flush, platform)? {
            Some(now) => Clock { now, local: false },
            None => Clock {
                now: platform.now_ms().saturating_sub(skew_ms),
                local: true,
            },
        })
    }

    /// After gc changed directory `dir`: the server has just stamped its
    /// modification time, a reading of its clock that needs no room. Taken
    /// where it is later than this node's.
    fn changed<S: Storage>(&mut self, fs: &S, dir: &str) {
        if let (true, Ok(Some(meta))) = (self.local, fs.stat(dir)) {
            self.now = self.now.max(meta.modified_ms);
        }
    }
}

/// Whether `err` says the filesystem, or the caller's quota, is full.
fn is_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// [`ensure_dir`], except that a directory there is no room to create is
/// `Ok(false)`, not an error.
fn ensure_dir_if_room<S: Storage>(
    flush: &mut Flusher<'_, S>,
    path: &str,
    parent: &str,
) -> Result<bool> {
    let fs = flush.fs;
    let full = match fs.create_dir(path) {
        Ok(()) => return flush.dir(parent).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        // A server may check for room before it looks the name up.
        Err(e) if is_full(&e) => true,
        Err(_) => return ensure_dir(flush, path, parent).map(|()| true),
    };
    match fs.stat(path) {
        Ok(Some(meta)) if meta.kind == Kind::Dir => Ok(true),
        Ok(None) if full => Ok(false),
        // Gone meanwhile, or something else in the way: ensure_dir makes it
        // or says what is wrong.
        _ => ensure_dir(flush, path, parent).map(|()| true),
    }
}

/// Try to claim version 2 `step` for removal: remove its expired pins, then
/// its pin directory, which the server refuses while a pin is in it.
fn claim<S: Storage>(fs: &S, prefix: &str, step: u64, now_ms: u64, skew_ms: u64) -> Result<Claim> {
    let dir = step_pins_dir(prefix, step);
    let stable = join(&step_name(prefix, step), STABLE_NAME);
    let floor = match fs.stat(&stable) {
        Ok(meta) => meta.map_or(0, |m| m.modified_ms.saturating_sub(skew_ms)),
        Err(e) => return Err(Error::io("inspect", &fs.display(&stable), &e)),
    };
    for entry in list_or_empty(fs, &dir)? {
        let path = join(&dir, &entry.name);
        let Some((_, ttl)) = parse_pin_file_name(&entry.name).filter(|_| entry.kind == Kind::File)
        else {
            return Ok(Claim::Pinned); // unreadable: held (fsck reports it)
        };
        let stamped = match fs.stat(&path) {
            Ok(Some(meta)) => meta.modified_ms,
            Ok(None) => continue, // released while we listed
            Err(e) => return Err(Error::io("inspect", &fs.display(&path), &e)),
        };
        // A pin is made after its step was committed, so a time before
        // that (less the skew allowance) is not the pin's: an NFSv4
        // exclusive create keeps its verifier in the file's times until the
        // client replaces them with the server's, one round trip later, and
        // this node may have read and cached them in between. Held.
        if stamped < floor || now_ms < stamped.saturating_add(ttl).saturating_add(skew_ms) {
            return Ok(Claim::Pinned);
        }
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove expired pin", &fs.display(&path), &e)),
        }
    }
    claim_pins(fs, &dir)
}

/// Claim a version 2 step by removing its pin directory `dir`: the server
/// refuses while a pin is in it, and once it is gone no pin can be made.
pub(crate) fn claim_pins<S: Storage>(fs: &S, dir: &str) -> Result<Claim> {
    match fs.remove_dir(dir) {
        Ok(()) => Ok(Claim::Claimed),
        // A pin came in after our listing: the server kept the directory.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
            ) =>
        {
            Ok(Claim::Pinned)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Claim::Taken),
        Err(e) => Err(Error::io("remove", &fs.display(dir), &e)),
    }
}

/// Remove committed steps beyond the newest `keep` that no unexpired pin
/// holds, abandoned staging directories, leftover trash, and expired pins.
///
/// A version 2 step is claimed first (its pin directory removed, which fails
/// while a pin is in it), then `STABLE` is removed and the step directory
/// flushed, then the directory is renamed into trash, the root flushed, and
/// the tree deleted. A version 1 step goes as version 1 did: `STABLE` removed,
/// pins read again (a reader that pinned meanwhile keeps it: `STABLE` is put
/// back), then trash. A crash at any point leaves a committed step, a claimed
/// one (which the next gc finishes), an incomplete one, or trash; fsck
/// --repair settles all of them.
///
/// An abandoned staging directory is claimed by renaming it into trash
/// before it is deleted, so a publisher that stalled past the grace period
/// fails instead of committing a half-deleted tree.
///
/// A full filesystem does not stop gc: without room for its clock file it
/// reads this node's clock less the skew allowance, and without room for the
/// trash directory it deletes an unpublished step where it is.
///
/// Whatever fails for one entry is reported in [`GcReport::failed`] and gc
/// goes on with the rest. Only what makes the whole run meaningless is an
/// error: a bad prefix, `keep` 0, a root that cannot be listed, a clock that
/// cannot be read.
pub fn gc<S: Storage, P: Platform>(fs: &S, platform: &P, options: &GcOptions) -> Result<GcReport> {
    check_prefix(&options.prefix)?;
    if options.keep == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "keep must be at least 1: gc never removes the newest step",
        ));
    }
    let prefix = options.prefix.as_str();
    let skew_ms = millis(options.skew);
    let mut report = GcReport::default();
    let mut flush = Flusher::new(fs);
    let mut committed = Vec::new();
    // A step whose state cannot be read is reported and left alone: it is
    // not known to be committed, nor whether it validates.
    let mut unknown = Vec::new();
    for (step, stable) in step_dirs(fs, prefix)? {
        match stable {
            Ok(true) => committed.push(step),
            Ok(false) => {}
            Err(e) => unknown.push((step, e)),
        }
    }
    // Only steps a reader would accept count toward `keep`: a newer step that
    // does not validate (`STABLE` without a manifest, a corrupt manifest, a
    // short file) must not push the newest good one out. It is reported and
    // left alone; everything older than the oldest step kept may go. One
    // that cannot be checked does not count either, so it can only make gc
    // keep more.
    let mut valid = Vec::new();
    for &step in &committed {
        match check(fs, prefix, step, Verify::Size) {
            Ok(_) => valid.push(step),
            Err(Rejected::Mismatch(_) | Rejected::Unsafe(_)) => report.invalid.push(step),
            // Another gc took it meanwhile.
            Err(Rejected::NotCommitted(_)) => {}
            Err(Rejected::Failed(e)) => unknown.push((step, e)),
        }
    }
    let split = valid.len().saturating_sub(options.keep as usize);
    report.kept = valid[split..].to_vec();
    let oldest_kept = report.kept.first().copied();
    let old: Vec<u64> = committed
        .iter()
        .copied()
        .filter(|&step| oldest_kept.is_some_and(|kept| step < kept))
        .collect();
    report.invalid.retain(|step| !old.contains(step));
    unknown.sort_by_key(|(step, _)| *step);
    for (step, error) in unknown {
        if !old.contains(&step) {
            report.failed.push(GcFailure {
                name: step_name(prefix, step),
                error,
            });
        }
    }
    let mut clock = Clock::read(&mut flush, platform, skew_ms)?;

    for &step in &old {
        match remove_step(&mut flush, platform, prefix, step, clock.now, skew_ms) {
            Ok(Fate::Removed) => {
                report.removed.push(step);
                clock.changed(fs, "");
            }
            Ok(Fate::Pinned) => report.pinned.push(step),
            Ok(Fate::Skipped) => {}
            Err(error) => report.failed.push(GcFailure {
                name: step_name(prefix, step),
                error,
            }),
        }
    }

    // Abandoned staging: nothing in it changed for the grace period. A
    // publisher at work keeps writing, so its newest mtime stays fresh. Both
    // times are the server's.
    let staging_options = GcOptions {
        grace: staging_grace(fs, options.grace),
        ..options.clone()
    };
    match list_or_empty(fs, STAGING_DIR) {
        Ok(entries) => {
            for entry in entries {
                if is_other_prefix_staging(prefix, &entry.name) {
                    continue; // its own prefix's gc looks after it
                }
                let path = join(STAGING_DIR, &entry.name);
                match remove_staging(&mut flush, platform, &path, clock.now, &staging_options) {
                    Ok(true) => report.staging_removed.push(entry.name),
                    Ok(false) => {}
                    Err(error) => report.failed.push(GcFailure { name: path, error }),
                }
            }
        }
        Err(error) => report.failed.push(GcFailure {
            name: STAGING_DIR.to_string(),
            error,
        }),
    }
    // Trash: what this gc moved there and what an earlier one left. A file
    // in it still open on some NFS client is renamed `.nfsXXXX` there and
    // cannot go until it is closed (the server answers busy, or not empty):
    // such trash is left for a later gc without a word. Anything else that
    // cannot go is reported.
    match list_or_empty(fs, TRASH_DIR) {
        Ok(entries) => {
            for entry in entries {
                let path = join(TRASH_DIR, &entry.name);
                match remove_tree(fs, &path) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::ResourceBusy
                        ) => {}
                    Err(e) => report.failed.push(GcFailure {
                        error: Error::io("remove", &fs.display(&path), &e),
                        name: path,
                    }),
                }
            }
        }
        Err(error) => report.failed.push(GcFailure {
            name: TRASH_DIR.to_string(),
            error,
        }),
    }
    // Clock files a crashed gc left behind (a minute old: not another gc's).
    for entry in list_or_empty(fs, HANDOFF_DIR).unwrap_or_default() {
        let path = join(HANDOFF_DIR, &entry.name);
        if path.starts_with(CLOCK_PREFIX)
            && entry.kind == Kind::File
            && fs
                .stat(&path)
                .ok()
                .flatten()
                .is_some_and(|m| clock.now.saturating_sub(m.modified_ms) > 60_000)
        {
            let _ = fs.remove_file(&path);
        }
    }
    if let Err(error) = remove_stale_v1_pins(fs, platform, prefix, skew_ms) {
        report.failed.push(GcFailure {
            name: PINS_DIR.to_string(),
            error,
        });
    }
    // Names in the root that are not the protocol's, `.nfsXXXX` among them
    // (an NFS client's stand-in for a file deleted while open, which that
    // client removes at the last close), are left alone.
    Ok(report)
}

/// Remove committed `step`, beyond `keep`, unless a pin holds it.
fn remove_step<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    prefix: &str,
    step: u64,
    now_ms: u64,
    skew_ms: u64,
) -> Result<Fate> {
    let dir = step_name(prefix, step);
    Ok(match step_generation(flush.fs, prefix, step)? {
        None => Fate::Skipped, // another gc removed it
        Some(Generation::V2) => match claim(flush.fs, prefix, step, now_ms, skew_ms)? {
            Claim::Pinned => Fate::Pinned,
            Claim::Taken => Fate::Skipped,
            Claim::Claimed => remove_claimed(flush, &dir, platform)?,
        },
        Some(Generation::V2Claimed) => remove_claimed(flush, &dir, platform)?,
        Some(Generation::V1) => remove_v1(flush, platform, prefix, step, skew_ms)?,
    })
}

/// Claim staging directory `path` if nothing in it changed for the grace
/// period, by renaming it into trash, where the trash sweep deletes it.
/// Whether it was claimed.
///
/// The rename is what makes deleting it safe: a publisher that stalled past
/// the grace period (a paused node, a huge file hashed) may be about to
/// rename it into place, and deleting it where it is could let a
/// half-deleted tree be committed. After the rename the publisher's next
/// change, or its own rename, fails: not found. Whichever rename the server
/// does first wins. Without room for the trash directory it is left for a
/// later gc, never deleted in place.
fn remove_staging<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    path: &str,
    now_ms: u64,
    options: &GcOptions,
) -> Result<bool> {
    let fs = flush.fs;
    let newest = match newest_mtime(fs, path) {
        Ok(newest) => newest,
        // Committed or given up meanwhile.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("inspect", &fs.display(path), &e)),
    };
    if now_ms.saturating_sub(newest) <= millis(options.grace) {
        return Ok(false);
    }
    match into_trash(flush, path, platform)? {
        Trashed::At(_) => Ok(true),
        Trashed::Gone => Ok(false),
        Trashed::NoRoom => Err(no_room(fs, path)),
    }
}

/// Expired version 1 pins (by the pinners' clocks, compared with ours), and
/// pins of steps that are gone.
fn remove_stale_v1_pins<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    prefix: &str,
    skew_ms: u64,
) -> Result<()> {
    let local_now = platform.now_ms();
    let live: Vec<u64> = step_dirs(fs, prefix)?.into_iter().map(|(s, _)| s).collect();
    for (step, holders) in pins(fs, prefix)? {
        for (holder, pin) in holders {
            let expired = pin
                .as_ref()
                .is_some_and(|p| local_now >= p.expires_ms.saturating_add(skew_ms));
            if expired || (!live.contains(&step) && pin.is_some()) {
                let _ = fs.remove_file(&join(&pin_dir(prefix, step), &holder));
            }
        }
        if !live.contains(&step) {
            let _ = fs.remove_dir(&pin_dir(prefix, step));
        }
    }
    Ok(())
}

/// What gc did with one step beyond `keep`.
enum Fate {
    Removed,
    Pinned,
    /// Another gc is removing it.
    Skipped,
}

/// Which rules a committed step follows.
enum Generation {
    /// Version 1: pins in `.handoff/pins/`.
    V1,
    /// Version 2 with its pin directory: not claimed.
    V2,
    /// Version 2 without it: claimed by a gc that did not finish.
    V2Claimed,
}

/// Which rules committed `step` follows. The step directory is listed rather
/// than its pin directory looked up: a node may hold that name as absent
/// from before the step was sealed (an NFS negative look-up), and a listing
/// makes it look again. `None`: the step is gone.
fn step_generation<S: Storage>(fs: &S, prefix: &str, step: u64) -> Result<Option<Generation>> {
    let dir = step_name(prefix, step);
    let entries = match fs.read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", &fs.display(&dir), &e)),
    };
    if entries.iter().any(|e| e.name == STEP_PINS_NAME) {
        return Ok(Some(Generation::V2));
    }
    Ok(Some(match step_protocol(fs, prefix, step) {
        Ok(version) if version >= 2 => Generation::V2Claimed,
        _ => Generation::V1,
    }))
}

/// Unpublish a claimed step and move it to trash.
fn remove_claimed<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    platform: &P,
) -> Result<Fate> {
    let fs = flush.fs;
    let stable = join(dir, STABLE_NAME);
    match fs.remove_file(&stable) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Fate::Skipped),
        Err(e) => return Err(Error::io("remove", &fs.display(&stable), &e)),
    }
    // The claim and the unpublishing are durable before the step's name goes.
    flush.dir(dir)?;
    discard(flush, dir, platform, false)?;
    Ok(Fate::Removed)
}

/// Remove version 1 `step` unless a pin holds it: `STABLE` removed, pins
/// read again, `STABLE` put back if one appeared (see the module docs).
fn remove_v1<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    prefix: &str,
    step: u64,
    skew_ms: u64,
) -> Result<Fate> {
    let fs = flush.fs;
    // The pin directory must exist before the first check: gc then reads
    // a directory it knows, never a name its node may have cached as
    // absent (NFS negative look-ups), which would hide a new pin in the
    // check after unpublishing.
    ensure_dir(flush, HANDOFF_DIR, "")?;
    ensure_dir(flush, PINS_DIR, HANDOFF_DIR)?;
    ensure_dir(flush, &pin_dir(prefix, step), PINS_DIR)?;
    // Version 1 pins carry the pinner's clock: compare with ours.
    if is_pinned(fs, prefix, step, platform.now_ms(), skew_ms)? {
        return Ok(Fate::Pinned);
    }
    let dir = step_name(prefix, step);
    let stable = join(&dir, STABLE_NAME);
    match fs.remove_file(&stable) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Fate::Skipped),
        Err(e) => return Err(Error::io("remove", &fs.display(&stable), &e)),
    }
    flush.dir(&dir)?;
    if is_pinned(fs, prefix, step, platform.now_ms(), skew_ms)? {
        // A reader pinned between our two reads and may have seen STABLE:
        // republish. The manifest and data were never touched.
        let mut file = fs
            .create_new(&stable)
            .map_err(|e| Error::io("recreate", &fs.display(&stable), &e))?;
        flush.file(&mut file, &stable)?;
        flush.dir(&dir)?;
        return Ok(Fate::Pinned);
    }
    discard(flush, &dir, platform, false)?;
    let _ = remove_tree(fs, &pin_dir(prefix, step));
    Ok(Fate::Removed)
}

fn list_or_empty<S: Storage>(fs: &S, dir: &str) -> Result<Vec<crate::storage::DirEntry>> {
    match fs.read_dir(dir) {
        Ok(mut entries) => {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", &fs.display(dir), &e)),
    }
}

/// The newest modification time anywhere in a tree.
fn newest_mtime<S: Storage>(fs: &S, path: &str) -> io::Result<u64> {
    let Some(meta) = fs.stat(path)? else {
        return Ok(0);
    };
    let mut newest = meta.modified_ms;
    if meta.kind == Kind::Dir {
        for entry in fs.read_dir(path)? {
            newest = newest.max(newest_mtime(fs, &join(path, &entry.name))?);
        }
    }
    Ok(newest)
}

/// Where [`into_trash`] put a directory.
enum Trashed {
    /// Renamed to this path in trash.
    At(String),
    /// Not there: another process moved or removed it first.
    Gone,
    /// Left where it was: no room for the trash directory.
    NoRoom,
}

/// How long a staging directory of this root must sit unchanged before it
/// is taken for abandoned: `grace`, or at most
/// [`FETCH_STAGING_GRACE`] in a fetch's local root (one whose staging
/// directories are only ever a fetch's, which writes without pause). A
/// root whose marker cannot be read gets `grace`.
fn staging_grace<S: Storage>(fs: &S, grace: Duration) -> Duration {
    match fs.stat(FETCH_ROOT_MARKER) {
        Ok(Some(_)) => grace.min(FETCH_STAGING_GRACE),
        _ => grace,
    }
}

/// Rename `dir` (relative to the root) into trash, durably. One atomic
/// step: whoever uses the old name afterwards (a publisher about to rename
/// its staging directory into place) finds nothing there.
fn into_trash<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    platform: &P,
) -> Result<Trashed> {
    let fs = flush.fs;
    if !ensure_dir_if_room(flush, HANDOFF_DIR, "")?
        || !ensure_dir_if_room(flush, TRASH_DIR, HANDOFF_DIR)?
    {
        return Ok(Trashed::NoRoom);
    }
    let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
    let target = join(TRASH_DIR, &format!("{name}.{:016x}", platform.random_u64()));
    match fs.rename(dir, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Trashed::Gone),
        Err(e) => return Err(Error::io("move into trash", &fs.display(dir), &e)),
    }
    // Both directories changed. The trash's flush makes the rename durable
    // (docs/FILESYSTEM.md, F4); the source's covers a filesystem that ties it
    // to the source directory instead (CephFS's client).
    flush.dir(parent)?;
    flush.dir(TRASH_DIR)?;
    Ok(Trashed::At(target))
}

/// The error for `path`, which needed the trash directory and found no room
/// to create it.
fn no_room<S: Storage>(fs: &S, path: &str) -> Error {
    let shown = fs.display(path);
    Error::new(
        ErrorKind::Io,
        format!(
            "left {shown} for a later gc: no room to create {}, and it must not be \
             deleted where it is",
            fs.display(TRASH_DIR)
        ),
    )
    .at(shown)
    .retryable(true)
}

/// Move unpublished `dir` (relative to the root) into trash durably, then
/// delete it; without room for the trash directory, delete it where it is.
fn move_to_trash<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    platform: &P,
) -> Result<()> {
    discard(flush, dir, platform, true)
}

/// Take unpublished `dir` (relative to the root) out of the root: renamed
/// into trash durably, and deleted there at once with `sweep` (else by gc's
/// trash sweep). Without room for the trash directory it is deleted where
/// it is. That is safe because it is unpublished already, and durably so: a
/// crash part way leaves an incomplete step, which readers ignore and fsck
/// --repair removes.
fn discard<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    platform: &P,
    sweep: bool,
) -> Result<()> {
    let fs = flush.fs;
    let (path, why) = match into_trash(flush, dir, platform)? {
        Trashed::At(target) if sweep => (target, String::new()),
        Trashed::At(_) | Trashed::Gone => return Ok(()),
        Trashed::NoRoom => (
            dir.to_string(),
            format!(
                " where it is (no room for {}); it is unpublished, and fsck --repair \
                 removes what is left",
                fs.display(TRASH_DIR)
            ),
        ),
    };
    remove_tree(fs, &path).map_err(|e| {
        let err = Error::io("remove", &fs.display(&path), &e);
        let message = format!("{}{why}", err.message());
        let path = err.path().map(str::to_string);
        Error::from_parts(err.kind(), message, path, err.is_retryable())
    })
}

/// Classify every entry of the root and, with `repair`, settle what a crash
/// left: broken steps and abandoned staging are removed (a corrupt step is
/// unpublished first), trash deleted, malformed or orphaned pins deleted.
/// Committed steps and names the protocol does not own are never touched.
///
/// [`fsck_with`] the default grace and settle periods.
pub fn fsck<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    prefix: &str,
    repair: bool,
) -> Result<Vec<FsckEntry>> {
    fsck_with(fs, platform, prefix, repair, &FsckOptions::default())
}

/// [`fsck`] with the evidence repair needs set by `options`.
///
/// Repair removes a step only on definite evidence that it is broken (a
/// missing `STABLE`, manifest or listed file, a wrong size, a manifest that
/// breaks the rules), seen again after `options.settle`, in a tree nothing in
/// which changed for `options.grace` by the server's clock, and that no
/// unexpired pin holds. An error reading it is reported, never acted on; a
/// younger tree may be a writer's at work. docs/PROTOCOL.md argues each rule.
pub fn fsck_with<S: Storage, P: Platform>(
    fs: &S,
    platform: &P,
    prefix: &str,
    repair: bool,
    options: &FsckOptions,
) -> Result<Vec<FsckEntry>> {
    check_prefix(prefix)?;
    let mut flush = Flusher::new(fs);
    let mut clock = RepairClock::new(options);
    let mut out = Vec::new();
    let mut root = fs
        .read_dir("")
        .map_err(|e| Error::io("list", &fs.display(""), &e))?;
    root.sort_by(|a, b| a.name.cmp(&b.name));
    let mut live = Vec::new();
    // Broken steps in old trees, by their place in `out`: looked at again
    // once the settle period has passed.
    let mut suspects = Vec::new();
    for entry in &root {
        if entry.name == HANDOFF_DIR {
            continue;
        }
        let Some(step) = parse_step(prefix, &entry.name).filter(|_| entry.kind == Kind::Dir) else {
            out.push(FsckEntry {
                name: entry.name.clone(),
                state: StepState::Stray,
                detail: None,
                action: None,
            });
            continue;
        };
        let (state, detail, evidence) = look(fs, prefix, step);
        live.push(step);
        // An incomplete step with a live pin is one gc unpublished and was
        // about to put back when it died (a reader pinned it meanwhile):
        // finish what gc would have done, if the payload is whole.
        if state == StepState::Incomplete
            && is_pinned(
                fs,
                prefix,
                step,
                platform.now_ms(),
                millis(GcOptions::DEFAULT_SKEW),
            )?
        {
            match check_contents(fs, prefix, step, Verify::Hash) {
                Ok(_) if repair => {
                    let stable = join(&entry.name, STABLE_NAME);
                    let mut file = fs
                        .create_new(&stable)
                        .map_err(|e| Error::io("recreate", &fs.display(&stable), &e))?;
                    flush.file(&mut file, &stable)?;
                    flush.dir(&entry.name)?;
                    out.push(FsckEntry {
                        name: entry.name.clone(),
                        state: StepState::Committed,
                        detail: Some("pinned, unpublished by an interrupted gc".into()),
                        action: Some("republished".into()),
                    });
                }
                Ok(_) => out.push(FsckEntry {
                    name: entry.name.clone(),
                    state,
                    detail: Some(
                        "pinned, unpublished by an interrupted gc; repair republishes it".into(),
                    ),
                    action: None,
                }),
                Err(_) => out.push(FsckEntry {
                    name: entry.name.clone(),
                    state,
                    detail: Some("incomplete but pinned: kept until the pin expires".into()),
                    action: None,
                }),
            }
            continue;
        }
        if state == StepState::Committed {
            match step_generation(fs, prefix, step)? {
                Some(Generation::V2Claimed) => {
                    // gc decided; the next gc finishes it. Repair leaves
                    // committed steps alone.
                    out.push(FsckEntry {
                        name: entry.name.clone(),
                        state,
                        detail: Some(
                            "claimed for removal by a gc that did not finish (no pin \
                             directory): the next gc removes it"
                                .into(),
                        ),
                        action: None,
                    });
                    continue;
                }
                Some(Generation::V2) => {
                    let dir = step_pins_dir(prefix, step);
                    for pin in list_or_empty(fs, &dir)? {
                        if pin.kind != Kind::File || parse_pin_file_name(&pin.name).is_none() {
                            out.push(stray_pin(
                                fs,
                                &join(&dir, &pin.name),
                                "malformed pin",
                                repair,
                            )?);
                        }
                    }
                }
                Some(Generation::V1) | None => {}
            }
        }
        let mut detail = detail;
        if repair && evidence {
            match clock.abandoned(&mut flush, platform, &entry.name)? {
                Ok(()) => suspects.push((out.len(), step)),
                Err(why) => detail = Some(format!("{}; {why}", detail.unwrap_or_default())),
            }
        }
        out.push(FsckEntry {
            name: entry.name.clone(),
            state,
            detail,
            action: None,
        });
    }

    if !suspects.is_empty() {
        platform.sleep_ms(millis(options.settle));
    }
    for (at, step) in suspects {
        let entry = &mut out[at];
        match second_look(&mut flush, platform, &mut clock, prefix, step, entry.state)? {
            Ok(()) => {
                entry.action = Some("removed".to_string());
                live.retain(|&s| s != step);
            }
            Err(why) => {
                let found = entry.detail.take().unwrap_or_default();
                entry.detail = Some(format!("{found}; {why}"));
            }
        }
    }

    let staging_grace_ms = millis(staging_grace(fs, options.grace));
    for (dir, state) in [
        (STAGING_DIR, StepState::Staging),
        (TRASH_DIR, StepState::Trash),
    ] {
        for entry in list_or_empty(fs, dir)? {
            if state == StepState::Staging && is_other_prefix_staging(prefix, &entry.name) {
                continue; // its own prefix's fsck looks after it
            }
            let path = join(dir, &entry.name);
            let mut action = None;
            let mut detail = None;
            if repair {
                // A publisher (or fetch) at work keeps its staging copy
                // fresh. Staging is renamed into trash before it is
                // deleted, as gc does: one that only stalled then fails at
                // its own rename, rather than commit a half-deleted tree.
                let abandoned = match state {
                    StepState::Staging => {
                        clock.abandoned_after(&mut flush, platform, &path, staging_grace_ms)?
                    }
                    _ => Ok(()),
                };
                let removed = match abandoned {
                    Ok(()) if state == StepState::Staging => {
                        match into_trash(&mut flush, &path, platform)? {
                            Trashed::At(trashed) => Ok(Some((trashed, TRASH_DIR))),
                            Trashed::Gone => Ok(None),
                            Trashed::NoRoom => Err(no_room(fs, &path).message().to_string()),
                        }
                    }
                    Ok(()) => Ok(Some((path.clone(), dir))),
                    Err(why) => Err(why),
                };
                match removed {
                    Ok(Some((at, parent))) => {
                        remove_tree(fs, &at)
                            .map_err(|e| Error::io("remove", &fs.display(&at), &e))?;
                        flush.dir(parent)?;
                        action = Some("removed".to_string());
                    }
                    Ok(None) => action = Some("gone meanwhile".to_string()),
                    Err(why) => detail = Some(why),
                }
            }
            out.push(FsckEntry {
                name: path,
                state,
                detail,
                action,
            });
        }
    }

    // Pins: a malformed pin (or one that is a directory) blocks gc forever,
    // and a pin on a step that is gone is noise.
    for entry in list_or_empty(fs, PINS_DIR)? {
        let dir = join(PINS_DIR, &entry.name);
        let step = parse_step(prefix, &entry.name).filter(|_| entry.kind == Kind::Dir);
        let Some(step) = step else {
            // Every prefix keeps its version 1 pins here: a directory that
            // is not this prefix's may hold another prefix's live pins.
            // Only what is no pin directory at all is repaired.
            let (why, repair) = if entry.kind == Kind::Dir {
                (
                    "not a pin directory of this prefix (another prefix's?): left",
                    false,
                )
            } else {
                ("not a pin directory", repair)
            };
            out.push(stray_pin(fs, &dir, why, repair)?);
            continue;
        };
        for (holder, pin) in step_pins(fs, prefix, step)? {
            let path = join(&dir, &holder);
            let why = match pin {
                None => "malformed pin",
                Some(_) if !live.contains(&step) => "pin on a step that does not exist",
                Some(_) => continue,
            };
            out.push(stray_pin(fs, &path, why, repair)?);
        }
        if repair {
            let _ = fs.remove_dir(&dir); // only if now empty
        }
    }
    Ok(out)
}

/// What one look at `step` finds: its state, what is wrong with it, and
/// whether that is evidence repair may act on. An error reading it is not:
/// an NFS soft mount returns `EIO` for a server that is slow, `ESTALE` and
/// `EACCES` say nothing of the bytes, `EMFILE` is this process's own limit.
fn look<S: Storage>(fs: &S, prefix: &str, step: u64) -> (StepState, Option<String>, bool) {
    match check_as(fs, prefix, step, Verify::Size, ReadErrors::Failed) {
        Ok(_) => (StepState::Committed, None, false),
        Err(Rejected::NotCommitted(why)) => (StepState::Incomplete, Some(why), true),
        Err(Rejected::Mismatch(e) | Rejected::Unsafe(e)) => {
            (StepState::Corrupt, Some(e.message().to_string()), true)
        }
        Err(Rejected::Failed(e)) => (
            StepState::Corrupt,
            Some(format!(
                "{}; an error, not evidence: repair leaves it",
                e.message()
            )),
            false,
        ),
    }
}

/// The server's clock, read once when repair first needs it (not at all
/// without repair: reading it creates a file), and how old a tree must be.
struct RepairClock {
    now: Option<u64>,
    grace_ms: u64,
}

impl RepairClock {
    fn new(options: &FsckOptions) -> RepairClock {
        RepairClock {
            now: None,
            grace_ms: millis(options.grace),
        }
    }

    fn now<S: Storage, P: Platform>(
        &mut self,
        flush: &mut Flusher<'_, S>,
        platform: &P,
    ) -> Result<u64> {
        match self.now {
            Some(now) => Ok(now),
            None => {
                // Without room for a clock file, as gc does: an early
                // reading only leaves a tree longer.
                let skew = millis(GcOptions::DEFAULT_SKEW);
                Ok(*self.now.insert(Clock::read(flush, platform, skew)?.now))
            }
        }
    }

    /// `Ok(Ok(()))` if nothing in the tree at `path` changed for the grace
    /// period (a writer at work keeps its tree fresh); else why it is left.
    fn abandoned<S: Storage, P: Platform>(
        &mut self,
        flush: &mut Flusher<'_, S>,
        platform: &P,
        path: &str,
    ) -> Result<Result<(), String>> {
        let grace_ms = self.grace_ms;
        self.abandoned_after(flush, platform, path, grace_ms)
    }

    /// [`abandoned`](RepairClock::abandoned) with a grace period of
    /// `grace_ms`.
    fn abandoned_after<S: Storage, P: Platform>(
        &mut self,
        flush: &mut Flusher<'_, S>,
        platform: &P,
        path: &str,
        grace_ms: u64,
    ) -> Result<Result<(), String>> {
        let now = self.now(flush, platform)?;
        let fs = flush.fs;
        Ok(match newest_mtime(fs, path) {
            Ok(newest) if now.saturating_sub(newest) > grace_ms => Ok(()),
            Ok(_) => Err(format!(
                "changed within the grace period ({} s): a writer may be at work, left",
                grace_ms / 1000
            )),
            Err(e) => Err(format!(
                "cannot tell its age ({}): left",
                Error::io("inspect", &fs.display(path), &e)
            )),
        })
    }
}

/// Look at `step`, found `state` on definite evidence a settle period ago,
/// again, and remove it if it still is, in a tree still old, and no pin
/// holds it (claimed as gc claims a step). `Ok(Err(why))`: left.
fn second_look<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    platform: &P,
    clock: &mut RepairClock,
    prefix: &str,
    step: u64,
    state: StepState,
) -> Result<Result<(), String>> {
    let fs = flush.fs;
    let dir = step_name(prefix, step);
    // First the age: it lists every directory of the tree, which makes this
    // node drop the failed look-ups it cached there (docs/FILESYSTEM.md, V2
    // and V4), so that the look after it asks the server for every name.
    if let Err(why) = clock.abandoned(flush, platform, &dir)? {
        return Ok(Err(why));
    }
    let (again, found, evidence) = look(fs, prefix, step);
    if !evidence {
        return Ok(Err(found.unwrap_or_else(|| {
            format!("{again} when looked at again after the settle period: left")
        })));
    }
    if again != state {
        return Ok(Err(format!(
            "{again} when looked at again after the settle period: left"
        )));
    }
    let skew_ms = millis(GcOptions::DEFAULT_SKEW);
    let now = clock.now(flush, platform)?;
    let corrupt = state == StepState::Corrupt;
    let fate = match step_generation(fs, prefix, step)? {
        None => Fate::Skipped,
        // Pins read before and after unpublishing, as gc does.
        Some(Generation::V1) if corrupt => remove_v1(flush, platform, prefix, step, skew_ms)?,
        Some(Generation::V2) => match claim(fs, prefix, step, now, skew_ms)? {
            Claim::Claimed if corrupt => remove_claimed(flush, &dir, platform)?,
            Claim::Claimed => trash(flush, &dir, platform)?,
            Claim::Pinned => Fate::Pinned,
            Claim::Taken => Fate::Skipped,
        },
        Some(Generation::V2Claimed) if corrupt => remove_claimed(flush, &dir, platform)?,
        // Incomplete: no pin can be made on it, and the version 1 pins were
        // read on the first look.
        Some(_) => trash(flush, &dir, platform)?,
    };
    Ok(match fate {
        Fate::Removed => Ok(()),
        Fate::Pinned => Err("pinned: left".into()),
        Fate::Skipped => Err("being removed by another gc or fsck".into()),
    })
}

/// [`move_to_trash`] as a [`Fate`].
fn trash<S: Storage, P: Platform>(
    flush: &mut Flusher<'_, S>,
    dir: &str,
    platform: &P,
) -> Result<Fate> {
    move_to_trash(flush, dir, platform).map(|()| Fate::Removed)
}

fn stray_pin<S: Storage>(fs: &S, path: &str, why: &str, repair: bool) -> Result<FsckEntry> {
    let mut action = None;
    if repair {
        remove_tree(fs, path).map_err(|e| Error::io("remove", &fs.display(path), &e))?;
        action = Some("removed".to_string());
    }
    Ok(FsckEntry {
        name: path.to_string(),
        state: StepState::Stray,
        detail: Some(format!("{why}: {}", fs.display(path))),
        action,
    })
}
