"""Run the handoff component through the ``wasmtime`` package.

The component is compiled once per process (or loaded from the on-disk cache
of compiled artifacts, when that cache can be trusted); every call then gets a fresh store and instance that
sees only the directories it is given, each preopened at its canonical
absolute host path so the component's messages name real paths.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Set, Tuple

from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, ExportIndex, Linker, Record, Variant

from ._types import ComponentError, DeadlineExceededError, error_from

PROTOCOL = "handoff:protocol/protocol@0.1.0"
DURABILITY = "handoff:protocol/durability@0.1.0"
BULK = "handoff:protocol/bulk@0.1.0"
FUNCTIONS = ("publish", "seal", "begin", "wait", "latest", "list", "pin", "unpin", "gc", "fsck")

#: Time limit of a call other than ``wait`` (as the CLI's ``--deadline`` default).
DEFAULT_DEADLINE = 3600.0
#: Extra time a ``wait`` call gets beyond its own timeout.
WAIT_MARGIN = 60.0
#: Largest linear memory the component may grow to.
MEMORY_LIMIT = 512 * 1024 * 1024
#: How often the engine's epoch advances: the granularity of call deadlines.
EPOCH_TICK = 0.05

_CACHE_MAGIC = b"HOFFPY2\n"
#: Largest cache entry read: the component's artifact is a few MB.
MAX_CACHE_ENTRY = 64 * 1024 * 1024
_warned: Set[str] = set()


@dataclass
class Loaded:
    """The engine, the compiled component and the linker, shared by all calls."""

    engine: Engine
    component: Component
    linker: Linker
    functions: Dict[str, ExportIndex]
    source: str
    """Where the component came from."""
    cached: bool
    """Whether the compiled artifact came from the on-disk cache."""
    load_seconds: float


_lock = threading.Lock()
_loaded: Optional[Loaded] = None


def loaded() -> Loaded:
    """The process-wide runtime, loading the component on first use."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


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


def _bulk_supported(store: Any) -> set:
    """``bulk.supported``: none. The descriptors are opaque here too, so the
    component hashes and copies through WASI itself and makes none of the
    calls below."""
    return set()


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


def _no_writeback(store: Any, descriptor: Any) -> None:
    """``bulk.start-writeback`` is advisory: nothing to do without the fd."""
    descriptor.drop(store)


def _load() -> Loaded:
    start = time.perf_counter()
    source = _component_path()
    try:
        wasm = Path(source).read_bytes()
    except OSError as e:
        raise ComponentError(
            f"bad component {source}: cannot read it: {e.strerror or e}", "bad-component"
        ) from None
    config = Config()
    config.epoch_interruption = True
    engine = Engine(config)
    try:
        linker = Linker(engine)
        linker.add_wasip2()
        with linker.root() as root:
            with root.add_instance(DURABILITY) as durability:
                durability.add_func("sync-file", _unsupported)
                durability.add_func("sync-directory", _unsupported)
            with root.add_instance(BULK) as bulk:
                bulk.add_func("supported", _bulk_supported)
                bulk.add_func("hash-file", _bulk_unsupported)
                bulk.add_func("copy-file", _bulk_unsupported)
                bulk.add_func("start-writeback", _no_writeback)

        # Resolve imports now, so a component of another world is reported
        # here rather than in the middle of a call.
        def resolve(component: Component) -> None:
            check = Store(engine)
            check.set_epoch_deadline(2**62)
            linker.instantiate(check, component)

        component, cached = _compile_cached(engine, wasm, "epoch", resolve)
    except WasmtimeError as e:
        raise ComponentError(f"bad component {source}: {e}", "bad-component") from None
    protocol = component.get_export_index(PROTOCOL)
    functions = {}
    for name in FUNCTIONS:
        index = component.get_export_index(name, protocol) if protocol else None
        if index is None:
            raise ComponentError(
                f"bad component {source}: it does not export {PROTOCOL}#{name}", "bad-component"
            )
        functions[name] = index
    threading.Thread(target=_tick, args=(engine,), name="handoff-epoch", daemon=True).start()
    return Loaded(engine, component, linker, functions, source, cached, time.perf_counter() - start)


def _tick(engine: Engine) -> None:
    while True:
        time.sleep(EPOCH_TICK)
        engine.increment_epoch()


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
    no limit). Raises the WIT error as its ``HandoffError`` subclass and a
    trap as ``ComponentError``, an overrun as ``DeadlineExceededError``."""
    rt = loaded()
    store = Store(rt.engine)
    wasi = WasiConfig()
    wasi.inherit_stderr()  # a panicking component says why
    for path, writable in preopens:
        wasi.preopen_dir(path, path, writable)
    store.set_wasi(wasi)
    store.set_limits(memory_size=MEMORY_LIMIT)
    ticks = 2**62 if deadline is None else max(1, int(deadline / EPOCH_TICK) + 1)
    store.set_epoch_deadline(ticks)
    try:
        instance = rt.linker.instantiate(store, rt.component)
        func = instance.get_func(store, rt.functions[name])
        assert func is not None
        result = func(store, *args)
    except WasmtimeError as e:
        text = str(e)
        if "interrupt" in text:
            raise DeadlineExceededError(
                f"the {name} call ran past its deadline of {deadline:g} s and was stopped",
                "deadline-exceeded",
            ) from None
        raise ComponentError(f"component trapped: {text}", "trap") from None
    return _ok(result)


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
