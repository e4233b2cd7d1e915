"""The deployable pipelines in flows/ and `omnihuman generate --text`, run as users run them."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from prefect.flows import Flow, load_flow_from_entrypoint

from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.media.probe import probe_audio, probe_video

from ..conftest import S3, TEST_KEY
from ..media.test_prep import sideways_phone_photo

ROOT = Path(__file__).resolve().parents[2]
OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))
FRAME = 1 / 25


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A staging folder and the loopback HTTP address that publishes it."""
    folder = tmp_path / "staging"
    folder.mkdir()
    with AssetHost(folder) as host:
        yield folder, host.url


def environment(emulator: Emulator, prefect_api: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIMLAPI_API_KEY": TEST_KEY,
        "AIMLAPI_BASE_URL": emulator.url,
        "PREFECT_API_URL": prefect_api,
    }


def load_pipeline(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "flows" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("entrypoint", "name"),
    [
        ("flows/narrated_avatar.py:narrated_avatar", "narrated-avatar"),
        ("flows/long_narration.py:long_narration", "long-narration"),
    ],
)
def test_each_pipeline_is_a_deployment_entrypoint(entrypoint: str, name: str) -> None:
    loaded = load_flow_from_entrypoint(str(ROOT / entrypoint))
    assert isinstance(loaded, Flow) and loaded.name == name


def test_narrated_avatar_runs_as_a_script_against_the_emulator(
    emulator: Emulator,
    prefect_api: str,
    samples: Path,
    tmp_path: Path,
    staging: tuple[Path, str],
) -> None:
    folder, public_url = staging
    out = tmp_path / "ada.mp4"
    run = subprocess.run(
        [sys.executable, "flows/narrated_avatar.py", "--image", str(samples / "portrait.png"),
         "--text", "Hello, I am Ada. Welcome to the team!", "--tts-model", "deepgram/aura-2",
         "--out", str(out), "--stage", str(folder), "--stage-public-url", public_url,
         "--max-poll-interval", "0.2"],
        cwd=ROOT, env=environment(emulator, prefect_api), capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == str(out)
    assert probe_video(out).audio_codec == "aac"
    stats = emulator.stats()
    assert stats.accepted_tts == 1 and stats.accepted_posts == 1
    assert TEST_KEY not in run.stdout + run.stderr


def test_long_narration_pipeline_splits_a_31_s_narration_into_two_parts(
    emulator: Emulator,
    prefect_api: str,
    samples: Path,
    tmp_path: Path,
    staging: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, public_url = staging
    monkeypatch.setenv("AIMLAPI_API_KEY", TEST_KEY)
    monkeypatch.setenv("AIMLAPI_BASE_URL", emulator.url)
    pipeline = load_pipeline("long_narration")
    location = pipeline.long_narration(
        audio=str(samples / "long.wav"),
        image=str(samples / "portrait.png"),
        destination=str(tmp_path / "long.mp4"),
        staging_url=str(folder),
        staging_public_url=public_url,
        max_poll_interval=0.2,
    )
    assert location == str(tmp_path / "long.mp4")
    [prepared] = (folder / "prepared" / "audio").iterdir()
    assert abs(probe_video(location).duration - probe_audio(prepared).duration) <= FRAME
    assert emulator.stats().accepted_posts == 2


def test_generate_with_text_runs_the_chained_pipeline(
    emulator: Emulator,
    prefect_api: str,
    samples: Path,
    tmp_path: Path,
    staging: tuple[Path, str],
) -> None:
    folder, public_url = staging
    env = environment(emulator, prefect_api)
    out = tmp_path / "cli.mp4"
    run = subprocess.run(
        [OMNIHUMAN, "generate", "--image", str(samples / "portrait.png"),
         "--text", "Good morning. Here is the news.", "--voice", "nova",
         "--tts-model", "openai/tts-1", "--out", str(out), "--stage", str(folder),
         "--stage-public-url", public_url, "--max-poll-interval", "0.2"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str(out)
    assert probe_video(out).duration > 2.0
    assert emulator.stats().accepted_tts == 1 and emulator.stats().tts_downloads == 1

    both = subprocess.run(
        [OMNIHUMAN, "generate", "--image", str(samples / "portrait.png"), "--text", "Hi",
         "--audio", str(samples / "voice.wav"), "--out", str(tmp_path / "x.mp4")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert both.returncode == 1
    assert "either --audio or --text" in both.stderr.strip().splitlines()[-1]


def test_readme_chained_example_runs_as_written(
    emulator: Emulator,
    prefect_api: str,
    samples: Path,
    s3: S3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- README chained example: tested by tests/workflows/test_pipelines.py -->"
    found = re.search(re.escape(marker) + r"\s*```python\n(.*?)```", readme, re.S)
    assert found, "the tested chained example is missing from the README"
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIMLAPI_API_KEY", TEST_KEY)
    monkeypatch.setenv("AIMLAPI_BASE_URL", emulator.url)
    fs = s3.fs()
    if not fs.exists("omnihuman-media"):
        fs.call_s3("create_bucket", Bucket="omnihuman-media")
    sideways_phone_photo(samples, tmp_path / "ada.jpg")
    fs.put_file(str(tmp_path / "ada.jpg"), "omnihuman-media/faces/ada.jpg")

    namespace: dict[str, object] = {"__name__": "readme_chained_example"}
    exec(compile(found.group(1), "README.md", "exec"), namespace)
    location = namespace["onboarding_video"]("Hello, I am Ada. Welcome to the team!")  # type: ignore[operator]

    assert location.startswith("s3://omnihuman-media/staging/videos/")
    fs.get_file(location.removeprefix("s3://"), str(tmp_path / "ada.mp4"))
    video = probe_video(tmp_path / "ada.mp4")
    # The sideways 4:3 photo, stood upright: 3:4 at whatever size the emulator renders.
    assert video.width * 4 == video.height * 3 and video.height > video.width
    assert emulator.stats().accepted_tts == 1 and emulator.stats().accepted_posts == 1
