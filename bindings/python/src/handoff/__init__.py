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

Durations are seconds (``float``, ``int`` or ``datetime.timedelta``). Every
call blocks the calling thread; calls from several threads run in parallel.
Errors are :class:`HandoffError` subclasses with the CLI's kinds and exit
codes: :class:`UsageError` (an argument out of range or of the wrong type,
raised before anything runs; exit 2), :class:`TimedOutError` and
:class:`DeadlineExceededError` (both ``TimeoutError``; exit 3),
:class:`IntegrityError` (4), :class:`ConflictError` (5).
"""

from __future__ import annotations

import datetime
import errno
import math
import numbers
import operator
import os
import socket
from typing import Any, List, Optional, Set, Tuple, Union

from wasmtime.component import Variant

from . import _runtime, _types
from ._runtime import field, record
from ._types import *  # noqa: F403 (the result and error types, listed in _types.__all__)

__all__ = [
    "publish",
    "seal",
    "begin",
    "wait",
    "fetch",
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
    "DEFAULT_DEADLINE",
    *_types.__all__,
]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
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
DEFAULT_DEADLINE = _runtime.DEFAULT_DEADLINE
"""The time limit of a call other than ``wait`` (the CLI's ``--deadline``)."""
_VERIFY = ("size", "hash")
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


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
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
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
    ("superseded"). Every argument is checked before anything is written.

    ``deadline`` bounds the call (``None``: no limit); a call stopped there
    raises :class:`DeadlineExceededError` and leaves at most a staging
    directory, which :func:`gc` and :func:`fsck` remove.
    """
    return _write("publish", root, step, source, writer, created_ms, prefix, keep, run, deadline)


def seal(
    root: PathLike,
    step: int,
    *,
    writer: Optional[str] = None,
    created_ms: Optional[int] = None,
    prefix: str = DEFAULT_PREFIX,
    keep: Optional[int] = None,
    run: int = 0,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> PublishReport:
    """Seal a payload already written in ``<root>/<prefix><step>/``: flush
    every file, write the manifest, create ``STABLE``, flush the step
    directory and the root, in that order.

    Once this returns the version is durable, and readers that only look for
    ``STABLE`` keep working. Symbolic links and special files are refused
    before anything is written; a step that already has ``STABLE``, or that
    another writer is sealing, raises :class:`ConflictError`. ``run`` and
    ``deadline`` as for :func:`publish`.
    """
    return _write("seal", root, step, None, writer, created_ms, prefix, keep, run, deadline)


def begin(
    root: PathLike, *, prefix: str = DEFAULT_PREFIX, deadline: Optional[Seconds] = DEFAULT_DEADLINE
) -> int:
    """Begin a new run on ``root``, for a trainer restarted from an earlier
    checkpoint, and return its number: pass it as ``run=`` to every
    :func:`publish` or :func:`seal` of the restarted trainer. Writers of
    older runs are refused from then on, and step ``n`` of the run is the
    step numbered ``run * 10**12 + n``, after every step of older runs."""
    prefix = _str(prefix, "prefix")
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    return _runtime.call("begin", [(root_path, True)], [root_path, prefix], limit)


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
    deadline: Optional[Seconds] = None,
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

    ``deadline`` bounds the whole call (:class:`DeadlineExceededError`);
    ``None``, the default, means ``timeout`` plus one minute, or no limit
    without a timeout, as in the CLI.
    """
    target = _target(step, latest, after)
    timeout_ms = None if timeout is None else _ms(timeout, "timeout")
    pin_request = None if pin is None else record(holder=_str(pin, "pin"), ttl_ms=_ms(ttl, "ttl"))
    options = record(
        prefix=_str(prefix, "prefix"),
        verify=_verify(verify),
        timeout_ms=timeout_ms,
        settle_ms=_ms(settle, "settle"),
        poll_ms=_ms(poll, "poll"),
        pin=pin_request,
    )
    if deadline is not None:
        limit = _deadline(deadline)
    elif timeout_ms is None or timeout_ms == U64_MAX:
        limit = None
    else:
        limit = timeout_ms / 1000 + _runtime.WAIT_MARGIN
    root_path = _dir(root, "root")
    return _version(_runtime.call("wait", [(root_path, True)], [root_path, target, options], limit))


def fetch(
    root: PathLike,
    step: Optional[int] = None,
    *,
    to: PathLike,
    latest: bool = False,
    after: Optional[int] = None,
    keep: Optional[int] = None,
    timeout: Optional[Seconds] = None,
    settle: Seconds = DEFAULT_SETTLE,
    poll: Seconds = DEFAULT_POLL,
    holder: Optional[str] = None,
    ttl: Seconds = DEFAULT_TTL,
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = None,
) -> FetchReport:
    """Wait for a step of ``root`` as :func:`wait` does (``step``,
    ``latest=True`` or ``after``), pinned for ``holder`` (default
    :func:`default_writer_id`) while it is copied, and copy it into ``to``,
    a local root of its own (created if missing): ``<to>/<prefix><step>``
    with the shared manifest byte for byte and ``STABLE``, durable, by the
    staged path of :func:`publish`. Each copy is hashed and checked against
    the manifest; a mismatch is copied again for ``settle``, then raises
    :class:`IntegrityError` with nothing committed under ``to``. A step
    already in ``to`` with the same manifest is not copied again. The pin
    is released afterwards, on failure too. ``keep`` runs :func:`gc` on
    ``to`` afterwards.

    Load the returned ``version.path``: a server that reads the local copy
    never sees the shared files deleted under it, however late it reads
    again. ``deadline`` defaults to ``timeout`` plus an hour (the copy's
    time), or no limit without a timeout, as in the CLI.
    """
    target = _target(step, latest, after)
    timeout_ms = None if timeout is None else _ms(timeout, "timeout")
    options = record(
        prefix=_str(prefix, "prefix"),
        timeout_ms=timeout_ms,
        settle_ms=_ms(settle, "settle"),
        poll_ms=_ms(poll, "poll"),
        holder=default_writer_id() if holder is None else _str(holder, "holder"),
        ttl_ms=_ms(ttl, "ttl"),
    )
    if keep is not None:
        keep = _keep(keep)
    if deadline is not None:
        limit = _deadline(deadline)
    elif timeout_ms is None or timeout_ms == U64_MAX:
        limit = None
    else:
        limit = timeout_ms / 1000 + DEFAULT_DEADLINE
    root_path = _dir(root, "root")
    to_path = _local_root(root_path, to)
    report = _runtime.call(
        "fetch", [(root_path, True), (to_path, True)], [root_path, to_path, target, options], limit
    )
    version = _version(report.version)
    gc_report = None
    if keep is not None:
        try:
            gc_report = gc(to_path, keep, prefix=options.prefix)
        except HandoffError as e:
            raise type(e)(
                f"step {version.step} was fetched to {version.path}, but the gc of {to_path} "
                f"after it failed: {e}",
                e.kind,
                path=e.path,
                retryable=e.retryable,
            ) from e
    return FetchReport(
        version,
        report.source,
        report.copied,
        field(report, "bytes_copied"),
        report.fsyncs,
        tuple(report.warnings),
        gc_report,
    )


def latest(
    root: PathLike,
    *,
    verify: str = "size",
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> Optional[Version]:
    """The highest committed step that validates, in one attempt; ``None``
    when there is none. Incomplete, corrupt and stray entries are skipped."""
    args = [_str(prefix, "prefix"), _verify(verify)]
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    found = _runtime.call("latest", [(root_path, True)], [root_path, *args], limit)
    return None if found is None else _version(found)


def ls(
    root: PathLike, *, prefix: str = DEFAULT_PREFIX, deadline: Optional[Seconds] = DEFAULT_DEADLINE
) -> List[StepInfo]:
    """Every step directory under ``root``, in step order, with its state."""
    prefix = _str(prefix, "prefix")
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    steps = _runtime.call("list", [(root_path, True)], [root_path, prefix], limit)
    return [StepInfo(s.step, s.path, s.state, s.files, s.bytes) for s in steps]


def pin(
    root: PathLike,
    step: int,
    holder: str,
    ttl: Seconds = DEFAULT_TTL,
    *,
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> PinInfo:
    """Pin a committed step for ``holder`` for ``ttl``: gc keeps it until the
    pin expires (by the file server's clock). Pinning again renews the pin:
    a reader that loads for longer than ``ttl`` pins again before it runs
    out. A step that is not committed, or that gc has claimed for removal,
    raises :class:`NotFoundError`."""
    args = [_str(prefix, "prefix"), _u64(step, "step"), _str(holder, "holder"), _ms(ttl, "ttl")]
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    info = _runtime.call("pin", [(root_path, True)], [root_path, *args], limit)
    return PinInfo(info.step, info.holder, field(info, "expires_ms"))


def unpin(
    root: PathLike,
    step: int,
    holder: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> None:
    """Release ``holder``'s pin on ``step``; a missing pin raises
    :class:`NotFoundError`."""
    args = [_str(prefix, "prefix"), _u64(step, "step"), _str(holder, "holder")]
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    _runtime.call("unpin", [(root_path, True)], [root_path, *args], limit)


def gc(
    root: PathLike,
    keep: int,
    *,
    grace: Seconds = DEFAULT_GRACE,
    skew: Seconds = DEFAULT_SKEW,
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> GcReport:
    """Remove committed steps beyond the newest ``keep`` (at least 1) that no
    unexpired pin holds (a pin counts until its expiry plus ``skew``):
    ``STABLE`` first, then the directory. Also removes staging directories
    untouched for longer than ``grace``. What it cannot remove is listed in
    the report's ``failed``, each with why, and gc goes on with the rest;
    only a failure that stops the whole run raises."""
    options = record(
        prefix=_str(prefix, "prefix"),
        keep=_keep(keep),
        grace_ms=_ms(grace, "grace"),
        skew_ms=_ms(skew, "skew"),
    )
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    report = _runtime.call("gc", [(root_path, True)], [root_path, options], limit)
    return GcReport(
        tuple(report.removed),
        tuple(report.kept),
        tuple(report.pinned),
        tuple(field(report, "staging_removed")),
        tuple(report.invalid),
        tuple(GcFailure(f.name, _types.error_from(f.error)) for f in report.failed),
    )


def fsck(
    root: PathLike,
    repair: bool = False,
    *,
    prefix: str = DEFAULT_PREFIX,
    deadline: Optional[Seconds] = DEFAULT_DEADLINE,
) -> List[FsckEntry]:
    """Classify every entry under ``root``; with ``repair``, finish or undo
    what a crash left (idempotent). Removes a step only if it is broken, seen
    twice 30 s apart, untouched for an hour and not pinned."""
    args = [_str(prefix, "prefix"), _bool(repair, "repair")]
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    entries = _runtime.call("fsck", [(root_path, True)], [root_path, *args], limit)
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
    deadline: Optional[Seconds],
) -> PublishReport:
    """``publish`` (with a source, preopened read-only) or ``seal`` (without),
    then the gc of ``keep``. Every argument, ``keep`` included, is checked
    first: an argument error never follows a committed step."""
    step = _u64(step, "step")
    options = record(
        prefix=_str(prefix, "prefix"),
        writer=default_writer_id() if writer is None else _str(writer, "writer"),
        created_ms=None if created_ms is None else _u64(created_ms, "created_ms"),
        run=_u64(run, "run"),
    )
    if keep is not None:
        keep = _keep(keep)
    limit = _deadline(deadline)
    root_path = _dir(root, "root")
    preopens = [(root_path, True)]
    args: List[Any] = [root_path, step]
    if source is not None:
        source_path = _dir(source, "source")
        overlap = _overlap(root_path, source_path)
        if overlap is not None:
            raise InvalidInputError(
                f"source {_shown_path(source)}: {overlap}", "invalid-input", path=source_path
            )
        preopens.append((source_path, False))
        args.append(source_path)
    args.append(options)
    report = _runtime.call(op, preopens, args, limit)
    version = _version(report.version)
    gc_report = None
    if keep is not None:
        try:
            gc_report = gc(root_path, keep, prefix=options.prefix, deadline=deadline)
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


def _dir(path: Any, what: str) -> str:
    """The canonical absolute path of an existing directory: the component
    is given it under this same name, so its messages name real paths.
    Failures have the CLI's kinds: ``not-found`` for a missing path,
    ``invalid-input`` for one that is not a directory, ``io`` otherwise."""
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise _usage(path, what, f"expected a path, got {type(path).__name__}")
    text = os.fsdecode(os.fspath(path))
    if not text:
        raise _usage(path, what, "the path is empty")
    if "\0" in text:
        raise _usage(path, what, "the path contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _usage(path, what, "the path is not UTF-8, and WASI paths are") from None
    try:
        canonical = os.path.realpath(text, strict=True)
    except OSError as e:
        error = NotFoundError if e.errno == errno.ENOENT else HandoffError
        kind = "not-found" if e.errno == errno.ENOENT else "io"
        raise error(f"{what} {text}: {e.strerror or e}", kind, path=text) from None
    if not os.path.isdir(canonical):
        raise InvalidInputError(f"{what} {text}: not a directory", "invalid-input", path=canonical)
    return canonical


def _local_root(root: str, to: Any) -> str:
    """The canonical path of ``fetch``'s local root, created if missing,
    once it is known not to be the shared root, inside it or holding it
    (judged by the nearest existing folder, and again once it exists)."""
    if isinstance(to, bool) or not isinstance(to, (str, bytes, os.PathLike)):
        raise _usage(to, "to", f"expected a path, got {type(to).__name__}")
    text = os.path.abspath(os.fsdecode(os.fspath(to))) if os.fspath(to) else ""
    if not text:
        raise _usage(to, "to", "the path is empty")

    def refuse(path: str, exists: bool) -> None:
        relation = _relation(root, path)
        if not exists and relation in ("same", "inside"):
            relation = "inside"
        elif not exists and relation == "contains":
            relation = None
        why = "a local root is a root of its own, on the reader's disk"
        message = {
            "same": f"is the shared root itself: {why}",
            "inside": f"is inside the shared root {root}: {why}",
            "contains": f"contains the shared root {root}: {why}, and its gc and fsck would see "
            "the shared root's steps as strays",
            None: None,
        }[relation]
        if message is not None:
            raise InvalidInputError(f"local root {text}: {message}", "invalid-input", path=text)

    existing = text
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    refuse(existing, existing == text)
    try:
        os.makedirs(text, exist_ok=True)
    except OSError as e:
        raise HandoffError(f"local root {text}: cannot create it: {e.strerror or e}", "io", path=text) from None
    canonical = _dir(text, "local root")
    refuse(canonical, True)
    return canonical


def _shown_path(path: Any) -> str:
    return os.fsdecode(os.fspath(path))


def _relation(root: str, other: str) -> Optional[str]:
    """``"same"``, ``"inside"`` (``other`` is inside ``root``),
    ``"contains"`` (``other`` holds ``root``) or None. Folders are told
    apart by device and inode, found through ``..``, so a second name for
    a folder (a bind mount) is still seen."""

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

    root_id, other_id = ident(root), ident(other)
    if root_id == other_id:
        return "same"
    if root_id in ancestors(other):
        return "inside"
    if other_id in ancestors(root):
        return "contains"
    return None


def _overlap(root: str, source: str) -> Optional[str]:
    """How a publish source overlaps the root, or None."""
    also = "publish copies a payload from outside the root (to commit a step written in place, use seal)"
    return {
        "same": f"is the root itself: {also}",
        "inside": f"is inside the root {root}: {also}",
        "contains": f"contains the root {root}: publishing it would copy the root, and the copy being made, into the new step",
        None: None,
    }[_relation(root, source)]


# Argument checks. Each runs before the component does, so a bad argument
# never follows a write; the messages follow the CLI's ("invalid value ...").


def _usage(value: Any, name: str, why: str) -> UsageError:
    return UsageError(f"invalid value {value!r} for {name}: {why}", "usage")


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer argument in ``lo..=hi``: an ``int`` or anything with
    ``__index__`` (a NumPy integer), but not a ``bool``."""
    if isinstance(value, bool):
        number = None
    else:
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None:
        raise _usage(value, name, f"expected an integer in {lo}..={hi}, got {type(value).__name__}")
    if not lo <= number <= hi:
        raise _usage(value, name, f"{number} is not in {lo}..={hi}")
    return number


def _u64(value: Any, name: str) -> int:
    return _int(value, name, 0, U64_MAX)


def _keep(value: Any) -> int:
    """``keep``: the WIT's u32, and at least 1 (gc never removes every step)."""
    return _int(value, "keep", 1, U32_MAX)


def _target(step: Any, latest: Any, after: Any) -> Variant:
    """The WIT ``target`` of exactly one of ``step``, ``latest`` or ``after``."""
    latest = _bool(latest, "latest")
    if sum([step is not None, latest, after is not None]) != 1:
        raise UsageError("give exactly one of step, latest=True or after", "usage")
    if step is not None:
        return Variant("step", _u64(step, "step"))
    if latest:
        return Variant("latest")
    return Variant("after", _u64(after, "after"))


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _usage(value, name, f"expected True or False, got {type(value).__name__}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _usage(value, name, f"expected a string, got {type(value).__name__}")
    return value


def _seconds(value: Any, name: str) -> float:
    """A non-negative number of seconds (NaN refused)."""
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not seconds >= 0:
        raise _usage(value, name, f"expected a non-negative number of seconds, got {value!r}")
    return float(seconds)


def _ms(value: Any, name: str) -> int:
    """A duration as the WIT's milliseconds (u64), rounded up; a duration
    of 2**64 ms or more (infinity included) saturates, meaning no limit.
    Integers and timedeltas are converted exactly, not through a float."""
    if isinstance(value, datetime.timedelta):
        micros = (value.days * 86400 + value.seconds) * 10**6 + value.microseconds
        if micros < 0:
            raise _usage(value, name, f"expected a non-negative number of seconds, got {value!r}")
        return min(-(-micros // 1000), U64_MAX)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise _usage(value, name, f"expected a non-negative number of seconds, got {value!r}")
        return min(int(value) * 1000, U64_MAX)
    ms = _seconds(value, name) * 1000
    if ms >= U64_MAX:
        return U64_MAX
    return math.ceil(ms)


def _deadline(value: Any) -> Optional[float]:
    """A call's time limit in seconds, or ``None`` for none."""
    if value is None or _ms(value, "deadline") == U64_MAX:
        return None
    return _seconds(value, "deadline")


def _verify(verify: Any) -> str:
    if verify not in _VERIFY or not isinstance(verify, str):
        raise _usage(verify, "verify", "expected 'size' or 'hash'")
    return verify


from . import aio  # noqa: E402 (handoff.aio wraps the functions above)
