"""``async`` versions of handoff's calls, for asyncio.

>>> import asyncio, handoff.aio
>>> v = await asyncio.wait_for(handoff.aio.wait("/mnt/ckpt", latest=True), 300)

Each function takes the parameters of the synchronous function of the same
name and runs it in a thread of its own, so a long ``wait`` neither blocks
the event loop nor takes a worker of the loop's default executor. When the
awaiting task is cancelled (``task.cancel()``, ``asyncio.wait_for`` or
``asyncio.timeout`` running out, a failing ``TaskGroup``, the end of
``asyncio.run``), the call is cancelled through its :class:`CancelToken`:
it stops at its next return to the component (a ``wait``, within one
``poll`` interval), its thread ends, and then ``CancelledError``
propagates. So ``asyncio.run`` returns promptly and no thread is left
behind. A write cancelled before it committed leaves at most a staging
directory (``gc`` and ``fsck(repair=True)`` remove it); one that committed
before the cancellation reached it stays committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from typing import Any, Callable, Dict, Tuple

import handoff as _handoff

from ._runtime import Cancelled, CancelToken

__all__ = [
    "publish",
    "seal",
    "begin",
    "wait",
    "fetch",
    "latest",
    "ls",
    "pin",
    "unpin",
    "gc",
    "fsck",
    "CancelToken",
    "Cancelled",
]


async def _run(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    loop = asyncio.get_running_loop()
    token = CancelToken()
    context = contextvars.copy_context()
    future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def scoped() -> Any:
        with token.scope():
            return fn(*args, **kwargs)

    def target() -> None:
        try:
            outcome: Tuple[bool, Any] = (True, context.run(scoped))
        except BaseException as e:
            outcome = (False, e)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is closed: nothing awaits the call any more

    thread = threading.Thread(target=target, name=f"handoff-aio-{fn.__name__}", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        # Wait for the call to stop (within one poll interval), even if
        # cancelled again meanwhile, so that no thread outlives the task.
        while not future.done():
            try:
                await asyncio.shield(future)
            except BaseException:
                pass
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what counts
        raise
    finally:
        # The thread has settled the future and is ending: wait for it, so
        # that no thread outlives the coroutine.
        if future.done():
            thread.join()


def _async(name: str) -> Callable[..., Any]:
    sync = getattr(_handoff, name)

    @functools.wraps(sync)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await _run(sync, args, kwargs)

    call.__module__ = __name__
    call.__doc__ = (
        f":func:`handoff.{name}` as a coroutine: the same parameters, run in a thread of its own; "
        f"cancelling the awaiting task stops the call within one poll interval, then raises "
        f"``CancelledError``.\n\n{sync.__doc__ or ''}"
    )
    return call


publish = _async("publish")
seal = _async("seal")
begin = _async("begin")
wait = _async("wait")
fetch = _async("fetch")
latest = _async("latest")
ls = _async("ls")
pin = _async("pin")
unpin = _async("unpin")
gc = _async("gc")
fsck = _async("fsck")
