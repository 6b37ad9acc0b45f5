//! Names in the broadcast root.

use crate::error::{Error, ErrorKind, Result};

/// The protocol's own directory in the root.
pub const HANDOFF_DIR: &str = ".handoff";
/// Versions being written; names here never parse as steps.
pub const STAGING_DIR: &str = ".handoff/staging";
/// Versions being deleted.
pub const TRASH_DIR: &str = ".handoff/trash";
/// Reader pins on steps of protocol version 1: `pins/<prefix><step>/<holder>`.
pub const PINS_DIR: &str = ".handoff/pins";
/// Reader pins on steps of protocol version 2, inside the step directory:
/// created before `STABLE`, removed by gc to claim the step.
pub const STEP_PINS_NAME: &str = ".handoff.pins";
/// Runs begun on the root: `runs/<G>`, one empty directory each, made
/// exclusively by `begin`.
pub const RUNS_DIR: &str = ".handoff/runs";
/// Present in a root that `fetch` copies steps into (a reader's local
/// root): its staging directories are a fetch's on this node, taken for
/// abandoned after [`FETCH_STAGING_GRACE`] instead of gc's or fsck's grace.
pub const FETCH_ROOT_MARKER: &str = ".handoff/fetched";
/// How long a staging directory of a fetch's local root may sit unchanged
/// before gc and fsck take it for abandoned. A fetch writes its copy
/// without pause (the longest quiet spell is hashing one file it has just
/// written), so a minute unchanged means it died; a fetch that only
/// stalled (a shared filesystem that hangs) finds its staging gone and
/// fails, committing nothing.
pub const FETCH_STAGING_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
/// Files gc creates for a moment to read the server's clock from their
/// modification time: `clock.<random>`.
pub const CLOCK_PREFIX: &str = ".handoff/clock.";
/// The start of a manifest's temporary name while it is written, inside the
/// step directory: `<this>.<random>`, unique to one attempt, so no writer
/// ever renames another's. Readers ignore it; a seal taking over its own
/// unfinished claim removes leftovers.
pub const MANIFEST_TMP_PREFIX: &str = ".handoff.manifest.json.tmp";
/// A seal's claim on a step directory, made before anything else is
/// written: a directory holding [`SEAL_CLAIM_WRITER`], renamed into place
/// whole (a rename onto a directory that is not empty fails), so one sealer
/// at a time. Removed once the step is committed (or the seal failed).
pub const SEAL_CLAIM_NAME: &str = ".handoff.seal";
/// The file in a seal claim that holds the sealer's writer id.
pub const SEAL_CLAIM_WRITER: &str = "writer";
/// The start of the name a claim is prepared under:
/// `<this><random>`, one attempt's own.
pub const SEAL_CLAIM_TMP_PREFIX: &str = ".handoff.seal.";

/// Whether a name in a step directory is one of the protocol's own, never
/// payload.
pub fn is_protocol_name(name: &str) -> bool {
    matches!(
        name,
        crate::manifest::MANIFEST_NAME
            | crate::manifest::STABLE_NAME
            | STEP_PINS_NAME
            | SEAL_CLAIM_NAME
    ) || name.starts_with(MANIFEST_TMP_PREFIX)
        || name.starts_with(SEAL_CLAIM_TMP_PREFIX)
}

/// How many step numbers a run has: step `n` of run `g` is the step
/// numbered `g * RUN_SPAN + n`, so every reader, even one that knows nothing
/// of runs, orders steps by (run, step).
pub const RUN_SPAN: u64 = 1_000_000_000_000;
/// The highest run: its last step number still fits a `u64`.
pub const MAX_RUN: u64 = u64::MAX / RUN_SPAN - 1;

/// The step number of step `step` of run `run`: `step` itself in run 0
/// (as before runs existed), else `run * RUN_SPAN + step`.
pub fn run_step(run: u64, step: u64) -> Result<u64> {
    if run == 0 {
        return Ok(step);
    }
    if run > MAX_RUN || step >= RUN_SPAN {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "run {run}, step {step}: a run is at most {MAX_RUN} and a step of a run \
                 (other than run 0) below {RUN_SPAN}"
            ),
        ));
    }
    Ok(run * RUN_SPAN + step)
}

