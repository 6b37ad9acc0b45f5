//! Writing payloads: fresh bytes each time, so every fsync has real data to
//! flush.

use std::path::Path;

use anyhow::Context;
use handoff_testkit::{Rng, write_random};

/// The small file of an adapter, as PEFT writes it.
pub const CONFIG_NAME: &str = "adapter_config.json";
/// The big file of an adapter.
pub const MODEL_NAME: &str = "adapter_model.safetensors";

const CONFIG: &[u8] = br#"{"base_model_name_or_path":"Qwen/Qwen3-8B","peft_type":"LORA","r":32,"lora_alpha":64,"lora_dropout":0.0,"target_modules":["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"],"task_type":"CAUSAL_LM","bias":"none","fan_in_fan_out":false,"inference_mode":true,"init_lora_weights":true,"modules_to_save":null,"revision":null,"use_rslora":false,"use_dora":false}"#;

/// Write a two-file adapter of `total` bytes into `dir` (created): the
/// config and the weights, not synced.
pub fn adapter(dir: &Path, total: u64, rng: &mut Rng) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    std::fs::write(dir.join(CONFIG_NAME), CONFIG)?;
    file(
        &dir.join(MODEL_NAME),
        total.saturating_sub(CONFIG.len() as u64),
        rng,
    )
}

/// Write `size` fresh bytes to `path`, not synced.
pub fn file(path: &Path, size: u64, rng: &mut Rng) -> anyhow::Result<()> {
    write_random(path, size, rng).with_context(|| format!("failed to write {}", path.display()))
}

/// Remove a directory tree if it is there.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to remove {}", dir.display())),
    }
}
