"""How long a service takes: samples of finished jobs and the window they predict.

After each completed generation the client records a `TimingSample` (model, service URL,
audio seconds, seconds from submission to completion) in a `TimingBook`. Before waiting
for the next job it asks the book for that model and service's recent samples and turns
them into a `CompletionWindow` (`learned_window`) that `PollSchedule` polls against.

The fit is robust and small: each sample is a factor over the schedule's built-in guess
for its audio length (so jobs of different lengths pool), the window is the median factor
and its 10th and 90th percentiles, widened while there are few samples. One stuck job in
a window of recent ones moves a quantile, not the estimate.

`MemoryTimingBook` keeps samples in this process; `storage.timing_history.TimingHistory`
keeps them in a JSON file anywhere fsspec reaches, shared by processes and workers.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from prefect_omnihuman.api.polling import CompletionWindow, PollSchedule

#: Recent samples kept and used per model and service.
DEFAULT_WINDOW = 20


@dataclass(frozen=True)
class TimingSample:
    """One finished generation: how long it took, for how much audio, where.

    Attributes:
        model: The model id, e.g. `bytedance/omnihuman/v1.5`.
        service: The API's base URL.
        audio_seconds: Length of the voice track.
        seconds: From submission to completion (the middle of the last two checks).
        finished_at: Epoch seconds when completion was seen.
    """

    model: str
    service: str
    audio_seconds: float
    seconds: float
    finished_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingSample:
        return cls(
            model=str(data["model"]),
            service=str(data["service"]),
            audio_seconds=float(data["audio_seconds"]),
            seconds=float(data["seconds"]),
            finished_at=float(data.get("finished_at", 0.0)),
        )


class TimingBook(Protocol):
    """Where timing samples are kept; shared by whoever should learn from each other."""

    def samples(self, model: str, service: str) -> list[TimingSample]:
        """Recent samples of this model on this service, oldest first."""
        ...

    def record(self, sample: TimingSample) -> None:
        """Keep one more sample (dropping the oldest beyond the book's bound)."""
        ...


class MemoryTimingBook:
    """Samples kept in this process only, a bounded window per model and service."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, str], list[TimingSample]] = {}

    def samples(self, model: str, service: str) -> list[TimingSample]:
        with self._lock:
            return list(self._samples.get((model, service), []))

    def record(self, sample: TimingSample) -> None:
        with self._lock:
            kept = self._samples.setdefault((sample.model, sample.service), [])
            kept.append(sample)
            del kept[: max(0, len(kept) - self.window)]


#: The book a client uses unless given another: jobs in one process learn from each other.
PROCESS_TIMINGS = MemoryTimingBook()


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def learned_window(
    samples: Sequence[TimingSample],
    audio_seconds: float | None,
    schedule: PollSchedule,
    *,
    window: int = DEFAULT_WINDOW,
) -> CompletionWindow | None:
    """The window a job of `audio_seconds` should end in, from recent samples.

    None when there are no usable samples (or no audio length): use `schedule.guess`.
    """
    if audio_seconds is None:
        return None
    factors = []
    for sample in list(samples)[-window:]:
        guess = schedule.expected_seconds(sample.audio_seconds)
        if guess and guess > 0 and sample.seconds > 0:
            factors.append(sample.seconds / guess)
    if not factors:
        return None
    count = len(factors)
    typical = statistics.median(factors)
    low, high = _quantile(factors, 0.1), _quantile(factors, 0.9)
    # n samples see about (n - 1) / (n + 1) of the true spread: widen by what they may have
    # missed, at least 1.5 % of the typical time (samples that agree by chance), and by a
    # tenth of it while there is a single sample.
    margin = (high - low) / max(1, count - 1) + typical * (0.015 + (0.1 if count == 1 else 0.0))
    expected = schedule.expected_seconds(audio_seconds)
    assert expected is not None
    return CompletionWindow(
        max(0.0, (low - margin) * expected), typical * expected, (high + margin) * expected
    )
