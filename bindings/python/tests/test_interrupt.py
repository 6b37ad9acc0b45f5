"""How ``_runtime.call`` stops a call: its deadline, its cancel token, or a
trap, each reported as itself, and one call's stop never reaches another."""

import threading
import time

import pytest
from wasmtime.component import Variant

import handoff
from handoff import _runtime
from handoff._runtime import CancelToken, Cancelled, record


def wait_forever(root, deadline=None, poll_ms=50):
    """``wait`` for a step that never comes, with no timeout of its own."""
    path = str(root.resolve())
    options = record(prefix="step_", verify="size", timeout_ms=None, settle_ms=1000, poll_ms=poll_ms, pin=None)
    return _runtime.call("wait", [(path, True)], [path, Variant("step", 999), options], deadline)


def test_a_deadline_stops_the_call_as_deadline_exceeded(root):
    start = time.monotonic()
    with pytest.raises(handoff.DeadlineExceededError) as e:
        wait_forever(root, deadline=0.3)
    took = time.monotonic() - start
    assert 0.3 <= took < 0.3 + 0.05 + 0.5
    assert (e.value.kind, e.value.exit_code) == ("deadline-exceeded", 3)
    assert str(e.value) == "the wait call ran past its deadline of 0.3 s and was stopped"
    assert isinstance(e.value, TimeoutError)


def test_a_cancel_stops_the_call_as_cancelled_not_as_a_deadline(root):
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    start = time.monotonic()
    with token.scope(), pytest.raises(Cancelled) as e:
        wait_forever(root, deadline=5)
    assert time.monotonic() - start < 0.2 + 0.05 + 0.5
    assert e.value.kind == "cancelled"
    assert not isinstance(e.value, handoff.DeadlineExceededError)


def test_a_deadline_that_comes_first_is_a_deadline_even_with_a_token(root):
    token = CancelToken()
    with token.scope(), pytest.raises(handoff.DeadlineExceededError):
        wait_forever(root, deadline=0.2)
    assert not token.cancelled


def test_a_trap_is_a_trap_even_with_a_deadline_and_a_token(root, monkeypatch):
    monkeypatch.setattr(_runtime, "MEMORY_LIMIT", 64 * 1024)
    with CancelToken().scope(), pytest.raises(handoff.ComponentError) as e:
        wait_forever(root, deadline=5)
    assert e.value.kind == "trap"
    assert str(e.value).startswith("component trapped: ")


def test_one_call_s_stop_does_not_reach_calls_running_beside_it(root):
    """Every running call has an engine of its own, so bumping one call's
    epoch leaves the others running."""
    results = {}

    def run(name, **kwargs):
        start = time.monotonic()
        try:
            handoff.wait(root, 999, **kwargs)
        except Exception as e:
            results[name] = (type(e).__name__, round(time.monotonic() - start, 1))

    token = CancelToken()

    def cancelled():
        with token.scope():
            try:
                wait_forever(root)
            except Cancelled:
                results["cancelled"] = "Cancelled"

    def stopped():
        try:
            wait_forever(root, deadline=0.2)
        except handoff.DeadlineExceededError:
            results["deadline"] = "DeadlineExceededError"

    threads = [
        threading.Thread(target=run, args=("timeout",), kwargs={"timeout": 1}),
        threading.Thread(target=cancelled),
        threading.Thread(target=stopped),
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    token.cancel()
    for t in threads:
        t.join(10)
    assert results == {
        "timeout": ("TimedOutError", 1.0),
        "cancelled": "Cancelled",
        "deadline": "DeadlineExceededError",
    }


def test_finished_calls_do_not_pile_up_in_the_deadline_queue(root):
    for _ in range(300):
        handoff.ls(root)
    assert len(_runtime._deadlines.heap) <= 64 + 1
