//! Builds the handoff guest component so the runtime can embed it, and
//! compiles it ahead of time so the runtime need not compile it at all.
//!
//! The guest is a workspace member built for `wasm32-wasip2` by a nested
//! cargo with its own target directory (`target/guest`): sharing the outer
//! target directory would deadlock on cargo's build lock. The release profile
//! is overridden through the environment so the component stays small
//! (~100 KB) without changing how the host itself is built.
//!
//! `HANDOFF_GUEST_WASM=/path/to/handoff_guest.wasm` skips the nested build and
//! embeds that file instead (for packagers that build the guest separately).
//!
//! The component is then compiled to native code with wasmtime and the
//! runtime's own engine configuration (`src/engine_config.rs`, included here
//! and in the runtime), for the baseline CPU of the target triple (`TARGET`)
//! rather than the features of the build machine, so the binary runs, and
//! accepts its own artifact, on any CPU of that architecture. The artifact
//! lands next to the wasm as `handoff_guest.cwasm`; the runtime embeds both
//! (the wasm to compile in memory should its artifact ever be refused).
//!
//! A toolchain without the `wasm32-wasip2` standard library gets it through
//! `rustup target add`: rustup does not act on `rust-toolchain.toml`'s
//! `targets` for a toolchain that is already installed, nor at all where
//! `RUSTUP_AUTO_INSTALL=0`, so a fresh clone would otherwise fail here.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("src/engine_config.rs");

const GUEST_TARGET: &str = "wasm32-wasip2";

/// Environment the outer build sets for itself; passed on, it would point the
/// nested build at the host's target, flags or wrapper (clippy-driver).
const LEAKING_VARS: &[&str] = &[
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
];

/// Prefixes of per-package variables the outer build sets for this script.
const LEAKING_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crates/handoff-runtime lives two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let embedded = out_dir.join("handoff_guest.wasm");
    build_guest(&workspace, &embedded);
    precompile(&embedded, &out_dir.join("handoff_guest.cwasm"));
}

/// Compile the component at `wasm` with the runtime's engine configuration
/// for the target's baseline CPU, and write the artifact to `out`.
fn precompile(wasm: &Path, out: &Path) {
    println!("cargo::rerun-if-changed=src/engine_config.rs");
    let target = env::var("TARGET").expect("cargo sets TARGET for build scripts");
    let mut config = engine_config();
    if let Err(e) = config.target(&target) {
        fail(&format!("wasmtime cannot compile for {target}: {e:#}"));
    }
    let engine = wasmtime::Engine::new(&config).unwrap_or_else(|e| {
        fail(&format!(
            "cannot create a wasmtime engine for {target}: {e:#}"
        ))
    });
    let bytes = std::fs::read(wasm)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", wasm.display())));
    let artifact = engine.precompile_component(&bytes).unwrap_or_else(|e| {
        fail(&format!(
            "compiling the handoff component {} for {target} failed: {e:#}",
            wasm.display()
        ))
    });
    if let Err(e) = std::fs::write(out, artifact) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

/// Build the guest component (or take the prebuilt one) into `embedded`.
fn build_guest(workspace: &Path, embedded: &Path) {
    println!("cargo::rerun-if-env-changed=HANDOFF_GUEST_WASM");
    if let Some(prebuilt) = env::var_os("HANDOFF_GUEST_WASM") {
        println!("cargo::rerun-if-changed={}", Path::new(&prebuilt).display());
        copy(Path::new(&prebuilt), embedded);
        return;
    }

    for input in [
        "wit",
        "crates/handoff-core",
        "crates/handoff-guest",
        "crates/handoff-wasi",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(input).display()
        );
    }

    ensure_guest_target();

    let guest_target = workspace.join("target").join("guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .args(["--target", "wasm32-wasip2", "-p", "handoff-guest"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&guest_target)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    for name in LEAKING_VARS {
        cmd.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let leaks = name
            .to_str()
            .is_some_and(|n| LEAKING_PREFIXES.iter().any(|p| n.starts_with(p)));
        if leaks {
            cmd.env_remove(&name);
        }
    }

    let output = cmd.output().unwrap_or_else(|e| {
        panic!("failed to run cargo to build the handoff guest component: {e}");
    });
    if !output.status.success() {
        // Cargo shows a build script's stderr only when it fails; pass the
        // nested build's diagnostics through so the guest error is visible.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the handoff guest component failed ({}); its output is above",
            output.status
        );
    }

    let built = guest_target.join("wasm32-wasip2/release/handoff_guest.wasm");
    copy(&built, embedded);
}

/// Adds the guest's Rust target to the active toolchain when its standard
/// library is missing, or exits with one line saying what to install.
fn ensure_guest_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = sysroot.as_deref().is_some_and(|root| {
        root.join("lib/rustlib")
            .join(GUEST_TARGET)
            .join("lib")
            .is_dir()
    });
    if installed {
        return;
    }

    // RUSTUP_TOOLCHAIN, set by rustup's cargo proxy, names the toolchain
    // this build runs on, so the target lands where the nested build looks.
    let mut rustup = match Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .spawn()
    {
        Ok(child) => child,
        Err(e) => fail(&format!(
            "the {GUEST_TARGET} Rust target is missing and rustup cannot be run ({e}): \
             install that target's standard library for this toolchain and build again"
        )),
    };
    // Cargo shows warnings from a build script that succeeds, stderr only
    // from one that fails: say it both ways.
    println!(
        "cargo::warning=the {GUEST_TARGET} target was missing; added it with `rustup target add {GUEST_TARGET}`"
    );
    eprintln!("handoff: adding the {GUEST_TARGET} target with `rustup target add {GUEST_TARGET}`");
    match rustup.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "`rustup target add {GUEST_TARGET}` failed ({status}); run it by hand and build again"
        )),
        Err(e) => fail(&format!("`rustup target add {GUEST_TARGET}` failed: {e}")),
    }
}

/// One line on stderr and a failed build script, without a panic's backtrace.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("failed to copy {} to {}: {e}", from.display(), to.display());
    }
}