/// The run a step number belongs to.
pub fn run_of(step: u64) -> u64 {
    step / RUN_SPAN
}

/// Where publish stages the step directory `dir`: a name of one attempt's
/// own, from a random `unique`.
pub fn staging_name(dir: &str, unique: u64) -> String {
    join(STAGING_DIR, &format!("{dir}.{unique:016x}"))
}

/// The step a staging folder's name (`<prefix><step>.<16 hex digits>`, a
/// name in `STAGING_DIR`) is for, if it is one of `prefix`'s: gc and fsck
/// of one prefix leave every other prefix's staging alone.
pub fn parse_staging(prefix: &str, name: &str) -> Option<u64> {
    parse_step(prefix, staging_dir(name)?)
}

/// Whether `name` in `STAGING_DIR` is some prefix's staging folder, and not
/// `prefix`'s: what gc and fsck of `prefix` leave alone. A name of no
/// prefix at all is nobody's, and any of them may clean it up.
pub fn is_other_prefix_staging(prefix: &str, name: &str) -> bool {
    let theirs = staging_dir(name).is_some_and(|dir| {
        let digits = dir.trim_end_matches(|c: char| c.is_ascii_digit());
        digits.len() < dir.len()
    });
    theirs && parse_staging(prefix, name).is_none()
}

/// The step folder name a staging folder's name was made from.
fn staging_dir(name: &str) -> Option<&str> {
    let (dir, unique) = name.rsplit_once('.')?;
    let hex = unique.len() == 16 && unique.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(dir)
}

/// The name a seal claim is prepared under, from a random `unique`.
pub fn seal_claim_tmp_name(unique: u64) -> String {
    format!("{SEAL_CLAIM_TMP_PREFIX}{unique:016x}")
}

/// The temporary name of a manifest being written, from a random `unique`.
pub fn manifest_tmp_name(unique: u64) -> String {
    format!("{MANIFEST_TMP_PREFIX}.{unique:016x}")
}

/// Check a step directory prefix: one path component's start, not hidden.
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.contains(['/', '\\', '\0']) || prefix.starts_with('.') {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "invalid prefix {prefix:?}: it must not contain `/`, `\\` or NUL, nor start with `.`"
            ),
        ));
    }
    Ok(())
}

/// Join two [`Storage`](crate::Storage) paths (relative, `/`-separated; the
/// empty path is the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The directory name of `step`: the prefix and the number without padding.
pub fn step_name(prefix: &str, step: u64) -> String {
    format!("{prefix}{step}")
}

/// The step a directory name stands for, if it is exactly `<prefix><u64>`
/// with no sign, padding or suffix.
pub fn parse_step(prefix: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_parse_for_their_own_prefix_only() {
        let name = staging_name("step_42", 0xabc);
        let name = name.strip_prefix(&format!("{STAGING_DIR}/")).unwrap();
        assert_eq!(parse_staging("step_", name), Some(42));
        assert_eq!(parse_staging("ckpt_", name), None);
        assert_eq!(parse_staging("step_", "step_42"), None);
        assert_eq!(parse_staging("step_", "step_42.xyz"), None);
        assert_eq!(parse_staging("step_", "ckpt_42.0000000000000abc"), None);
        assert!(is_other_prefix_staging("ckpt_", name));
        assert!(!is_other_prefix_staging("step_", name));
        assert!(!is_other_prefix_staging("step_", "junk"));
        assert!(!is_other_prefix_staging("ckpt_", "junk.0000000000000abc"));
    }

    #[test]
    fn step_names_round_trip_and_strays_do_not_parse() {
        assert_eq!(parse_step("step_", &step_name("step_", 42)), Some(42));
        assert_eq!(parse_step("step_", "step_0"), Some(0));
        assert_eq!(parse_step("", "17"), Some(17));
        for stray in [
            "step_",
            "step_01",
            "step_-1",
            "step_1a",
            "step_ 1",
            "x_1",
            "step_99999999999999999999",
            ".nfs0001",
        ] {
            assert_eq!(parse_step("step_", stray), None, "{stray}");
        }
    }

    #[test]
    fn prefixes_cannot_escape_or_hide() {
        assert!(check_prefix("step_").is_ok());
        assert!(check_prefix("").is_ok());
        for bad in ["a/b", ".hidden", "a\\b"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
