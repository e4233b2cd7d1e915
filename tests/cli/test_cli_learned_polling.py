"""`omnihuman generate`, run again and again with one PREFECT_HOME, learns the service's pace.

Two services, one 2x slower and one 3x faster than the built-in guess (60 s + 6 s per audio
second), are emulated with time scaled (jobs of 8-17 wall seconds); the command is told the
same scale with `OMNIHUMAN_POLL_TIME_SCALE`, so lags below are in service seconds. Each job
is a new process: what it learned lives in `PREFECT_HOME/omnihuman/timing.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig

from ..conftest import TEST_KEY

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))
JOBS = 4


def run_jobs(
    pace: float, scale: float, prefect_api: str, asset_host: AssetHost, home: Path
) -> list[tuple[float, int]]:
    """(lag in service seconds, status requests) of `JOBS` CLI runs on a service at `pace`,
    its time scaled by `scale`."""
    config = EmulatorConfig(
        api_keys=[TEST_KEY],
        time_scale=scale,
        base_seconds=60.0 * pace,
        seconds_per_audio_second=6.0 * pace,
        seed=round(pace * 10),
    )
    env = {
        **os.environ,
        "AIMLAPI_API_KEY": TEST_KEY,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(home),
        "OMNIHUMAN_POLL_TIME_SCALE": str(scale),
    }
    measured: list[tuple[float, int]] = []
    known: set[str] = set()
    with Emulator(config) as emulator:
        for n in range(JOBS):
            done = subprocess.run(
                [
                    OMNIHUMAN, "generate", "--base-url", emulator.url, "--force-new",
                    "--image", asset_host.url_for("portrait.png"),
                    "--audio", asset_host.url_for("voice.mp3"),
                    "--out", str(home / f"video-{n}.mp4"),
                ],
                env=env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            stats = emulator.stats()
            (generation,) = set(stats.accepted_at) - known
            known.add(generation)
            lag = (stats.noticed_at[generation] - stats.completed_at[generation]) / scale
            measured.append((round(lag, 2), stats.polls_by_generation[generation]))
    return measured


@pytest.mark.long  # about 2 minutes: make test-long
def test_from_the_third_run_on_each_job_is_noticed_within_2_s_with_few_requests(
    prefect_api: str, asset_host: AssetHost, tmp_path: Path
) -> None:
    # (pace, time scale): a service second is 0.1-0.3 wall seconds, so a busy machine's
    # scheduling noise (tens of milliseconds) stays well under the 2 s being measured.
    paces = {"2x slower": (2.0, 0.1), "3x faster": (1 / 3, 0.3)}
    with ThreadPoolExecutor(len(paces)) as pool:
        runs = {
            name: pool.submit(run_jobs, pace, scale, prefect_api, asset_host, tmp_path / name)
            for name, (pace, scale) in paces.items()
        }
        measured = {name: run.result() for name, run in runs.items()}
    print(json.dumps(measured))
    for name, jobs in measured.items():
        learned = jobs[2:]
        # Issue 10's acceptance, job by job: noticed within 2 s, with at most 8 requests.
        assert all(lag <= 2.0 and polls <= 8 for lag, polls in learned), (name, jobs)
        # Every run (a new process) added its job to the history the next one learned from.
        history = tmp_path / name / "omnihuman" / "timing.json"
        (service,) = json.loads(history.read_text())["services"].values()
        assert len(service["samples"]) == JOBS, name
