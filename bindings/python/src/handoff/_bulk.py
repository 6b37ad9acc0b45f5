"""``bulk.hash-path`` and ``bulk.start-writeback-path``: BLAKE3 of a payload
file, natively, and its writeback started early, for the component.

wasmtime-py hands a host function a descriptor only as an opaque handle, so
this host cannot hash the file the component has open (``hash-file``). It
can hash the file at a path, though: the component names the preopen it
opened the file beneath and the path beneath it, and this module opens that
path afresh beneath the directory the call preopened, following no
symbolic link, and hashes it with the ``blake3`` package (the Rust crate,
with the CPU's widest SIMD), on two threads that take turns.

The component's reach stays what it was handed: ``root`` must be a
directory this call preopened (opened here when the call starts, as
wasmtime opens it, not looked up again later), ``path`` must be relative
and free of empty, ``.`` and ``..`` names, every directory on the way is
opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the one before, and
the file with ``O_NOFOLLOW | O_NONBLOCK``; only a regular file (``fstat``)
is read. ``wit/bulk.wit`` states the contract.

Files of 16 MiB and more are hashed from a memory map, on all CPUs, but
not in this process: a mapped file that is truncated meanwhile (a trainer
still writing it; on NFS, a file another node removed) raises ``SIGBUS``,
which would kill the whole Python process. A helper process
(``_maphash.py``, started on first use) is handed the open descriptor and
hashes its map; if it dies, or cannot be started, the file is read and
hashed here instead, by two threads taking turns, and seen as it is by
then. 256 MiB from the page cache: about 27 ms mapped, 50-70 ms read, the
native CLI about 40 ms.

Writeback is started with ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` (Linux;
through ``ctypes``, as ``os`` has no binding), on a thread of its own: for
256 MiB it blocks about 100 ms submitting the writes. Seal starts each
file's writeback before hashing it, so its fsyncs find the data written
(seal of 256 MiB measured 170-440 ms without it, 112-128 ms with it, the
native CLI 113-175 ms).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import errno
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
from typing import Any, Callable, Dict, Optional, Tuple, Union

try:
    import blake3 as _blake3
except ImportError:  # pragma: no cover - a dependency; without it, hash in wasm
    _blake3 = None

#: Bytes per piece. Two threads take turns: each reads a piece into a
#: buffer of its own while the other hashes the piece before, then hashes
#: its own, so that a piece is hashed on the CPU that copied it, from that
#: CPU's cache, as each of the native host's two halves is (1 MiB fits the
#: 2 MiB L2 here).
CHUNK = 1 << 20

#: Files at least this large are read and hashed by two threads taking
#: turns (the native host hashes files of 16 MiB or more with two); smaller
#: ones on the calling thread, with no thread to wake.
PARALLEL_MIN = 16 << 20

#: What the host function returns: ``(size, hash)``, or the ``bulk-error``
#: (``None`` is ``unsupported``, a string is ``failed``).
Answer = Union[Tuple[int, bytes], str, None]

#: Where a flag the walk needs is missing (Windows), hash-path is not
#: offered at all.
_CAN_WALK = (
    all(hasattr(os, f) for f in ("O_DIRECTORY", "O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC", "preadv"))
    and os.open in os.supports_dir_fd
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def available() -> bool:
    """Whether this host can do ``hash-path``."""
    return _blake3 is not None and _CAN_WALK


_sync_file_range: Optional[Callable[[int, int, int, int], int]] = None
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> None:
    global _sync_file_range
    if not sys.platform.startswith("linux"):
        return
    try:
        f = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return
    f.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    f.restype = ctypes.c_int
    _sync_file_range = f


_load_sync_file_range()


def supported() -> set:
    """The ``bulk-support`` flags this host does."""
    calls = set()
    if available():
        calls.add("hash-path")
    if _sync_file_range is not None and _CAN_WALK:
        calls.add("start-writeback-path")
    return calls


def open_preopens(names: "list[str]") -> Dict[str, Optional[int]]:
    """The directories a call preopens, opened now for ``hash-path``: name
    to descriptor (``None`` where it cannot be opened: that root's files are
    then hashed by the component)."""
    dirs: Dict[str, Optional[int]] = {}
    if not supported():
        return dirs
    for name in names:
        try:
            dirs[name] = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            dirs[name] = None
    return dirs


def close_preopens(dirs: Dict[str, Optional[int]]) -> None:
    for fd in dirs.values():
        if fd is not None:
            os.close(fd)


def hash_path(
    dirs: Dict[str, Optional[int]],
    root: str,
    path: str,
    stopped: Callable[[], Optional[str]],
) -> Answer:
    """BLAKE3 of the file at ``path`` beneath the preopen ``root``: bytes
    read from offset 0 to the end and the 32-byte hash, or why not.
    ``stopped`` says whether the call was stopped (then reading stops)."""
    shown = f"{root.rstrip('/')}/{path}"
    opened = open_regular(dirs, root, path)
    if not isinstance(opened, tuple):
        return opened
    fd, st = opened
    try:
        if st.st_size < PARALLEL_MIN:
            return _hash_small(fd, shown, stopped)
        mapped = _mapper.hash(fd, stopped)
        if isinstance(mapped, str):
            return _stopped(shown, mapped)
        # A file that grew after it was mapped is hashed to its end by reading.
        if mapped is not None and mapped[0] == os.fstat(fd).st_size:
            return mapped
        return _hash_large(fd, shown, stopped)
    except OSError as e:
        return f"hash-path: failed to read {shown}: {e.strerror or e}"
    finally:
        os.close(fd)


def open_regular(
    dirs: Dict[str, Optional[int]], root: str, path: str
) -> Union[Tuple[int, os.stat_result], str, None]:
    """Open the regular file at ``path`` beneath the preopen ``root`` as
    ``wit/bulk.wit`` says ``hash-path`` must: its descriptor and status, or
    why not (``None``: the component is to do the work itself)."""
    shown = f"{root.rstrip('/')}/{path}"
    if root not in dirs:
        return f"hash-path refused {shown}: {root} is not a directory this call was given"
    base = dirs[root]
    if base is None:
        return None
    names = path.split("/")
    if path.startswith("/") or any(n in ("", ".", "..") for n in names) or "\0" in path:
        return f"hash-path refused {shown}: not a plain relative path beneath {root}"
    fd = _open_beneath(base, names, shown)
    if isinstance(fd, str):
        return fd
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        return f"hash-path: failed to inspect {shown}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return f"hash-path refused {shown}: {_kind(st.st_mode)}, not a regular file"
    return fd, st


def start_writeback_path(dirs: Dict[str, Optional[int]], root: str, path: str) -> None:
    """Start writing out the file at ``path`` beneath ``root``, on the
    writeback thread; nothing where ``hash-path`` would refuse the path."""
    if _sync_file_range is None:
        return
    opened = open_regular(dirs, root, path)
    if not isinstance(opened, tuple):
        return
    fd = opened[0]
    try:
        _thread("handoff-writeback").submit(_write_out, fd)
    except RuntimeError:  # the interpreter is shutting down
        os.close(fd)


def _write_out(fd: int) -> None:
    try:
        assert _sync_file_range is not None
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


def _open_beneath(base: int, names: "list[str]", shown: str) -> Union[int, str]:
    """Open ``names`` beneath the directory ``base``, following no link: the
    file's descriptor, or why not."""
    here = base
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            try:
                fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=here)
            except OSError as e:
                return _refused(shown, name, last, e)
            if here != base:
                os.close(here)
            here = fd
        return here
    except BaseException:
        if here != base:
            os.close(here)
        raise


