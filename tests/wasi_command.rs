//! `handoff-command.wasm`, the plain WASI command, in the runtimes people
//! already have: the stock `wasmtime` CLI and jco's runner under Node,
//! against roots written by the native `handoff` and the other way round.
//!
//! These tests need the command built and the runtimes installed;
//! `crates/handoff-command/test.sh` does both and runs them with
//! `HANDOFF_COMMAND_WASM` set. Without it they are skipped with a message;
//! with it, a missing runtime is a failure, not a skip.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use crate::strace::{assert_seal_order, fsync_order, strace_available, trace};
use crate::util::*;

/// The stock wasmtime CLI these tests are written against.
const WASMTIME_VERSION: &str = "49.0.3";

/// Where the command and the runtimes are.
struct Wasi {
    /// The default build (exit codes through `exit-with-code`).
    wasm: PathBuf,
    /// The `--no-default-features` build, if test.sh built it.
    plain: Option<PathBuf>,
    wasmtime: PathBuf,
    /// jco's CLI script, run with `node`.
    jco: PathBuf,
    /// The `--jco-import` module that sets the preopens.
    preopens: PathBuf,
}

/// The runtimes, or `None` (with a message) when test.sh did not set them up.
fn wasi() -> Option<&'static Wasi> {
    static WASI: OnceLock<Option<Wasi>> = OnceLock::new();
    let wasi = WASI.get_or_init(|| {
        let wasm = PathBuf::from(std::env::var_os("HANDOFF_COMMAND_WASM")?);
        assert!(
            wasm.is_file(),
            "HANDOFF_COMMAND_WASM={} is missing",
            wasm.display()
        );
        let wasmtime =
            std::env::var_os("WASMTIME").map_or_else(|| "wasmtime".into(), PathBuf::from);
        let version = Command::new(&wasmtime)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", wasmtime.display()));
        let version = String::from_utf8_lossy(&version.stdout);
        assert!(
            version.contains(WASMTIME_VERSION),
            "expected wasmtime {WASMTIME_VERSION}, found {version}"
        );
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/handoff-command/js");
        let jco = js.join("node_modules/@bytecodealliance/jco/dist/jco.js");
        assert!(
            jco.is_file(),
            "jco is not installed: npm ci in {}",
            js.display()
        );
        Some(Wasi {
            wasm,
            plain: std::env::var_os("HANDOFF_COMMAND_WASM_PLAIN").map(PathBuf::from),
            wasmtime,
            jco,
            preopens: js.join("preopens.mjs"),
        })
    });
    if wasi.is_none() {
        eprintln!(
            "skipped: HANDOFF_COMMAND_WASM is not set; crates/handoff-command/test.sh builds \
             the WASI command and runs these tests under wasmtime and jco"
        );
    }
    wasi.as_ref()
}

/// Who runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    /// The native `handoff` binary.
    Native,
    /// `wasmtime run --dir ROOT::/root --dir SRC::/src handoff-command.wasm`.
    Wasmtime,
    /// `jco run --jco-import preopens.mjs handoff-command.wasm`, with the
    /// same preopens through `HANDOFF_DIRS`.
    Jco,
}

use Runner::{Jco, Native, Wasmtime};

const ALL: [Runner; 3] = [Native, Wasmtime, Jco];

impl Runner {
    /// `--root` as this runner names the environment's root.
    fn root(self, env: &Env) -> String {
        match self {
            Native => env.root_str(),
            Wasmtime | Jco => "/root".to_string(),
        }
    }

    /// The publish source as this runner names it.
    fn src(self, env: &Env) -> String {
        match self {
            Native => env.src().display().to_string(),
            Wasmtime | Jco => "/src".to_string(),
        }
    }

    fn command(self, wasi: &Wasi, env: &Env, args: &[&str]) -> Command {
        self.command_with(&wasi.wasm, wasi, env, args)
    }

