"""The fleet-wide request budget: status polls of many rows share one Prefect rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client

from prefect_omnihuman.api.client import AsyncOmniHumanClient
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.timing import MemoryTimingBook
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.workflows.poll_pacing import ensure_status_poll_limit, status_poll_limiter

from ..conftest import FAST_RETRY, TEST_KEY

pytestmark = pytest.mark.usefixtures("prefect_api")

LIMIT = "omnihuman-status-polls-test"
ROWS = 40
#: Polls every 50 ms each: 40 rows unthrottled would send 800 requests a second.
EAGER = PollSchedule(min_interval=0.05, max_interval=0.05, guess_low=0.0)


@pytest.fixture
def status_limit() -> Iterator[str]:
    """A 5-requests-a-second limit of its own, removed afterwards (other tests poll freely)."""
    assert ensure_status_poll_limit(LIMIT, 5.0) == 5.0
    yield LIMIT
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(LIMIT)


def busiest_10_s(times: list[float]) -> float:
    """The most requests a second over any 10-second window that fits in the run."""
    times = sorted(times)
    worst, end = 0, 0
    for start, moment in enumerate(times):
        if moment + 10.0 > times[-1]:
            break
        while end < len(times) and times[end] < moment + 10.0:
            end += 1
        worst = max(worst, end - start)
    return worst / 10.0


@pytest.mark.heavy
def test_many_rows_in_flight_stay_under_the_fleet_budget(
    status_limit: str, asset_host: AssetHost
) -> None:
    config = EmulatorConfig(
        api_keys=[TEST_KEY],
        time_scale=0.25,  # jobs of 20-25 s
        base_seconds=80.0,
        seconds_per_audio_second=0.0,
        max_concurrent_per_key=ROWS,
        capacity=ROWS,
        seed=2,
    )

    async def run_rows(url: str) -> None:
        limiter = await status_poll_limiter(status_limit)
        assert limiter is not None
        async with AsyncOmniHumanClient(
            TEST_KEY,
            base_url=url,
            retry=FAST_RETRY,
            poll=EAGER,
            timing=MemoryTimingBook(),
            before_status_request=limiter,
        ) as client:
            generations = [
                await client.submit(
                    image_url=asset_host.url_for("portrait.png"),
                    audio_url=asset_host.url_for("voice.wav"),
                )
                for _ in range(ROWS)
            ]
            await asyncio.gather(*(client.wait(g, timeout=120) for g in generations))

    with Emulator(config) as emulator:
        asyncio.run(run_rows(emulator.url))
        stats = emulator.stats()

    assert all(status == "completed" for status in stats.generations.values())
    span = max(stats.poll_times) - min(stats.poll_times)
    assert span >= 20.0
    busiest = busiest_10_s(stats.poll_times)
    print(f"{len(stats.poll_times)} status requests over {span:.0f} s; busiest 10 s: {busiest}/s")
    assert busiest <= 5.5


async def test_without_the_limit_rows_poll_freely() -> None:
    assert await status_poll_limiter("omnihuman-status-polls-missing") is None
