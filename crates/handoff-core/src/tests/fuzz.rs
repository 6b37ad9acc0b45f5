//! Generated hostile inputs for the parsers and the path checks: the
//! manifest, payload paths, step names, run numbering, pin names and
//! version 1 pin files.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set; scripts/test
//! has a longer "fuzz" stage). The oracles here are written from
//! docs/PROTOCOL.md, independently of the code they check.

use std::path::{Component, Path};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::layout::{
    MAX_RUN, RUN_SPAN, SEAL_CLAIM_NAME, STEP_PINS_NAME, check_prefix, is_protocol_name,
    manifest_tmp_name, parse_step, run_of, run_step, seal_claim_tmp_name, step_name,
};
use crate::manifest::{
    FileEntry, MANIFEST_NAME, Manifest, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, STABLE_NAME,
    check_payload_path,
};
use crate::retain::{parse_pin_file_name, pin_file_name};
use crate::types::PinInfo;
use crate::{ErrorKind, check_holder};

// ----- oracles, from the protocol's wording -----

/// Whether `path`, joined under a step directory, names something inside
/// it: what std's own path parser sees is only plain names, exactly the
/// `/`-separated parts written (so no empty part and no `.` it dropped),
/// and no NUL or `\` (a separator elsewhere).
fn stays_inside(path: &str) -> bool {
    let parts: Vec<Component> = Path::new(path).components().collect();
    !path.contains(['\0', '\\'])
        && !parts.is_empty()
        && parts.iter().all(|c| matches!(c, Component::Normal(_)))
        && parts.len() == path.split('/').count()
}

/// Whether `path` names a file the protocol keeps in a step directory:
/// `STABLE`, the manifest, or anything under the pin directory.
fn names_protocol_file(path: &str) -> bool {
    path == STABLE_NAME
        || path == MANIFEST_NAME
        || path.starts_with(&format!("{STEP_PINS_NAME}/"))
        || path == STEP_PINS_NAME
}

/// The rules every manifest [`Manifest::parse`] accepts keeps, and the
/// round trip: its canonical bytes parse back to it, and are a fixed point.
fn assert_acceptable(m: &Manifest) -> Result<(), TestCaseError> {
    prop_assert!((OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&m.version));
    for f in &m.files {
        prop_assert!(
            stays_inside(&f.path) && !names_protocol_file(&f.path),
            "accepted unsafe path {:?}",
            f.path
        );
        prop_assert!(f.blake3.len() == 64, "hash {:?}", f.blake3);
        prop_assert!(
            f.blake3
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "hash {:?}",
            f.blake3
        );
    }
    for pair in m.files.windows(2) {
        prop_assert!(pair[0].path < pair[1].path, "order {:?}", pair);
    }
    let total: u128 = m.files.iter().map(|f| u128::from(f.size)).sum();
    prop_assert_eq!(
        u128::from(m.bytes()),
        total,
        "payload total of {:?}",
        m.files
    );
    let bytes = m.to_bytes();
    prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    prop_assert_eq!(bytes.last(), Some(&b'\n'));
    let again = Manifest::parse(&bytes);
    prop_assert_eq!(again.as_ref(), Ok(m), "canonical bytes do not parse back");
    prop_assert_eq!(again.unwrap().to_bytes(), bytes);
    Ok(())
}

/// Parse `bytes`: never a panic; what is accepted keeps every rule.
fn parse_checked(bytes: &[u8]) -> Result<Option<Manifest>, TestCaseError> {
    match Manifest::parse(bytes) {
        Ok(m) => {
            assert_acceptable(&m)?;
            Ok(Some(m))
        }
        Err(bad) => {
            prop_assert!(!bad.reason.is_empty());
            Ok(None)
        }
    }
}

// ----- strategies -----

/// Path-like strings from the pieces that matter: separators, dots, the
/// protocol's names, NUL, backslash, non-ASCII.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("/"),
        3 => Just("a"),
        2 => Just("w.bin"),
        2 => Just("."),
        2 => Just(".."),
        1 => Just("..."),
        1 => Just("\\"),
        1 => Just("\0"),
        1 => Just(" "),
        1 => Just("é"),
        1 => Just(STABLE_NAME),
        1 => Just(MANIFEST_NAME),
        1 => Just(STEP_PINS_NAME),
        1 => Just(SEAL_CLAIM_NAME),
        1 => Just(".handoff"),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// A path a reader must refuse: one of each way to be unsafe.