def _refused(shown: str, name: str, last: bool, e: OSError) -> str:
    # O_NOFOLLOW answers ELOOP for a link (a BSD may answer EMLINK), and
    # O_DIRECTORY ENOTDIR for a link or file where a directory should be.
    if e.errno in (errno.ELOOP, errno.EMLINK):
        why = f"{name} is a symbolic link"
    elif e.errno == errno.ENOTDIR and not last:
        why = f"{name} is not a directory (or is a symbolic link)"
    else:
        return f"hash-path: failed to open {shown}: {e.strerror or e}"
    return f"hash-path refused {shown}: {why}; links are not followed"


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "a special file"


_threads_lock = threading.Lock()
#: Single-thread executors by thread name, started on first use.
_threads: Dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _thread(name: str) -> concurrent.futures.ThreadPoolExecutor:
    """The thread ``name``: ``handoff-hash`` (the second thread of
    ``_hash_large``) or ``handoff-writeback`` (starting writeback, one file
    after another)."""
    with _threads_lock:
        if name not in _threads:
            _threads[name] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        return _threads[name]


#: Pairs of buffers kept for the next large file: fresh ones cost page
#: faults on every call. At most two pairs (4 MiB) are kept.
_spare: "list[Tuple[bytearray, bytearray]]" = []
_KEEP = 2


