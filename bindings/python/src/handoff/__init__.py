"""handoff: publish, wait for and retain model-weight versions on a shared
filesystem.

This package runs the same WebAssembly component as the ``handoff`` CLI
(the protocol of ``docs/PROTOCOL.md``), through the ``wasmtime`` package.
The component sees only the root (read-write) and, for :func:`publish`, the
source (read-only).

>>> import handoff
>>> report = handoff.publish("/mnt/ckpt", 42, "out/adapter", keep=3)   # trainer
>>> v = handoff.wait("/mnt/ckpt", latest=True, pin="server-a", timeout=300)  # reader
>>> # ... load v.path ...
>>> handoff.unpin("/mnt/ckpt", v.step, "server-a")

Durations are seconds (``float`` or ``datetime.timedelta``). Every call
blocks the calling thread; calls from several threads run in parallel.
Errors are :class:`HandoffError` subclasses that map the CLI's exit codes:
:class:`TimedOutError` (a ``TimeoutError``; exit 3), :class:`IntegrityError`
(4), :class:`ConflictError` (5).
"""

from __future__ import annotations

import datetime
import math
import os
import socket
from typing import List, Optional, Set, Tuple, Union

from wasmtime.component import Variant

from . import _runtime, _types
from ._runtime import field, record
from ._types import *  # noqa: F403 (the result and error types, listed in _types.__all__)

__all__ = [
    "publish",
    "seal",
    "begin",
    "wait",
    "latest",
    "ls",
    "pin",
    "unpin",
    "gc",
    "fsck",
    "default_writer_id",
    "DEFAULT_PREFIX",
    "DEFAULT_SETTLE",
    "DEFAULT_POLL",
    "DEFAULT_TTL",
    "DEFAULT_GRACE",
    "DEFAULT_SKEW",
    *_types.__all__,
]

PathLike = Union[str, "os.PathLike[str]"]
Seconds = Union[float, int, datetime.timedelta]

# The protocol core's defaults (crates/handoff-core/src/types.rs), in
# seconds; tests/defaults.rs checks that they match.
DEFAULT_PREFIX = "step_"
"""Prefix of step directory names."""
DEFAULT_SETTLE = 30.0
"""How long ``wait`` retries a committed step that does not validate yet."""
DEFAULT_POLL = 0.1
"""The first interval between ``wait``'s attempts."""
DEFAULT_TTL = 600.0
"""How long a pin holds a step."""
DEFAULT_GRACE = 3600.0
"""How long ``gc`` leaves an untouched staging directory."""
DEFAULT_SKEW = 120.0
"""The clock-skew allowance ``gc`` adds to a pin's expiry."""
_VERIFY = ("size", "hash")


def default_writer_id() -> str:
    """``<hostname>:<pid>``, the CLI's default writer id."""
    return f"{socket.gethostname() or 'localhost'}:{os.getpid()}"


def publish(
    root: PathLike,
    step: int,
    source: PathLike,
    *,
    writer: Optional[str] = None,
    created_ms: Optional[int] = None,
    prefix: str = DEFAULT_PREFIX,
    keep: Optional[int] = None,
    run: int = 0,
) -> PublishReport:
    """Copy the payload under ``source`` into ``<root>/.handoff/staging/``,
    seal it there and rename it to ``<root>/<prefix><step>``.

    Once this returns, the version is durable and visible. On error nothing
    is visible and earlier versions are untouched; a step that already
    exists raises :class:`ConflictError` and is left as it is. ``writer`` and
    ``created_ms`` go into the manifest (defaults: :func:`default_writer_id`,
    now); the same input with the same values gives the same manifest bytes.
    With ``keep``, :func:`gc` runs afterwards keeping the newest ``keep``.
    ``run`` (from :func:`begin`) writes step ``step`` of that run; a writer
    of a run older than the newest begun raises :class:`ConflictError`
    ("superseded").
    """
    return _write("publish", root, step, source, writer, created_ms, prefix, keep, run)


def seal(
    root: PathLike,
    step: int,
    *,
    writer: Optional[str] = None,
    created_ms: Optional[int] = None,
    prefix: str = DEFAULT_PREFIX,
    keep: Optional[int] = None,
    run: int = 0,
) -> PublishReport:
    """Seal a payload already written in ``<root>/<prefix><step>/``: flush
    every file, write the manifest, create ``STABLE``, flush the step
    directory and the root, in that order.

    Once this returns the version is durable, and readers that only look for
    ``STABLE`` keep working. Symbolic links and special files are refused
    before anything is written; a step that already has ``STABLE``, or that
    another writer is sealing, raises :class:`ConflictError`. ``run`` as for
    :func:`publish`.
    """
    return _write("seal", root, step, None, writer, created_ms, prefix, keep, run)