fn hostile_path() -> impl Strategy<Value = String> {
    let name = "[a-z0-9._-]{1,6}";
    prop_oneof![
        Just(String::new()),
        name.prop_map(|n| format!("/{n}")),
        (name, name).prop_map(|(a, b)| format!("{a}/../{b}")),
        name.prop_map(|n| format!("../{n}")),
        name.prop_map(|n| format!("{n}/..")),
        (name, name).prop_map(|(a, b)| format!("{a}/./{b}")),
        name.prop_map(|n| format!("./{n}")),
        (name, name).prop_map(|(a, b)| format!("{a}//{b}")),
        name.prop_map(|n| format!("{n}/")),
        (name, name).prop_map(|(a, b)| format!("{a}\\{b}")),
        (name, name).prop_map(|(a, b)| format!("{a}\0{b}")),
        Just(STABLE_NAME.to_string()),
        Just(MANIFEST_NAME.to_string()),
        name.prop_map(|n| format!("{STEP_PINS_NAME}/{n}")),
    ]
}

/// A relative path of plain names, none of them the protocol's.
fn safe_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9 _.é-]{1,10}", 1..4)
        .prop_filter("plain names only", |parts| {
            parts.iter().all(|p| p != "." && p != "..")
        })
        .prop_map(|parts| parts.join("/"))
        .prop_filter("not a protocol file", |p| !names_protocol_file(p))
}

fn hash() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

/// A manifest the protocol accepts: version 1 or 2, distinct sorted safe
/// paths whose sizes add up within 64 bits, lowercase hashes.
fn valid_manifest() -> impl Strategy<Value = Manifest> {
    let files = prop::collection::btree_map(safe_path(), (0..=u64::MAX / 8, hash()), 0..6);
    (
        OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION,
        any::<u64>(),
        prop_oneof![Just(0), any::<u64>()],
        ".{0,12}",
        any::<u64>(),
        files,
    )
        .prop_map(|(version, step, run, writer, created, files)| {
            let files = files
                .into_iter()
                .map(|(path, (size, blake3))| FileEntry { path, size, blake3 })
                .collect();
            Manifest {
                version,
                run,
                ..Manifest::new(step, &writer, created, files)
            }
        })
}

/// One way to break a rule in a valid manifest's entries or version.
#[derive(Clone, Debug)]
enum Breakage {
    /// An entry twice.
    Duplicate(Index),
    /// Two neighbours swapped: unsorted.
    Swap(Index),
    /// One hash digit replaced by this (uppercase or not hex).
    Digit(Index, Index, char),
    /// One hash a digit short or long.
    HashLength(Index, bool),
    /// A version this build does not read.
    Version(u32),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        any::<Index>().prop_map(Breakage::Duplicate),
        any::<Index>().prop_map(Breakage::Swap),
        (
            any::<Index>(),
            any::<Index>(),
            prop::char::ranges(vec!['A'..='F', 'g'..='z'].into())
        )
            .prop_map(|(i, j, c)| Breakage::Digit(i, j, c)),
        (any::<Index>(), any::<bool>()).prop_map(|(i, long)| Breakage::HashLength(i, long)),
        prop_oneof![Just(0), PROTOCOL_VERSION + 1..=u32::MAX].prop_map(Breakage::Version),
    ]
}

/// `m` (of at least two entries) with the rule `how` says broken.
fn broken(mut m: Manifest, how: &Breakage) -> Manifest {
    let n = m.files.len();
    match how {
        Breakage::Duplicate(i) => {
            let i = i.index(n);
            m.files.insert(i, m.files[i].clone());
        }
        Breakage::Swap(i) => m.files.swap(i.index(n - 1), i.index(n - 1) + 1),
        Breakage::Digit(i, j, c) => {
            let hash = &mut m.files[i.index(n)].blake3;
            let j = j.index(hash.len());
            hash.replace_range(j..j + 1, &c.to_string());
        }
        Breakage::HashLength(i, long) => {
            let hash = &mut m.files[i.index(n)].blake3;
            if *long {
                hash.push('0');
            } else {
                hash.pop();
            }
        }
        Breakage::Version(v) => m.version = *v,
    }
    m
}

/// Any JSON value, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        pathish().prop_map(Value::from),
        hash().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field's value: mostly of the right shape, sometimes anything.
