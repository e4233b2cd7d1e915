"""The client learns how long the service takes and polls where completion is likely."""

from __future__ import annotations

import statistics
import time

from prefect_omnihuman.api.client import OmniHumanClient
from prefect_omnihuman.api.timing import MemoryTimingBook, TimingSample
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig

from ..conftest import FAST_POLL, FAST_RETRY, TEST_KEY

SCALE = 0.04  # jobs of about 3.4 s (84 s at the real service's pace)


def run_jobs(
    emulator: Emulator, asset_host: AssetHost, book: MemoryTimingBook, count: int
) -> list[tuple[float, int]]:
    """Lag (in service seconds) and status requests of `count` jobs waited for one by one."""
    schedule = FAST_POLL.model_copy(
        update={
            "min_interval": 1.0 * SCALE,
            "max_interval": 30.0 * SCALE,
            # The built-in guess, scaled like the emulator, but wrong by 3x.
            "base_seconds": 3 * 60.0 * SCALE,
            "seconds_per_audio_second": 3 * 6.0 * SCALE,
        }
    )
    measured = []
    with OmniHumanClient(
        TEST_KEY, base_url=emulator.url, retry=FAST_RETRY, poll=schedule, timing=book
    ) as client:
        for _ in range(count):
            generation = client.submit(
                image_url=asset_host.url_for("portrait.png"),
                audio_url=asset_host.url_for("voice.mp3"),
            )
            client.wait(generation, audio_seconds=4.0)
            seen = time.time()
            stats = emulator.stats()
            lag = (seen - stats.completed_at[generation.id]) / SCALE
            measured.append((lag, stats.polls_by_generation[generation.id]))
    return measured


def test_from_the_third_job_on_completion_is_seen_within_2_s_with_few_requests(
    asset_host: AssetHost,
) -> None:
    config = EmulatorConfig(api_keys=[TEST_KEY], time_scale=SCALE, seed=4)
    book = MemoryTimingBook()
    with Emulator(config) as emulator:
        measured = run_jobs(emulator, asset_host, book, 6)
    learned = measured[2:]
    assert statistics.median(lag for lag, _ in learned) <= 2.0, measured
    assert statistics.median(polls for _, polls in learned) <= 8, measured
    assert len(book.samples("bytedance/omnihuman/v1.5", emulator.url)) == 6


def test_a_job_done_at_its_first_check_pulls_the_next_window_earlier(
    asset_host: AssetHost,
) -> None:
    """A history that says twice the real duration: the first check comes after completion,
    and what is recorded is less than that check, so the next window opens earlier."""
    config = EmulatorConfig(api_keys=[TEST_KEY], time_scale=SCALE, seed=4, jitter=0.0)
    book = MemoryTimingBook()
    model = "bytedance/omnihuman/v1.5"
    with Emulator(config) as emulator:
        late = 2 * 3.4  # wall seconds: about twice the job's real duration at this scale
        for _ in range(5):
            book.record(TimingSample(model, emulator.url, audio_seconds=4.0, seconds=late))
        run_jobs(emulator, asset_host, book, 1)
        assert emulator.stats().polls_by_generation.popitem()[1] == 1  # done at its first check
    recorded = book.samples(model, emulator.url)[-1].seconds
    # The window opened at about 0.985 x the history (its margin); recording that check
    # as it was would keep the next window there.
    assert 0.8 * late <= recorded <= 0.92 * late, recorded
