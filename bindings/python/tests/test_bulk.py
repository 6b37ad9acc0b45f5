"""``bulk.hash-path`` and ``bulk.start-writeback-path`` in the Python host
(``handoff._bulk``): the component has this host hash a file by its path,
natively, and the host keeps it to the directories the call was given."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

import handoff
from handoff import _bulk

MIB = 1 << 20


def odd_sized_payload(step_dir):
    """A payload with a file large enough for the read-ahead path, of a size
    that is no multiple of a read piece, and a small one."""
    step_dir.mkdir(parents=True)
    (step_dir / "adapter_model.safetensors").write_bytes(os.urandom(_bulk.PARALLEL_MIN + 3 * MIB + 12345))
    (step_dir / "adapter_config.json").write_text('{"r": 8}')
    (step_dir / "sub").mkdir()
    (step_dir / "sub" / "empty.bin").write_bytes(b"")


@pytest.fixture
def counted(monkeypatch):
    """Count the component's hash-path calls and what they answered."""
    answers = []
    real = _bulk.hash_path

    def hash_path(dirs, root, path, stopped):
        answer = real(dirs, root, path, stopped)
        answers.append((path, answer))
        return answer

    monkeypatch.setattr(_bulk, "hash_path", hash_path)
    return answers


def seal(root, step):
    return handoff.seal(root, step, writer="w", created_ms=1_700_000_000_000)


def test_the_host_hash_gives_the_manifest_the_component_s_own_hash_gives(tmp_path, counted, monkeypatch):
    native, in_wasm = tmp_path / "native", tmp_path / "wasm"
    odd_sized_payload(native / "step_1")
    in_wasm.mkdir()
    # The same bytes under both roots.
    subprocess.run(["cp", "-a", str(native / "step_1"), str(in_wasm / "step_1")], check=True)
    seal(native, 1)
    assert sorted(p for p, _ in counted) == [
        "step_1/adapter_config.json",
        "step_1/adapter_model.safetensors",
        "step_1/sub/empty.bin",
    ]
    assert all(isinstance(a, tuple) for _, a in counted)
    counted.clear()
    monkeypatch.setattr(_bulk, "supported", lambda: set())
    seal(in_wasm, 1)
    assert counted == []
    manifest = "step_1/handoff.manifest.json"
    assert (native / manifest).read_bytes() == (in_wasm / manifest).read_bytes()


@pytest.mark.skipif(not os.environ.get("HANDOFF_BIN"), reason="HANDOFF_BIN (the native CLI) is not set")
def test_the_host_hash_gives_the_manifest_the_native_cli_gives(tmp_path, counted):
    python, cli = tmp_path / "python", tmp_path / "cli"
    odd_sized_payload(python / "step_1")
    cli.mkdir()
    subprocess.run(["cp", "-a", str(python / "step_1"), str(cli / "step_1")], check=True)
    seal(python, 1)
    assert counted
    subprocess.run(
        [os.environ["HANDOFF_BIN"], "seal", "--root", str(cli), "--step", "1"]
        + ["--writer", "w", "--created-ms", "1700000000000"],
        check=True,
        capture_output=True,
    )
    manifest = "step_1/handoff.manifest.json"
    assert (python / manifest).read_bytes() == (cli / manifest).read_bytes()
    # And a reader through the host's hash accepts the CLI's step.
    counted.clear()
    version = handoff.wait(cli, step=1, verify="hash")
    assert {f.path for f in version.files} == {p.split("/", 1)[1] for p, _ in counted}


def test_wait_verify_hash_through_the_host_finds_a_corrupted_file(root, src, counted):
    handoff.publish(root, 1, src)
    target = root / "step_1" / "adapter_model.safetensors"
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(handoff.IntegrityError, match="does not match its hash"):
        handoff.wait(root, 1, verify="hash", timeout=5, settle=0.2)
    assert any(p == "step_1/adapter_model.safetensors" for p, _ in counted)


# The guards, one host call at a time, as a component bent on escaping its
# root would make it.


@pytest.fixture
def tree(tmp_path):
    """``root/`` (the call's one preopen) with ``step_1/model.bin`` and
    ``outside/secret.bin`` beside it, and the preopen opened as a call
    opens it."""
    root = tmp_path / "root"
    (root / "step_1").mkdir(parents=True)
    (root / "step_1" / "model.bin").write_bytes(b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"secret")
    dirs = _bulk.open_preopens([str(root)])
    yield root, outside, dirs
    _bulk.close_preopens(dirs)


def hashed(dirs, root, path):
    return _bulk.hash_path(dirs, str(root), path, lambda: None)


def test_a_file_beneath_the_root_is_hashed(tree):
    root, _, dirs = tree
    size, digest = hashed(dirs, root, "step_1/model.bin")
    assert size == 7 and len(digest) == 32