fn field(right: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => right.prop_map(Some),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ]
}

/// Manifest-shaped JSON: the fields, each perhaps missing, mistyped or
/// out of range, with perhaps unknown ones added.
fn manifest_json() -> impl Strategy<Value = Value> {
    let number = || {
        prop_oneof![
            Just(json!(0)),
            Just(json!(1)),
            Just(json!(2)),
            Just(json!(3)),
            any::<u64>().prop_map(Value::from),
            Just(json!(-1)),
            Just(json!(1.5))
        ]
    };
    let entry = (
        field(prop_oneof![safe_path(), hostile_path(), pathish()].prop_map(Value::from)),
        field(number()),
        field(prop_oneof![hash(), "[0-9A-Fa-f]{62,66}"].prop_map(Value::from)),
    )
        .prop_map(|(path, size, blake3)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [("path", path), ("size", size), ("blake3", blake3)] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            Value::Object(o)
        });
    (
        field(number()),
        field(number()),
        field(number()),
        field(".{0,8}".prop_map(Value::from)),
        field(number()),
        field(prop::collection::vec(entry, 0..5).prop_map(Value::Array)),
        prop::option::of(("[a-z]{1,6}", any_json())),
    )
        .prop_map(|(version, step, run, writer, created, files, extra)| {
            let mut o = serde_json::Map::new();
            let fields = [
                ("version", version),
                ("step", step),
                ("run", run),
                ("writer", writer),
                ("created", created),
                ("files", files),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

/// Text made of JSON's tokens and a manifest's names, in any order.
fn json_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(","),
        Just(":"),
        Just(" "),
        Just("\"version\":"),
        Just("\"step\":"),
        Just("\"run\":"),
        Just("\"writer\":"),
        Just("\"created\":"),
        Just("\"files\":"),
        Just("\"path\":"),
        Just("\"size\":"),
        Just("\"blake3\":"),
        Just("2"),
        Just("1"),
        Just("0"),
        Just("-1"),
        Just("1e3"),
        Just("18446744073709551616"),
        Just("\"a\""),
        Just("\"../a\""),
        Just("\"\\u0000\""),
        Just("\"\\ud800\""),
        Just("null"),
        Just("true"),
        Just("\""),
        Just("\"abababababababababababababababababababababababababababababababab\""),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// One change to a byte string.
#[derive(Clone, Debug)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index, Index),
    Repeat(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::Delete(i, j)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::Repeat(i, j)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let span = |i: &Index, j: &Index| {
        let (a, b) = (i.index(bytes.len()), j.index(bytes.len()));
        (a.min(b), a.max(b) + 1)
    };
    match edit {
        Edit::Flip(i, x) => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Edit::Delete(i, j) => {
            let (a, b) = span(i, j);
            bytes.drain(a..b);
        }
        Edit::Repeat(i, j) => {
            let (a, b) = span(i, j);
            let chunk = bytes[a..b].to_vec();
            bytes.splice(b..b, chunk);
        }
    }
}

/// Prefixes `check_prefix` may or may not accept, including ones that end
/// in digits or are empty.
fn prefixish() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("step_".to_string()),
        "[a-z_]{0,4}[0-9]{0,3}",
        "[a-z0-9_./\\\\\0é-]{0,6}",
    ]
}

/// Run numbers, often at the limits.
fn run_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        1..=4u64,
        MAX_RUN - 2..=MAX_RUN + 2,
        any::<u64>(),
        Just(u64::MAX),
    ]
}

/// Step numbers, often at a run's limits.
fn step_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=4u64,
        RUN_SPAN - 2..=RUN_SPAN + 2,
        any::<u64>(),
        Just(u64::MAX),
    ]
}

fn holder() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:@-][A-Za-z0-9._:@-]{0,127}"
}

