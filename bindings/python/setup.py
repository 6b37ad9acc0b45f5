"""Build hook: put the handoff components into the package.

`pip install ./bindings/python` (or `pip wheel`) from a clone of the
repository builds both with cargo (`bindings/build-component.sh`, the same
commands and profile the CLI's build uses) and ships them inside the
package: `handoff_guest.wasm`, run by the library, and
`handoff_command.wasm`, run by the `handoff` console command.
`HANDOFF_GUEST_WASM` / `HANDOFF_COMMAND_WASM` ship those files instead.
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE.parent / "build-component.sh"


class build_py_with_components(build_py):
    def run(self):
        super().run()
        package = Path(self.build_lib) / "handoff"
        package.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._build([]), package / "handoff_guest.wasm")
        shutil.copyfile(self._build(["--command"]), package / "handoff_command.wasm")

    def _build(self, args):
        if not BUILD_SCRIPT.exists():
            raise SystemExit(
                f"{BUILD_SCRIPT} not found: install from a clone of the handoff repository, "
                "or set HANDOFF_GUEST_WASM and HANDOFF_COMMAND_WASM to built components"
            )
        # The script prints the path, or the prebuilt file the environment names.
        return subprocess.run(
            ["bash", str(BUILD_SCRIPT), *args], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()


setup(cmdclass={"build_py": build_py_with_components})
