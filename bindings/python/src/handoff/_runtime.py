"""Run the handoff component through the ``wasmtime`` package.

The component is compiled once per process (or loaded from the on-disk cache
of compiled artifacts, when that cache can be trusted); every call then gets a fresh store and instance that
sees only the directories it is given, each preopened at its canonical
absolute host path so the component's messages name real paths.

A call runs in an engine slot of its own (the engine's epoch is what stops a
call, and all stores of an engine share it), so a call's deadline or
cancellation stops that call only. A process forked from one that had
started wasmtime runs its calls in helper processes instead (``_worker``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import heapq
import itertools
import os
import secrets
import stat
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, ExportIndex, Linker, Record, Variant

from . import _bulk
from ._types import ComponentError, DeadlineExceededError, HandoffError, error_from

PROTOCOL = "handoff:protocol/protocol@0.1.0"
DURABILITY = "handoff:protocol/durability@0.1.0"
BULK = "handoff:protocol/bulk@0.1.0"
FUNCTIONS = ("publish", "seal", "begin", "wait", "fetch", "latest", "list", "pin", "unpin", "gc", "fsck")

#: Time limit of a call other than ``wait`` (as the CLI's ``--deadline`` default).
DEFAULT_DEADLINE = 3600.0
#: Extra time a ``wait`` call gets beyond its own timeout.
WAIT_MARGIN = 60.0
#: Largest linear memory the component may grow to.
MEMORY_LIMIT = 512 * 1024 * 1024

_CACHE_MAGIC = b"HOFFPY2\n"
#: Largest cache entry read: the component's artifact is a few MB.
MAX_CACHE_ENTRY = 64 * 1024 * 1024
_warned: Set[str] = set()


@dataclass
class Loaded:
    """The compiled component, loaded once per process; each call runs in an
    engine slot made from it (see ``_Slot``)."""

    engine: Engine
    component: Component
    linker: Linker
    functions: Dict[str, ExportIndex]
    source: str
    """Where the component came from."""
    cached: bool
    """Whether the compiled artifact came from the on-disk cache."""
    load_seconds: float
    _artifact: Optional[bytes] = None

    def artifact(self) -> bytes:
        """The compiled component, serialized: what further slots load."""
        if self._artifact is None:
            self._artifact = bytes(self.component.serialize())
        return self._artifact


_lock = threading.Lock()
_loaded: Optional[Loaded] = None
#: The pid of the process that started wasmtime (compiled or ran the
#: component): a process forked from it inherits this value, and with it a
#: runtime whose threads it does not have (see ``_worker``).
_native_pid: Optional[int] = None


def loaded() -> Loaded:
    """The process-wide runtime, loading the component on first use."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def _mark_native() -> None:
    global _native_pid
    if _native_pid is None:
        _native_pid = os.getpid()


def forked() -> bool:
    """Whether this process was forked from one that had started wasmtime,
    so that its calls must run in helper processes."""
    return _native_pid is not None and _native_pid != os.getpid()


def _component_path() -> str:
    override = os.environ.get("HANDOFF_COMPONENT")
    if override:
        return override
    packaged = resources.files("handoff").joinpath("handoff_guest.wasm")
    return str(packaged)


def _unsupported(store: Any, descriptor: Any) -> Variant:
    """``durability.sync-file`` / ``sync-directory``.

    wasmtime-py hands a custom import the descriptor only as an opaque
    resource handle; the file descriptor behind it is out of reach. So this
    host answers ``unsupported``, and the component falls back to WASI's
    ``descriptor.sync()``, which wasmtime implements with ``fsync(2)`` (for a
    directory, on a descriptor it opens itself). The borrow must be released
    before returning.
    """
    descriptor.drop(store)
    return Variant("unsupported")


def _batch_sync_unsupported(store: Any, directory: Any, paths: List[str]) -> Variant:
    """``durability.sync-files``: ``unsupported``, for the same reason as
    above; the component then opens and flushes each file itself.

    ``batch-sync-error`` is untagged here (``None`` is ``unsupported``), which
    makes ``result<_, batch-sync-error>`` tagged: ``err(unsupported)`` is
    ``Variant("err", None)``, and a bare ``None`` would be refused.
    """
    directory.drop(store)
    return Variant("err", None)


def _bulk_supported(store: Any) -> set:
    """``bulk.supported``: ``hash-path`` and ``start-writeback-path``. The
    descriptors are opaque here too, so the component copies through WASI
    itself and makes none of the descriptor calls below; it has this host
    hash a file, and start its writeback, by its path instead (``_bulk``)."""
    return _bulk.supported()


