"""Calls in processes forked from one that has used handoff.

Each case runs as a script in a fresh interpreter, bounded by a timeout, so
that a child that hangs fails the test instead of hanging the run, and the
case starts from a process in a known state.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")

# Shared by the scripts: a child's part, returning what the parent checks.
PRELUDE = textwrap.dedent(
    """
    import os, sys, time, threading
    import multiprocessing as mp
    import handoff
    from handoff import _runtime, _worker

    root, src = sys.argv[1], sys.argv[2]

    def child_calls(i):
        out = {"steps": [s.step for s in handoff.ls(root)]}
        start = time.monotonic()
        try:
            handoff.wait(root, 999, timeout=1)
        except handoff.TimedOutError as e:
            out["wait"] = (e.kind, e.retryable, round(time.monotonic() - start, 1))
        out["published"] = handoff.publish(root, 100 + i, src, writer=f"child-{i}").version.step
        out["forked"] = _runtime.forked()
        return out

    def waitpid(pid, limit):
        # os.waitpid with a time limit: a hung child is killed and reported.
        end = time.monotonic() + limit
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"
    """
)


def run(script, root, src, timeout=60):
    """Run PRELUDE + ``script``; return its stdout lines."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script), str(root), str(src)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_a_fork_pool_right_after_a_call_works(root, src):
    """multiprocessing's fork context (PyTorch DataLoader's default on Linux)."""
    out = run(
        """
        handoff.publish(root, 1, src)
        with mp.get_context("fork").Pool(2) as pool:
            pending = pool.map_async(child_calls, range(2))
            try:
                results = pending.get(timeout=30)
            except mp.TimeoutError:
                pool.terminate()
                print("hung")
                sys.exit(0)
        for r in results:
            print(r)
        print([s.step for s in handoff.ls(root)])
        """,
        root,
        src,
    )
    assert out[:2] == [
        str({"steps": [1], "wait": ("timed-out", True, 1.0), "published": 100 + i, "forked": True})
        for i in range(2)
    ], out
    assert out[2] == "[1, 100, 101]"


def test_os_fork_right_after_a_call_works(root, src):
    out = run(
        """
        handoff.ls(root)
        pid = os.fork()
        if pid == 0:
            try:
                r = child_calls(0)
                ok = r["wait"][0] == "timed-out" and r["published"] == 100 and r["forked"]
                # A child of the child works too.
                grandchild = os.fork()
                if grandchild == 0:
                    os._exit(0 if handoff.latest(root).step == 100 else 1)
                os._exit(0 if ok and waitpid(grandchild, 20) == 0 else 1)
            except BaseException:
                import traceback; traceback.print_exc()
                os._exit(1)
        print(waitpid(pid, 30))
        print(handoff.latest(root).step)
        """,
        root,
        src,
    )
    assert out == ["0", "100"]


def test_fork_while_another_thread_is_in_a_call(root, src):
    """The fork can land while a thread holds the runtime's locks or runs a
    call: the child must not need them."""
    out = run(
        """
        handoff.ls(root)
        stop = threading.Event()
        def busy():
            while not stop.is_set():
                try:
                    handoff.wait(root, 999, timeout=0.01)
                except handoff.TimedOutError:
                    pass
                handoff.ls(root)
        threads = [threading.Thread(target=busy) for _ in range(2)]
        for t in threads:
            t.start()
        codes = []
        for i in range(5):
            time.sleep(0.05)
            pid = os.fork()
            if pid == 0:
                try:
                    r = child_calls(i)
                    os._exit(0 if r["wait"][0] == "timed-out" and r["published"] == 100 + i else 1)
                except BaseException:
                    os._exit(1)
            codes.append(waitpid(pid, 30))
        stop.set()
        for t in threads:
            t.join()
        print(codes)
        """,
        root,
        src,
        timeout=120,
    )
    assert out == ["[0, 0, 0, 0, 0]"]


def test_a_child_forked_before_any_call_runs_its_own_runtime(root, src):
    out = run(
        """
        pid = os.fork()
        if pid == 0:
            r = child_calls(0)
            ok = not r["forked"] and not _worker._helpers and r["wait"][0] == "timed-out"
            os._exit(0 if ok else 1)
        print(waitpid(pid, 30))
        handoff.ls(root)
        print(_runtime.forked())
        """,
        root,
        src,
    )
    assert out == ["0", "False"]


def test_errors_from_a_helper_keep_their_class_and_fields(root, src):
    out = run(
        """
        handoff.publish(root, 1, src)
        pid = os.fork()
        if pid == 0:
            try:
                handoff.unpin(root, 1, "nobody")
            except handoff.NotFoundError as e:
                print("unpin", e.kind, e.retryable, e.path is None or e.path.startswith(root), flush=True)
            try:
                handoff.publish(root, 1, src)
            except handoff.ConflictError as e:
                print("publish", e.kind, e.exit_code, "step_1" in str(e), flush=True)
            try:
                handoff.wait(root, 5, timeout=0.1)
            except handoff.TimedOutError as e:
                print("wait", e.kind, e.retryable, isinstance(e, TimeoutError), flush=True)
            os._exit(0)
        print(waitpid(pid, 30))
        """,
        root,
        src,
    )
    assert out == [
        "unpin not-found False True",
        "publish conflict 5 True",
        "wait timed-out True True",
        "0",
    ]


def test_a_helper_that_dies_gives_a_clear_error_and_helpers_end_with_the_child(root, src):
    out = run(
        """
        import signal
        handoff.ls(root)
        pid = os.fork()
        if pid == 0:
            def kill_soon():
                time.sleep(0.5)
                (busy,) = _worker._helpers
                os.kill(busy.proc.pid, signal.SIGKILL)
            threading.Thread(target=kill_soon).start()
            try:
                handoff.wait(root, 999)  # no timeout: its helper is killed
            except handoff.ComponentError as e:
                print(e.kind, "helper process" in str(e), "killed by signal 9" in str(e), flush=True)
            print(len(_worker._helpers), flush=True)
            handoff.ls(root)  # a new helper, idle after the call
            (idle,) = _worker._helpers
            print(idle.proc.pid, flush=True)
            os._exit(0)
        print(waitpid(pid, 30))
        """,
        root,
        src,
    )
    assert out[:2] == ["trap True True", "0"], out
    assert out[3] == "0"
    helper = int(out[2])
    # The child's exit closed the helper's pipe: it exits (a zombie until
    # reaped, reparented to init here).
    import time

    for _ in range(100):
        try:
            with open(f"/proc/{helper}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"helper {helper} still runs after its process exited")


def test_aio_in_a_forked_child_cancels_the_helper_s_call(root, src):
    out = run(
        """
        import asyncio
        import handoff.aio
        handoff.ls(root)
        pid = os.fork()
        if pid == 0:
            async def main():
                try:
                    await asyncio.wait_for(handoff.aio.wait(root, 999), 0.5)
                except TimeoutError:
                    return "timeout"
            start = time.monotonic()
            r = asyncio.run(main())
            took = time.monotonic() - start
            # The helper stopped the call and is idle again, ready for more.
            print(r, took < 1.5, [s.step for s in handoff.ls(root)], len(_worker._idle), flush=True)
            os._exit(0)
        print(waitpid(pid, 30))
        """,
        root,
        src,
    )
    assert out == ["timeout True [] 1", "0"]
