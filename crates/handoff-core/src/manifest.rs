//! The manifest: what a version contains, written last before `STABLE`.

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a step directory.
pub const MANIFEST_NAME: &str = "handoff.manifest.json";
/// The sentinel's file name inside a step directory, created last.
pub const STABLE_NAME: &str = "STABLE";
/// The protocol version this crate writes.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol version this crate reads (version 1 steps have no pin
/// directory of their own; docs/PROTOCOL.md).
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;
/// A manifest larger than this is refused unread (a corrupt or hostile file;
/// a 470 GB checkpoint in 5 GB shards needs about 20 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One payload file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the step directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the contents, 64 lowercase hex digits.
    pub blake3: String,
}

/// The contents of `handoff.manifest.json`.
///
/// Field order is the serialized order; files are sorted by path, so the same
/// input always gives the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Protocol version: [`PROTOCOL_VERSION`] when written by this crate;
    /// readers accept [`OLDEST_PROTOCOL_VERSION`] and later.
    pub version: u32,
    /// The step this manifest belongs to; a reader checks it against the
    /// directory name, so a directory copied to another step is caught.
    pub step: u64,
    /// The run the step belongs to (`handoff begin`): `step` is then
    /// `run * RUN_SPAN + n`. Absent for run 0, so a manifest of run 0 has
    /// the bytes it had before runs existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: u64,
    /// Who wrote it: lets a reader tell one run's steps from another's.
    pub writer: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created: u64,
    /// The payload, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// A manifest for `files`, which are sorted here.
    pub fn new(step: u64, writer: &str, created: u64, mut files: Vec<FileEntry>) -> Manifest {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest {
            version: PROTOCOL_VERSION,
            step,
            run: 0,
            writer: writer.to_string(),
            created,
            files,
        }
    }

    /// The canonical bytes: compact JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parse and check a manifest read from disk. The reason says what is
    /// wrong, without the file's name (the caller adds it).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BadManifest> {
        // Bytes that are not a manifest may be a torn read through a stale
        // cache: a later read can succeed. A well-formed manifest that breaks
        // a rule (its version, an unsafe path, duplicate or unsorted entries,
        // a malformed hash, sizes past 64 bits) is what the writer wrote: no
        // retry helps.
        let retry = |reason: String| BadManifest {
            reason,
            permanent: false,
        };
        let never = |reason: String| BadManifest {
            reason,
            permanent: true,
        };
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| retry(format!("not a valid manifest: {e}")))?;
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&manifest.version) {
            return Err(never(format!(
                "protocol version {} is not supported (this build reads \
                 {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
                manifest.version
            )));
        }
        let mut previous: Option<&str> = None;
        let mut total = 0u64;
        for file in &manifest.files {
            check_payload_path(&file.path).map_err(never)?;
            // No filesystem holds that much: a total past 64 bits would
            // wrap in every sum of the sizes ([`Manifest::bytes`]).
            total = total.checked_add(file.size).ok_or_else(|| {
                never(format!(
                    "entry {:?} brings the payload past {} bytes",
                    file.path,
                    u64::MAX
                ))
            })?;
            if let Some(prev) = previous {
                if prev == file.path {
                    return Err(never(format!("duplicate entry {:?}", file.path)));
                }
                if prev > file.path.as_str() {
                    return Err(never(format!("entries not sorted at {:?}", file.path)));
                }
            }
            if file.blake3.len() != 64
                || !file
                    .blake3
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(never(format!(
                    "entry {:?} has a malformed blake3 {:?}",
                    file.path, file.blake3
                )));
            }
            previous = Some(&file.path);
        }
        Ok(manifest)
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Why [`Manifest::parse`] refused a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadManifest {
    /// What is wrong, without the file's name.
    pub reason: String,
    /// Whether reading it again cannot help: valid JSON that breaks a rule
    /// (version, unsafe path, duplicate or unsorted entries, malformed hash,
    /// sizes past 64 bits).
    /// Otherwise (not a manifest at all) the read may have been torn by a
    /// lagging cache.
    pub permanent: bool,
}

impl std::fmt::Display for BadManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Check that a manifest path stays inside its step directory and does not
/// name the protocol's own files.
pub fn check_payload_path(path: &str) -> Result<(), String> {
    let unsafe_path = |why: &str| Err(format!("unsafe path {path:?} in manifest: {why}"));
    if path.is_empty() {
        return unsafe_path("empty");
    }
    if path.starts_with('/') {
        return unsafe_path("absolute");
    }
    if path.contains('\0') || path.contains('\\') {
        return unsafe_path("contains NUL or backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return unsafe_path("empty component"),
            "." | ".." => return unsafe_path("`.` or `..` component"),
            _ => {}
        }
    }
    if path == MANIFEST_NAME
        || path == STABLE_NAME
        || path.split('/').next() == Some(crate::layout::STEP_PINS_NAME)
    {
        return unsafe_path("names a protocol file");
    }
    Ok(())
}

/// Hex form of a BLAKE3 hash.
pub(crate) fn hex(hash: &blake3::Hash) -> String {
    hash.to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 3,
            blake3: "ab".repeat(32),
        }
    }

    #[test]
    fn bytes_are_deterministic_and_sorted() {
        let a = Manifest::new(7, "w", 1, vec![entry("b"), entry("a/x")]);
        let b = Manifest::new(7, "w", 1, vec![entry("a/x"), entry("b")]);
        assert_eq!(a.to_bytes(), b.to_bytes());
        let text = String::from_utf8(a.to_bytes()).unwrap();
        assert!(text.starts_with(r#"{"version":2,"step":7,"writer":"w","created":1,"files":[{"path":"a/x","size":3,"blake3":""#), "{text}");
        assert_eq!(Manifest::parse(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "",
            "STABLE",
            MANIFEST_NAME,
            ".handoff.pins/x",
            "a\\b",
        ] {
            let m = Manifest {
                files: vec![entry(bad)],
                ..Manifest::new(1, "w", 0, vec![])
            };
            let err = Manifest::parse(&m.to_bytes()).unwrap_err();
            assert!(
                err.reason.contains("unsafe path") && err.permanent,
                "{bad}: {err}"
            );
        }
        assert!(check_payload_path("sub/dir/STABLE").is_ok());
    }

    #[test]
    fn duplicates_versions_and_hashes_are_refused() {
        let mut m = Manifest::new(1, "w", 0, vec![entry("a"), entry("a")]);
        assert!(
            Manifest::parse(&m.to_bytes())
                .unwrap_err()
                .reason
                .contains("duplicate")
        );
        m.files.pop();
        m.version = 3;
        assert!(
            Manifest::parse(&m.to_bytes())
                .unwrap_err()
                .reason
                .contains("version 3")
        );
        m.version = 1;
        assert!(
            Manifest::parse(&m.to_bytes()).is_ok(),
            "version 1 stays readable"
        );
        m.files[0].size = u64::MAX;
        m.files.push(FileEntry {
            size: 1,
            ..entry("b")
        });
        let err = Manifest::parse(&m.to_bytes()).unwrap_err();
        assert!(err.permanent && err.reason.contains("past"), "{err}");
        m.files.pop();
        m.files[0].blake3 = "XYZ".into();
        assert!(
            Manifest::parse(&m.to_bytes())
                .unwrap_err()
                .reason
                .contains("malformed blake3")
        );
        assert!(
            Manifest::parse(b"{not json")
                .unwrap_err()
                .reason
                .contains("not a valid manifest")
        );
    }
}