def _bulk_hash_path(store: Any, root: str, path: str) -> _bulk.Answer:
    """``bulk.hash-path``, beneath the directories of the call running on
    this thread (host functions run on the thread that called the
    component)."""
    running: Optional[_Call] = getattr(_current, "call", None)
    if running is None:
        return f"hash-path refused {root}/{path}: no call is running"
    return _bulk.hash_path(running.dirs, root, path, lambda: running.stopped)


#: The call running on this thread, for ``_bulk_hash_path``.
_current = threading.local()


def _bulk_start_writeback_path(store: Any, root: str, path: str) -> None:
    """``bulk.start-writeback-path``: advisory, so nothing outside a call."""
    running: Optional[_Call] = getattr(_current, "call", None)
    if running is not None:
        _bulk.start_writeback_path(running.dirs, root, path)


def _bulk_unsupported(store: Any, *descriptors: Any) -> None:
    """``bulk.hash-file`` / ``copy-file``, should they be called anyway.

    They are not, and must not be: wasmtime 50.0 traps while lifting the two
    borrowed descriptors of ``copy-file`` for a Python import ("deferred host
    scope has no call context") before this function runs.

    ``bulk-error`` has one case without a payload and one with a string, so
    wasmtime-py represents it untagged: ``None`` is ``err(unsupported)``.
    """
    for descriptor in descriptors:
        descriptor.drop(store)
    return None


def _batch_unsupported(store: Any, *args: Any) -> None:
    """``bulk.hash-files`` / ``copy-files``, should they be called anyway:
    ``err(unsupported)``, which is ``None`` here as for ``bulk-error``."""
    for arg in args:
        if not isinstance(arg, list):
            arg.drop(store)
    return None


def _no_writeback(store: Any, descriptor: Any) -> None:
    """``bulk.start-writeback`` is advisory: nothing to do without the fd."""
    descriptor.drop(store)


def _engine() -> Engine:
    config = Config()
    config.epoch_interruption = True
    return Engine(config)


def _linker(engine: Engine) -> Linker:
    linker = Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        with root.add_instance(DURABILITY) as durability:
            durability.add_func("sync-file", _unsupported)
            durability.add_func("sync-directory", _unsupported)
            durability.add_func("sync-files", _batch_sync_unsupported)
        with root.add_instance(BULK) as bulk:
            bulk.add_func("supported", _bulk_supported)
            bulk.add_func("hash-file", _bulk_unsupported)
            bulk.add_func("hash-path", _bulk_hash_path)
            bulk.add_func("copy-file", _bulk_unsupported)
            bulk.add_func("hash-files", _batch_unsupported)
            bulk.add_func("copy-files", _batch_unsupported)
            bulk.add_func("start-writeback", _no_writeback)
            bulk.add_func("start-writeback-path", _bulk_start_writeback_path)
    return linker


def _functions(component: Component, source: str) -> Dict[str, ExportIndex]:
    protocol = component.get_export_index(PROTOCOL)
    functions = {}
    for name in FUNCTIONS:
        index = component.get_export_index(name, protocol) if protocol else None
        if index is None:
            raise ComponentError(
                f"bad component {source}: it does not export {PROTOCOL}#{name}", "bad-component"
            )
        functions[name] = index
    return functions


def _load() -> Loaded:
    _mark_native()
    start = time.perf_counter()
    source = _component_path()
    try:
        wasm = Path(source).read_bytes()
    except OSError as e:
        raise ComponentError(
            f"bad component {source}: cannot read it: {e.strerror or e}", "bad-component"
        ) from None
    engine = _engine()
    try:
        linker = _linker(engine)

        # Resolve imports now, so a component of another world is reported
        # here rather than in the middle of a call.
        def resolve(component: Component) -> None:
            check = Store(engine)
            check.set_epoch_deadline(1)
            linker.instantiate(check, component)

        component, cached = _compile_cached(engine, wasm, "epoch", resolve)
    except WasmtimeError as e:
        raise ComponentError(f"bad component {source}: {e}", "bad-component") from None
    functions = _functions(component, source)
    _give_back(_Slot(engine, component, linker, functions))
    return Loaded(engine, component, linker, functions, source, cached, time.perf_counter() - start)


