"""The values handoff's operations return and the errors they raise.

The dataclasses mirror the WIT records of `wit/types.wit` and
`wit/protocol.wit`; the exceptions mirror the CLI's exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple


@dataclass(frozen=True)
class FileEntry:
    """One payload file of a version, as its manifest records it."""

    path: str
    """Path relative to the step directory, ``/``-separated, never absolute."""
    size: int
    """Size in bytes."""
    blake3: str
    """BLAKE3 hash of the contents, 64 lowercase hex digits."""


@dataclass(frozen=True)
class Version:
    """A committed version: every listed file was seen with its listed size
    (and hash, with ``verify="hash"``) before this was returned."""

    step: int
    """The step number: for step ``n`` of run ``g`` > 0, ``g * 10**12 + n``."""
    run: int
    """The run the step belongs to (0 unless a writer began one)."""
    path: str
    """The step directory, under the root's canonical absolute path."""
    writer: str
    """Writer id recorded in the manifest."""
    created_ms: int
    """Creation time recorded in the manifest, ms since the Unix epoch."""
    files: Tuple[FileEntry, ...]
    """Payload files, sorted by path."""

    @property
    def bytes(self) -> int:
        """Total payload bytes."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class GcFailure:
    """Something ``gc`` should have removed but could not."""

    name: str
    """The entry, relative to the root: ``step_3``,
    ``.handoff/staging/step_4.<random>``, ``.handoff/trash/...``."""
    error: "HandoffError"
    """Why, as the exception a call failing that way raises."""


@dataclass(frozen=True)
class GcReport:
    """What ``gc`` did. ``kept`` are the newest ``keep`` steps that validate;
    ``pinned`` steps were kept because a pin holds them; ``invalid`` steps are
    committed but do not validate, are newer than the oldest kept, and were
    left alone (not counted toward ``keep``). ``failed`` is what gc could not
    remove, each with why; it went on with the rest (the CLI exits 6)."""

    removed: Tuple[int, ...]
    kept: Tuple[int, ...]
    pinned: Tuple[int, ...]
    staging_removed: Tuple[str, ...]
    invalid: Tuple[int, ...]
    failed: Tuple[GcFailure, ...] = ()


@dataclass(frozen=True)
class PublishReport:
    """What ``publish`` or ``seal`` did. The version is durable and visible."""

    version: Version
    fsyncs: int
    """Flushes issued (each a real ``fsync`` through WASI's ``descriptor.sync``)."""
    warnings: Tuple[str, ...]
    """Things that did not stop the operation, e.g. "directory fsync unsupported"."""
    gc: Optional[GcReport] = None
    """The report of the gc run after it, when ``keep`` was given."""


@dataclass(frozen=True)
class FetchReport:
    """What ``fetch`` did. ``version`` is the local copy, durable and
    committed: its ``path`` is under the local root."""

    version: Version
    source: str
    """The shared step directory it was copied from."""
    copied: bool
    """False when the local root already held the step (same manifest,
    committed, whole): nothing was copied."""
    bytes_copied: int
    fsyncs: int
    """Flushes the component asked for under the local root."""
    warnings: Tuple[str, ...]
    """What did not stop the fetch, such as a pin that could not be released
    (it expires after its ttl)."""
    gc: Optional[GcReport] = None
    """The report of the gc of the local root, when ``keep`` was given."""


@dataclass(frozen=True)
class StepInfo:
    """One step directory found by ``ls``."""

    step: int
    path: str
    state: str
    """``committed``, ``incomplete`` or ``corrupt``."""
    files: int
    """Files listed in the manifest (0 without one)."""
    bytes: int
    """Bytes listed in the manifest (0 without one)."""


@dataclass(frozen=True)
class PinInfo:
    """A reader's hold on a step: gc keeps it until ``expires_ms`` (plus skew)."""

    step: int
    holder: str
    expires_ms: int
    """Milliseconds since the Unix epoch, by the file server's clock (by this
    machine's on a step written by protocol version 1)."""


@dataclass(frozen=True)
class FsckEntry:
    """One entry of ``fsck``."""

    name: str
    """The entry's name relative to the root."""
    state: str
    """``committed``, ``incomplete``, ``corrupt``, ``staging``, ``trash`` or ``stray``."""
    detail: Optional[str] = None
    """What was found, for anything but a healthy committed step."""
    action: Optional[str] = None
    """What ``repair`` did to it, if anything."""


class HandoffError(Exception):
    """Any handoff failure. The message names the file concerned and what was
    seen; ``exit_code`` is the CLI's code for the same failure.

    ``kind`` names it: the WIT ``error-kind`` (``timed-out``, ``integrity``,
    ``conflict``, ``not-found``, ``invalid-input``, ``durability``, ``io``),
    or ``root``, ``source``, ``component`` for failures found outside the
    component. ``path`` is the file or directory concerned, where there is
    one, else ``None``. ``retryable`` says whether the same call may succeed
    later with nothing changed (a timeout, a step that did not validate yet,
    a transient filesystem error)."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        kind: str = "io",
        *,
        path: Optional[str] = None,
        retryable: bool = False,
    ):
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.retryable = retryable


class TimedOutError(HandoffError, TimeoutError):
    """The deadline passed and the step was never committed (CLI exit 3)."""

    exit_code = 3


class IntegrityError(HandoffError):
    """The step is committed but a file is missing, short or differs from its
    hash, or the manifest is unsafe; retried for ``settle`` first (CLI exit 4)."""

    exit_code = 4


class ConflictError(HandoffError):
    """The step is already published, or another writer is at it; what is there is intact (CLI exit 5)."""

    exit_code = 5


class NotFoundError(HandoffError):
    """A step, pin or path the call names does not exist."""


class InvalidInputError(HandoffError, ValueError):
    """The arguments are invalid (a bad prefix, holder, source entry)."""


class DurabilityError(HandoffError):
    """A flush failed; nothing was announced. Do not retry the same publish."""


class ComponentError(HandoffError):
    """The component could not be loaded (kind ``bad-component``) or trapped
    (``trap``)."""


class UsageError(HandoffError, ValueError, TypeError):
    """An argument is out of its range or of the wrong type (kind ``usage``,
    CLI exit 2). Raised before the component runs, so nothing was written.
    It is also a ``ValueError`` and a ``TypeError``."""

    exit_code = 2


class DeadlineExceededError(HandoffError, TimeoutError):
    """The call ran past its ``deadline`` and was stopped (kind
    ``deadline-exceeded``, CLI exit 3). A write stopped this way leaves at
    most a staging directory, which ``gc`` and ``fsck --repair`` remove."""

    exit_code = 3


_BY_KIND = {
    "timed-out": TimedOutError,
    "integrity": IntegrityError,
    "conflict": ConflictError,
    "not-found": NotFoundError,
    "invalid-input": InvalidInputError,
    "durability": DurabilityError,
    "io": HandoffError,
}


def error_from(error: Any) -> HandoffError:
    """The exception for the WIT ``error`` record, as wasmtime lifts it."""
    kind = error.kind
    return _BY_KIND.get(kind, HandoffError)(
        error.message, kind, path=error.path, retryable=error.retryable
    )


__all__ = [
    "FileEntry",
    "Version",
    "GcFailure",
    "GcReport",
    "PublishReport",
    "FetchReport",
    "StepInfo",
    "PinInfo",
    "FsckEntry",
    "HandoffError",
    "TimedOutError",
    "IntegrityError",
    "ConflictError",
    "NotFoundError",
    "InvalidInputError",
    "DurabilityError",
    "ComponentError",
    "UsageError",
    "DeadlineExceededError",
]
