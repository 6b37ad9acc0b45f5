//! The Python and Node packages restate the protocol core's defaults as named
//! constants (`bindings/python/src/handoff/*.py`, `bindings/js/src/index.js`
//! and its types in `index.d.ts`); these tests read them from the sources and
//! fail when one drifts from `handoff_core`.

use std::path::Path;
use std::time::Duration;

use handoff_core::{DEFAULT_PREFIX, GcOptions, PinRequest, WaitOptions};

/// The core's durations, by the name both packages give them (Python's in
/// seconds, Node's in milliseconds with a `_MS` suffix).
const DURATIONS: [(&str, Duration); 5] = [
    ("DEFAULT_SETTLE", WaitOptions::DEFAULT_SETTLE),
    ("DEFAULT_POLL", WaitOptions::DEFAULT_POLL),
    ("DEFAULT_TTL", PinRequest::DEFAULT_TTL),
    ("DEFAULT_GRACE", GcOptions::DEFAULT_GRACE),
    ("DEFAULT_SKEW", GcOptions::DEFAULT_SKEW),
];

fn bindings() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../bindings"))
}

/// Every Python source of the package, concatenated.
fn python_sources() -> String {
    let dir = bindings().join("python/src/handoff");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    paths.sort();
    paths.iter().map(|path| read(path)).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The value `name` is given in `source`: the text after the one line that
/// starts with `lead` followed by `name` and `separator`, up to `;` or a
/// comment.
fn constant<'a>(source: &'a str, lead: &str, name: &str, separator: &str) -> &'a str {
    let start = format!("{lead}{name}{separator}");
    let values: Vec<&str> = source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(&start))
        .map(|rest| rest.split(['#', ';']).next().unwrap().trim())
        .collect();
    match values.as_slice() {
        [value] => value,
        _ => panic!("expected one line `{start}…`, found {values:?}"),
    }
}

/// A number as the sources write it (`30_000`, `0.1`).
fn number(text: &str) -> f64 {
    text.replace('_', "")
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a number: {e}"))
}

fn quoted(text: &str) -> &str {
    text.trim_matches(['"', '\''])
}

#[test]
fn python_defaults_are_the_core_s() {
    let source = python_sources();
    assert_eq!(
        quoted(constant(&source, "", "DEFAULT_PREFIX", " = ")),
        DEFAULT_PREFIX
    );
    for (name, core) in DURATIONS {
        let seconds = number(constant(&source, "", name, " = "));
        assert_eq!(seconds, core.as_secs_f64(), "python {name} (seconds)");
    }
}

#[test]
fn node_defaults_are_the_core_s() {
    let js = read(&bindings().join("js/src/index.js"));
    let types = read(&bindings().join("js/src/index.d.ts"));
    assert_eq!(
        quoted(constant(&js, "export const ", "DEFAULT_PREFIX", " = ")),
        DEFAULT_PREFIX
    );
    assert_eq!(
        quoted(constant(&types, "export const ", "DEFAULT_PREFIX", ": ")),
        DEFAULT_PREFIX
    );
    for (name, core) in DURATIONS {
        let name = format!("{name}_MS");
        let core = core.as_millis() as f64;
        assert_eq!(
            number(constant(&js, "export const ", &name, " = ")),
            core,
            "index.js {name}"
        );
        assert_eq!(
            number(constant(&types, "export const ", &name, ": ")),
            core,
            "index.d.ts {name}"
        );
    }
}
