"""The Python binding against the real component, on a local filesystem."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import handoff
from handoff import _runtime


def test_publish_then_wait_returns_the_same_version(root, src):
    report = handoff.publish(root, 3, src, writer="trainer-0", created_ms=1_700_000_000_000)
    assert report.version.step == 3
    assert report.version.path == str(root.resolve() / "step_3")
    assert report.version.writer == "trainer-0"
    assert report.version.created_ms == 1_700_000_000_000
    assert [f.path for f in report.version.files] == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "sub/extra.bin",
    ]
    assert report.version.bytes == 65536 + 8 + 10
    assert report.fsyncs >= 6 and report.warnings == ()
    assert (root / "step_3" / "STABLE").read_bytes() == b""

    version = handoff.wait(root, 3, verify="hash", timeout=1)
    assert version == report.version


def test_second_publish_is_a_conflict_and_the_first_stays_intact(root, src, tmp_path):
    first = handoff.publish(root, 1, src, writer="a")
    manifest = (root / "step_1" / "handoff.manifest.json").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes(b"different")

    with pytest.raises(handoff.ConflictError) as err:
        handoff.publish(root, 1, other, writer="b")
    assert err.value.exit_code == 5 and err.value.kind == "conflict"
    assert "already published" in str(err.value) and str(root.resolve()) in str(err.value)
    assert err.value.retryable is False

    assert (root / "step_1" / "handoff.manifest.json").read_bytes() == manifest
    assert handoff.wait(root, 1, verify="hash", timeout=1) == first.version
    assert os.listdir(root / ".handoff" / "staging") == []


def test_corruption_is_an_integrity_error_with_verify_hash(root, src):
    handoff.publish(root, 1, src)
    payload = root / "step_1" / "adapter_model.safetensors"
    data = bytearray(payload.read_bytes())
    data[100] ^= 0xFF  # same size: only the hash can tell
    payload.write_bytes(bytes(data))

    assert handoff.wait(root, 1, verify="size", timeout=1).step == 1
    start = time.monotonic()
    with pytest.raises(handoff.IntegrityError) as err:
        handoff.wait(root, 1, verify="hash", timeout=5, settle=0.2)
    assert time.monotonic() - start < 5
    assert err.value.exit_code == 4
    assert "adapter_model.safetensors" in str(err.value)


def test_a_short_file_is_an_integrity_error_naming_it(root, src):
    handoff.publish(root, 1, src)
    payload = root / "step_1" / "adapter_model.safetensors"
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.raises(handoff.IntegrityError) as err:
        handoff.wait(root, 1, timeout=5, settle=0.2)
    assert str(payload.resolve()) in str(err.value)


def test_a_missing_manifest_is_a_retryable_integrity_error_with_its_path(root):
    (root / "step_2").mkdir()
    (root / "step_2" / "STABLE").touch()
    with pytest.raises(handoff.IntegrityError) as err:
        handoff.wait(root, 2, timeout=5, settle=0.1)
    assert err.value.kind == "integrity"
    assert err.value.path == str(root.resolve() / "step_2" / "handoff.manifest.json")
    assert err.value.retryable is True


def test_wait_times_out_within_its_timeout(root):
    handoff.ls(root)  # load the component first: only the wait is timed
    start = time.monotonic()
    with pytest.raises(handoff.TimedOutError) as err:
        handoff.wait(root, 9, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.8, elapsed
    assert isinstance(err.value, TimeoutError)
    assert err.value.exit_code == 3 and err.value.kind == "timed-out"
    assert "step 9 is not committed" in str(err.value)
    assert err.value.retryable is True


def test_wait_sees_a_step_published_by_another_thread(root, src):
    found = {}

    def reader():
        found["version"] = handoff.wait(root, 5, verify="hash", timeout=10)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.2)
    report = handoff.publish(root, 5, src)
    thread.join(10)
    assert found["version"] == report.version


def test_seal_in_place_keeps_stable_for_old_readers(root, src):
    shutil.copytree(src, root / "step_4")
    report = handoff.seal(root, 4, writer="trainer")
    assert (root / "step_4" / "STABLE").exists()
    assert (root / "step_4" / "handoff.manifest.json").exists()
    assert handoff.wait(root, 4, verify="hash", timeout=1) == report.version
    with pytest.raises(handoff.ConflictError):
        handoff.seal(root, 4)


def test_seal_claimed_by_another_writer_conflicts_and_its_own_takes_over(root, src):
    shutil.copytree(src, root / "step_4")
    (root / "step_4" / ".handoff.seal").mkdir()
    (root / "step_4" / ".handoff.seal" / "writer").write_text("trainer-7")
    with pytest.raises(handoff.ConflictError, match="trainer-7"):
        handoff.seal(root, 4, writer="other")
    assert not (root / "step_4" / "handoff.manifest.json").exists()
    report = handoff.seal(root, 4, writer="trainer-7")
    assert report.version.writer == "trainer-7"
    assert not (root / "step_4" / ".handoff.seal").exists()


def test_a_restarted_trainers_run_supersedes_the_old_one(root, src):
    for step in (1, 2, 3):
        handoff.publish(root, step, src)
    run = handoff.begin(root)
    assert run == 1
    # The restarted trainer republishes step 2 in its own run: no conflict.
    report = handoff.publish(root, 2, src, run=run)
    assert (report.version.run, report.version.step) == (1, 10**12 + 2)
    assert handoff.latest(root).step == 10**12 + 2
    assert handoff.wait(root, after=1, timeout=1).step == 10**12 + 2
    with pytest.raises(handoff.ConflictError, match="superseded"):
        handoff.publish(root, 4, src)


def test_latest_pin_gc_and_unpin(root, src):
    for step in (1, 2, 3):
        handoff.publish(root, step, src)
    (root / "step_banana").mkdir()  # stray names are ignored
    (root / "step_9").mkdir()  # incomplete: skipped by latest

    v = handoff.wait(root, latest=True, pin="server-a", ttl=60, timeout=1)
    assert v.step == 3
    assert handoff.latest(root).step == 3
    handoff.pin(root, 1, "server-b", ttl=60)

    report = handoff.gc(root, keep=1)
    assert report.removed == (2,)
    assert set(report.kept + report.pinned) == {1, 3}
    assert [s.step for s in handoff.ls(root) if s.state == "committed"] == [1, 3]

    handoff.unpin(root, 1, "server-b")
    with pytest.raises(handoff.NotFoundError):
        handoff.unpin(root, 1, "server-b")
    assert handoff.gc(root, keep=1).removed == (1,)
    states = {s.step: s.state for s in handoff.ls(root)}
    assert states == {3: "committed", 9: "incomplete"}


def test_wait_pin_keeps_the_previous_pin_until_the_reader_unpins_it(root, src):
    handoff.publish(root, 1, src)
    assert handoff.wait(root, latest=True, pin="r", timeout=1).step == 1
    handoff.publish(root, 2, src)
    assert handoff.wait(root, after=1, pin="r", timeout=1).step == 2
    # Still serving step 1 until switched over: gc keeps it.
    assert list(handoff.gc(root, 1).pinned) == [1]
    handoff.unpin(root, 1, "r")  # switched over
    assert list(handoff.gc(root, 1).removed) == [1]
    handoff.unpin(root, 2, "r")


def test_gc_reports_what_it_cannot_remove_and_goes_on(root, src):
    for step in (1, 2, 3):
        handoff.publish(root, step, src)
    # A pin directory that is not one: gc cannot claim step 1.
    pins = root / "step_1" / ".handoff.pins"
    pins.rmdir()
    pins.write_bytes(b"")
    report = handoff.gc(root, keep=1)
    assert report.removed == (2,)
    assert report.kept == (3,)
    [failure] = report.failed
    assert failure.name == "step_1"
    assert isinstance(failure.error, handoff.HandoffError)
    assert failure.error.kind == "io"
    assert ".handoff.pins" in str(failure.error)


def test_a_source_that_is_inside_or_holds_the_root_is_refused(root, src):
    shutil.copytree(src, root / "incoming")
    for source, needle in [
        (root, "is the root itself"),
        (root / "incoming", "is inside the root"),
        (root.parent, "contains the root"),
    ]:
        with pytest.raises(handoff.HandoffError, match=needle) as caught:
            handoff.publish(root, 2, source)
        assert caught.value.kind == "invalid-input" and str(source) in str(caught.value)
    assert sorted(os.listdir(root)) == ["incoming"]


def test_a_top_level_stable_or_manifest_in_the_source_is_refused(root, src):
    for name in ["STABLE", "handoff.manifest.json"]:
        (src / name).write_bytes(b"x")
        with pytest.raises(handoff.HandoffError, match=f"`{name}` is a name handoff reserves") as caught:
            handoff.publish(root, 5, src)
        assert caught.value.kind == "invalid-input"
        (src / name).unlink()
    assert not (root / "step_5").exists()


def test_publish_keep_runs_gc(root, src):
    for step in (1, 2, 3):
        report = handoff.publish(root, step, src, keep=2)
    assert report.gc.removed == (1,)
    assert [s.step for s in handoff.ls(root)] == [2, 3]


def _age(path, seconds):
    """Set every time in the tree at ``path`` ``seconds`` back."""
    then = time.time() - seconds
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (then, then))
        os.utime(dirpath, (then, then))


def test_fsck_repairs_what_a_crash_left_and_is_idempotent(root, src):
    handoff.publish(root, 1, src)
    shutil.copytree(src, root / "step_2")  # a writer crashed before STABLE, or is at work
    staging = root / ".handoff" / "staging" / "step_3.0001"
    shutil.copytree(src, staging)
    _age(staging, 2 * 3600)  # a publisher that crashed two hours ago
    entries = {e.name: e for e in handoff.fsck(root)}
    assert entries["step_1"].state == "committed"
    assert entries["step_2"].state == "incomplete"
    assert entries["step_2"].action is None

    repaired = {e.name: e for e in handoff.fsck(root, repair=True)}
    assert repaired[".handoff/staging/step_3.0001"].action
    assert not staging.exists()
    # Younger than the grace period: left (removed once an hour old).
    assert repaired["step_2"].action is None
    assert "grace" in repaired["step_2"].detail
    assert (root / "step_2").exists()
    again = handoff.fsck(root, repair=True)
    assert all(e.action is None for e in again)
    assert [(s.step, s.state) for s in handoff.ls(root)] == [(1, "committed"), (2, "incomplete")]


def test_pin_of_a_missing_step_is_not_found(root):
    with pytest.raises(handoff.NotFoundError):
        handoff.pin(root, 7, "h")


def test_bad_holder_is_invalid_input(root, src):
    handoff.publish(root, 1, src)
    with pytest.raises(handoff.InvalidInputError):
        handoff.pin(root, 1, "../evil")


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(handoff.HandoffError) as err:
        handoff.ls(missing)
    assert str(err.value).startswith(f"root {missing}: ")
    assert err.value.exit_code == 1
    assert (err.value.kind, err.value.path, err.value.retryable) == ("not-found", str(missing), False)
    assert isinstance(err.value, handoff.NotFoundError)


def test_a_failed_gc_after_a_publish_keeps_the_error_s_attributes(root, src, monkeypatch):
    def failing_gc(*args, **kwargs):
        raise handoff.DurabilityError("flush failed", "durability", path="/x/step_1", retryable=True)

    monkeypatch.setattr(handoff, "gc", failing_gc)
    with pytest.raises(handoff.DurabilityError) as err:
        handoff.publish(root, 1, src, keep=1)
    assert str(err.value).startswith("step 1 was published, but the gc after it failed: flush failed")
    assert (err.value.kind, err.value.path, err.value.retryable) == ("durability", "/x/step_1", True)


def test_argument_errors_are_value_errors(root):
    with pytest.raises(ValueError):
        handoff.wait(root)
    with pytest.raises(ValueError):
        handoff.wait(root, 1, latest=True)
    with pytest.raises(ValueError):
        handoff.wait(root, 1, verify="sha1")
    with pytest.raises(ValueError):
        handoff.gc(root, 0)
    with pytest.raises(ValueError):
        handoff.publish(root, -1, root)


def test_the_component_is_compiled_once_per_process(root):
    handoff.ls(root)
    first = _runtime.loaded()
    handoff.ls(root)
    assert _runtime.loaded() is first


def test_a_new_process_loads_the_compiled_component_from_the_cache(tmp_path, root):
    script = textwrap.dedent(
        f"""
        import handoff
        from handoff import _runtime
        handoff.ls({str(root)!r})
        print(_runtime.loaded().cached)
        """
    )
    env = dict(os.environ, HANDOFF_CACHE_DIR=str(tmp_path / "cache"))
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert [r.stdout.strip() for r in runs] == ["False", "True"]
    assert len(list((tmp_path / "cache").glob("py-*.cwasm"))) == 1


def test_a_torn_cache_file_is_recompiled(tmp_path, root):
    cache = tmp_path / "cache"
    script = f"import handoff; from handoff import _runtime; handoff.ls({str(root)!r}); print(_runtime.loaded().cached)"
    env = dict(os.environ, HANDOFF_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    (artifact,) = cache.glob("py-*.cwasm")
    artifact.write_bytes(artifact.read_bytes()[:1000])
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_every_reported_fsync_is_a_real_fsync(tmp_path, root, src):
    """durability answers `unsupported`; the fallback must still reach fsync(2)."""
    trace = tmp_path / "trace"
    script = textwrap.dedent(
        f"""
        import handoff
        handoff.ls({str(root)!r})  # load the component before the marker
        print(handoff.publish({str(root)!r}, 1, {str(src)!r}).fsyncs)
        """
    )
    out = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=fsync,fdatasync", sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
    )
    reported = int(out.stdout.strip())
    fsyncs = [line for line in trace.read_text().splitlines() if "fsync(" in line and "= 0" in line]
    assert reported >= 6
    assert len(fsyncs) >= reported, (reported, fsyncs)
