use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use handoff_testkit::proc::run_within;

use crate::util::*;

/// `handoff <args> ls --root <root>` with every cache location under `home`.
fn ls(env: &Env, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg"))
        .env("HANDOFF_CACHE_DIR", home.join("cache"))
        .args(args)
        .args(["ls", "--root", &env.root_str()]);
    run_within(&mut cmd, Duration::from_secs(60)).expect("handoff ls ends")
}

fn component_file(env: &Env) -> String {
    let path = env.tmp.path().join("handoff_guest.wasm");
    fs::write(&path, handoff_runtime::DEFAULT_COMPONENT).unwrap();
    path.display().to_string()
}

#[test]
fn the_embedded_component_reads_and_writes_no_cache() {
    let env = Env::new();
    env.publish(1);
    let home = tempfile::tempdir().unwrap();
    let out = ls(&env, home.path(), &[]);
    assert_ok(&out);
    assert_eq!(stderr(&out), "");
    let left: Vec<_> = fs::read_dir(home.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_component_file_is_cached_in_a_private_directory_only() {
    let env = Env::new();
    env.publish(1);
    let wasm = component_file(&env);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    assert_ok(&ls(&env, home.path(), &["--component", &wasm]));
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);

    // A group-writable cache: not used, and said so once.
    for entry in fs::read_dir(&cache).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o775)).unwrap();
    let out = ls(&env, home.path(), &["--component", &wasm]);
    assert_ok(&out);
    let text = stderr(&out);
    assert_eq!(
        text.matches("handoff: warning: ").count(),
        1,
        "one warning: {text}"
    );
    assert!(
        text.contains(&format!(
            "cache directory {} not used: it is writable by group or others (mode 775)",
            cache.display()
        )),
        "{text}"
    );
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0, "nothing written");
}

#[test]
fn a_fifo_or_device_component_is_a_clear_error_not_a_hang() {
    let env = Env::new();
    let fifo = env.tmp.path().join("component.wasm");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let home = tempfile::tempdir().unwrap();
    for (path, kind) in [
        (fifo.display().to_string(), "a FIFO"),
        ("/dev/zero".to_string(), "a character device"),
    ] {
        let out = ls(&env, home.path(), &["--component", &path]);
        assert_exit(
            &out,
            1,
            &format!("bad component {path}: it is {kind}, not a regular file"),
        );
    }
}