proptest! {
    // ----- the manifest -----

    #[test]
    fn arbitrary_bytes_never_panic_or_pass_unsafe(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_checked(&bytes)?;
    }

    #[test]
    fn json_soup_never_panics_or_passes_unsafe(text in json_soup()) {
        parse_checked(text.as_bytes())?;
    }

    #[test]
    fn manifest_shaped_json_is_accepted_only_when_safe(value in manifest_json(), pretty in any::<bool>()) {
        let bytes = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        parse_checked(&bytes)?;
    }

    #[test]
    fn valid_manifests_are_accepted_and_round_trip(m in valid_manifest()) {
        let bytes = m.to_bytes();
        let parsed = Manifest::parse(&bytes);
        prop_assert_eq!(parsed.as_ref(), Ok(&m));
        assert_acceptable(&m)?;
    }

    #[test]
    fn edited_manifests_never_panic_or_pass_unsafe(
        m in valid_manifest(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut bytes = m.to_bytes();
        for e in &edits {
            apply(&mut bytes, e);
        }
        parse_checked(&bytes)?;
    }

    #[test]
    fn one_hostile_path_refuses_the_whole_manifest(
        m in valid_manifest(),
        bad in hostile_path(),
        at in any::<Index>(),
    ) {
        let mut m = m;
        let entry = FileEntry { path: bad.clone(), size: 1, blake3: "0".repeat(64) };
        m.files.insert(at.index(m.files.len() + 1), entry);
        // Written as any writer could, unsorted or not.
        let err = Manifest::parse(&m.to_bytes()).unwrap_err();
        prop_assert!(err.permanent, "{bad:?}: {err}");
    }

    #[test]
    fn one_broken_rule_refuses_the_whole_manifest(
        m in valid_manifest().prop_filter("two entries", |m| m.files.len() >= 2),
        how in breakage(),
    ) {
        let bad = broken(m, &how);
        let err = Manifest::parse(&bad.to_bytes()).unwrap_err();
        prop_assert!(err.permanent, "{how:?}: {err}");
    }

    #[test]
    fn sizes_past_64_bits_are_refused(
        m in valid_manifest(),
        sizes in prop::collection::vec(u64::MAX / 2 + 1..=u64::MAX, 2..4),
    ) {
        let mut m = m;
        m.files = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| FileEntry { path: format!("f{i}"), size, blake3: "0".repeat(64) })
            .collect();
        let err = Manifest::parse(&m.to_bytes()).unwrap_err();
        prop_assert!(err.permanent && err.reason.contains("bytes"), "{err}");
    }

    // ----- payload paths and names -----

    #[test]
    fn payload_paths_are_accepted_exactly_when_they_stay_inside(path in pathish()) {
        let accepted = check_payload_path(&path).is_ok();
        let safe = stays_inside(&path) && !names_protocol_file(&path);
        prop_assert_eq!(accepted, safe, "{:?}", path);
    }

    #[test]
    fn arbitrary_payload_paths_never_escape(path in any::<String>()) {
        if check_payload_path(&path).is_ok() {
            prop_assert!(stays_inside(&path), "{path:?}");
        }
    }

    #[test]
    fn the_protocols_own_names_are_its(unique in any::<u64>()) {
        for name in [
            STABLE_NAME.to_string(),
            MANIFEST_NAME.to_string(),
            STEP_PINS_NAME.to_string(),
            SEAL_CLAIM_NAME.to_string(),
            manifest_tmp_name(unique),
            seal_claim_tmp_name(unique),
        ] {
            prop_assert!(is_protocol_name(&name), "{name}");
        }
    }

    #[test]
    fn ordinary_names_are_not_the_protocols(name in "[A-Za-z0-9_][A-Za-z0-9._-]{0,20}") {
        prop_assert!(!is_protocol_name(&name), "{name}");
    }

    // ----- step names -----

    #[test]
    fn step_names_parse_back(prefix in prefixish(), step in step_number()) {
        prop_assert_eq!(parse_step(&prefix, &step_name(&prefix, step)), Some(step));
    }

    #[test]
    fn parsed_step_names_are_canonical(
        prefix in prefixish(),
        tail in "[0-9+ a-]{0,22}|[0-9]{19,21}|٣|0[0-9]{1,3}|[+-]?[0-9]{1,4}",
    ) {
        let name = format!("{prefix}{tail}");
        if let Some(step) = parse_step(&prefix, &name) {
            prop_assert_eq!(step_name(&prefix, step), name);
        }
    }

    #[test]
    fn accepted_prefixes_make_plain_unhidden_names(prefix in prefixish(), step in step_number()) {
        if check_prefix(&prefix).is_ok() {
            let name = step_name(&prefix, step);
            prop_assert!(stays_inside(&name) && !name.contains('/'), "{name:?}");
            prop_assert!(!name.starts_with('.'), "{name:?}");
            prop_assert!(!is_protocol_name(&name), "{name:?}");
        } else {
            let err = check_prefix(&prefix).unwrap_err();
            prop_assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    // ----- run numbering -----

    #[test]
    fn run_step_is_exact_or_refused(run in run_number(), step in step_number()) {
        let exact = u128::from(run) * u128::from(RUN_SPAN) + u128::from(step);
        match run_step(run, step) {
            Ok(n) if run == 0 => prop_assert_eq!(n, step),
            Ok(n) => {
                prop_assert!(run <= MAX_RUN && step < RUN_SPAN);
                prop_assert_eq!(u128::from(n), exact);
                prop_assert_eq!(run_of(n), run);
                prop_assert_eq!(n % RUN_SPAN, step);
            }
            Err(e) => {
                prop_assert!(run > MAX_RUN || step >= RUN_SPAN, "{e}");
                prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn run_steps_order_by_run_then_step(
        a in (run_number(), 0..RUN_SPAN),
        b in (run_number(), 0..RUN_SPAN),
    ) {
        if let (Ok(x), Ok(y)) = (run_step(a.0, a.1), run_step(b.0, b.1)) {
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }
    }

    #[test]
    fn run_of_any_step_is_a_run_within_the_limit(step in step_number()) {
        let run = run_of(step);
        prop_assert!(run <= MAX_RUN + 1);
        if (1..=MAX_RUN).contains(&run) {
            prop_assert_eq!(run_step(run, step % RUN_SPAN).ok(), Some(step));
        }
    }

    // ----- pins -----

    #[test]
    fn pin_names_parse_back(h in holder(), ttl in any::<u64>(), unique in any::<u64>()) {
        prop_assert!(check_holder(&h).is_ok(), "{h:?}");
        let name = pin_file_name(&h, ttl, unique);
        prop_assert_eq!(parse_pin_file_name(&name), Some((h.as_str(), ttl)));
    }

    #[test]
    fn parsed_pin_names_are_a_holders(
        name in (
            prop_oneof![holder(), "[A-Za-z0-9._:@/+ -]{0,10}"],
            prop_oneof!["[0-9]{1,20}", "[0-9+a-f-]{0,3}|[0-9]{20,22}"],
            prop_oneof!["[0-9a-f]{16}", "[0-9a-fA-FxX+]{14,17}"],
        )
            .prop_map(|(h, ttl, unique)| format!("{h}+{ttl}+{unique}")),
    ) {
        if let Some((h, ttl)) = parse_pin_file_name(&name) {
            prop_assert!(check_holder(h).is_ok(), "{h:?}");
            prop_assert!(!h.contains(['+', '/']), "{h:?}");
            prop_assert!(name.starts_with(&format!("{h}+")), "{name:?}");
            let again = pin_file_name(h, ttl, 0);
            prop_assert_eq!(parse_pin_file_name(&again), Some((h, ttl)));
        }
    }

    #[test]
    fn accepted_holders_make_one_plain_name(h in ".{0,130}|[A-Za-z0-9._:@+/-]{0,130}|[A-Za-z0-9_:@-]{100,300}") {
        if check_holder(&h).is_ok() {
            prop_assert!(h.len() <= 128 && !h.starts_with('.'), "{h:?}");
            prop_assert!(!h.contains(['/', '+', '\\', '\0']), "{h:?}");
            // The longest name it can make still fits a file name (255 bytes).
            let name = pin_file_name(&h, u64::MAX, u64::MAX);
            prop_assert!(stays_inside(&name) && !name.contains('/'), "{name:?}");
            prop_assert!(name.len() <= 255, "{} bytes", name.len());
        }
    }

    #[test]
    fn version_1_pin_files_never_panic_and_round_trip(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (step_number(), ".{0,16}", any::<u64>(), any::<bool>()).prop_map(|(s, h, e, extra)| {
                let mut v = json!({"step": s, "holder": h, "expires_ms": e});
                if extra { v["more"] = json!([1, "x"]); }
                serde_json::to_vec(&v).unwrap()
            }),
            json_soup().prop_map(String::into_bytes),
        ],
    ) {
        if let Ok(pin) = serde_json::from_slice::<PinInfo>(&bytes) {
            let again = serde_json::to_vec(&pin).unwrap();
            prop_assert_eq!(serde_json::from_slice::<PinInfo>(&again).unwrap(), pin);
        }
    }
}
