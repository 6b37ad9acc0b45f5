//! The Python package against the CLI: seal and `wait --verify hash` of a
//! 256 MiB adapter (in both modes: the figure is specified at that size).
//!
//! - Python: `handoff.seal` / `handoff.wait` in one long-lived interpreter
//!   with the package imported and the component loaded, as a trainer or
//!   server keeps it; each call is timed inside that process
//!   (`time.perf_counter` around the call), so neither the interpreter's
//!   start nor the component's load is counted.
//! - CLI: `handoff seal` / `handoff wait` as whole processes, the way they
//!   are run from a shell (process start and the component's load from the
//!   cache included: about 5 ms, reported as `python_wait_size_cli_ms`).
//!
//! Both run the same component (the bench's, or `--component`; the package
//! is pointed at it with `HANDOFF_COMPONENT`), with the same compiled-
//! component cache directory. Each repetition writes a fresh adapter for
//! each seal (untimed, immediately before) and verifies one committed step
//! whose file is in the page cache; the variants run in a rotating order.
//!
//! The package comes from `target/py-venv`, the virtualenv
//! `bindings/test.sh` makes. When it is missing, or its installed `handoff`
//! differs from `bindings/python` (a source file, or the pinned
//! dependencies), it is made and installed the same way, `python3 -m venv`
//! and `pip install ./bindings/python[test]`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use handoff_testkit::Rng;

use crate::report::{Goal, Report};
use crate::stats::{median_ms, round, samples_ms};
use crate::{Bench, note, payload, proc};

/// Size of the adapter sealed and verified.
const BYTES: u64 = 256 << 20;

/// Runs one call per line of stdin (`seal STEP`, `wait STEP VERIFY`) on the
/// root in argv[1] and prints its elapsed milliseconds (or `error: ...`).
/// Its first line says what the host offers the component.
const DRIVER: &str = r#"
import sys, time
import handoff
from handoff import _bulk, _runtime
root = sys.argv[1]
_runtime.loaded()
print("ready", ",".join(sorted(_bulk.supported())) or "-", flush=True)
for line in sys.stdin:
    words = line.split()
    try:
        start = time.perf_counter()
        if words[0] == "seal":
            handoff.seal(root, int(words[1]), writer="handoff-bench")
        else:
            handoff.wait(root, int(words[1]), verify=words[2], timeout=60)
        print((time.perf_counter() - start) * 1000.0, flush=True)
    except Exception as e:
        print("error:", type(e).__name__, str(e).replace("\n", " "), flush=True)
"#;

/// Prints the installed package's folder, then its requirements, one a
/// line; fails if it is not installed.
const INSTALLED: &str = r#"
import importlib.metadata as m, os, handoff
print(os.path.dirname(handoff.__file__))
for r in m.requires("handoff") or []:
    if "extra ==" not in r:
        print(r)
"#;

#[derive(Clone, Copy, Debug)]
enum Variant {
    PythonSeal,
    CliSeal,
    PythonHash,
    CliHash,
    PythonSize,
    CliSize,
}

const VARIANTS: [Variant; 6] = [
    Variant::PythonSeal,
    Variant::CliSeal,
    Variant::PythonHash,
    Variant::CliHash,
    Variant::PythonSize,
    Variant::CliSize,
];

