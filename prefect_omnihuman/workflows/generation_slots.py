"""The gate a batch puts in front of paid generations: a slot of its concurrency limits.

Rows of a batch run the usual flows; a row holds a slot only while its generation is on
the API (from the POST to completion). Preparing, staging and delivering other rows then
overlap the generations instead of queueing behind them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from prefect.concurrency.sync import concurrency


@dataclass(frozen=True)
class GenerationGate:
    """Slots a generation must hold: one of this run's own, then one of the global limit.

    Attributes:
        limit_name: The Prefect global concurrency limit shared by every run and worker.
        run_slots: This run's own bound (its `concurrency`), taken first so a row never
            holds a global slot while it waits for one of its run.
    """

    limit_name: str
    run_slots: threading.BoundedSemaphore


_current_gate: ContextVar[GenerationGate | None] = ContextVar("omnihuman_gate", default=None)


@contextmanager
def gated_by(gate: GenerationGate) -> Iterator[None]:
    """Make generations started in this context (and copies of it) pass through `gate`."""
    token = _current_gate.set(gate)
    try:
        yield
    finally:
        _current_gate.reset(token)


@contextmanager
def generation_slot() -> Iterator[None]:
    """Hold the current gate's slots for the duration; without a gate, do nothing."""
    gate = _current_gate.get()
    if gate is None:
        yield
        return
    with gate.run_slots, concurrency(gate.limit_name, occupy=1, strict=True):
        yield
