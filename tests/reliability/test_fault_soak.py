"""Twenty generations through the flow with 30 % of requests failing: all deliver, none twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_omnihuman import AimlApiCredentials, MediaStorage, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator, FaultConfig
from prefect_omnihuman.media import probe_video, write_sample_voice

from ..conftest import FAST_POLL, TEST_KEY

GENERATIONS = 20

#: 5xx, 429 and dropped connections on every route. On POST only the faults that prove
#: the request was not accepted (503, 429): after a 500/502/504 or a dropped connection
#: the client cannot know whether it paid, so it stops instead (tested in test_client).
SOAK_FAULTS = FaultConfig(
    rate=0.3,
    kinds=["server_error", "rate_limit", "drop_connection"],
    route_kinds={"post": ["server_error", "rate_limit"]},
    route_statuses={"post": [503]},
    seed=11,
)


@pytest.mark.usefixtures("prefect_api")
def test_twenty_generations_deliver_through_thirty_percent_faults(
    emulator: Emulator, samples: Path, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    voices = [
        write_sample_voice(tmp_path / f"voice-{i:02d}.wav", seconds=1.0 + 0.1 * i)
        for i in range(GENERATIONS)
    ]
    credentials = AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)
    emulator.set_faults(SOAK_FAULTS)
    with AssetHost(staging) as public:
        storage = MediaStorage(base_url=str(staging), public_base_url=public.url)
        results = [
            omnihuman_video(
                image=str(samples / "portrait.png"),
                audio=str(voice),
                destination=str(tmp_path / "out" / f"{voice.stem}.mp4"),
                credentials=credentials,
                storage=storage,
                polling=FAST_POLL,
            )
            for voice in voices
        ]
    stats = emulator.stats()
    assert stats.accepted_posts == GENERATIONS
    assert sorted(stats.accepted_by_input.values()) == [1] * GENERATIONS
    assert sum(stats.faults_injected.values()) >= GENERATIONS  # the soak really was faulty
    assert {key.split("/")[1] for key in stats.faults_injected} == {"post", "get", "download"}
    for voice, result in zip(voices, results, strict=True):
        video = probe_video(result.location)
        assert abs(video.duration - (1.0 + 0.1 * voices.index(voice))) <= 1 / 25 + 0.05
