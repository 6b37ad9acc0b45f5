"""Build hook: put the handoff component into the package.

`pip install ./bindings/python` from a clone of the repository builds the
component with cargo (`bindings/build-component.sh`, the same command and
profile the CLI's build uses) and ships the .wasm inside the package.
`HANDOFF_GUEST_WASM=/path/to/handoff_guest.wasm` ships that file instead.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE.parent / "build-component.sh"


class build_py_with_component(build_py):
    def run(self):
        super().run()
        wasm = os.environ.get("HANDOFF_GUEST_WASM") or self._build_component()
        target = Path(self.build_lib) / "handoff" / "handoff_guest.wasm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wasm, target)

    def _build_component(self):
        if not BUILD_SCRIPT.exists():
            raise SystemExit(
                f"{BUILD_SCRIPT} not found: install from a clone of the handoff repository, "
                "or set HANDOFF_GUEST_WASM to a built handoff_guest.wasm"
            )
        return subprocess.run(
            ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()


setup(cmdclass={"build_py": build_py_with_component})