class _Call:
    """One call running in a slot, and why it was stopped, if it was."""

    __slots__ = ("slot", "stopped", "done", "dirs")

    def __init__(self, slot: "_Slot"):
        self.slot = slot
        self.stopped: Optional[str] = None
        """``"deadline"`` or ``"cancelled"``, set before the epoch is bumped."""
        self.done = False
        self.dirs: Dict[str, Optional[int]] = {}
        """The call's preopens by name, opened for ``bulk.hash-path``."""


class _Slot:
    """An engine of its own with the component and a linker. One call at a
    time runs in a slot: an engine's epoch is shared by all its stores, so
    bumping this engine's epoch interrupts that call and no other. Each
    store's epoch deadline is one tick away, and the epoch moves only to
    stop a call (at its deadline, or cancelled): nothing ticks while calls
    run normally."""

    def __init__(self, engine: Engine, component: Component, linker: Linker, functions: Dict[str, ExportIndex]):
        self.engine = engine
        self.component = component
        self.linker = linker
        self.functions = functions
        self.lock = threading.Lock()
        self.running: Optional[_Call] = None

    @classmethod
    def make(cls, rt: Loaded) -> "_Slot":
        engine = _engine()
        component = Component.deserialize(engine, rt.artifact())
        return cls(engine, component, _linker(engine), _functions(component, rt.source))


_slots_lock = threading.Lock()
_idle_slots: List[_Slot] = []


def _take_slot(rt: Loaded) -> _Slot:
    with _slots_lock:
        if _idle_slots:
            return _idle_slots.pop()
    return _Slot.make(rt)


def _give_back(slot: _Slot) -> None:
    with _slots_lock:
        _idle_slots.append(slot)


def _interrupt(call: _Call, why: str) -> None:
    """Stop ``call`` at its next return to the component, if it still runs."""
    slot = call.slot
    with slot.lock:
        if slot.running is call and call.stopped is None:
            call.stopped = why
            slot.engine.increment_epoch()


