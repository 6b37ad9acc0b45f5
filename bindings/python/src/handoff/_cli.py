"""The ``handoff`` console command of the Python package.

It runs ``handoff_command.wasm``, the plain WASI command built from the same
command-line definition as the native ``handoff`` CLI, under wasmtime-py: the
same subcommands, flags, ``--json`` output, messages and exit codes, with no
Rust toolchain on the machine.

The command sees only the directories its arguments name: ``--root``
(read-write) and the source of ``publish`` (read-only), each preopened at
its canonical absolute host path and passed on by that path, so paths in
its output are real paths, as the native CLI prints them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
from importlib import resources
from typing import List, Optional, Sequence, Tuple

from wasmtime import Config, Engine, ExitTrap, Store, WasiConfig, WasmtimeError
from wasmtime.component import Linker

from . import _relation, _runtime

#: Flags that take no value; every other flag takes one (``--x V`` or ``--x=V``).
_SWITCHES = frozenset({"--json", "--latest", "--repair", "--help", "-h", "--version", "-V"})

#: The WASI interface whose ``run`` the command exports (the WASI 0.2.x the
#: command is built against; ``handoff_command.wasm`` and this file ship together).
_RUN = "wasi:cli/run@0.2.12"


class _Dir:
    """A directory argument: where it is in argv and whether it is written."""

    def __init__(self, index: int, writable: bool, what: str):
        self.index = index
        self.writable = writable
        self.what = what


def _directories(argv: Sequence[str]) -> Tuple[Optional[str], List[_Dir]]:
    """The subcommand and the directory arguments of ``argv``, found as clap
    would parse them: ``--root``'s and ``--to``'s values, and the positional
    source of ``publish``. Anything malformed is left for the command to
    report."""
    sub: Optional[str] = None
    dirs: List[_Dir] = []
    i = 0
    only_positional = False
    while i < len(argv):
        arg = argv[i]
        if not only_positional and arg == "--":
            only_positional = True
        elif not only_positional and arg.startswith("-") and arg != "-":
            if arg in _SWITCHES or "=" in arg:
                if arg.startswith("--root="):
                    dirs.append(_Dir(i, True, "root"))
                elif arg.startswith("--to="):
                    dirs.append(_Dir(i, True, "local root"))
            else:
                if arg == "--root" and i + 1 < len(argv):
                    dirs.append(_Dir(i + 1, True, "root"))
                elif arg == "--to" and i + 1 < len(argv):
                    dirs.append(_Dir(i + 1, True, "local root"))
                i += 1
        elif sub is None:
            sub = arg
        elif sub == "publish":
            dirs.append(_Dir(i, False, "source"))
        i += 1
    return sub, dirs


def _canonical(path: str) -> Tuple[Optional[str], str, str]:
    """``(canonical absolute path, "", "")`` of a directory, or
    ``(None, why not, kind)`` in the words and kinds the native CLI uses."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as e:
        kind = "not-found" if e.errno == errno.ENOENT else "io"
        return None, f"{e.strerror} (os error {e.errno})" if e.errno else str(e), kind
    if not os.path.isdir(real):
        return None, "not a directory", "invalid-input"
    if not _is_utf8(real):
        return None, "the path is not valid UTF-8, which WASI paths must be", "invalid-input"
    return real, "", ""


def _is_utf8(text: str) -> bool:
    """Whether an argument (undecodable bytes arrive as surrogates) is UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fail(message: str, json_out: bool, kind: str, path: Optional[str] = None) -> int:
    """Report a failure found before the command runs, as the CLI does: its
    kind on stderr and, with ``--json``, the CLI's error object on stdout."""
    code = 2 if kind == "usage" else 1
    if json_out:
        error = {"exit_code": code, "kind": kind, "message": message, "path": path, "retryable": False}
        print(json.dumps({"error": error}, separators=(",", ":")))
    print(f"handoff: error ({kind}): {message}", file=sys.stderr)
    return code


