"""Run the trainer and the orchestrator side by side on a fresh root and
check the outcome: the orchestrator loaded steps in order up to the last one
(it fails if a file vanishes or is short mid-load, i.e. if gc removed a
pinned step), and once it is done gc keeps the newest ``keep`` steps, each
committed with ``STABLE``.

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

    with tempfile.TemporaryDirectory(prefix="prime-rl-handoff-") as root:
        orchestrator = subprocess.Popen(
            [sys.executable, str(HERE / "orchestrator.py"), root, "--steps", str(args.steps)],
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
        for p in problems:
            print(f"FAILED: {p}")
        if problems:
            return 1
        print(f"prime_rl example: ok (loaded steps {loaded}; gc kept {remaining})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