pub fn run(b: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let python = match venv(b) {
        Ok(python) => python,
        Err(why) => {
            note!("python: {why:#}; the Python package's figures are null");
            for key in ["python_seal_ratio_vs_cli", "python_hash_ratio_vs_cli"] {
                report.figure(
                    key,
                    None,
                    format!("no Python package to measure: {why:#}"),
                    Some(Goal::AtLeast(0.8)),
                );
            }
            return Ok(());
        }
    };
    let component = match &b.component {
        Some(path) => path.clone(),
        None => {
            let path = b.work.join("handoff_guest.wasm");
            std::fs::write(&path, handoff_runtime::DEFAULT_COMPONENT)?;
            path
        }
    };
    let seal_root = b.fresh_dir("python-seal")?;
    let hash_root = b.fresh_dir("python-hash")?;
    let mut rng = Rng::from_time();
    // The step both verify: committed by the CLI, its file in the page cache.
    payload::adapter(&hash_root.join("step_1"), BYTES, &mut rng)?;
    proc::timed(
        b.handoff_cmd()
            .args(["seal", "--step", "1", "--root"])
            .arg(&hash_root),
    )?;

    let mut seal_driver = Driver::start(&python, &seal_root, &component, b)?;
    let mut hash_driver = Driver::start(&python, &hash_root, &component, b)?;
    let offered = seal_driver.offered.clone();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); VARIANTS.len()];
    let mut step = 0u64;
    for rep in 0..b.plan.reps {
        for i in 0..VARIANTS.len() {
            let variant = VARIANTS[(rep + i) % VARIANTS.len()];
            let cli_wait = |verify: &str| {
                proc::timed(
                    b.handoff_cmd()
                        .args(["wait", "--step", "1", "--verify", verify, "--root"])
                        .arg(&hash_root),
                )
            };
            let elapsed = match variant {
                Variant::PythonSeal | Variant::CliSeal => {
                    step += 1;
                    let dir = seal_root.join(format!("step_{step}"));
                    payload::adapter(&dir, BYTES, &mut rng)?;
                    let elapsed = if let Variant::PythonSeal = variant {
                        seal_driver.call(&format!("seal {step}"))?
                    } else {
                        proc::timed(
                            b.handoff_cmd()
                                .args(["seal", "--writer", "handoff-bench", "--step"])
                                .arg(step.to_string())
                                .arg("--root")
                                .arg(&seal_root),
                        )?
                    };
                    payload::remove(&dir)?;
                    elapsed
                }
                Variant::PythonHash => hash_driver.call("wait 1 hash")?,
                Variant::CliHash => cli_wait("hash")?,
                Variant::PythonSize => hash_driver.call("wait 1 size")?,
                Variant::CliSize => cli_wait("size")?,
            };
            times[variant as usize].push(elapsed);
        }
    }
    seal_driver.finish()?;
    hash_driver.finish()?;

    let ms = |v: Variant| median_ms(&times[v as usize]);
    let mib = BYTES as f64 / (1 << 20) as f64;
    let (py_seal, cli_seal) = (ms(Variant::PythonSeal), ms(Variant::CliSeal));
    let (py_hash, cli_hash) = (ms(Variant::PythonHash), ms(Variant::CliHash));
    note!(
        "python {mib} MiB (host offers: {offered}): seal {py_seal:.1} ms vs CLI {cli_seal:.1} ms; \
         wait --verify hash {py_hash:.1} ms vs CLI {cli_hash:.1} ms"
    );
    report.set("python_mib", mib);
    report.set("python_bulk_offered", offered.clone());
    for (key, v) in [
        ("python_seal_ms", Variant::PythonSeal),
        ("python_seal_cli_ms", Variant::CliSeal),
        ("python_wait_hash_ms", Variant::PythonHash),
        ("python_wait_hash_cli_ms", Variant::CliHash),
        ("python_wait_size_ms", Variant::PythonSize),
        ("python_wait_size_cli_ms", Variant::CliSize),
    ] {
        report.set(key, round(ms(v), 2));
    }
    let how = "the package's call in a live interpreter, the CLI as a whole process";
    report.figure(
        "python_seal_ratio_vs_cli",
        Some(cli_seal / py_seal),
        format!(
            "Python's seal rate / the CLI's (>1: Python faster): `handoff seal` {cli_seal:.1} ms / \
             handoff.seal {py_seal:.1} ms, {mib} MiB adapter; {how}"
        ),
        Some(Goal::AtLeast(0.8)),
    );
    report.figure(
        "python_hash_ratio_vs_cli",
        Some(cli_hash / py_hash),
        format!(
            "Python's `wait --verify hash` rate / the CLI's (>1: Python faster): CLI {cli_hash:.1} ms / \
             handoff.wait {py_hash:.1} ms, {mib} MiB adapter; {how}"
        ),
        Some(Goal::AtLeast(0.8)),
    );
    let names = [
        "python_seal",
        "cli_seal",
        "python_wait_hash",
        "cli_wait_hash",
        "python_wait_size",
        "cli_wait_size",
    ];
    report.sample(
        "python",
        serde_json::Value::Object(
            names
                .iter()
                .zip(&times)
                .map(|(name, t)| (name.to_string(), samples_ms(t).into()))
                .collect(),
        ),
    );
    Ok(())
}