def begin(root: PathLike, *, prefix: str = DEFAULT_PREFIX) -> int:
    """Begin a new run on ``root``, for a trainer restarted from an earlier
    checkpoint, and return its number: pass it as ``run=`` to every
    :func:`publish` or :func:`seal` of the restarted trainer. Writers of
    older runs are refused from then on, and step ``n`` of the run is the
    step numbered ``run * 10**12 + n``, after every step of older runs."""
    root_path = _dir(root, "root")
    return _runtime.call("begin", [(root_path, True)], [root_path, prefix])


def wait(
    root: PathLike,
    step: Optional[int] = None,
    *,
    latest: bool = False,
    after: Optional[int] = None,
    timeout: Optional[Seconds] = None,
    verify: str = "size",
    settle: Seconds = DEFAULT_SETTLE,
    poll: Seconds = DEFAULT_POLL,
    pin: Optional[str] = None,
    ttl: Seconds = DEFAULT_TTL,
    prefix: str = DEFAULT_PREFIX,
) -> Version:
    """Wait until a step is committed and validates; return it.

    Give exactly one of ``step`` (that step), ``latest=True`` (the highest
    step that validates) or ``after`` (the lowest step above it). Each
    attempt opens the step, ``STABLE``, the manifest and every listed file
    afresh and checks sizes (and BLAKE3 hashes with ``verify="hash"``).

    Raises :class:`TimedOutError` when ``timeout`` passes with the step never
    committed (``None`` waits forever), :class:`IntegrityError` when it is
    committed but still does not validate after ``settle``. With ``pin``,
    the version is pinned for that holder for ``ttl`` before it is returned;
    the holder's pins on other steps stay. A reader serving an earlier
    version hands over: it switches to the new one, then calls :func:`unpin`
    for the old one.
    """
    chosen = [step is not None, bool(latest), after is not None]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of step, latest=True or after")
    if step is not None:
        target = Variant("step", _u64(step, "step"))
    elif latest:
        target = Variant("latest")
    else:
        target = Variant("after", _u64(after, "after"))
    timeout_ms = None if timeout is None else _ms(timeout, "timeout")
    pin_request = None if pin is None else record(holder=pin, ttl_ms=_ms(ttl, "ttl"))
    options = record(
        prefix=prefix,
        verify=_verify(verify),
        timeout_ms=timeout_ms,
        settle_ms=_ms(settle, "settle"),
        poll_ms=_ms(poll, "poll"),
        pin=pin_request,
    )
    root_path = _dir(root, "root")
    deadline = None if timeout_ms is None else timeout_ms / 1000 + _runtime.WAIT_MARGIN
    return _version(_runtime.call("wait", [(root_path, True)], [root_path, target, options], deadline))


def latest(root: PathLike, *, verify: str = "size", prefix: str = DEFAULT_PREFIX) -> Optional[Version]:
    """The highest committed step that validates, in one attempt; ``None``
    when there is none. Incomplete, corrupt and stray entries are skipped."""
    root_path = _dir(root, "root")
    found = _runtime.call("latest", [(root_path, True)], [root_path, prefix, _verify(verify)])
    return None if found is None else _version(found)


def ls(root: PathLike, *, prefix: str = DEFAULT_PREFIX) -> List[StepInfo]:
    """Every step directory under ``root``, in step order, with its state."""
    root_path = _dir(root, "root")
    steps = _runtime.call("list", [(root_path, True)], [root_path, prefix])
    return [StepInfo(s.step, s.path, s.state, s.files, s.bytes) for s in steps]


