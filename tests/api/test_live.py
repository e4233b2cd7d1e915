"""One real generation on the AI/ML API, only when AIMLAPI_API_KEY is set (it costs credits)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_omnihuman import AimlApiCredentials, omnihuman_video
from prefect_omnihuman.media.probe import probe_video

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("AIMLAPI_API_KEY") or os.environ.get("CI") == "true",
        reason="needs AIMLAPI_API_KEY and internet; never in CI",
    ),
]

# The sample inputs of the API's own documentation.
IMAGE_URL = "https://cdn.aimlapi.com/assets/content/office_man.png"
AUDIO_URL = "https://storage.googleapis.com/falserverless/example_inputs/omnihuman_audio.mp3"


@pytest.mark.usefixtures("prefect_api")
def test_one_real_generation(tmp_path: Path) -> None:
    result = omnihuman_video(
        image=IMAGE_URL,
        audio=AUDIO_URL,
        destination=str(tmp_path / "live.mp4"),
        credentials=AimlApiCredentials.from_env(),
        timeout=1800,
    )
    video = probe_video(result.location)
    assert video.video_codec and video.audio_codec
    assert result.generation_id.endswith(":bytedance/omnihuman/v1.5")
