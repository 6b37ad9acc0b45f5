"""Handoff calls in a process forked from one that had started wasmtime.

wasmtime's WASI runs on a process-wide tokio runtime. A forked child
inherits the runtime's state but not its threads: a blocking file operation
is handed to a thread that does not exist, and timers wait for workers that
do not exist, so the child's first call hangs. There is no way to give the
child a fresh runtime in the same process, so such a child never touches the
inherited one: each of its calls runs in a helper process started with
``sys.executable -m handoff._worker`` (a fresh exec, so a fresh wasmtime).
One helper runs one call at a time; idle helpers are reused. A helper ends
when the process that started it closes its pipe, which it does by exiting
(or by dropping the helper after an interrupted call), even mid-call.

The pipes carry length-prefixed pickles: ``("call", id, name, preopens,
args, deadline)`` and ``("cancel", id)`` in, ``("ok", id, value)`` or
``("err", id, class name, message, kind, path, retryable)`` or ``("exc",
id, exception)`` out. The values are wasmtime's ``Record`` / ``Variant``
objects, plain classes that pickle.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from typing import Any, List, Optional, Sequence, Set, Tuple

from . import _runtime, _types
from ._types import ComponentError, HandoffError

_HEADER = struct.Struct(">Q")

#: The exceptions a helper may report, by class name.
_ERRORS = {
    name: cls
    for name, cls in vars(_types).items()
    if isinstance(cls, type) and issubclass(cls, HandoffError)
}
_ERRORS["Cancelled"] = _runtime.Cancelled


class _Gone(Exception):
    """The other end of a pipe closed."""


def _send(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            raise _Gone() from None
        view = view[n:]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise _Gone()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> Any:
    (n,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, n))


class _Helper:
    """A helper process and the two ends of its pipes."""

    def __init__(self) -> None:
        to_child, self.to = os.pipe()  # both ends close on exec
        self.fro, from_child = os.pipe()
        env = dict(os.environ)
        # The helper runs the component this process would have run, found
        # by the import path this process has.
        rt = _runtime._loaded
        env["HANDOFF_COMPONENT"] = rt.source if rt is not None else _runtime._component_path()
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handoff._worker"],
                stdin=to_child,
                stdout=from_child,
                env=env,
                close_fds=True,
            )
        except BaseException:
            os.close(self.to)
            os.close(self.fro)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        self.write_lock = threading.Lock()
        self.ids = itertools.count()

    def send(self, message: Any) -> None:
        with self.write_lock:
            _send(self.to, message)

    def close(self) -> None:
        """Close the pipes: the helper exits, stopping any call it runs."""
        for fd in (self.to, self.fro):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to = self.fro = -1

    def gone(self, name: str) -> ComponentError:
        self.close()
        try:
            status = self.proc.wait(5)
            how = f"exited with status {status}" if status >= 0 else f"was killed by signal {-status}"
        except subprocess.TimeoutExpired:
            how = "stopped answering"
        return ComponentError(
            f"the helper process (pid {self.proc.pid}) running the {name} call for this forked "
            f"process {how} before answering; its stderr is this process's",
            "trap",
        )


_pool_lock = threading.Lock()
_idle: List[_Helper] = []
_helpers: Set[_Helper] = set()


def call(
    name: str,
    preopens: Sequence[Tuple[str, bool]],
    args: Sequence[Any],
    deadline: Optional[float],
    token: Optional["_runtime.CancelToken"],
) -> Any:
    """``_runtime.call`` in a helper process."""
    with _pool_lock:
        helper = _idle.pop() if _idle else None
    if helper is None:
        helper = _Helper()
        with _pool_lock:
            _helpers.add(helper)
    call_id = next(helper.ids)
    unwatch = None
    reusable = False
    try:
        try:
            helper.send(("call", call_id, name, list(preopens), list(args), deadline))
            if token is not None:
                unwatch = token._watch(lambda: _cancel(helper, call_id))
            reply = _receive(helper.fro)
        except _Gone:
            raise helper.gone(name) from None
        reusable = True
    finally:
        if unwatch is not None:
            unwatch()
        with _pool_lock:
            if reusable:
                _idle.append(helper)
            else:
                # Interrupted while the helper was busy (e.g. KeyboardInterrupt):
                # closing its pipes ends it and its call.
                _helpers.discard(helper)
                helper.close()
    kind = reply[0]
    if kind == "ok":
        return reply[2]
    if kind == "err":
        _, _, cls_name, message, error_kind, path, retryable = reply
        raise _ERRORS.get(cls_name, HandoffError)(message, error_kind, path=path, retryable=retryable)
    raise reply[2]


def _cancel(helper: _Helper, call_id: int) -> None:
    try:
        helper.send(("cancel", call_id))
    except (_Gone, OSError):
        pass  # the reply, or the helper's end, is on its way


def after_fork_in_child() -> None:
    """Drop the parent's helpers: closing the inherited pipe ends here lets
    them see the parent's exit; their locks may be held by a thread this
    process does not have."""
    global _pool_lock, _idle, _helpers
    for helper in _helpers:
        helper.close()
    _pool_lock = threading.Lock()
    _idle = []
    _helpers = set()


def main() -> None:
    """The helper: run the calls that arrive on stdin, one at a time, and
    answer on stdout; exit when stdin closes."""
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    # Ctrl-C is the forked process's to handle; it ends this helper by
    # closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    calls: "queue.Queue[Tuple[Any, _runtime.CancelToken]]" = queue.Queue()
    tokens = {}

    def read() -> None:
        while True:
            try:
                message = _receive(0)
            except _Gone:
                os._exit(0)  # the process that started this one is gone
            if message[0] == "call":
                token = tokens[message[1]] = _runtime.CancelToken()
                calls.put((message, token))
            elif message[0] == "cancel":
                token = tokens.get(message[1])
                if token is not None:
                    token.cancel()

    threading.Thread(target=read, name="handoff-helper-reader", daemon=True).start()
    while True:
        (_, call_id, name, preopens, args, deadline), token = calls.get()
        try:
            with token.scope():
                reply: Tuple[Any, ...] = ("ok", call_id, _runtime.call(name, preopens, args, deadline))
        except HandoffError as e:
            reply = ("err", call_id, type(e).__name__, str(e), e.kind, e.path, e.retryable)
        except Exception as e:
            reply = ("exc", call_id, e)
            try:
                pickle.dumps(e)
            except Exception:  # sent as its text instead
                reply = ("err", call_id, "HandoffError", f"{type(e).__name__}: {e}", "io", None, False)
        finally:
            tokens.pop(call_id, None)
        try:
            _send(out, reply)
        except _Gone:
            os._exit(0)


if __name__ == "__main__":
    main()
