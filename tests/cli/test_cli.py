"""The `omnihuman` command: the emulator server, generate's failures, and the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.media.probe import probe_audio, probe_video

from ..conftest import TEST_KEY, free_port

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))


@contextmanager
def emulator_command(folder: Path, *args: str) -> Iterator[str]:
    """`omnihuman emulator ARGS` on a free port: its URL once it answers. It must stop
    within 10 s of SIGTERM; if it does not, SIGABRT makes it print every thread's stack
    (PYTHONFAULTHANDLER) and the test fails with its output."""
    port = free_port()
    log = folder / "emulator.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [OMNIHUMAN, "emulator", "--port", str(port), *args],
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/_emulator/health").is_success:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator never answered"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.send_signal(signal.SIGABRT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            pytest.fail(f"the emulator did not stop on SIGTERM:\n{log.read_text()[-6000:]}")


def test_emulator_command_serves_the_api_until_stopped(tmp_path: Path) -> None:
    with emulator_command(tmp_path, "--api-key", "cli-key", "--time-scale", "0.1") as url:
        unauthorized = httpx.get(f"{url}/v2/video/generations", params={"generation_id": "x"})
        authorized = httpx.get(
            f"{url}/v2/video/generations",
            params={"generation_id": "x"},
            headers={"Authorization": "Bearer cli-key"},
        )
        assert unauthorized.status_code == 401
        assert authorized.status_code == 404


def test_emulator_command_reports_the_status_words_it_is_told(
    asset_host: AssetHost, tmp_path: Path
) -> None:
    words = ("--status-word", "queued=pending-x", "--status-word", "completed=succeeded")
    with emulator_command(tmp_path, "--api-key", "cli-key", *words) as url:
        answer = httpx.post(
            f"{url}/v2/video/generations",
            json={
                "model": "bytedance/omnihuman/v1.5",
                "image_url": asset_host.url_for("portrait.png"),
                "audio_url": asset_host.url_for("voice.wav"),
            },
            headers={"Authorization": "Bearer cli-key"},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["status"] == "pending-x"


def test_emulator_command_refuses_an_unknown_status() -> None:
    result = subprocess.run(
        [OMNIHUMAN, "emulator", "--status-word", "done=succeeded"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said = " ".join(result.stderr.replace("│", " ").split())  # typer's box may wrap it
    assert result.returncode == 2 and "unknown status 'done'" in said


def run_generate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OMNIHUMAN, "generate", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_generate_without_a_key_fails_with_one_line_that_names_the_fix(
    samples: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMLAPI_")}
    result = run_generate(
        "--image", str(samples / "portrait.png"), "--audio", str(samples / "voice.wav"),
        "--out", str(tmp_path / "x.mp4"), env=env,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AIMLAPI_API_KEY" in lines[0]


def test_generate_with_too_long_audio_fails_before_any_post(
    prefect_api: str, emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    env = {**os.environ, "AIMLAPI_API_KEY": TEST_KEY, "PREFECT_API_URL": prefect_api}
    result = run_generate(
        "--image", str(samples / "portrait.png"), "--audio", asset_host.url_for("long.wav"),
        "--out", str(tmp_path / "out" / "x.mp4"), "--base-url", emulator.url, "--no-split",
        env=env,
    )  # fmt: skip
    assert result.returncode == 1
    reason = result.stderr.strip().splitlines()[-1]
    assert "InvalidAudioError" in reason and "30" in reason and "long.wav" in reason
    assert "Traceback" not in result.stderr
    assert emulator.stats().accepted_posts + emulator.stats().rejected_posts == 0
    assert not (tmp_path / "out").exists()


def test_demo_command_makes_a_real_video_on_its_own_temporary_server(tmp_path: Path) -> None:
    """`make demo`'s command, as a new user runs it: no PREFECT_API_URL, so the command's own
    temporary server (Prefect's would have 20 s to start, too few in a new home)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [OMNIHUMAN, "demo", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Its flow ran on the command's server, not on one Prefect started for it.
    assert "View at http://127.0.0.1:" in result.stderr
    assert "Starting temporary server" not in result.stderr
    location = result.stdout.strip().splitlines()[-1]
    assert Path(location) == tmp_path / "omnihuman-demo.mp4"
    video = probe_video(location)
    voice = probe_audio(tmp_path / "inputs" / "voice.wav")
    assert video.video_codec == "h264" and video.audio_codec == "aac"
    assert abs(video.duration - voice.duration) <= 1 / 25 + 0.05


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        (f"http://127.0.0.1:{free_port()}", "refused"),
        ("https://api.aimlapi.invalid", "does not resolve"),
    ],
    ids=["refused", "unknown-host"],
)
def test_a_wrong_address_fails_within_30_s_naming_it_and_the_fix(
    base_url: str, reason: str, asset_host: AssetHost, tmp_path: Path
) -> None:
    """Its own temporary Prefect server, as a user's first run: no PREFECT_API_URL."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["AIMLAPI_API_KEY"] = TEST_KEY
    started = time.monotonic()
    result = run_generate(
        "--image", asset_host.url_for("portrait.png"), "--audio", asset_host.url_for("voice.wav"),
        "--out", str(tmp_path / "x.mp4"), "--base-url", base_url, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "ServiceUnreachableError" in last and base_url in last and reason in last
    assert "--base-url" in last and "AIMLAPI_BASE_URL" in last
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not (tmp_path / "x.mp4").exists()


def test_a_bad_poll_time_scale_fails_with_one_line_naming_the_variable(
    prefect_api: str, emulator: Emulator, samples: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "AIMLAPI_API_KEY": TEST_KEY,
        "PREFECT_API_URL": prefect_api,
        "OMNIHUMAN_POLL_TIME_SCALE": "fast",
    }
    result = run_generate(
        "--image", str(samples / "portrait.png"), "--audio", str(samples / "voice.wav"),
        "--out", str(tmp_path / "x.mp4"), "--base-url", emulator.url, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "OMNIHUMAN_POLL_TIME_SCALE='fast' is not a positive number" in line
    assert emulator.stats().accepted_posts + emulator.stats().rejected_posts == 0
