"""A prime-rl-shaped orchestrator: waits for each new adapter, pins it while
the inference server loads and serves it, and hands the pin over: the
previous adapter stays pinned until the server has switched to the new one.

prime-rl's orchestrator polls for ``step_N/STABLE`` and then asks vLLM to load
the directory. Here ``wait`` does the polling and also checks the manifest
and every file (hashes with ``verify="hash"``), retrying while a lagging NFS
cache still shows a short or missing file; ``pin=`` holds the step so the
trainer's gc cannot delete it mid-load. The pin on the adapter being served
is released only after the next one is loaded: vLLM re-reads an adapter's
files whenever it falls out of its cache, so the served step must outlive
the wait for the next.

With ``--stage DIR`` it takes the staged path instead: ``fetch`` pins the
shared step only while it copies it, verified, into DIR on the server's own
disk, and the server is handed the local copy. Nothing the server reads,
then or on any later re-read, can be deleted under it by the trainer's gc
(a memory-mapped file on NFS deleted under a server is a SIGBUS), and the
local copies are collected by a gc of DIR (``keep``).

    python orchestrator.py ROOT --steps 6 [--stage DIR]
"""

import argparse
import json
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


def load_request(version: handoff.Version) -> str:
    """The request that asks vLLM to load ``version`` (its
    ``/v1/load_lora_adapter`` endpoint, with runtime LoRA updating on)."""
    body = {"lora_name": f"step_{version.step}", "lora_path": version.path}
    return f"POST /v1/load_lora_adapter {json.dumps(body)}"


def staged(root: str, stage: str, steps: int) -> None:
    """Fetch each new step into ``stage`` and load the local copy."""
    last = 0
    while last < steps:
        # Waits as `wait` does; the shared step is pinned only while copied.
        report = handoff.fetch(root, after=last, to=stage, holder=HOLDER, timeout=60, keep=2)
        version = report.version
        assert Path(version.path).parent == Path(stage).resolve(), version.path
        print(f"orchestrator: {load_request(version)}", flush=True)
        load_adapter(version)
        # Still being served: read again, as after an eviction. The local
        # copy is the server's own; nothing upstream can take it away.
        load_adapter(version)
        print(
            f"orchestrator: loaded step {version.step} ({len(version.files)} files) from "
            f"{version.path}, copied {report.bytes_copied} bytes",
            flush=True,
        )
        last = version.step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--steps", type=int, default=6, help="stop after loading this step")
    parser.add_argument("--stage", help="fetch each step into this local root and load it from there")
    args = parser.parse_args()
    if args.stage:
        staged(args.root, args.stage, args.steps)
        return

    last = 0
    serving = None
    while last < args.steps:
        # The lowest committed step above the last one loaded (steps gc'd
        # meanwhile are skipped), pinned before it is returned; the pin on
        # the step being served stays.
        version = handoff.wait(args.root, after=last, pin=HOLDER, ttl=120, timeout=60, verify="hash")
        load_adapter(version)
        released = "-"
        if serving is not None:
            # Requests still in flight on the previous adapter: the server
            # reads it once more (as after an eviction), then switches over
            # and hands the pin over.
            load_adapter(serving)
            handoff.unpin(args.root, serving.step, HOLDER)
            released = str(serving.step)
        print(
            f"orchestrator: loaded step {version.step} ({len(version.files)} files), "
            f"serving it; released step {released}",
            flush=True,
        )
        serving = version
        last = version.step
    if serving is not None:
        handoff.unpin(args.root, serving.step, HOLDER)


if __name__ == "__main__":
    main()
