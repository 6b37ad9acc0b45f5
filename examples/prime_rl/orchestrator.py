"""A prime-rl-shaped orchestrator: waits for each new adapter, pins it while
the inference server loads it, then unpins it.

prime-rl's orchestrator polls for ``step_N/STABLE`` and then asks vLLM to load
the directory. Here ``wait`` does the polling and also checks the manifest
and every file (hashes with ``verify="hash"``), retrying while a lagging NFS
cache still shows a short or missing file; ``pin=`` holds the step so the
trainer's gc cannot delete it mid-load.

    python orchestrator.py ROOT --steps 6
"""

import argparse
import time
from pathlib import Path

import handoff

HOLDER = "orchestrator-0"


def load_adapter(version: handoff.Version) -> None:
    """Stand-in for vLLM's `load_lora_adapter(path)`: read every file."""
    for f in version.files:
        data = (Path(version.path) / f.path).read_bytes()
        assert len(data) == f.size, f"{f.path}: {len(data)} bytes, manifest lists {f.size}"
    time.sleep(0.5)  # a slow load: the trainer seals (and gcs) meanwhile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--steps", type=int, default=6, help="stop after loading this step")
    args = parser.parse_args()

    last = 0
    while last < args.steps:
        # The lowest committed step above the last one loaded (steps gc'd
        # meanwhile are skipped), pinned before it is returned.
        version = handoff.wait(args.root, after=last, pin=HOLDER, ttl=120, timeout=60, verify="hash")
        load_adapter(version)
        handoff.unpin(args.root, version.step, HOLDER)
        print(f"orchestrator: loaded step {version.step} ({len(version.files)} files), unpinned", flush=True)
        last = version.step


if __name__ == "__main__":
    main()
