"""Run the trainer and the orchestrator side by side on a fresh root and
check the outcome: the orchestrator loaded steps in order up to the last one
(it fails if a file vanishes or is short mid-load, i.e. if gc removed a
pinned step), and once it is done gc keeps the newest ``keep`` steps, each
committed with ``STABLE``. Then again with the orchestrator's staged path
(``--stage``): every step was loaded from a verified local copy, whose
manifest is the shared one byte for byte, the local root keeps the newest
two, and no pin is left on the shared root.

    python run.py [--steps 6] [--keep 2]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import handoff

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--keep", type=int, default=2)
    args = parser.parse_args()

    shared = side_by_side(args, stage=None)
    staged = side_by_side(args, stage="local")
    return shared or staged


def side_by_side(args: argparse.Namespace, stage) -> int:
    """One run of the trainer and the orchestrator; 0 when all checks pass."""
    with tempfile.TemporaryDirectory(prefix="prime-rl-handoff-") as scratch:
        root = str(Path(scratch) / "shared")
        Path(root).mkdir()
        local = None if stage is None else Path(scratch) / stage
        extra = [] if local is None else ["--stage", str(local)]
        orchestrator = subprocess.Popen(
            [sys.executable, str(HERE / "orchestrator.py"), root, "--steps", str(args.steps), *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        trainer = subprocess.run(
            [sys.executable, str(HERE / "trainer.py"), root, "--steps", str(args.steps), "--keep", str(args.keep)],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = orchestrator.communicate(timeout=120)
        print(trainer.stdout + out, end="")
        if trainer.returncode or orchestrator.returncode:
            print(f"FAILED: trainer exit {trainer.returncode}, orchestrator exit {orchestrator.returncode}")
            return 1

        loaded = [int(line.split()[3]) for line in out.splitlines() if line.startswith("orchestrator: loaded")]
        # Steps that were pinned at the trainer's last gc go at the next one.
        final = handoff.gc(root, args.keep)
        print(f"final gc: removed {list(final.removed)}, kept {list(final.kept)}")
        steps = handoff.ls(root)
        remaining = [s.step for s in steps]
        problems = []
        if not loaded or loaded[-1] != args.steps or loaded != sorted(set(loaded)):
            problems.append(f"orchestrator loaded {loaded}, expected increasing steps ending at {args.steps}")
        if remaining != list(range(args.steps - args.keep + 1, args.steps + 1)):
            problems.append(f"gc left steps {remaining}, expected the newest {args.keep}")
        if any(s.state != "committed" or not (Path(s.path) / "STABLE").exists() for s in steps):
            problems.append(f"not every remaining step is committed with STABLE: {steps}")
        if handoff.fsck(root) != [handoff.FsckEntry(f"step_{n}", "committed") for n in remaining]:
            problems.append(f"fsck found more than the committed steps: {handoff.fsck(root)}")
        if local is not None:
            problems += check_stage(root, local, loaded, out)
        for p in problems:
            print(f"FAILED: {p}")
        if problems:
            return 1
        how = "shared, pinned" if local is None else "staged to local disk"
        print(f"prime_rl example ({how}): ok (loaded steps {loaded}; gc kept {remaining})")
        return 0


def check_stage(root: str, local: Path, loaded, out: str):
    """The staged path's own checks."""
    problems = []
    requests = [line for line in out.splitlines() if "POST /v1/load_lora_adapter" in line]
    if len(requests) != len(loaded) or any(str(local) not in r for r in requests):
        problems.append(f"not every load was of a local copy: {requests}")
    copies = handoff.ls(local)
    if [s.step for s in copies] != loaded[-2:] or any(s.state != "committed" for s in copies):
        problems.append(f"the local root holds {copies}, expected the last two loaded, committed")
    for step in (s.step for s in handoff.ls(root)):
        shared_manifest = Path(root) / f"step_{step}" / "handoff.manifest.json"
        local_manifest = local / f"step_{step}" / "handoff.manifest.json"
        if local_manifest.exists() and local_manifest.read_bytes() != shared_manifest.read_bytes():
            problems.append(f"step {step}: the local manifest differs from the shared one")
        pins = Path(root) / f"step_{step}" / ".handoff.pins"
        if pins.exists() and any(pins.iterdir()):
            problems.append(f"step {step}: a pin is left on the shared root: {sorted(pins.iterdir())}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
