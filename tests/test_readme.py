"""The README's composition example, run as written against the emulator and moto's S3."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefect_omnihuman.emulator import Emulator
from prefect_omnihuman.media.probe import probe_video

from .conftest import S3, TEST_KEY

README = Path(__file__).parent.parent / "README.md"
MARKER = "<!-- README example: tested by tests/test_readme.py -->"


def readme_example() -> str:
    text = README.read_text()
    found = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert found, "the tested README example is missing"
    return found.group(1)


def test_readme_composition_example_runs_as_written(
    prefect_api: str,
    emulator: Emulator,
    samples: Path,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIMLAPI_API_KEY", TEST_KEY)
    monkeypatch.setenv("AIMLAPI_BASE_URL", emulator.url)
    fs = s3.fs()
    if not fs.exists("omnihuman-media"):
        fs.call_s3("create_bucket", Bucket="omnihuman-media")
    fs.put_file(str(samples / "portrait.png"), "omnihuman-media/faces/ada.png")
    fs.put_file(str(samples / "voice.wav"), "omnihuman-media/voices/ada.wav")

    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    locations = namespace["welcome_videos"](["ada"])  # type: ignore[operator]

    assert locations == ["s3://omnihuman-media/videos/ada.mp4"]
    local = tmp_path / "ada.mp4"
    fs.get_file("omnihuman-media/videos/ada.mp4", str(local))
    assert probe_video(local).duration == pytest.approx(3.0, abs=0.1)
    assert emulator.stats().accepted_posts == 1
