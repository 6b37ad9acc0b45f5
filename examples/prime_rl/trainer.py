"""A prime-rl-shaped trainer: after each optimizer step it writes the LoRA
adapter straight into ``<root>/step_N/`` (as prime-rl's trainer does) and
seals it in place with handoff.

``seal`` replaces prime-rl's "touch STABLE": it fsyncs every file, writes a
manifest, creates ``STABLE`` last and fsyncs the directories, so ``STABLE``
still means "complete" to readers that only look for it, and now also
"durable". ``keep`` runs gc afterwards: the newest ``keep`` steps stay, and so
does any step a reader has pinned.

    python trainer.py ROOT --steps 6 --keep 2
"""

import argparse
import json
import os
import time
from pathlib import Path

import handoff


def train_step(step: int, out: Path) -> None:
    """Stand-in for an optimizer step plus `model.save_pretrained(out)`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(os.urandom(256 * 1024))
    (out / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "step": step}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.3, help="seconds per training step")
    args = parser.parse_args()

    for step in range(1, args.steps + 1):
        time.sleep(args.interval)
        train_step(step, Path(args.root) / f"step_{step}")
        report = handoff.seal(args.root, step, writer=f"trainer:{os.getpid()}", keep=args.keep)
        gc = report.gc
        print(
            f"trainer: sealed step {step} ({report.version.bytes} bytes, {report.fsyncs} fsyncs); "
            f"gc removed {list(gc.removed)}, kept pinned {list(gc.pinned)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
