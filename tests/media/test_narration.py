"""Narrations of 30 s or more: split at pauses, parts generated concurrently, one stitched MP4."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from prefect_omnihuman import AimlApiCredentials, MediaStorage, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.errors import StagingRequiredError
from prefect_omnihuman.media.loudness import frame_levels
from prefect_omnihuman.media.narration import MAX_SEGMENT_SECONDS, plan_cuts, split_narration
from prefect_omnihuman.media.probe import decode_audio, probe_audio, probe_video
from prefect_omnihuman.media.samples import write_sample_voice

from ..conftest import FAST_POLL, TEST_KEY

#: Sentence pauses planted in the 95 s narration (each 0.6 s of silence from here).
PAUSES = (10.0, 22.0, 35.0, 46.0, 58.0, 70.0, 82.0)
FRAME = 1 / 25


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[MediaStorage]:
    """A local staging folder published over loopback HTTP, like a bucket behind a CDN."""
    folder = tmp_path / "staging"
    folder.mkdir()
    with AssetHost(folder) as host:
        yield MediaStorage(base_url=str(folder), public_base_url=host.url)


def in_a_planted_pause(seconds: float, pauses: tuple[float, ...] = PAUSES) -> bool:
    return any(p <= seconds <= p + 0.6 for p in pauses)


def test_cuts_fall_in_the_latest_pause_that_keeps_parts_under_the_limit(tmp_path: Path) -> None:
    voice = write_sample_voice(
        tmp_path / "talk.wav", seconds=95.0, pauses=PAUSES, sample_rate=16000
    )
    segments = split_narration(voice, tmp_path / "parts")
    assert [s.cut.kind for s in segments if s.cut] == ["pause"] * 3
    assert all(in_a_planted_pause(s.end) for s in segments[:-1])
    # The latest pause in reach: 22, 46 and 70 s, not the earlier ones (fewer parts).
    assert [round(s.end) for s in segments[:-1]] == [22, 46, 70]
    assert all(s.duration <= MAX_SEGMENT_SECONDS for s in segments)
    durations = [probe_audio(s.path).duration for s in segments]
    assert sum(durations) == pytest.approx(95.0, abs=1e-3)


def test_without_pauses_it_cuts_between_words_and_without_silence_at_the_quietest_moment(
    tmp_path: Path,
) -> None:
    rate = 16000
    t = np.arange(rate * 40) / rate
    # A tone whose loudness swells and fades every 2 s: no silence anywhere.
    tone = (np.sin(2 * np.pi * 220 * t) * (0.75 + 0.25 * np.cos(np.pi * t))).astype(np.float32)
    cuts = plan_cuts(tone, rate)
    assert [cut.kind for cut in cuts] == ["forced"]
    assert cuts[0].seconds == pytest.approx(27.0, abs=0.3)  # the latest trough in reach

    speech = decode_audio(write_sample_voice(tmp_path / "no-pauses.wav", seconds=40.0))
    gap_cuts = plan_cuts(speech, 16000)
    assert [cut.kind for cut in gap_cuts] == ["gap"]
    levels = frame_levels(speech, 16000)
    at = int(gap_cuts[0].seconds / levels.hop)
    assert levels.db[at] < levels.threshold  # in the silence between two words


def test_a_95_s_narration_becomes_four_parts_and_one_continuous_mp4(
    emulator: Emulator, prefect_api: str, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    narration = write_sample_voice(tmp_path / "talk.wav", seconds=95.0, pauses=PAUSES)
    destination = tmp_path / "talk.mp4"
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": str(narration),
        "destination": str(destination),
        "credentials": AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url),
        "storage": staging,
        "polling": FAST_POLL,
    }
    result = omnihuman_video(**arguments)

    assert len(result.segments) == 4
    assert all(s.end - s.start < 30.0 for s in result.segments)
    assert all(in_a_planted_pause(s.end) for s in result.segments[:-1])
    assert result.segments[-1].end == pytest.approx(95.0)
    stats = emulator.stats()
    assert stats.accepted_posts == 4 and len(stats.accepted_by_input) == 4
    assert stats.peak_concurrency >= 2  # the parts ran at the same time
    assert {s.generation_id for s in result.segments} == set(stats.generations)
    assert result.credits_used == pytest.approx(sum(s.credits_used or 0 for s in result.segments))
    assert result.cost_usd == pytest.approx(result.credits_used / 2_000_000)
    assert all(
        s.cost_usd == pytest.approx((s.credits_used or 0) / 2_000_000) for s in result.segments
    )

    video = probe_video(destination)
    assert abs(video.duration - 95.0) <= FRAME
    assert video.video_codec == "h264" and video.audio_codec == "aac"
    with av.open(str(destination)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        frames = container.streams.video[0].frames
    assert abs(frames * FRAME - 95.0) <= FRAME
    # The soundtrack is the original narration, whole: its loudness follows the input's
    # 10 ms by 10 ms across the seams (no gap, no repeat, no shift).
    original = frame_levels(decode_audio(narration), 16000)
    stitched = frame_levels(decode_audio(destination), 16000)
    n = min(original.db.size, stitched.db.size)
    assert abs(original.db.size - stitched.db.size) <= 2
    assert np.corrcoef(original.db[:n], stitched.db[:n])[0, 1] > 0.98
    for pause in PAUSES:  # silence where the narration is silent, seams included
        window = slice(int((pause + 0.1) / 0.01), int((pause + 0.5) / 0.01))
        assert stitched.db[window].max() < stitched.threshold

    again = omnihuman_video(**arguments)
    assert again.reused and all(s.reused for s in again.segments)
    assert again.cost_usd == pytest.approx(result.cost_usd)  # what the first run paid
    assert again.location == result.location
    stats = emulator.stats()
    assert stats.accepted_posts == 4 and stats.downloads == 4


def test_a_long_narration_needs_storage_and_says_so_before_any_post(
    emulator: Emulator, prefect_api: str, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    with pytest.raises(StagingRequiredError, match="split_long_audio=False"):
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("long.wav"),
            destination=str(tmp_path / "never.mp4"),
            credentials=AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url),
            polling=FAST_POLL,
        )
    assert emulator.stats().accepted_posts + emulator.stats().rejected_posts == 0
    assert not (tmp_path / "never.mp4").exists()
