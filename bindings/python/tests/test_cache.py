"""The compiled-component cache trusts only what only this user could write."""

import os
import threading
import warnings

import pytest
from wasmtime import Config, Engine

from handoff import _runtime

#: The smallest valid component, and another one (a custom section `x`).
EMPTY = b"\0asm\x0d\x00\x01\x00"
OTHER = EMPTY + b"\x00\x02\x01x"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("HANDOFF_CACHE_DIR", str(directory))
    monkeypatch.delenv("HANDOFF_NO_CACHE", raising=False)
    _runtime._warned.clear()
    return directory


def load(wasm=EMPTY):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _, cached = _runtime._compile_cached(Engine(Config()), wasm, "test")
    return cached, [str(w.message) for w in seen]


def entry(cache, wasm=EMPTY):
    before = set(cache.glob("py-*.cwasm"))
    for path in before:
        path.unlink()
    load(wasm)
    (path,) = cache.glob("py-*.cwasm")
    return path


def assert_replaced(cache):
    assert load() == (False, [])
    assert load() == (True, [])
    (path,) = cache.glob("py-*.cwasm")
    assert path.is_file() and not path.is_symlink()


def test_second_load_comes_from_the_cache(cache):
    assert load() == (False, [])
    assert load() == (True, [])
    (path,) = cache.glob("py-*.cwasm")
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_group_writable_cache_dir_is_not_used_and_warns_once(cache):
    load()
    cache.chmod(0o775)
    cached, warned = load()
    assert not cached
    assert warned == [
        f"cache directory {cache} not used: it is writable by group or others (mode 775); "
        "compiled the component in memory"
    ]
    assert load() == (False, [])  # once per process
    assert len(list(cache.iterdir())) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_a_cache_dir_of_another_user_is_not_used(cache):
    load()
    os.chown(cache, 65534, -1)
    cached, warned = load()
    assert not cached
    assert "belongs to uid 65534" in warned[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_an_entry_of_another_user_is_replaced(cache):
    os.chown(entry(cache), 65534, -1)
    assert_replaced(cache)


def test_a_group_writable_entry_is_replaced(cache):
    entry(cache).chmod(0o664)
    assert_replaced(cache)


def test_an_artifact_of_another_component_under_the_key_is_not_loaded(cache):
    mine = entry(cache)
    other = entry(cache, OTHER)
    assert mine != other
    other.rename(mine)
    assert_replaced(cache)


def test_an_artifact_for_another_engine_configuration_is_not_loaded(cache):
    path = entry(cache)
    _, cached = _runtime._compile_cached(Engine(Config()), EMPTY, "another")
    assert not cached
    (other,) = set(cache.glob("py-*.cwasm")) - {path}
    other.rename(path)
    assert_replaced(cache)


def test_a_fifo_entry_does_not_hang_and_is_replaced(cache):
    path = entry(cache)
    path.unlink()
    os.mkfifo(path)
    # Opening a FIFO for reading blocks until a writer comes: run the load
    # where a hang shows as a thread still alive.
    done = []
    worker = threading.Thread(target=lambda: done.append(load()), daemon=True)
    worker.start()
    worker.join(10)
    assert done == [(False, [])], "the load hung on the FIFO"
    assert load() == (True, [])


def test_a_symlinked_entry_is_not_followed_and_is_replaced(cache, tmp_path):
    path = entry(cache)
    target = tmp_path / "elsewhere.cwasm"
    path.rename(target)
    path.symlink_to(target)
    assert_replaced(cache)
    assert target.exists()


def test_a_truncated_entry_is_replaced(cache):
    path = entry(cache)
    path.write_bytes(path.read_bytes()[:100])
    assert_replaced(cache)


def test_an_oversized_entry_is_not_read(cache):
    path = entry(cache)
    with open(path, "r+b") as f:
        f.truncate(_runtime.MAX_CACHE_ENTRY + 1)
    assert_replaced(cache)
