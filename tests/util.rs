use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use handoff_testkit::age_tree;
pub use handoff_testkit::proc::{assert_within, code, stderr};
use handoff_testkit::{Payload, Rng};
use serde_json::Value;

/// A temporary directory with a root and a source payload in it.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let env = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(env.root()).unwrap();
        payload(&env.src(), "a", 64 * 1024);
        env
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    pub fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    pub fn root_str(&self) -> String {
        self.root().display().to_string()
    }

    /// `handoff <args>` with `--root` inserted after the subcommand.
    pub fn cmd(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = handoff();
        cmd.arg(sub).arg("--root").arg(self.root()).args(args);
        cmd
    }

    pub fn run(&self, sub: &str, args: &[&str]) -> Output {
        self.cmd(sub, args).output().unwrap()
    }

    pub fn publish(&self, step: u64) -> Output {
        self.publish_with(step, &[])
    }

    /// `handoff publish --step <step> <args> <src>`, which must succeed.
    pub fn publish_with(&self, step: u64, args: &[&str]) -> Output {
        let step = step.to_string();
        let src = self.src();
        let all = [&["--step", step.as_str()], args, &[src.to_str().unwrap()]].concat();
        let out = self.run("publish", &all);
        assert_ok(&out);
        out
    }

    /// The holders of the pins on `step` (protocol version 2: files named
    /// `<holder>+<ttl>+<unique>` in the step's pin directory), sorted.
    pub fn pin_holders(&self, step: u64) -> Vec<String> {
        let dir = self.root().join(format!("step_{step}/.handoff.pins"));
        let mut holders: Vec<String> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .map(|name| name.split('+').next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        holders.sort();
        holders
    }

    pub fn spawn(&self, sub: &str, args: &[&str]) -> Child {
        self.cmd(sub, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// The binary under test, with its compiled-component cache in the target dir
/// so tests never write to the home directory.
pub fn handoff() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("handoff-cache");
    cmd.env("HANDOFF_CACHE_DIR", cache);
    cmd
}

/// Two files, one in a subdirectory, `size` bytes of content derived from `tag`.
pub fn payload(dir: &Path, tag: &str, size: usize) {
    Payload::new()
        .with("adapter_model.safetensors", Rng::from_tag(tag).bytes(size))
        .with("sub/adapter_config.json", format!("{{\"tag\":\"{tag}\"}}"))
        .write_to(dir)
        .unwrap();
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "exit {}: {}", code(out), stderr(out));
}

#[track_caller]
pub fn assert_exit(out: &Output, expected: i32, needle: &str) {
    assert_eq!(code(out), expected, "stderr: {}", stderr(out));
    assert!(
        stderr(out).contains(needle),
        "expected {needle:?} in stderr: {}",
        stderr(out)
    );
}

/// The one JSON object a `--json` run prints.
#[track_caller]
pub fn json(out: &Output) -> Value {
    assert_ok(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The `{"error":{..}}` object a failed `--json` run prints, after checking
/// its exit code.
#[track_caller]
pub fn json_failure(out: &Output, expected: i32) -> Value {
    assert_eq!(code(out), expected, "stderr: {}", stderr(out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v["error"].clone()
}