def pin(
    root: PathLike,
    step: int,
    holder: str,
    ttl: Seconds = DEFAULT_TTL,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> PinInfo:
    """Pin a committed step for ``holder`` for ``ttl``: gc keeps it until the
    pin expires (by the file server's clock). Pinning again renews the pin:
    a reader that loads for longer than ``ttl`` pins again before it runs
    out. A step that is not committed, or that gc has claimed for removal,
    raises :class:`NotFoundError`."""
    root_path = _dir(root, "root")
    info = _runtime.call(
        "pin",
        [(root_path, True)],
        [root_path, prefix, _u64(step, "step"), holder, _ms(ttl, "ttl")],
    )
    return PinInfo(info.step, info.holder, field(info, "expires_ms"))


def unpin(root: PathLike, step: int, holder: str, *, prefix: str = DEFAULT_PREFIX) -> None:
    """Release ``holder``'s pin on ``step``; a missing pin raises
    :class:`NotFoundError`."""
    root_path = _dir(root, "root")
    _runtime.call("unpin", [(root_path, True)], [root_path, prefix, _u64(step, "step"), holder])


def gc(
    root: PathLike,
    keep: int,
    *,
    grace: Seconds = DEFAULT_GRACE,
    skew: Seconds = DEFAULT_SKEW,
    prefix: str = DEFAULT_PREFIX,
) -> GcReport:
    """Remove committed steps beyond the newest ``keep`` (at least 1) that no
    unexpired pin holds (a pin counts until its expiry plus ``skew``):
    ``STABLE`` first, then the directory. Also removes staging directories
    untouched for longer than ``grace``. What it cannot remove is listed in
    the report's ``failed``, each with why, and gc goes on with the rest;
    only a failure that stops the whole run raises."""
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer of at least 1, not {keep!r}")
    root_path = _dir(root, "root")
    options = record(prefix=prefix, keep=keep, grace_ms=_ms(grace, "grace"), skew_ms=_ms(skew, "skew"))
    report = _runtime.call("gc", [(root_path, True)], [root_path, options])
    return GcReport(
        tuple(report.removed),
        tuple(report.kept),
        tuple(report.pinned),
        tuple(field(report, "staging_removed")),
        tuple(report.invalid),
        tuple(GcFailure(f.name, _types.error_from(f.error)) for f in report.failed),
    )


def fsck(root: PathLike, repair: bool = False, *, prefix: str = DEFAULT_PREFIX) -> List[FsckEntry]:
    """Classify every entry under ``root``; with ``repair``, finish or undo
    what a crash left (idempotent). Removes a step only if it is broken, seen
    twice 30 s apart, untouched for an hour and not pinned."""
    root_path = _dir(root, "root")
    entries = _runtime.call("fsck", [(root_path, True)], [root_path, prefix, bool(repair)])
    return [FsckEntry(e.name, e.state, e.detail, e.action) for e in entries]


def _write(
    op: str,
    root: PathLike,
    step: int,
    source: Optional[PathLike],
    writer: Optional[str],
    created_ms: Optional[int],
    prefix: str,
    keep: Optional[int],
    run: int,
) -> PublishReport:
    """``publish`` (with a source, preopened read-only) or ``seal`` (without),
    then the gc of ``keep``."""
    root_path = _dir(root, "root")
    preopens = [(root_path, True)]
    args = [root_path, _u64(step, "step")]
    if source is not None:
        source_path = _dir(source, "source")
        overlap = _overlap(root_path, source_path)
        if overlap is not None:
            raise HandoffError(f"source {os.fspath(source)}: {overlap}", "source", path=source_path)
        preopens.append((source_path, False))
        args.append(source_path)
    args.append(
        record(
            prefix=prefix,
            writer=default_writer_id() if writer is None else writer,
            created_ms=None if created_ms is None else _u64(created_ms, "created_ms"),
            run=_u64(run, "run"),
        )
    )
    report = _runtime.call(op, preopens, args)
    version = _version(report.version)
    gc_report = None
    if keep is not None:
        try:
            gc_report = gc(root_path, keep, prefix=prefix)
        except HandoffError as e:
            raise type(e)(
                f"step {version.step} was {op}ed, but the gc after it failed: {e}",
                e.kind,
                path=e.path,
                retryable=e.retryable,
            ) from e
    return PublishReport(version, report.fsyncs, tuple(report.warnings), gc_report)


def _version(v) -> Version:
    files = tuple(FileEntry(f.path, f.size, f.blake3) for f in v.files)
    return Version(v.step, v.run, v.path, v.writer, field(v, "created_ms"), files)


def _dir(path: PathLike, what: str) -> str:
    """The canonical absolute path of an existing directory: the component
    is given it under this same name, so its messages name real paths."""
    try:
        canonical = os.path.realpath(os.fspath(path), strict=True)
    except OSError as e:
        raise HandoffError(f"{what} {os.fspath(path)}: {e.strerror or e}", what, path=os.fspath(path)) from None
    if not os.path.isdir(canonical):
        raise HandoffError(f"{what} {os.fspath(path)}: not a directory", what, path=canonical)
    return canonical


def _overlap(root: str, source: str) -> Optional[str]:
    """How a publish source overlaps the root, or None. Folders are told
    apart by device and inode, found through ``..``, so a second name for
    the root (a bind mount) is still seen."""

    def ident(path: str) -> Tuple[int, int]:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)

    def ancestors(path: str) -> Set[Tuple[int, int]]:
        seen: Set[Tuple[int, int]] = set()
        while True:
            path = os.path.join(path, "..")
            parent = ident(path)
            if parent in seen:
                return seen
            seen.add(parent)

    root_id, source_id = ident(root), ident(source)
    also = "publish copies a payload from outside the root (to commit a step written in place, use seal)"
    if root_id == source_id:
        return f"is the root itself: {also}"
    if root_id in ancestors(source):
        return f"is inside the root {root}: {also}"
    if source_id in ancestors(root):
        return f"contains the root {root}: publishing it would copy the root, and the copy being made, into the new step"
    return None


def _u64(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{name} must be an integer from 0 to 2**64-1, not {value!r}")
    return value


def _ms(value: Seconds, name: str) -> int:
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
    if math.isinf(seconds):
        return 2**64 - 1
    return min(math.ceil(seconds * 1000), 2**64 - 1)


def _verify(verify: str) -> str:
    if verify not in _VERIFY:
        raise ValueError(f"verify must be 'size' or 'hash', not {verify!r}")
    return verify


from . import aio  # noqa: E402 (handoff.aio wraps the functions above)
