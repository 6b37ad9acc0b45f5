"""Parity matrix: the Rust CLI, the Python binding and the Node binding all
run the same component, so each must read what each other one writes.

For each writer, three reader processes (one per runtime) start waiting for
step 7 of a fresh root; the writer then publishes the same payload with the
same writer id and creation time; each reader must return, with every hash
verified, exactly the version the writer reported (9 cells). The three
manifests must be byte-identical.

    python parity.py --cli target/release/handoff [--node node]

Run it with a Python that has the `handoff` package installed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNTIMES = ("cli", "python", "node")
STEP = 7
WRITER = "parity-writer"
CREATED_MS = 1_764_380_000_000
READ_TIMEOUT_S = 60


def payload(src: Path) -> None:
    """A small adapter-shaped payload, the same bytes every run."""
    (src / "sub").mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (src / "adapter_config.json").write_text('{"r": 16, "lora_alpha": 32}\n')
    (src / "sub" / "tokenizer.json").write_text("{}\n")


class Runtimes:
    def __init__(self, cli: str, node: str):
        self.cli = cli
        self.node = node
        help_text = subprocess.run([cli, "publish", "--help"], capture_output=True, text=True).stdout
        self.cli_created_ms = "--created-ms" in help_text

    def publish(self, who: str, root: Path, src: Path) -> list:
        if who == "cli":
            cmd = [self.cli, "publish", "--root", str(root), "--step", str(STEP), str(src), "--writer", WRITER, "--json"]
            if self.cli_created_ms:
                cmd += ["--created-ms", str(CREATED_MS)]
            return cmd
        return self._driver(who, "publish", str(root), str(STEP), str(src), WRITER, str(CREATED_MS))

    def wait(self, who: str, root: Path) -> list:
        if who == "cli":
            return [self.cli, "wait", "--root", str(root), "--step", str(STEP), "--verify", "hash",
                    "--timeout", f"{READ_TIMEOUT_S}s", "--json"]
        return self._driver(who, "wait", str(root), str(STEP), str(READ_TIMEOUT_S))

    def _driver(self, who: str, *args: str) -> list:
        if who == "python":
            return [sys.executable, str(HERE / "drive.py"), *args]
        return [self.node, str(HERE / "drive.mjs"), *args]


def version_of(stdout: str) -> dict:
    """The fields every runtime prints, from one JSON object."""
    v = json.loads(stdout)
    return {k: v[k] for k in ("step", "path", "writer", "created_ms", "files")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", required=True, help="the handoff CLI binary")
    parser.add_argument("--node", default="node")
    args = parser.parse_args()
    rt = Runtimes(os.path.abspath(args.cli), args.node)

    passed, failed, cells, manifests, created = 0, 0, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="handoff-parity-") as tmp:
        tmp = Path(tmp).resolve()
        src = tmp / "src"
        payload(src)
        for writer in RUNTIMES:
            root = tmp / writer
            root.mkdir()
            readers = {
                reader: subprocess.Popen(rt.wait(reader, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for reader in RUNTIMES
            }
            time.sleep(1.0)  # let every reader start waiting before the step exists
            pub = subprocess.run(rt.publish(writer, root, src), capture_output=True, text=True)
            if pub.returncode != 0:
                print(f"{writer} failed to publish (exit {pub.returncode}): {pub.stderr.strip()}")
                for proc in readers.values():
                    proc.kill()
                    proc.wait()
                failed += len(RUNTIMES)
                for reader in RUNTIMES:
                    cells[writer, reader] = "no publish"
                continue
            published = version_of(pub.stdout)
            created[writer] = published["created_ms"]
            manifests[writer] = (root / f"step_{STEP}" / "handoff.manifest.json").read_bytes()
            for reader, proc in readers.items():
                out, err = proc.communicate(timeout=READ_TIMEOUT_S + 30)
                if proc.returncode != 0:
                    cells[writer, reader] = f"exit {proc.returncode}"
                    print(f"{reader} reading {writer}'s step: {err.strip()}")
                elif version_of(out) != published:
                    cells[writer, reader] = "MISMATCH"
                    print(f"{reader} reading {writer}'s step returned {out.strip()}, published {published}")
                else:
                    cells[writer, reader] = "ok"
                if cells[writer, reader] == "ok":
                    passed += 1
                else:
                    failed += 1

    width = 10
    corner = "writer \\ reader"
    print(f"{corner:<16}" + "".join(f"{r:>{width}}" for r in RUNTIMES))
    for writer in RUNTIMES:
        print(f"{writer:<16}" + "".join(f"{cells.get((writer, r), '-'):>{width}}" for r in RUNTIMES))

    # Manifest bytes: identical for the same input, writer id and time.
    def identical(a: str, b: str) -> bool:
        return a in manifests and b in manifests and manifests[a] == manifests[b]

    checks = [("python", "node")]
    if rt.cli_created_ms:
        checks += [("cli", "python"), ("cli", "node")]
    for a, b in checks:
        ok = identical(a, b)
        print(f"manifest bytes {a} == {b}: {'identical' if ok else 'DIFFERENT'}")
        passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
    if not rt.cli_created_ms and "cli" in manifests and "python" in manifests:
        # The CLI records the current time: compare everything but `created`.
        swapped = manifests["cli"].replace(
            f'"created":{created["cli"]},'.encode(), f'"created":{CREATED_MS},'.encode()
        )
        ok = swapped == manifests["python"]
        print(
            "manifest bytes cli == python except `created` (this CLI has no --created-ms): "
            + ("identical" if ok else "DIFFERENT")
        )
        passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)

    print(f"parity: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
