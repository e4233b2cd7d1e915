"""When to ask again: a schedule for polling a generation, shaped by when it should end.

A fixed interval is either slow to notice completion or wasteful. The schedule takes a
`CompletionWindow`, the span in which the job will most likely end (learned from earlier
jobs, see `timing`, or the built-in guess), and polls:

- not at all before a learned window opens: the first check is at its start (every
  `max_wait_before_window` seconds instead, when set);
- densely inside it, `window_spacing` x `min_interval` apart where the window is narrow
  (1.3-1.6 s by default, so a completion there is noticed well within 2 s);
- ever more sparsely once the job runs past it (a queue, a stuck job), in proportion to
  the time already spent, so a late job is still seen within a small fraction of its age.

With no history, the built-in guess is the real service's published pace (minutes: the
API documentation's example log polls about 24 times at 10-15 s intervals; other hosts
quote 2-5 minutes a job) with a wide window around it (`guess_low` .. `guess_high`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class CompletionWindow:
    """When a job should end, in seconds after its submission.

    Attributes:
        low: Before this, completion is unlikely.
        typical: The most likely moment (a median).
        high: After this, the job is late.
    """

    low: float
    typical: float
    high: float

    def scaled(self, factor: float) -> CompletionWindow:
        """The same window with every bound multiplied by `factor`."""
        return CompletionWindow(self.low * factor, self.typical * factor, self.high * factor)


class PollSchedule(BaseModel):
    """Delays between status checks of one generation.

    Attributes:
        min_interval: Shortest delay; bounds how late a completion is noticed in the window.
        max_interval: Longest delay, however far the window.
        base_seconds: The built-in guess of a job's fixed cost (queueing, set-up), in seconds.
        seconds_per_audio_second: The built-in guess of processing time per audio second.
        guess_low: With no history, the window opens at this fraction of the guess.
        guess_high: With no history, a job is late after this multiple of the guess.
        window_spacing: Inside a learned window the delay is `window_spacing` times
            `min_interval` at its typical end (the densest), so a completion there is
            noticed about half of that late, and at most all of it.
        edge_sparsity: At a learned window's edges the delay is `1 + edge_sparsity` times
            the delay at its typical end.
        wide: A window whose end is more than `wide` times its start is too vague to poll
            densely: inside it the delay grows with the time spent, as with no estimate.
        growth: Inside a wide window and once late, the delay is at most this fraction of
            the time already spent: a job is noticed within that fraction of its age.
        guess_growth: The same fraction inside a wide window (the built-in guess).
        max_wait_before_window: Longest wait before a learned window opens; None waits
            for the window (one check at its start). A service that got faster is then
            noticed late once, and the next jobs' window moves earlier.
        approach: Kept for compatibility; no longer used.
        overrun_backoff: Kept for compatibility; no longer used.
        overrun_max_interval: Kept for compatibility; no longer used.

    Example:
        ```python
        schedule = PollSchedule(min_interval=1.0)
        window = schedule.guess(audio_seconds=8.0)
        delay = schedule.delay(elapsed=12.0, window=window)
        ```
    """

    model_config = ConfigDict(frozen=True)

    min_interval: float = 1.0
    max_interval: float = 30.0
    base_seconds: float = 60.0
    seconds_per_audio_second: float = 6.0
    guess_low: float = 0.2
    guess_high: float = 10.0
    window_spacing: float = 1.3
    edge_sparsity: float = 0.25
    wide: float = 3.0
    growth: float = 0.1
    guess_growth: float = 0.05
    max_wait_before_window: float | None = None
    approach: float = 0.5
    overrun_backoff: float = 0.05
    overrun_max_interval: float = 2.0

    def expected_seconds(self, audio_seconds: float | None) -> float | None:
        """The built-in guess of a job's run time with this much audio, if known."""
        if audio_seconds is None:
            return None
        return self.base_seconds + self.seconds_per_audio_second * audio_seconds

    def guess(self, audio_seconds: float | None) -> CompletionWindow | None:
        """The window to use with no history: wide around the built-in guess."""
        expected = self.expected_seconds(audio_seconds)
        if expected is None:
            return None
        return self.around(expected)

    def around(self, expected: float) -> CompletionWindow:
        """A window as wide as the guess's around an expected duration."""
        return CompletionWindow(expected * self.guess_low, expected, expected * self.guess_high)

    def scaled(self, factor: float) -> PollSchedule:
        """This schedule for a service `factor` times as fast or slow (an emulator's time_scale)."""
        times = ("min_interval", "max_interval", "base_seconds", "seconds_per_audio_second")
        update: dict[str, float | None] = {name: getattr(self, name) * factor for name in times}
        if self.max_wait_before_window is not None:
            update["max_wait_before_window"] = self.max_wait_before_window * factor
        return self.model_copy(update=update)

    def delay(self, elapsed: float, window: CompletionWindow | None) -> float:
        """Seconds to wait before the next check, `elapsed` seconds after submission."""
        if window is None:
            # Nothing known: grow with the time already spent, like a patient human.
            delay = elapsed * self.growth
        elif elapsed < window.low:
            delay = window.low - elapsed
            if window.high <= self.wide * window.low:
                # A learned window is trusted: every check before it would be wasted.
                cap = self.max_wait_before_window
                return max(self.min_interval, delay if cap is None else min(delay, cap))
        elif elapsed <= window.high:
            if window.high > self.wide * max(window.low, 1e-9):
                # A wide window (the guess): the end may be anywhere, so grow with age,
                # finely enough that the first jobs teach their duration precisely.
                delay = elapsed * self.guess_growth
            else:
                # Densest at the typical end, sparser towards the window's edges.
                half = max(window.high - window.typical, window.typical - window.low, 1e-9)
                offset = (elapsed - window.typical) / half
                spacing = self.min_interval * self.window_spacing
                delay = spacing * (1.0 + self.edge_sparsity * offset * offset)
            # Never step over the end of the window by much: beyond it the job is late.
            densest = self.min_interval * self.window_spacing
            delay = min(delay, max(densest, window.high - elapsed))
        elif window.high > self.wide * max(window.low, 1e-9):
            delay = elapsed * self.growth
        else:
            # Late for a learned window: most late jobs are only a little late, so back off
            # from the window's spacing in proportion to the overrun, up to a fraction of the age.
            overrun = elapsed - window.high
            edge = self.min_interval * self.window_spacing * (1.0 + self.edge_sparsity)
            delay = min(edge + overrun * self.growth, max(edge, elapsed * self.growth))
        return max(self.min_interval, min(self.max_interval, delay))

    def next_delay(self, elapsed: float, expected: float | CompletionWindow | None) -> float:
        """Seconds to wait before the next check, given an expected duration or a window."""
        if isinstance(expected, CompletionWindow) or expected is None:
            return self.delay(elapsed, expected)
        return self.delay(elapsed, self.around(expected))