    /// The command line running `wasm` (for the WASI runners) with `args`.
    fn command_with(self, wasm: &Path, wasi: &Wasi, env: &Env, args: &[&str]) -> Command {
        let root = env.root().display().to_string();
        let src = env.src().display().to_string();
        match self {
            Native => {
                let mut cmd = handoff();
                cmd.args(args);
                cmd
            }
            Wasmtime => {
                let mut cmd = Command::new(&wasi.wasmtime);
                cmd.arg("run")
                    .arg("--dir")
                    .arg(format!("{root}::/root"))
                    .arg("--dir")
                    .arg(format!("{src}::/src"))
                    .arg(wasm)
                    .args(args);
                cmd
            }
            Jco => {
                let mut cmd = Command::new("node");
                cmd.arg(&wasi.jco)
                    .arg("run")
                    .arg("--jco-import")
                    .arg(&wasi.preopens)
                    .arg(wasm)
                    .args(args)
                    .env("HANDOFF_DIRS", format!("{root}::/root,{src}::/src"));
                cmd
            }
        }
    }

    fn run(self, wasi: &Wasi, env: &Env, args: &[&str]) -> Output {
        self.command(wasi, env, args).output().unwrap()
    }

    /// `sub --root ROOT args...`.
    fn sub(self, wasi: &Wasi, env: &Env, sub: &str, args: &[&str]) -> Output {
        let root = self.root(env);
        let mut all = vec![sub, "--root", &root];
        all.extend_from_slice(args);
        self.run(wasi, env, &all)
    }
}

