"""``fetch``: a verified local copy of a shared step, pinned while it is
copied."""

import os
import threading
import time

import pytest

import handoff


def test_fetch_copies_the_step_with_the_shared_manifest_and_releases_its_pin(root, src, tmp_path):
    handoff.publish(root, 1, src)
    handoff.publish(root, 2, src)
    local = tmp_path / "local" / "adapters"  # made by fetch
    report = handoff.fetch(root, latest=True, to=local, holder="server-a")
    assert report.copied and report.version.step == 2
    assert report.version.path == str(local / "step_2")
    assert report.source == str(root / "step_2")
    assert report.bytes_copied == report.version.bytes == sum(f.size for f in report.version.files)
    manifest = "handoff.manifest.json"
    assert (local / "step_2" / manifest).read_bytes() == (root / "step_2" / manifest).read_bytes()
    assert (local / "step_2" / "STABLE").is_file()
    assert os.listdir(root / "step_2" / ".handoff.pins") == []
    # Readers of the local root see a committed step.
    assert handoff.wait(local, 2, verify="hash", timeout=5).step == 2
    # Again: nothing to copy.
    again = handoff.fetch(root, 2, to=local)
    assert not again.copied and again.bytes_copied == 0
    # keep runs gc on the local root, never on the shared one.
    kept = handoff.fetch(root, 1, to=local, keep=1)
    assert kept.gc.removed == (1,) and kept.gc.kept == (2,)
    assert [s.step for s in handoff.ls(root)] == [1, 2]


def test_a_copy_that_does_not_match_the_manifest_commits_nothing(root, src, tmp_path):
    handoff.publish(root, 1, src)
    # Same size, other bytes: a size check passes, the hash does not.
    shared = root / "step_1" / "adapter_model.safetensors"
    shared.write_bytes(os.urandom(shared.stat().st_size))
    local = tmp_path / "local"
    with pytest.raises(handoff.IntegrityError) as caught:
        handoff.fetch(root, 1, to=local, settle=0.3)
    assert str(shared) in str(caught.value)
    assert not (local / "step_1").exists()
    staging = local / ".handoff" / "staging"
    assert not staging.exists() or os.listdir(staging) == []
    assert os.listdir(root / "step_1" / ".handoff.pins") == []


def test_the_shared_step_stays_pinned_while_it_is_copied(root, src, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "weights.bin", "wb") as f:
        f.truncate(192 << 20)  # read back as zeros: a copy of some length, quickly made
    handoff.publish(root, 1, big)
    handoff.publish(root, 2, src)  # the trainer has moved on
    local = tmp_path / "local"
    result = {}

    def fetching():
        try:
            result["report"] = handoff.fetch(root, 1, to=local)
        except BaseException as e:  # shown by the main thread
            result["error"] = e

    thread = threading.Thread(target=fetching)
    thread.start()
    staging = local / ".handoff" / "staging"
    deadline = time.monotonic() + 30
    while not (staging.exists() and os.listdir(staging)) and thread.is_alive():
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.002)
    assert thread.is_alive(), "the copy ended before gc could run: make the payload bigger"
    # The trainer collects while the server copies.
    started = time.monotonic()
    report = handoff.gc(root, 1)
    thread.join()
    copied_after_gc = time.monotonic() - started
    assert "error" not in result, result.get("error")
    assert report.pinned == (1,) and report.removed == (), (report, copied_after_gc)
    assert result["report"].copied
    # Released after the copy: the next gc takes it.
    assert handoff.gc(root, 1).removed == (1,)


def test_fetch_arguments_are_checked_before_anything_is_written(root, src, tmp_path):
    handoff.publish(root, 1, src)
    local = tmp_path / "local"
    with pytest.raises(handoff.UsageError, match="for keep"):
        handoff.fetch(root, 1, to=local, keep=0)
    with pytest.raises(handoff.UsageError, match="for to: the path is empty"):
        handoff.fetch(root, 1, to="")
    with pytest.raises(handoff.UsageError, match="give exactly one of"):
        handoff.fetch(root, to=local)
    assert not local.exists()
    for inside in (root, root / "mirror", root.parent):
        with pytest.raises(handoff.InvalidInputError, match="shared root"):
            handoff.fetch(root, 1, to=inside)
    assert not (root / "mirror").exists()