/// The virtualenv's python, with the current package installed in it.
fn venv(b: &Bench) -> anyhow::Result<PathBuf> {
    let venv = b.workspace.join("target").join("py-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let python3 = b.python.as_ref().context("python3 not found")?;
        note!("python: making {} (python3 -m venv)", venv.display());
        proc::stdout_of(Command::new(python3).args(["-m", "venv"]).arg(&venv))?;
    }
    match stale(b, &python) {
        None => return Ok(python),
        Some(why) => note!(
            "python: installing ./bindings/python into {} ({why})",
            venv.display()
        ),
    }
    proc::stdout_of(
        Command::new(&python)
            .current_dir(&b.workspace)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("./bindings/python[test]"),
    )
    .context("pip install ./bindings/python[test] failed")?;
    if let Some(why) = stale(b, &python) {
        bail!(
            "the package installed in {} is still not current: {why}",
            venv.display()
        );
    }
    Ok(python)
}

/// Why the package installed for `python` is not `bindings/python`'s, if it
/// is not.
fn stale(b: &Bench, python: &Path) -> Option<String> {
    let out = match proc::stdout_of(Command::new(python).args(["-c", INSTALLED])) {
        Ok(out) => out,
        Err(_) => return Some("it is not installed".to_string()),
    };
    let mut lines = out.lines();
    let installed = PathBuf::from(lines.next().unwrap_or_default());
    let mut requires: Vec<String> = lines.map(|l| l.replace(' ', "")).collect();
    requires.sort();
    let bindings = b.workspace.join("bindings").join("python");
    let mut wanted = match std::fs::read_to_string(bindings.join("pyproject.toml")) {
        Ok(text) => dependencies(&text),
        Err(e) => return Some(format!("cannot read its pyproject.toml: {e}")),
    };
    wanted.sort();
    if requires != wanted {
        return Some(format!(
            "it requires {requires:?}, pyproject.toml {wanted:?}"
        ));
    }
    let sources = bindings.join("src").join("handoff");
    let entries = match std::fs::read_dir(&sources) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("cannot list {}: {e}", sources.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        let name = entry.file_name();
        if std::fs::read(&path).ok() != std::fs::read(installed.join(&name)).ok() {
            return Some(format!("its {} differs", name.to_string_lossy()));
        }
    }
    None
}

/// The strings of the `dependencies = [...]` list of a pyproject.toml,
/// without spaces.
fn dependencies(pyproject: &str) -> Vec<String> {
    let Some(start) = pyproject.find("\ndependencies = [") else {
        return Vec::new();
    };
    let list = &pyproject[start..];
    let list = &list[..list.find(']').unwrap_or(list.len())];
    list.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .map(|s| s.replace(' ', ""))
        .collect()
}

/// The Python process that makes the package's calls.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The `bulk` calls the host offers the component.
    offered: String,
}

impl Driver {
    fn start(python: &Path, root: &Path, component: &Path, b: &Bench) -> anyhow::Result<Driver> {
        let mut child = Command::new(python)
            .args(["-c", DRIVER])
            .arg(root)
            .env("HANDOFF_COMPONENT", component)
            .env("HANDOFF_CACHE_DIR", &b.cache_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("failed to start {}", python.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut driver = Driver {
            child,
            stdin,
            stdout,
            offered: String::new(),
        };
        let line = driver.line()?;
        match line.strip_prefix("ready ") {
            Some(offered) => driver.offered = offered.to_string(),
            None => bail!("the Python driver said {line:?}"),
        }
        Ok(driver)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the Python driver exited");
        }
        Ok(line.trim_end().to_string())
    }

    /// Run one call; its time as the driver measured it.
    fn call(&mut self, command: &str) -> anyhow::Result<Duration> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let line = self.line()?;
        let ms: f64 = line
            .parse()
            .map_err(|_| anyhow::anyhow!("the Python package's {command:?} said {line:?}"))?;
        if !ms.is_finite() || ms < 0.0 {
            bail!("the Python driver printed {ms}");
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }

    fn finish(self) -> anyhow::Result<()> {
        let Driver {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait()?;
        if !status.success() {
            bail!("the Python driver exited with {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::dependencies;

    #[test]
    fn dependencies_are_read_from_the_list_only() {
        let text = "[project]\nname = \"x\"\n# a \"quoted\" comment\ndependencies = [\n    # why \"this\"\n    \"wasmtime==50.0.1\",\n    \"blake3 == 1.0.11\",\n]\n[x]\ntest = [\"pytest==9\"]\n";
        assert_eq!(dependencies(text), ["wasmtime==50.0.1", "blake3==1.0.11"]);
    }
}