def test_a_symlink_planted_as_a_directory_on_the_path_is_refused(tree):
    root, outside, dirs = tree
    os.symlink(outside, root / "step_2")
    answer = hashed(dirs, root, "step_2/secret.bin")
    assert isinstance(answer, str) and "refused" in answer and "step_2" in answer, answer
    # Even one that stays inside the root.
    os.symlink(root / "step_1", root / "step_3")
    answer = hashed(dirs, root, "step_3/model.bin")
    assert isinstance(answer, str) and "symbolic link" in answer, answer


def test_a_symlink_planted_as_the_file_is_refused(tree):
    root, outside, dirs = tree
    os.symlink(outside / "secret.bin", root / "step_1" / "leak.bin")
    answer = hashed(dirs, root, "step_1/leak.bin")
    assert isinstance(answer, str) and "symbolic link" in answer and "step_1/leak.bin" in answer, answer


def test_a_fifo_is_refused_without_blocking(tree):
    root, _, dirs = tree
    fifo = root / "step_1" / "pipe.bin"
    os.mkfifo(fifo)
    answers = []
    worker = threading.Thread(target=lambda: answers.append(hashed(dirs, root, "step_1/pipe.bin")), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        # Release the blocked open (a writer appears), then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("hash-path blocked opening a FIFO")
    [answer] = answers
    assert isinstance(answer, str) and "a FIFO, not a regular file" in answer, answer


def test_a_directory_is_refused(tree):
    root, _, dirs = tree
    answer = hashed(dirs, root, "step_1")
    assert isinstance(answer, str) and "a directory, not a regular file" in answer, answer


@pytest.mark.parametrize(
    "path",
    ["../outside/secret.bin", "step_1/../../outside/secret.bin", "/etc/passwd", "step_1//model.bin", "./step_1/model.bin", ""],
)
def test_paths_that_are_not_plainly_beneath_the_root_are_refused(tree, path):
    root, _, dirs = tree
    answer = hashed(dirs, root, path)
    assert isinstance(answer, str) and "not a plain relative path" in answer, answer


def test_a_root_the_call_was_not_given_is_refused(tree):
    root, outside, dirs = tree
    answer = _bulk.hash_path(dirs, str(outside), "secret.bin", lambda: None)
    assert isinstance(answer, str) and "is not a directory this call was given" in answer, answer
    # Nor is the preopen's parent, spelled as a root.
    answer = _bulk.hash_path(dirs, str(root.parent), "outside/secret.bin", lambda: None)
    assert isinstance(answer, str) and "is not a directory this call was given" in answer, answer


def test_the_root_stays_the_directory_opened_when_the_call_began(tree, tmp_path):
    root, outside, dirs = tree
    # The root's name is made to lead elsewhere after the call opened it.
    os.rename(root, tmp_path / "was_root")
    os.symlink(outside, root)
    (outside / "step_1").mkdir()
    (outside / "step_1" / "model.bin").write_bytes(b"not the weights")
    size, _ = hashed(dirs, root, "step_1/model.bin")
    assert size == len(b"weights")


def test_a_missing_file_fails_naming_it(tree):
    root, _, dirs = tree
    answer = hashed(dirs, root, "step_1/gone.bin")
    assert isinstance(answer, str) and f"{root}/step_1/gone.bin" in answer, answer


def test_a_stopped_call_stops_reading(tree):
    root, _, dirs = tree
    (root / "step_1" / "big.bin").write_bytes(b"\0" * (_bulk.PARALLEL_MIN + 1))
    for path in ("step_1/model.bin", "step_1/big.bin"):
        answer = _bulk.hash_path(dirs, str(root), path, lambda: "cancelled")
        assert isinstance(answer, str) and "the call was cancelled" in answer, answer


def test_writeback_is_started_only_for_what_hash_path_would_read(tree, monkeypatch):
    root, outside, dirs = tree
    started = []
    monkeypatch.setattr(_bulk, "_sync_file_range", lambda fd, off, n, flags: started.append(os.fstat(fd).st_size))
    os.symlink(outside / "secret.bin", root / "step_1" / "leak.bin")
    for path in ("step_1/leak.bin", "../outside/secret.bin", "step_1/model.bin"):
        _bulk.start_writeback_path(dirs, str(root), path)
    _bulk._thread("handoff-writeback").submit(lambda: None).result()
    assert started == [len(b"weights")]


def test_the_component_starts_writeback_through_the_host_when_it_seals(root, src, monkeypatch):
    if "start-writeback-path" not in _bulk.supported():
        pytest.skip("no sync_file_range here")
    started = []
    real = _bulk.start_writeback_path
    monkeypatch.setattr(_bulk, "start_writeback_path", lambda dirs, r, p: (started.append(p), real(dirs, r, p)))
    step = root / "step_1"
    subprocess.run(["cp", "-a", str(src), str(step)], check=True)
    seal(root, 1)
    assert sorted(started) == ["step_1/adapter_config.json", "step_1/adapter_model.safetensors", "step_1/sub/extra.bin"]
    assert json.loads((step / "handoff.manifest.json").read_text())["files"]


@pytest.fixture
def reading(monkeypatch):
    """Large files read and hashed in this process, as when the mapping
    hasher cannot be started."""
    mapper = _bulk._MapHasher()
    mapper.unavailable = True
    monkeypatch.setattr(_bulk, "_mapper", mapper)


def test_a_short_read_before_the_end_is_read_on_from_where_it_stopped(tree, monkeypatch, reading):
    root, _, dirs = tree
    data = os.urandom(_bulk.PARALLEL_MIN + 5 * _bulk.CHUNK + 777)
    (root / "step_1" / "big.bin").write_bytes(data)
    real = os.preadv
    short = {3 * _bulk.CHUNK}  # the offset whose read comes back short

    def preadv(fd, buffers, offset):
        if offset in short:
            short.discard(offset)
            view = memoryview(buffers[0])[: _bulk.CHUNK // 3]
            return real(fd, [view], offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    size, digest = hashed(dirs, root, "step_1/big.bin")
    assert not short, "the short reads were not made"
    import blake3

    assert (size, digest) == (len(data), blake3.blake3(data).digest())


def test_a_read_error_in_either_thread_fails_naming_the_file(tree, monkeypatch, reading):
    root, _, dirs = tree
    (root / "step_1" / "big.bin").write_bytes(b"\1" * (_bulk.PARALLEL_MIN + 5 * _bulk.CHUNK))
    real = os.preadv
    for bad in (4 * _bulk.CHUNK, 7 * _bulk.CHUNK):  # one piece of each thread

        def preadv(fd, buffers, offset, bad=bad):
            if offset == bad:
                raise OSError(5, "Input/output error")
            return real(fd, buffers, offset)

        monkeypatch.setattr(os, "preadv", preadv)
        answer = hashed(dirs, root, "step_1/big.bin")
        assert isinstance(answer, str) and "Input/output error" in answer and "step_1/big.bin" in answer, answer


def big_file(tree):
    root, _, dirs = tree
    data = os.urandom(_bulk.PARALLEL_MIN + 12345)
    (root / "step_1" / "big.bin").write_bytes(data)
    import blake3

    return root, dirs, (len(data), blake3.blake3(data).digest())


def test_a_large_file_is_hashed_by_the_mapping_hasher(tree, monkeypatch):
    root, dirs, expected = big_file(tree)
    mapper = _bulk._MapHasher()
    monkeypatch.setattr(_bulk, "_mapper", mapper)

    def no_reading(*args):
        raise AssertionError("read in this process")

    monkeypatch.setattr(_bulk, "_hash_large", no_reading)
    try:
        assert hashed(dirs, root, "step_1/big.bin") == expected
        assert mapper.process is not None and mapper.process.poll() is None
    finally:
        mapper.stop()


def helper_script(tmp_path, body):
    """A stand-in for ``_maphash.py`` that takes a request and then runs
    ``body``."""
    script = tmp_path / "helper.py"
    script.write_text(
        "import os, signal, socket, sys, time\n"
        "sock = socket.socket(fileno=int(sys.argv[1]))\n"
        "socket.recv_fds(sock, 1, 1)\n" + body + "\n"
    )
    return str(script)


def test_a_mapping_hasher_killed_by_sigbus_leaves_the_file_to_be_read(tree, tmp_path, monkeypatch):
    # What a file truncated under the map does to the helper: SIGBUS. This
    # process goes on, and reads the file itself.
    root, dirs, expected = big_file(tree)
    mapper = _bulk._MapHasher()
    mapper.script = helper_script(tmp_path, "os.kill(os.getpid(), signal.SIGBUS)")
    monkeypatch.setattr(_bulk, "_mapper", mapper)
    assert hashed(dirs, root, "step_1/big.bin") == expected
    assert mapper.process is None, "the dead helper is let go, to be started again"


def test_the_real_helper_dies_of_sigbus_on_a_file_truncated_under_its_map(tmp_path):
    # The danger the helper process contains: the file truncated once mapped.
    path = tmp_path / "f"
    path.write_bytes(b"x" * (1 << 20))
    code = (
        "import mmap, os, sys; sys.path.insert(0, sys.argv[1]); import _maphash; "
        "real = mmap.mmap\n"
        "def truncating(*args, **kwargs):\n"
        "    mapped = real(*args, **kwargs); os.truncate(sys.argv[2], 4096); return mapped\n"
        "mmap.mmap = truncating\n"
        "_maphash._hash(os.open(sys.argv[2], os.O_RDONLY))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(_bulk.__file__), str(path)],
        capture_output=True,
    )
    assert done.returncode == -signal.SIGBUS, done


def test_a_stopped_call_ends_a_mapping_hasher_that_does_not_answer(tree, tmp_path, monkeypatch):
    root, dirs, _ = big_file(tree)
    mapper = _bulk._MapHasher()
    mapper.script = helper_script(tmp_path, "time.sleep(60)")
    monkeypatch.setattr(_bulk, "_mapper", mapper)
    calls = []

    def stopped():
        calls.append(1)
        return "cancelled" if len(calls) > 3 else None

    answer = _bulk.hash_path(dirs, str(root), "step_1/big.bin", stopped)
    assert isinstance(answer, str) and "the call was cancelled" in answer, answer
    assert mapper.process is None
