//! Writing payloads: fresh bytes each time, so every fsync has real data to
//! flush.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::stats::Rng;

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
    let mut block = vec![0u8; 1 << 20];
    rng.fill(&mut block);
    let mut out =
        File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut left = size;
    let mut n: u64 = 0;
    while left > 0 {
        // Vary each block a little, so no two blocks (or runs) are equal.
        block[..8].copy_from_slice(&(n ^ rng.next_u64()).to_le_bytes());
        let len = left.min(block.len() as u64) as usize;
        out.write_all(&block[..len])
            .with_context(|| format!("failed to write {}", path.display()))?;
        left -= len as u64;
        n += 1;
    }
    Ok(())
}

/// Remove a directory tree if it is there.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to remove {}", dir.display())),
    }
}