def _command_path() -> str:
    override = os.environ.get("HANDOFF_COMMAND")
    if override:
        return override
    return str(resources.files("handoff").joinpath("handoff_command.wasm"))


def run(argv: Sequence[str]) -> int:
    """Run the command with ``argv`` (without the program name); the exit code."""
    argv = list(argv)
    sub, dirs = _directories(argv)
    json_out = "--json" in argv
    preopens: List[Tuple[str, bool]] = []
    for d in dirs:
        value = argv[d.index]
        flag = ""
        for name in ("--root=", "--to="):
            if value.startswith(name):
                flag, value = name, value[len(name) :]
        if d.what == "local root" and value and _is_utf8(value) and not os.path.isdir(value):
            # `fetch` and `watch --to` make their local root, as the native
            # CLI does (the command itself can only open what it is given),
            # but never inside the shared root.
            above = os.path.abspath(value)
            while not os.path.isdir(above):
                above = os.path.dirname(above)
            for root in (argv[r.index].removeprefix("--root=") for r in dirs if r.what == "root"):
                if os.path.isdir(root) and _relation(root, above) in ("same", "inside"):
                    why = f"is inside the shared root {root}: a local root is a root of its own, on the reader's disk"
                    return _fail(f"{d.what} {value}: {why}", json_out, "invalid-input", value)
            try:
                os.makedirs(value, exist_ok=True)
            except OSError as e:
                return _fail(f"{d.what} {value}: cannot create it: {e.strerror or e}", json_out, "io", value)
        real, why, kind = _canonical(value)
        if real is None:
            return _fail(f"{d.what} {value}: {why}", json_out, kind, value)
        argv[d.index] = flag + real
        preopens.append((real, d.writable))
    for number, arg in enumerate(argv, start=1):
        if not _is_utf8(arg):
            # As clap answers an argument it cannot read: a usage error.
            return _fail(f"argument {number} is not valid UTF-8", json_out, "usage")

    wasm_path = _command_path()
    try:
        with open(wasm_path, "rb") as f:
            wasm = f.read()
    except OSError as e:
        message = f"bad component {wasm_path}: cannot read it: {e.strerror or e}"
        return _fail(message, json_out, "bad-component", wasm_path)

    engine = Engine(Config())
    try:
        component, _ = _runtime._compile_cached(engine, wasm, "default")
        linker = Linker(engine)
        linker.add_wasip2()
    except WasmtimeError as e:
        return _fail(f"bad component {wasm_path}: {e}", json_out, "bad-component", wasm_path)

    wasi = WasiConfig()
    wasi.argv = ["handoff", *argv]
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    # The command's default writer id is `<$HOSTNAME>:<random>`.
    wasi.env = [["HOSTNAME", os.environ.get("HOSTNAME") or socket.gethostname() or "localhost"]]
    # A source inside the root is reached through its own read-only
    # preopen: the command takes the longest preopen a path is beneath.
    for path, writable in preopens:
        wasi.preopen_dir(path, path, writable)
    store = Store(engine)
    store.set_wasi(wasi)
    # The library's memory limit; no time limit: `watch` runs until stopped
    # and `wait` has its own --timeout.
    store.set_limits(memory_size=_runtime.MEMORY_LIMIT)

    try:
        instance = linker.instantiate(store, component)
        interface = component.get_export_index(_RUN)
        run_index = component.get_export_index("run", interface) if interface else None
        if run_index is None:
            message = f"bad component {wasm_path}: it does not export {_RUN}#run"
            return _fail(message, json_out, "bad-component", wasm_path)
        func = instance.get_func(store, run_index)
        assert func is not None
        result = func(store)
    except ExitTrap as e:
        return e.code
    except WasmtimeError as e:
        return _fail(f"component trapped: {e}", json_out, "trap")
    sys.stdout.flush()
    # `run` returns `result` (no payload): None is ok.
    return 0 if result is None else 1


def main() -> None:
    # Ctrl-C ends the program at once, as it ends the native CLI: Python's
    # own handler would run only when the component returns, and `watch`
    # does not return.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
