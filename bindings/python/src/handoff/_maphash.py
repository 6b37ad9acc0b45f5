"""The mapping hasher: a helper process that hashes files it is handed.

Run as a script (not as part of the package, so that starting it imports
neither wasmtime nor the package): ``python _maphash.py FD``, where ``FD``
is its end of a Unix socket pair. Each request is one byte with one open
file descriptor attached (``SCM_RIGHTS``); the answer is 40 bytes: the
file's size when mapped (little-endian u64) and its BLAKE3 hash, computed
from a read-only memory map on all CPUs. An empty answer-less close means
the helper failed; it exits when the socket closes.

A mapped file that is truncated while it is hashed raises ``SIGBUS``, which
kills this process and nothing else: the package then reads and hashes the
file itself, and sees it as it is by then.
"""

import mmap
import os
import socket
import struct
import sys

import blake3


def _hash(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if size > 0:
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped:
            hasher.update(mapped)
    return struct.pack("<Q", size) + hasher.digest()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        except OSError:
            return
        if not fds:
            return
        try:
            answer = _hash(fds[0])
        except (OSError, ValueError):
            answer = b""
        finally:
            for fd in fds:
                os.close(fd)
        if not answer:
            return
        sock.sendall(answer)


if __name__ == "__main__":
    main()
