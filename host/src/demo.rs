//! `handoff demo`: the main job end to end. A writer publishes several
//! versions of a synthetic LoRA adapter while, for each one, a reader in
//! another process (this binary, `wait --verify hash`) is already waiting.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use handoff_cli::{Global, out};
use handoff_runtime::{Backend as _, FileEntry, Runtime, WriteOptions, default_writer_id};
use handoff_testkit::proc::succeeded;
use handoff_testkit::{Rng, write_random};
use serde::Deserialize;

use crate::HostOptions;

/// Options of `handoff demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Root to publish into [default: a temporary directory, removed afterwards]
    #[arg(long, value_name = "R")]
    root: Option<PathBuf>,
    /// How many versions to publish
    #[arg(long, value_name = "K", default_value_t = 5)]
    steps: u64,
    /// Size of each adapter in MiB
    #[arg(long, value_name = "M", default_value_t = 32)]
    size_mib: u64,
}

/// The part of a reader's `wait --json` output the demo checks.
#[derive(Debug, Deserialize)]
struct ReaderOutput {
    step: u64,
    files: Vec<FileEntry>,
}

/// A reader gets this long to see a step, far more than it needs.
const READER_TIMEOUT: &str = "60s";

pub fn run(
    runtime: &Runtime,
    global: &Global,
    host: &HostOptions,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let temp_root;
    let root = match &args.root {
        Some(root) => {
            fs::create_dir_all(root)
                .with_context(|| format!("failed to create the root {}", root.display()))?;
            root.clone()
        }
        None => {
            temp_root = tempfile::tempdir().context("failed to create a temporary root")?;
            temp_root.path().to_path_buf()
        }
    };
    let source = tempfile::tempdir().context("failed to create a temporary payload directory")?;
    let exe = std::env::current_exe().context("failed to find this executable to start readers")?;
    let load = runtime.load_info();
    out!(
        "root {}; component {} ({} in {:.1} ms)",
        root.display(),
        load.component,
        if load.precompiled {
            "precompiled"
        } else if load.from_cache {
            "cached"
        } else {
            "compiled"
        },
        load.load_time.as_secs_f64() * 1000.0
    );
    out!(
        "{:>5} {:>12} {:>11} {:>8} {:>17}",
        "step",
        "bytes",
        "publish ms",
        "fsyncs",
        "visible-after ms"
    );

    let options = WriteOptions {
        prefix: global.prefix.clone(),
        ..WriteOptions::new(default_writer_id())
    };
    let mut visible = Vec::new();
    for step in 1..=args.steps {
        write_adapter(source.path(), step, args.size_mib)?;
        // The reader starts first, as an inference server would be waiting.
        let reader = spawn_reader(&exe, global, host, &root, step)?;
        let start = Instant::now();
        let report = match runtime.publish(&root, step, source.path(), &options) {
            Ok(report) => report,
            Err(e) => {
                stop(reader);
                return Err(e).with_context(|| format!("failed to publish step {step}"));
            }
        };
        let published = Instant::now();
        let output = reader
            .wait_with_output()
            .context("failed to wait for the reader process")?;
        let seen_after = published.elapsed();
        let output = succeeded(format_args!("the reader of step {step}"), output)?;
        let seen: ReaderOutput = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("the reader of step {step} printed unexpected output"))?;
        if seen.step != step || seen.files != report.version.files {
            bail!("the reader of step {step} saw a different version: {seen:?}");
        }
        out!(
            "{:>5} {:>12} {:>11.1} {:>8} {:>17.1}",
            step,
            report.version.bytes(),
            ms(published - start),
            report.fsyncs,
            ms(seen_after)
        );
        visible.push(seen_after);
    }
    if let Some(worst) = visible.iter().max() {
        out!(
            "{} versions published; every reader verified its version by hash; slowest visible after {:.1} ms",
            visible.len(),
            ms(*worst)
        );
    }
    Ok(())
}

fn spawn_reader(
    exe: &Path,
    global: &Global,
    host: &HostOptions,
    root: &Path,
    step: u64,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    // Readers run the same component with the same cache choice.
    if let Some(component) = &host.component {
        cmd.arg("--component").arg(component);
    }
    if host.no_cache {
        cmd.arg("--no-cache");
    }
    if host.no_bulk {
        cmd.arg("--no-bulk");
    }
    cmd.arg("--prefix")
        .arg(&global.prefix)
        .arg("wait")
        .arg("--root")
        .arg(root)
        .args(["--step", &step.to_string()])
        .args(["--verify", "hash", "--json", "--timeout", READER_TIMEOUT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .with_context(|| format!("failed to start a reader process ({})", exe.display()))
}

/// End a reader whose step will never come.
fn stop(mut reader: Child) {
    let _ = reader.kill();
    let _ = reader.wait();
}

/// Write `adapter_model.safetensors` (`size_mib` MiB of pseudo-random bytes
/// that differ per step) and `adapter_config.json` into `dir`.
fn write_adapter(dir: &Path, step: u64, size_mib: u64) -> anyhow::Result<()> {
    let model = dir.join("adapter_model.safetensors");
    let mut rng = Rng::new(step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x68616e646f6666);
    write_random(&model, size_mib << 20, &mut rng)
        .with_context(|| format!("failed to write {}", model.display()))?;
    let config = serde_json::json!({
        "base_model_name_or_path": "handoff-demo/base-1b",
        "peft_type": "LORA",
        "r": 16,
        "lora_alpha": 32,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "step": step,
    });
    let config_path = dir.join("adapter_config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("failed to write {}", config_path.display()))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_differ_per_step_and_have_the_asked_size() {
        let tmp = tempfile::tempdir().unwrap();
        write_adapter(tmp.path(), 1, 1).unwrap();
        let first = fs::read(tmp.path().join("adapter_model.safetensors")).unwrap();
        assert_eq!(first.len(), 1024 * 1024);
        write_adapter(tmp.path(), 2, 1).unwrap();
        let second = fs::read(tmp.path().join("adapter_model.safetensors")).unwrap();
        assert_ne!(first, second);
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(tmp.path().join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["step"], 2);
    }
}
