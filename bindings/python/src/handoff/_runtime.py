"""Run the handoff component through the ``wasmtime`` package.

The component is compiled once per process (or loaded from the on-disk cache
of compiled artifacts); every call then gets a fresh store and instance that
sees only the directories it is given, each preopened at its canonical
absolute host path so the component's messages name real paths.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, ExportIndex, Linker, Record, Variant

from ._types import ComponentError, error_from

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

_CACHE_MAGIC = b"HOFFPY1\n"


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
            f"bad component {source}: cannot read it: {e.strerror or e}", "component"
        ) from None
    config = Config()
    config.epoch_interruption = True
    engine = Engine(config)
    try:
        component, cached = _compile_cached(engine, wasm)
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
        check = Store(engine)
        check.set_epoch_deadline(2**62)
        linker.instantiate(check, component)
    except WasmtimeError as e:
        raise ComponentError(f"bad component {source}: {e}", "component") from None
    protocol = component.get_export_index(PROTOCOL)
    functions = {}
    for name in FUNCTIONS:
        index = component.get_export_index(name, protocol) if protocol else None
        if index is None:
            raise ComponentError(
                f"bad component {source}: it does not export {PROTOCOL}#{name}", "component"
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


def _compile_cached(engine: Engine, wasm: bytes) -> Tuple[Component, bool]:
    """Load the compiled component from the cache, or compile and store it.

    A cache file is ``_CACHE_MAGIC``, the SHA-256 of the artifact, the
    artifact; its name hashes the component bytes and the wasmtime version,
    so another component or wasmtime never picks it up, and a torn file is
    recompiled rather than handed to wasmtime.
    """
    directory = None if os.environ.get("HANDOFF_NO_CACHE") else cache_dir()
    if directory is None:
        return Component(engine, wasm), False
    key = hashlib.sha256(
        b"handoff-py-cwasm\0"
        + hashlib.sha256(wasm).digest()
        + metadata.version("wasmtime").encode()
    ).hexdigest()
    path = directory / f"py-{key[:40]}.cwasm"
    try:
        data = path.read_bytes()
        digest, artifact = data[8:40], data[40:]
        if data[:8] == _CACHE_MAGIC and hashlib.sha256(artifact).digest() == digest:
            return Component.deserialize(engine, artifact), True
    except (OSError, WasmtimeError):
        pass
    component = Component(engine, wasm)
    try:
        artifact = bytes(component.serialize())
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".py-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(_CACHE_MAGIC + hashlib.sha256(artifact).digest() + artifact)
        os.replace(tmp, path)
    except (OSError, WasmtimeError):
        pass  # the cache is an optimisation only
    return component, False


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
    trap or overrun as ``ComponentError``."""
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
            raise ComponentError(
                f"component exceeded its time limit of {deadline:g}s", "component"
            ) from None
        raise ComponentError(f"component trapped: {text}", "component") from None
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
