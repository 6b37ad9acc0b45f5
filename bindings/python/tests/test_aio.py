"""handoff.aio: the calls as coroutines, and their cancellation."""

import asyncio
import sys
import threading
import time

import pytest

import handoff
import handoff.aio as aio

#: A cancelled wait ends within one poll interval; this is the slack above it
#: for a loaded test machine.
SLACK = 0.5


def aio_threads():
    return [t for t in threading.enumerate() if t.name.startswith("handoff-aio-")]


def test_wait_for_a_step_that_never_comes_times_out_and_run_returns(root):
    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(aio.wait(root, 999), 0.5)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 0.5 + handoff.DEFAULT_POLL + SLACK
    assert aio_threads() == []


def test_task_cancel_stops_the_call_and_its_thread(root):
    seen = {}

    async def main():
        task = asyncio.create_task(aio.wait(root, 999, poll=0.2))
        await asyncio.sleep(0.3)
        (seen["thread"],) = aio_threads()
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen["stopped"] = time.monotonic() - start

    asyncio.run(main())
    assert seen["stopped"] < 0.2 + SLACK
    assert not seen["thread"].is_alive()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_asyncio_timeout_and_run_s_own_cancellation(root):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await aio.wait(root, latest=True)
        # Left running when main returns: asyncio.run cancels it.
        asyncio.get_running_loop().create_task(aio.wait(root, after=5))
        await asyncio.sleep(0.1)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 0.4 + handoff.DEFAULT_POLL + SLACK
    assert aio_threads() == []


def test_a_cancelled_call_leaves_nothing_that_needs_the_event_loop(root):
    """Cancelling twice (wait_for, then run's shutdown) still waits for the call."""

    async def main():
        task = asyncio.create_task(aio.wait(root, 999))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert aio_threads() == []


def test_concurrent_calls_run_in_parallel(root, src):
    async def main():
        # Eight waits for steps that a publisher writes meanwhile; more than
        # the default executor's workers on a small machine.
        waits = [asyncio.create_task(aio.wait(root, step, timeout=30)) for step in range(8)]
        timeouts = [asyncio.create_task(aio.wait(root, 999, timeout=1)) for _ in range(4)]
        await asyncio.sleep(0.2)
        start = time.monotonic()
        reports = await asyncio.gather(*(aio.publish(root, step, src) for step in range(8)))
        versions = await asyncio.gather(*waits)
        assert [v.step for v in versions] == list(range(8))
        assert versions == [r.version for r in reports]
        failed = await asyncio.gather(*timeouts, return_exceptions=True)
        assert all(isinstance(e, handoff.TimedOutError) for e in failed)
        # The four 1 s timeouts ran side by side.
        assert time.monotonic() - start < 3

    asyncio.run(main())
    assert aio_threads() == []


def test_every_function_has_its_coroutine(root, src, tmp_path):
    async def main():
        assert (await aio.publish(root, 1, src, writer="w")).version.step == 1
        (root / "step_7").mkdir()
        (root / "step_7" / "a.bin").write_bytes(b"a")
        assert (await aio.seal(root, 7)).version.step == 7
        assert (await aio.latest(root)).step == 7
        assert (await aio.fetch(root, 7, to=tmp_path / "local")).copied
        assert [s.step for s in await aio.ls(root)] == [1, 7]
        pin = await aio.pin(root, 1, "reader", 60)
        assert (pin.step, pin.holder) == (1, "reader")
        assert (await aio.gc(root, 1)).pinned == (1,)
        await aio.unpin(root, 1, "reader")
        assert (await aio.gc(root, 1)).removed == (1,)
        assert [e.name for e in await aio.fsck(root)] == ["step_7"]
        with pytest.raises(handoff.NotFoundError):
            await aio.unpin(root, 1, "reader")
        assert await aio.begin(root) == 1

    asyncio.run(main())
    assert aio.wait.__wrapped__ is handoff.wait
    assert aio.__all__[:11] == [
        "publish", "seal", "begin", "wait", "fetch", "latest", "ls", "pin", "unpin", "gc", "fsck",
    ]  # fmt: skip


def test_a_sync_call_in_another_thread_is_cancelled_by_its_token(root):
    token = aio.CancelToken()
    outcome = {}

    def reader():
        with token.scope():
            try:
                handoff.wait(root, 999)
            except aio.Cancelled as e:
                outcome["error"] = e
                outcome["at"] = time.monotonic()

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    token.cancel()
    thread.join(5)
    assert not thread.is_alive()
    e = outcome["error"]
    assert (e.kind, e.exit_code, str(e)) == ("cancelled", 130, "the wait call was cancelled")
    assert isinstance(e, handoff.HandoffError)
    assert outcome["at"] - start < handoff.DEFAULT_POLL + SLACK
    # Cancelling is final: a later call in the scope is refused at once.
    with token.scope(), pytest.raises(aio.Cancelled):
        handoff.ls(root)
    # Outside it, calls run.
    assert handoff.ls(root) == []