/// Every key path of a JSON value (`files[].blake3`), for comparing the
/// shapes two programs print.
fn keys(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Write with `writer` (publish step 1 from the source, seal step 2 in
/// place), then read both with `reader` by hash: the reader must see
/// exactly the files the writer recorded.
fn direction(writer: Runner, reader: Runner) {
    let Some(wasi) = wasi() else { return };
    let env = Env::new();
    let published = json(&writer.sub(
        wasi,
        &env,
        "publish",
        &["--step", "1", "--json", &writer.src(&env)],
    ));
    payload(&env.root().join("step_2"), "sealed", 100_000);
    let sealed = json(&writer.sub(wasi, &env, "seal", &["--step", "2", "--json"]));
    for (step, written) in [("1", &published), ("2", &sealed)] {
        let read = json(&reader.sub(
            wasi,
            &env,
            "wait",
            &[
                "--step",
                step,
                "--verify",
                "hash",
                "--timeout",
                "60s",
                "--json",
            ],
        ));
        assert_eq!(read["step"], written["step"], "{writer:?} -> {reader:?}");
        assert_eq!(read["files"], written["files"], "{writer:?} -> {reader:?}");
        assert_eq!(read["writer"], written["writer"]);
        assert_eq!(read["created_ms"], written["created_ms"]);
    }
    eprintln!(
        "{writer:?} publish+seal -> {reader:?} wait --verify hash: ok ({} + {} files)",
        published["files"].as_array().unwrap().len(),
        sealed["files"].as_array().unwrap().len()
    );
}

#[test]
fn native_writes_wasmtime_reads() {
    direction(Native, Wasmtime);
}

#[test]
fn native_writes_jco_reads() {
    direction(Native, Jco);
}

#[test]
fn wasmtime_writes_native_reads() {
    direction(Wasmtime, Native);
}

#[test]
fn wasmtime_writes_jco_reads() {
    direction(Wasmtime, Jco);
}

#[test]
fn jco_writes_native_reads() {
    direction(Jco, Native);
}

#[test]
fn jco_writes_wasmtime_reads() {
    direction(Jco, Wasmtime);
}

/// The command prints the same JSON keys as the native CLI for every
/// subcommand, and for a failure.
#[test]
fn json_keys_match_the_native_cli() {
    let Some(wasi) = wasi() else { return };
    let env = Env::new();
    for i in 0..ALL.len() {
        payload(&env.root().join(format!("step_{}", 11 + i)), "s", 1000);
    }
    let mut shapes: Vec<(String, Runner, BTreeSet<String>)> = Vec::new();
    for (i, r) in ALL.into_iter().enumerate() {
        let holder = format!("h-{i}");
        let publish_step = (1 + i).to_string();
        let seal_step = (11 + i).to_string();
        let src = r.src(&env);
        let runs: [(&str, Vec<&str>); 10] = [
            (
                "publish",
                vec!["publish", "--step", &publish_step, "--keep", "10", &src],
            ),
            ("seal", vec!["seal", "--step", &seal_step]),
            ("wait", vec!["wait", "--step", "1", "--verify", "hash"]),
            ("ls", vec!["ls"]),
            ("pin", vec!["pin", "--step", "1", "--holder", &holder]),
            ("unpin", vec!["unpin", "--step", "1", "--holder", &holder]),
            ("gc", vec!["gc", "--keep", "10"]),
            ("fsck", vec!["fsck"]),
            ("conflict", vec!["publish", "--step", "1", &src]),
            ("timed-out", vec!["wait", "--step", "99", "--timeout", "0s"]),
        ];
        for (name, args) in runs {
            let root = r.root(&env);
            let mut all = vec![args[0], "--root", &root, "--json"];
            all.extend_from_slice(&args[1..]);
            let out = r.run(wasi, &env, &all);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{r:?} {name}: {e}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    stderr(&out)
                )
            });
            if name == "conflict" || name == "timed-out" {
                assert_eq!(v["error"]["kind"], name, "{r:?}: {v}");
                assert_eq!(code(&out), v["error"]["exit_code"], "{r:?}: {v}");
            } else {
                assert_ok(&out);
            }
            shapes.push((name.to_string(), r, keys(&v)));
        }
    }
    for (name, r, shape) in &shapes {
        let native = &shapes
            .iter()
            .find(|(n, r, _)| n == name && *r == Native)
            .unwrap()
            .2;
        assert_eq!(
            shape, native,
            "{r:?} {name} prints other keys than the native CLI"
        );
    }
    eprintln!(
        "same JSON keys in all three for: {}",
        shapes
            .iter()
            .filter(|(_, r, _)| *r == Native)
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Exit codes 3, 4, 5 (and 2 for usage) survive wasmtime and jco, and the
/// class is named in the message.
#[test]
fn exit_codes_survive_wasmtime_and_jco() {
    let Some(wasi) = wasi() else { return };
    for r in [Wasmtime, Jco] {
        let env = Env::new();
        assert_ok(&r.sub(wasi, &env, "publish", &["--step", "1", &r.src(&env)]));
        let conflict = r.sub(wasi, &env, "publish", &["--step", "1", &r.src(&env)]);
        assert_exit(&conflict, 5, "handoff: error (conflict): ");
        let timed_out = r.sub(wasi, &env, "wait", &["--step", "2", "--timeout", "0s"]);
        assert_exit(&timed_out, 3, "handoff: error (timed-out): ");
        fs::write(
            env.root().join("step_1/adapter_model.safetensors"),
            b"short",
        )
        .unwrap();
        let integrity = r.sub(
            wasi,
            &env,
            "wait",
            &["--step", "1", "--settle", "0s", "--timeout", "5s"],
        );
        assert_exit(&integrity, 4, "handoff: error (integrity): ");
        assert_exit(&r.sub(wasi, &env, "wait", &[]), 2, "--step");
        let not_found = r.sub(wasi, &env, "pin", &["--step", "9", "--holder", "a"]);
        assert_exit(&not_found, 1, "handoff: error (not-found): ");
        eprintln!(
            "{r:?}: conflict {}, timed-out {}, integrity {}, not-found {}",
            code(&conflict),
            code(&timed_out),
            code(&integrity),
            code(&not_found)
        );
    }
}

/// The build without `exit-with-code` imports only `exit(ok|err)`: every
/// failure exits 1, and the class stays in the message and the JSON.
#[test]
fn plain_build_exits_1_and_keeps_the_class() {
    let Some(wasi) = wasi() else { return };
    let Some(plain) = &wasi.plain else {
        eprintln!("skipped: HANDOFF_COMMAND_WASM_PLAIN is not set");
        return;
    };
    let contains = |path: &Path, needle: &[u8]| {
        fs::read(path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    };
    // The name as a binary name is length-prefixed (14 bytes); the help
    // text mentions it after a space.
    assert!(contains(&wasi.wasm, b"\x0eexit-with-code"));
    assert!(!contains(plain, b"\x0eexit-with-code"));
    for r in [Wasmtime, Jco] {
        let env = Env::new();
        let run = |args: &[&str]| r.command_with(plain, wasi, &env, args).output().unwrap();
        let root = r.root(&env);
        let src = r.src(&env);
        assert_ok(&run(&["publish", "--root", &root, "--step", "1", &src]));
        let conflict = run(&["publish", "--root", &root, "--step", "1", "--json", &src]);
        assert_exit(&conflict, 1, "handoff: error (conflict): ");
        let v: Value = serde_json::from_slice(&conflict.stdout).unwrap();
        assert_eq!(v["error"]["kind"], "conflict");
        assert_eq!(v["error"]["exit_code"], 5);
        eprintln!(
            "{r:?}, plain build: conflict exits {}, JSON {v}",
            code(&conflict)
        );
    }
}

/// Nothing outside the preopens is reachable: a root or source that is no
/// preopen, `..`, a symbolic link out of the root.
#[test]
fn outside_the_preopen_is_refused() {
    let Some(wasi) = wasi() else { return };
    for r in [Wasmtime, Jco] {
        let env = Env::new();
        symlink("/", env.root().join("escape")).unwrap();
        fs::create_dir(env.tmp.path().join("outside")).unwrap();
        let outside = env.tmp.path().join("outside");

        let not_given = r.sub(wasi, &env, "ls", &[]);
        assert_ok(&not_given);
        let etc = r.run(wasi, &env, &["ls", "--root", "/etc"]);
        assert_exit(&etc, 1, "not beneath a directory this program was given");
        let host_path = r.run(
            wasi,
            &env,
            &["seal", "--root", outside.to_str().unwrap(), "--step", "1"],
        );
        assert_exit(
            &host_path,
            1,
            "not beneath a directory this program was given",
        );
        let dotdot = r.run(wasi, &env, &["ls", "--root", "/root/../src"]);
        assert_exit(&dotdot, 1, "`..` would lead out");
        let through_link = r.run(wasi, &env, &["ls", "--root", "/root/escape/etc"]);
        assert_exit(
            &through_link,
            1,
            "failed to open directory /root/escape/etc",
        );
        let source = r.sub(wasi, &env, "publish", &["--step", "1", "/etc"]);
        assert_exit(&source, 1, "no directory /etc");
        // A payload link to a file outside is refused, not copied.
        symlink("/etc/hostname", env.src().join("leak")).unwrap();
        let leak = r.sub(wasi, &env, "publish", &["--step", "2", &r.src(&env)]);
        assert_eq!(code(&leak), 1, "{}", stderr(&leak));
        fs::remove_file(env.src().join("leak")).unwrap();

        assert!(!env.root().join("step_1").exists());
        assert!(!env.root().join("step_2").exists());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        eprintln!(
            "{r:?} refuses: {} | {} | {}",
            stderr(&etc).trim(),
            stderr(&through_link).trim(),
            stderr(&leak).trim()
        );
    }
}

/// `strace -f` of the stock wasmtime CLI running `seal`: the protocol's
/// commit sequence, and the same fsyncs in the same order as the native host.
#[test]
fn wasmtime_seal_fsyncs_in_the_native_order() {
    let Some(wasi) = wasi() else { return };
    if !strace_available() {
        return;
    }
    let env = Env::new();
    let native_root = env.root();
    let wasi_root = env.tmp.path().join("wasi-root");
    for root in [&native_root, &wasi_root] {
        payload(&root.join("step_3"), "a", 4096);
    }
    let native_root = native_root.canonicalize().unwrap().display().to_string();
    let wasi_root = wasi_root.canonicalize().unwrap().display().to_string();

    let native = trace(
        &env,
        "native",
        Path::new(env!("CARGO_BIN_EXE_handoff")),
        &["seal", "--root", &native_root, "--step", "3"],
    );
    let dir = format!("{wasi_root}::/root");
    let wasm = wasi.wasm.display().to_string();
    let wasmtime = trace(
        &env,
        "wasmtime",
        &wasi.wasmtime,
        &[
            "run", "--dir", &dir, &wasm, "seal", "--root", "/root", "--step", "3",
        ],
    );
    assert_seal_order(&native, &native_root, &format!("{native_root}/step_3"));
    assert_seal_order(&wasmtime, &wasi_root, &format!("{wasi_root}/step_3"));
    let native_order = fsync_order(&native, &native_root);
    let wasmtime_order = fsync_order(&wasmtime, &wasi_root);
    eprintln!("native   fsync order: {native_order:?}");
    eprintln!("wasmtime fsync order: {wasmtime_order:?}");
    assert_eq!(native_order, wasmtime_order);
}
