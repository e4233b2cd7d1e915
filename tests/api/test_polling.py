"""The adaptive poll schedule: sparse far from the expected end, dense near it and after."""

from __future__ import annotations

from prefect_omnihuman.api.polling import PollSchedule

SCHEDULE = PollSchedule(min_interval=1.0, max_interval=30.0)


def polls_until(done_at: float, expected: float | None) -> tuple[int, float]:
    """Checks made and lateness in noticing a job that completes at `done_at` seconds."""
    elapsed, polls = 0.0, 0
    while True:
        polls += 1
        if elapsed >= done_at:
            return polls, elapsed - done_at
        elapsed += SCHEDULE.next_delay(elapsed, expected)


def test_far_from_the_expected_end_it_waits_long_and_near_it_every_second() -> None:
    assert SCHEDULE.next_delay(0.0, 120.0) == 30.0
    assert SCHEDULE.next_delay(118.0, 120.0) == 1.0


def test_a_job_that_ends_on_time_is_seen_within_a_second_with_few_polls() -> None:
    polls, late = polls_until(done_at=60.0, expected=60.0)
    assert late <= 1.0
    assert polls <= 60 / 3


def test_an_overrunning_job_is_still_seen_within_two_intervals() -> None:
    polls, late = polls_until(done_at=600.0, expected=60.0)
    assert late <= 2 * SCHEDULE.min_interval
    assert polls < 600


def test_without_an_estimate_it_backs_off_with_elapsed_time() -> None:
    assert SCHEDULE.next_delay(5.0, None) == 1.0
    assert SCHEDULE.next_delay(100.0, None) > SCHEDULE.next_delay(20.0, None)