class _Deadlines:
    """One thread that stops each call whose deadline has passed; it sleeps
    until the nearest deadline."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.heap: List[Tuple[float, int, _Call]] = []
        self.count = itertools.count()
        self.active = 0
        self.thread: Optional[threading.Thread] = None

    def add(self, when: float, call: _Call) -> None:
        with self.cond:
            heapq.heappush(self.heap, (when, next(self.count), call))
            self.active += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="handoff-deadlines", daemon=True)
                self.thread.start()
            elif self.heap[0][2] is call:
                self.cond.notify()

    def finish(self, call: _Call) -> None:
        with self.cond:
            call.done = True
            self.active -= 1
            # Finished calls stay queued until their deadline; drop them
            # when they outnumber the running ones.
            if len(self.heap) > 2 * self.active + 64:
                self.heap = [e for e in self.heap if not e[2].done]
                heapq.heapify(self.heap)

    def _run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                while self.heap and (self.heap[0][2].done or self.heap[0][0] <= now):
                    _, _, call = heapq.heappop(self.heap)
                    if not call.done:
                        _interrupt(call, "deadline")
                self.cond.wait(self.heap[0][0] - now if self.heap else None)


_deadlines = _Deadlines()


class Cancelled(HandoffError, concurrent.futures.CancelledError):
    """The call was cancelled through its :class:`CancelToken` (kind
    ``cancelled``). A write cancelled before it committed leaves at most a
    staging directory, which ``gc`` and ``fsck --repair`` remove; a call
    that finished before the cancellation reached it returns normally."""

    exit_code = 130


class CancelToken:
    """Cancels the handoff calls made where it is current (``with
    token.scope():``), from any thread. A running call stops at its next
    return to the component (a ``wait``, within one ``poll`` interval) and
    raises :class:`Cancelled`; a call started after :meth:`cancel` raises
    it at once. Cancelling cannot be undone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: List[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    @contextlib.contextmanager
    def scope(self) -> Iterator["CancelToken"]:
        """Make this the token of the calls made in the ``with`` block (a
        context variable: threads started with ``asyncio.to_thread`` or
        ``contextvars.copy_context().run`` see it too)."""
        reset = _token.set(self)
        try:
            yield self
        finally:
            _token.reset(reset)

    def _watch(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` on cancellation (now, if already cancelled); returns
        the function that stops watching."""
        with self._lock:
            if not self._cancelled:
                self._hooks.append(hook)

                def unwatch() -> None:
                    with self._lock:
                        if hook in self._hooks:
                            self._hooks.remove(hook)

                return unwatch
        hook()
        return lambda: None


_token: ContextVar[Optional[CancelToken]] = ContextVar("handoff_cancel_token", default=None)


def _after_fork_in_child() -> None:
    """A forked child gets fresh locks and no slots: it never touches the
    parent's engines, lock or threads (which it does not have). If the
    parent had started wasmtime, ``forked()`` is true here and calls go to
    helper processes."""
    global _lock, _slots_lock, _idle_slots, _deadlines
    _lock = threading.Lock()
    _slots_lock = threading.Lock()
    _idle_slots = []
    _deadlines = _Deadlines()
    _bulk.after_fork_in_child()
    from . import _worker

    _worker.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def cache_dir() -> Optional[Path]:
    """``$HANDOFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/handoff``, else
    ``~/.cache/handoff`` (the same directory the Rust host uses)."""
    if os.environ.get("HANDOFF_CACHE_DIR"):
        return Path(os.environ["HANDOFF_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "handoff"
    if os.environ.get("HOME"):
        return Path(os.environ["HOME"]) / ".cache" / "handoff"
    return None


def _compile_cached(
    engine: Engine,
    wasm: bytes,
    config_tag: str,
    resolve: Optional[Callable[[Component], None]] = None,
) -> Tuple[Component, bool]:
    """Load the compiled component from the cache, or compile and store it,
    and check it with ``resolve`` (which raises ``WasmtimeError``).

    ``config_tag`` names the engine configuration the caller built
    ``engine`` with. A cache entry is native code that gets run, so it is
    used only if the cache directory and the entry belong to this user and
    neither is writable by group or others, the entry is a regular file
    (opened without following a symbolic link or blocking on a FIFO) of at
    most ``MAX_CACHE_ENTRY`` bytes, and it is ``_CACHE_MAGIC``, the hash of
    the wasmtime version and ``config_tag``, the SHA-256 of the component,
    the SHA-256 of the artifact, the artifact, all matching. An entry that
    fails any check, or fails ``resolve``, is replaced; a directory that
    fails is neither read nor written (the component is compiled in memory,
    with a warning).
    """
    _mark_native()
    directory = None if os.environ.get("HANDOFF_NO_CACHE") else cache_dir()
    if directory is None:
        return _compile(engine, wasm, resolve), False
    try:
        dir_fd = _open_cache_dir(directory)
    except _Untrusted as e:
        message = f"cache directory {directory} not used: {e}; compiled the component in memory"
        if message not in _warned:
            _warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        return _compile(engine, wasm, resolve), False
    try:
        engine_id = hashlib.sha256(
            b"wasmtime-py\0" + metadata.version("wasmtime").encode() + b"\0" + config_tag.encode()
        ).digest()
        header = _CACHE_MAGIC + engine_id + hashlib.sha256(wasm).digest()
        name = f"py-{hashlib.sha256(b'handoff-py-cwasm' + header).hexdigest()[:40]}.cwasm"
        artifact = _read_entry(dir_fd, name, header)
        if artifact is not None:
            try:
                component = Component.deserialize(engine, artifact)
                if resolve is not None:
                    resolve(component)
                return component, True
            except WasmtimeError:
                pass  # replaced below
        component = _compile(engine, wasm, resolve)
        try:
            artifact = bytes(component.serialize())
            _write_entry(dir_fd, name, header + hashlib.sha256(artifact).digest() + artifact)
        except (OSError, WasmtimeError):
            pass  # the cache is an optimisation only
        return component, False
    finally:
        os.close(dir_fd)


def _compile(engine: Engine, wasm: bytes, resolve: Optional[Callable[[Component], None]]) -> Component:
    component = Component(engine, wasm)
    if resolve is not None:
        resolve(component)
    return component


class _Untrusted(Exception):
    """Why a cache directory is not to be used."""


def _owned_privately(st: os.stat_result) -> Optional[str]:
    """Why a file with status ``st`` is not to be trusted, or ``None``."""
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _open_cache_dir(directory: Path) -> int:
    """Create ``directory`` if missing (mode 0700) and open it, or raise
    ``_Untrusted`` saying why it is not to be used."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _Untrusted(f"cannot open it: {e.strerror or e}") from None
    why = _owned_privately(os.fstat(fd))
    if why is not None:
        os.close(fd)
        raise _Untrusted(why)
    return fd


def _read_entry(dir_fd: int, name: str, header: bytes) -> Optional[bytes]:
    """The artifact in entry ``name`` if it passes every check, else ``None``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None  # missing, a symbolic link, unreadable
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _owned_privately(st) is not None:
            return None
        if st.st_size > MAX_CACHE_ENTRY:
            return None
        chunks = []
        left = MAX_CACHE_ENTRY + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    start = len(header) + 32
    if len(data) > MAX_CACHE_ENTRY or len(data) < start or data[: len(header)] != header:
        return None
    artifact = data[start:]
    if hashlib.sha256(artifact).digest() != data[len(header) : start]:
        return None
    return artifact


def _write_entry(dir_fd: int, name: str, data: bytes) -> None:
    """Store ``data`` as entry ``name`` atomically, replacing (not writing
    through) whatever is there."""
    tmp = f".py-{os.getpid()}-{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def record(**fields: Any) -> Record:
    """A WIT record from keyword arguments (``created_ms`` -> ``created-ms``)."""
    r = Record()
    for name, value in fields.items():
        setattr(r, name.replace("_", "-"), value)
    return r


def field(r: Any, name: str) -> Any:
    """A field of a record lifted from the component, by its Python name."""
    return getattr(r, name.replace("_", "-"))


def call(
    name: str,
    preopens: Sequence[Tuple[str, bool]],
    args: Sequence[Any],
    deadline: Optional[float] = DEFAULT_DEADLINE,
) -> Any:
    """Call export ``name`` in a fresh instance that sees only ``preopens``
    (``(canonical path, writable)``), within ``deadline`` seconds (``None``:
    no limit), cancellable through the current :class:`CancelToken`. Raises
    the WIT error as its ``HandoffError`` subclass, a trap as
    ``ComponentError``, an overrun as ``DeadlineExceededError`` and a
    cancellation as :class:`Cancelled`."""
    token = _token.get()
    if token is not None and token.cancelled:
        raise _cancelled(name)
    if forked():
        from . import _worker

        return _worker.call(name, preopens, args, deadline, token)
    rt = loaded()
    slot = _take_slot(rt)
    running = _Call(slot)
    with slot.lock:
        slot.running = running
    unwatch: Optional[Callable[[], None]] = None
    try:
        store = Store(slot.engine)
        wasi = WasiConfig()
        wasi.inherit_stderr()  # a panicking component says why
        for path, writable in preopens:
            wasi.preopen_dir(path, path, writable)
        running.dirs = _bulk.open_preopens([path for path, _ in preopens])
        store.set_wasi(wasi)
        store.set_limits(memory_size=MEMORY_LIMIT)
        # Armed before the call can be stopped: a stop that comes earlier
        # is seen in `running.stopped` below, a later one bumps the epoch.
        store.set_epoch_deadline(1)
        if deadline is not None:
            _deadlines.add(time.monotonic() + deadline, running)
        if token is not None:
            unwatch = token._watch(lambda: _interrupt(running, "cancelled"))
        finished = False
        if running.stopped is None:
            _current.call = running
            try:
                instance = slot.linker.instantiate(store, slot.component)
                func = instance.get_func(store, slot.functions[name])
                assert func is not None
                result = func(store, *args)
                finished = True
            except WasmtimeError as e:
                text = str(e)
                if running.stopped is None or "interrupt" not in text:
                    raise ComponentError(f"component trapped: {text}", "trap") from None
        # A call stopped after its last return from the component has
        # finished: its result stands. Otherwise it was stopped.
        if not finished:
            if running.stopped == "deadline":
                raise DeadlineExceededError(
                    f"the {name} call ran past its deadline of {deadline:g} s and was stopped",
                    "deadline-exceeded",
                )
            raise _cancelled(name)
    finally:
        _current.call = None
        _bulk.close_preopens(running.dirs)
        if unwatch is not None:
            unwatch()
        with slot.lock:
            slot.running = None
        if deadline is not None:
            _deadlines.finish(running)
        _give_back(slot)
    return _ok(result)


def _cancelled(name: str) -> Cancelled:
    return Cancelled(f"the {name} call was cancelled", "cancelled")


def _ok(result: Any) -> Any:
    """The ``ok`` value of an export's ``result<T, error>``, or its ``error``
    raised.

    wasmtime-py tags a result only when its two cases could be confused: a
    ``T`` that is a record or an option comes as ``Variant("ok" | "err", ...)``;
    a list or no value comes bare, and then a bare ``Record`` is the error.
    """
    if isinstance(result, Variant):
        if result.tag == "err":
            raise error_from(result.payload)
        return result.payload
    if isinstance(result, Record):
        raise error_from(result)
    return result
