"""When to ask again: an adaptive schedule for polling a generation.

A fixed interval is either slow to notice completion or wasteful. This schedule
polls sparsely while a job is far from its expected end, densely around it, and
backs off again when a job overruns (a long queue), so completion is seen within
about `min_interval` of happening at a fraction of a fixed poller's requests.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PollSchedule(BaseModel):
    """Delays between status checks of one generation.

    Attributes:
        min_interval: Shortest delay; bounds how late a completion is noticed.
        max_interval: Longest delay, however far the expected end.
        approach: Fraction of the remaining expected time waited at once while far from it.
        base_seconds: Expected fixed cost of a job (queueing, set-up), in seconds.
        seconds_per_audio_second: Expected processing time per second of audio.
        overrun_backoff: Extra delay per second of overrun, once a job is later than expected.
        overrun_max_interval: Longest delay once a job is late: it may end at any moment.

    Example:
        ```python
        schedule = PollSchedule(min_interval=1.0)
        delay = schedule.next_delay(elapsed=12.0, expected=40.0)
        ```
    """

    model_config = ConfigDict(frozen=True)

    min_interval: float = 1.0
    max_interval: float = 30.0
    approach: float = 0.5
    base_seconds: float = 8.0
    seconds_per_audio_second: float = 2.0
    overrun_backoff: float = 0.05
    overrun_max_interval: float = 2.0

    def expected_seconds(self, audio_seconds: float | None) -> float | None:
        """The expected run time of a job with this much audio, if known."""
        if audio_seconds is None:
            return None
        return self.base_seconds + self.seconds_per_audio_second * audio_seconds

    def next_delay(self, elapsed: float, expected: float | None) -> float:
        """Seconds to wait before the next check, `elapsed` seconds after submission."""
        if expected is None:
            # Nothing known: grow with the time already spent, like a patient human.
            delay = elapsed * 0.1
        elif elapsed < expected:
            delay = (expected - elapsed) * self.approach
        else:
            overrun = (elapsed - expected) * self.overrun_backoff
            delay = min(overrun, self.overrun_max_interval)
        return max(self.min_interval, min(self.max_interval, delay))
