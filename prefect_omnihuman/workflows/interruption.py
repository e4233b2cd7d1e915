"""Stopping the waits of an interrupted flow run, so SIGTERM and Ctrl-C end it at once.

A termination signal (SIGTERM: `docker stop`, Kubernetes, `timeout`, a Prefect worker
cancelling the run) or Ctrl-C raises in the flow's main thread only. Prefect then marks
the run Crashed (or Cancelled) and shuts its task runner down, which waits for tasks
still running in its threads: a task polling a generation would keep the process alive
until the video is done. Prefect's own cancel events are checked only before a task
starts, so flows here wrap the part that submits and waits in `stops_waits_on_interrupt`,
and long waits run under `until_interrupted`: they end within a fraction of a second.

Nothing is lost: the submission is a persisted task result, so the re-run reconnects to
the same generation and waits for it without paying again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

#: How often a wait looks at the stop event.
CHECK_SECONDS = 0.2

# Tasks submitted to Prefect's thread pool (and rows of a batch) run in a copy of the
# submitting context, so they see the event of the flow that submitted them.
_stop: ContextVar[threading.Event | None] = ContextVar("omnihuman_stop", default=None)


class WaitInterrupted(Exception):
    """The flow run that this wait belongs to was interrupted (SIGTERM, Ctrl-C, cancel)."""


@contextmanager
def stops_waits_on_interrupt() -> Iterator[threading.Event]:
    """Within this block, waits started by tasks end when the block is interrupted.

    A `BaseException` that is not an `Exception` (Prefect's `TerminationSignal` for
    SIGTERM, `KeyboardInterrupt`) leaving the block sets the event that
    `until_interrupted` and `raise_if_interrupted` watch. Nested blocks (subflows) share
    the outermost block's event: interrupting a batch stops every row's wait.
    """
    event = _stop.get() or threading.Event()
    token = _stop.set(event)
    try:
        yield event
    except BaseException as exc:
        if not isinstance(exc, Exception):
            event.set()
        raise
    finally:
        _stop.reset(token)


def interrupted() -> bool:
    """Whether the flow run this code runs for has been interrupted."""
    event = _stop.get()
    return event is not None and event.is_set()


def raise_if_interrupted(what: str) -> None:
    """Raise `WaitInterrupted` before starting `what` if the run has been interrupted."""
    if interrupted():
        raise WaitInterrupted(f"the flow run was interrupted before {what}")


async def until_interrupted(waiting: Awaitable[T], what: str) -> T:
    """Await `waiting`, or cancel it and raise `WaitInterrupted` once the run is interrupted."""
    event = _stop.get()
    if event is None:
        return await waiting
    job = asyncio.ensure_future(waiting)
    while not job.done():
        await asyncio.wait({job}, timeout=CHECK_SECONDS)
        if event.is_set() and not job.done():
            job.cancel()
            with suppress(asyncio.CancelledError):
                await job
            raise WaitInterrupted(
                f"stopped waiting for {what}: the flow run was interrupted; "
                "re-run it to resume the same generation (no new charge)"
            )
    return job.result()
