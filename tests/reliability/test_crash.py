"""A flow process killed with SIGKILL while polling: the re-run delivers without paying twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.media import probe_video

from ..conftest import TEST_KEY


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Jobs take a few seconds, long enough to kill the client mid-poll."""
    with Emulator(EmulatorConfig(api_keys=[TEST_KEY], time_scale=0.3, seed=3)) as server:
        yield server


def generate_command(image: Path, audio_url: str, out: Path, base_url: str) -> list[str]:
    omnihuman = Path(sys.executable).with_name("omnihuman")
    return [
        str(omnihuman),
        "generate",
        "--image",
        str(image),
        "--audio",
        audio_url,
        "--out",
        str(out),
        "--base-url",
        base_url,
    ]


def test_sigkill_while_polling_then_rerun_delivers_with_one_post(
    prefect_api: str, slow_emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    out = tmp_path / "crash" / "video.mp4"
    command = generate_command(
        samples / "portrait.png", asset_host.url_for("voice.wav"), out, slow_emulator.url
    )
    env = {**os.environ, "AIMLAPI_API_KEY": TEST_KEY, "PREFECT_API_URL": prefect_api}
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = slow_emulator.stats()
        if stats.accepted_posts and sum(stats.polls_by_generation.values()) >= 1:
            break
        assert victim.poll() is None, victim.communicate()[0].decode()
        time.sleep(0.05)
    else:
        pytest.fail("the flow never started polling")
    generation_id = next(iter(slow_emulator.stats().generations))
    assert slow_emulator.stats().generations[generation_id] != "completed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert not out.exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert rerun.stdout.strip().splitlines()[-1] == str(out)
    assert probe_video(out).audio_codec == "aac"
    stats = slow_emulator.stats()
    assert stats.accepted_posts == 1
    assert list(stats.accepted_by_input.values()) == [1]
    assert generation_id in rerun.stderr
