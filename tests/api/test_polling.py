"""The poll schedule: sparse before the likely end, dense around it, backing off after it."""

from __future__ import annotations

import random

from prefect_omnihuman.api.polling import CompletionWindow, PollSchedule
from prefect_omnihuman.api.timing import TimingSample, learned_window

SCHEDULE = PollSchedule(min_interval=1.0, max_interval=30.0)


def polls_until(done_at: float, window: CompletionWindow | None) -> tuple[int, float]:
    """Checks made and lateness in noticing a job that completes at `done_at` seconds."""
    elapsed, polls = 0.0, 0
    while True:
        polls += 1
        if elapsed >= done_at:
            return polls, elapsed - done_at
        elapsed += SCHEDULE.delay(elapsed, window)


def samples(factor: float, count: int, jitter: float = 0.15) -> list[TimingSample]:
    """Jobs `factor` times as long as the built-in guess, +-`jitter`, of 6-20 s of audio."""
    rng = random.Random(count)
    found = []
    for _ in range(count):
        audio = rng.uniform(6.0, 20.0)
        seconds = SCHEDULE.base_seconds + SCHEDULE.seconds_per_audio_second * audio
        found.append(TimingSample("m", "s", audio, seconds * factor * rng.uniform(0.85, 1.15)))
    return found


def test_the_built_in_guess_is_the_real_services_minutes() -> None:
    assert 90 <= (SCHEDULE.expected_seconds(8.0) or 0) <= 300
    assert 90 <= (SCHEDULE.expected_seconds(30.0) or 0) <= 300


def test_before_a_learned_window_it_waits_and_inside_it_polls_about_every_1_3_s() -> None:
    window = CompletionWindow(low=100.0, typical=110.0, high=120.0)
    assert SCHEDULE.delay(0.0, window) == 100.0  # one check, at the window's start
    assert SCHEDULE.delay(90.0, window) == 10.0
    assert SCHEDULE.delay(0.0, SCHEDULE.around(110.0)) == 22.0  # the guess in small steps
    assert SCHEDULE.delay(110.0, window) == 1.3  # densest at the typical end
    assert 1.3 < SCHEDULE.delay(118.0, window) <= 1.7  # never noticed 2 s late
    assert 2.0 < SCHEDULE.delay(130.0, window) <= 4.0  # late: backing off


def test_a_cap_before_the_window_checks_that_often_while_waiting_for_it() -> None:
    capped = SCHEDULE.model_copy(update={"max_wait_before_window": 30.0})
    window = CompletionWindow(low=100.0, typical=110.0, high=120.0)
    assert capped.delay(0.0, window) == 30.0
    assert capped.delay(80.0, window) == 20.0
    assert capped.scaled(0.1).max_wait_before_window == 3.0


def test_a_learned_job_is_seen_within_a_second_with_a_fifth_of_a_1_s_pollers_checks() -> None:
    for factor in (0.25, 1.0, 10.0):
        learned = samples(factor, 10)
        window = learned_window(learned, 12.0, SCHEDULE)
        assert window is not None
        typical = (SCHEDULE.expected_seconds(12.0) or 0) * factor
        for done_at in (typical * 0.9, typical, typical * 1.1):
            polls, late = polls_until(done_at, window)
            assert late <= 3.0
            assert polls <= done_at / 4 + 2


def test_an_overrunning_job_is_seen_within_a_tenth_of_its_age() -> None:
    window = CompletionWindow(low=50.0, typical=60.0, high=70.0)
    polls, late = polls_until(done_at=600.0, window=window)
    assert late <= 0.1 * 600 + 1
    assert polls < 600 / 8


def test_with_no_history_a_much_faster_job_is_still_seen_within_a_tenth_of_its_age() -> None:
    guess = SCHEDULE.guess(8.0)
    assert guess is not None
    polls, late = polls_until(done_at=guess.typical / 4, window=guess)
    assert late <= guess.typical / 4 * 0.1 + 1
    assert polls <= 8


def test_without_an_estimate_it_backs_off_with_elapsed_time() -> None:
    assert SCHEDULE.delay(5.0, None) == 1.0
    assert SCHEDULE.delay(100.0, None) > SCHEDULE.delay(20.0, None)


def test_one_stuck_job_does_not_move_the_estimate() -> None:
    learned = samples(1.0, 20)
    before = learned_window(learned, 12.0, SCHEDULE)
    stuck = TimingSample("m", "s", 12.0, 5000.0)
    after = learned_window([*learned[1:], stuck], 12.0, SCHEDULE)
    assert before is not None and after is not None
    assert abs(after.typical - before.typical) < 0.05 * before.typical
    assert after.high < 2 * before.high


def test_scaling_a_schedule_scales_its_guess_and_intervals() -> None:
    fast = SCHEDULE.scaled(0.01)
    assert fast.min_interval == 0.01
    assert fast.expected_seconds(8.0) == (SCHEDULE.expected_seconds(8.0) or 0) * 0.01