class _MapHasher:
    """The mapping hasher process (``_maphash.py``): one request at a time,
    started on first use and again after it died."""

    #: How often a wait for its answer looks whether the call was stopped.
    POLL_S = 0.05

    #: The helper's script (a test puts another in its place).
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_maphash.py")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: Optional[subprocess.Popen] = None
        self.sock: Optional[socket.socket] = None
        #: It could not be started: read instead from now on.
        self.unavailable = False

    def hash(
        self, fd: int, stopped: Callable[[], Optional[str]]
    ) -> Union[Tuple[int, bytes], str, None]:
        """The size mapped and the hash of ``fd``; a string: the call was
        stopped (why); ``None``: not hashed (the caller reads instead)."""
        with self.lock:
            why = stopped()
            if why is not None:
                return why
            if self.unavailable:
                return None
            if self.process is None and not self._start():
                return None
            assert self.sock is not None
            try:
                socket.send_fds(self.sock, [b"h"], [fd])
                answer = self._answer(stopped)
            except OSError:
                answer = None
            if not isinstance(answer, tuple):
                self.stop()
            return answer

    def _start(self) -> bool:
        script = self.script
        try:
            ours, theirs = socket.socketpair()
        except OSError:
            self.unavailable = True
            return False
        try:
            self.process = subprocess.Popen(
                [sys.executable, script, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except (OSError, ValueError):
            ours.close()
            self.unavailable = True
            return False
        finally:
            theirs.close()
        self.sock = ours
        return True

    def _answer(
        self, stopped: Callable[[], Optional[str]]
    ) -> Union[Tuple[int, bytes], str, None]:
        assert self.sock is not None
        self.sock.settimeout(self.POLL_S)
        got = b""
        while len(got) < 40:
            try:
                more = self.sock.recv(40 - len(got))
            except socket.timeout:
                why = stopped()
                if why is not None:
                    return why
                continue
            if not more:
                return None  # it died (SIGBUS: the file was truncated) or failed
            got += more
        size = struct.unpack("<Q", got[:8])[0]
        return size, got[8:]

    def stop(self, wait_s: float = 0.0) -> None:
        """End the process: it exits once its socket closes and it is done
        with a request, which it is given ``wait_s`` to be; then it is
        killed."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


_mapper = _MapHasher()


@atexit.register
def _stop_mapper() -> None:
    with _mapper.lock:
        _mapper.stop(wait_s=1.0)


def after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, and must not talk
    to its parent's mapping hasher."""
    global _threads_lock, _threads, _mapper
    _threads_lock = threading.Lock()
    _threads = {}
    if _mapper.sock is not None:
        _mapper.sock.close()
    _mapper = _MapHasher()


def _stopped(shown: str, why: str) -> str:
    return f"hash-path: stopped reading {shown}: the call was {why}"


def _hash_small(fd: int, shown: str, stopped: Callable[[], Optional[str]]) -> Answer:
    """Hash ``fd`` from offset 0 until a read returns nothing, on this
    thread."""
    assert _blake3 is not None
    hasher = _blake3.blake3()
    offset = 0
    while True:
        data = os.pread(fd, CHUNK, offset)
        if not data:
            return offset, hasher.digest()
        why = stopped()
        if why is not None:
            return _stopped(shown, why)
        hasher.update(data)
        offset += len(data)


def _hash_large(fd: int, shown: str, stopped: Callable[[], Optional[str]]) -> Answer:
    """Hash ``fd`` from offset 0 until a read returns nothing: this thread
    and the helper thread take the pieces in turn (``_take_turns``), then
    this one reads on from where they stopped."""
    assert _blake3 is not None
    hasher = _blake3.blake3()
    try:
        buffers = _spare.pop()
    except IndexError:
        buffers = (bytearray(CHUNK), bytearray(CHUNK))
    turns = _Turns()
    try:
        helper = _thread("handoff-hash").submit(_take_turns, fd, 1, buffers[1], hasher, turns, stopped)
    except RuntimeError:  # the interpreter is shutting down: no new threads
        return _hash_small(fd, shown, stopped)
    try:
        _take_turns(fd, 0, buffers[0], hasher, turns, stopped)
    finally:
        # The descriptor is closed after this returns: the helper must be
        # done with it, and with its buffer, first.
        turns.finish()
        concurrent.futures.wait([helper])
    if len(_spare) < _KEEP:
        _spare.append(buffers)
    if turns.error is not None:
        raise turns.error
    if turns.why is not None:
        return _stopped(shown, turns.why)
    # The turns end at the first short piece (the end of the file, or a
    # read cut short): read on from there until a read returns nothing.
    offset = turns.hashed
    while True:
        data = os.pread(fd, CHUNK, offset)
        if not data:
            return offset, hasher.digest()
        hasher.update(data)
        offset += len(data)


class _Turns:
    """Whose turn it is to hash, and why the turns ended."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.turn = 0
        """The piece to hash next."""
        self.hashed = 0
        """Bytes hashed, in order from offset 0."""
        self.done = False
        self.why: Optional[str] = None
        self.error: Optional[OSError] = None

    def finish(self, why: Optional[str] = None, error: Optional[OSError] = None) -> None:
        with self.cond:
            if not self.done:
                self.done, self.why, self.error = True, why, error
            self.cond.notify_all()


def _take_turns(
    fd: int,
    first: int,
    buffer: bytearray,
    hasher: Any,
    turns: _Turns,
    stopped: Callable[[], Optional[str]],
) -> None:
    """Read pieces ``first``, ``first + 2``, ... into ``buffer``, and hash
    each once the piece before it is hashed, until a piece comes back short
    or the turns end."""
    view = memoryview(buffer)
    piece = first
    try:
        while not turns.done:
            n = os.preadv(fd, [buffer], piece * CHUNK)
            with turns.cond:
                while turns.turn != piece and not turns.done:
                    turns.cond.wait()
                if turns.done:
                    return
            why = stopped()
            if why is not None:
                turns.finish(why=why)
                return
            hasher.update(view[:n])
            with turns.cond:
                turns.turn += 1
                turns.hashed += n
                if n < CHUNK:
                    turns.done = True
                turns.cond.notify_all()
            piece += 2
    except OSError as e:
        turns.finish(error=e)
