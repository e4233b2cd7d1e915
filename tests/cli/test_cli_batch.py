"""`omnihuman batch`, `omnihuman status` and `omnihuman download`, run as users run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_omnihuman import OmniHumanClient
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_voice

from ..conftest import FAST_POLL, TEST_KEY

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))


def omnihuman(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OMNIHUMAN, *args], env=env, capture_output=True, text=True, timeout=180)


def environment(emulator: Emulator, prefect_api: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIMLAPI_API_KEY": TEST_KEY,
        "AIMLAPI_BASE_URL": emulator.url,
        "PREFECT_API_URL": prefect_api,
    }


@pytest.mark.heavy
def test_batch_finishes_the_good_rows_and_exits_1_with_the_bad_rows_reason(
    emulator: Emulator, prefect_api: str, samples: Path, tmp_path: Path
) -> None:
    (tmp_path / "thumb.png").write_bytes((samples / "portrait.png").read_bytes()[:100])
    for n in (1, 2):
        write_sample_voice(tmp_path / f"v{n}.wav", seconds=1.0 + n / 10)
    (tmp_path / "batch.csv").write_text(
        "image,audio,out\n"
        f"{samples / 'portrait.png'},v1.wav,out/1.mp4\n"
        "thumb.png,v2.wav,out/2.mp4\n"
        f"{samples / 'portrait.png'},v2.wav,out/3.mp4\n"
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    env = environment(emulator, prefect_api)
    with AssetHost(staging) as host:
        args = ["batch", str(tmp_path / "batch.csv"), "--concurrency", "2"]
        args += ["--max-poll-interval", "0.3"]
        args += ["--stage", str(staging), "--stage-public-url", host.url]
        refused = omnihuman(*args, "--budget-seconds", "2", env=env)
        assert refused.returncode == 1
        last = refused.stderr.strip().splitlines()[-1]
        assert "BudgetExceededError" in last and "budget 2 s" in last
        refused_usd = omnihuman(*args, "--budget-usd", "0.5", env=env)
        assert refused_usd.returncode == 1
        last = refused_usd.stderr.strip().splitlines()[-1]
        assert "BudgetExceededError" in last and "> budget $0.50 (1,000,000 credits)" in last
        assert re.search(r"~\$0\.\d\d \(1,\d{3},\d{3} credits\)", last), last
        assert emulator.stats().accepted_posts == 0

        run = omnihuman(*args, env={**env, "COLUMNS": "250"})
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        str(tmp_path / "out" / "1.mp4"),
        str(tmp_path / "out" / "3.mp4"),
    ]
    reason = run.stderr.strip().splitlines()[-1]
    assert reason.startswith("row 2 InvalidImageError") and "thumb.png" in reason
    assert probe_video(tmp_path / "out" / "3.mp4").audio_codec == "aac"
    assert emulator.stats().accepted_posts == 2
    assert TEST_KEY not in run.stdout + run.stderr + refused.stderr
    # The table: each delivered row's cost in grouped credits and dollars, and the total.
    costs = re.findall(r"\d{1,3}(?:,\d{3})+ credits \(\$\d\.\d\d\)", run.stderr)
    assert len(costs) == 3, run.stderr[-3000:]  # two rows and the total
    assert "Cost: " in run.stderr and "e+0" not in run.stderr


def test_status_and_download_recover_a_generation_by_id(
    emulator: Emulator, prefect_api: str, asset_host: AssetHost, tmp_path: Path
) -> None:
    with OmniHumanClient(TEST_KEY, base_url=emulator.url, poll=FAST_POLL) as client:
        generation = client.submit(
            image_url=asset_host.url_for("portrait.png"), audio_url=asset_host.url_for("voice.wav")
        )
        client.wait(generation, audio_seconds=3.0)
    env = environment(emulator, prefect_api)

    status = omnihuman("status", generation.id, env=env)
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(": ", 1) for line in status.stdout.splitlines())
    assert fields["id"] == generation.id and fields["status"] == "completed"
    assert fields["video_url"].startswith(emulator.url) and float(fields["duration"]) > 2.9

    out = tmp_path / "recovered" / "video.mp4"
    download = omnihuman("download", generation.id, "--out", str(out), env=env)
    assert download.returncode == 0, download.stderr[-2000:]
    assert download.stdout.strip() == str(out)
    assert probe_video(out).duration > 2.9
    assert emulator.stats().accepted_posts == 1

    unknown = omnihuman("status", "no-such-generation", env=env)
    assert unknown.returncode == 1 and "NotFoundError" in unknown.stderr
