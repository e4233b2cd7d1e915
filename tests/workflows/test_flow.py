"""The reusable flow end to end: a throwaway Prefect server, the emulator over HTTP, moto's S3."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State

from prefect_omnihuman import AimlApiCredentials, MediaStorage, OmniHumanResult, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    GenerationFailedError,
    GenerationTimeoutError,
    InputError,
    InvalidAudioError,
    InvalidImageError,
    ResultExpiredError,
    ServiceUnreachableError,
    StagingRequiredError,
)
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_voice

from ..conftest import FAST_POLL, S3, TEST_KEY, free_port

pytestmark = pytest.mark.usefixtures("prefect_api")


def credentials_for(emulator: Emulator, key: str = TEST_KEY) -> AimlApiCredentials:
    return AimlApiCredentials(api_key=key, base_url=emulator.url)


@pytest.fixture
def local_storage(tmp_path: Path) -> tuple[MediaStorage, AssetHost]:
    """A local staging folder published over loopback HTTP, like a bucket behind a CDN."""
    folder = tmp_path / "staging"
    folder.mkdir()
    host = AssetHost(folder).start()
    yield MediaStorage(base_url=str(folder), public_base_url=host.url), host  # type: ignore[misc]
    host.stop()


def test_local_files_in_mp4_out_with_local_staging(
    emulator: Emulator, samples: Path, tmp_path: Path, local_storage: tuple[MediaStorage, AssetHost]
) -> None:
    storage, host = local_storage
    destination = tmp_path / "videos" / "hello.mp4"
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.wav"),
        destination=str(destination),
        credentials=credentials_for(emulator),
        polling=FAST_POLL,
        storage=storage,
    )
    assert isinstance(result, OmniHumanResult)
    assert result.location == str(destination)
    video = probe_video(destination)
    assert abs(video.duration - 3.0) <= 1 / 25 + 0.05
    assert video.audio_codec == "aac"
    assert result.generation_id in emulator.stats().generations
    assert not result.reused and result.credits_used
    fetched = emulator.stats().fetched_urls
    assert sum(url.startswith(host.url) for url in fetched) == 2
    # Staging is content-addressed: two objects, named by their hashes.
    assert len(list((tmp_path / "staging" / "inputs").rglob("*.*"))) == 2
    assert not list(destination.parent.glob("*.part"))


def test_s3_staging_and_delivery_on_moto(emulator: Emulator, samples: Path, s3: S3) -> None:
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/flow-test", storage_options=s3.options)
    destination = f"s3://{s3.bucket}/flow-test/videos/hello.mp4"
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.mp3"),
        destination=destination,
        credentials=credentials_for(emulator),
        polling=FAST_POLL,
        storage=storage,
    )
    assert result.location == destination
    fetched = emulator.stats().fetched_urls
    presigned = [url for url in fetched if url.startswith(s3.endpoint)]
    assert len(presigned) == 2
    assert all("Signature=" in url or "X-Amz-Signature=" in url for url in presigned)
    fs = s3.fs()
    local = Path(fs.info(destination)["name"]).name
    assert local == "hello.mp4"
    with fs.open(destination, "rb") as handle:
        head = handle.read(12)
    assert head[4:8] == b"ftyp"
    assert fs.size(destination) == result.size_bytes


def test_s3_inputs_are_presigned_without_copying(
    emulator: Emulator, samples: Path, s3: S3, tmp_path: Path
) -> None:
    fs = s3.fs()
    fs.put_file(str(samples / "portrait.png"), f"{s3.bucket}/raw/portrait.png")
    fs.put_file(str(samples / "voice.wav"), f"{s3.bucket}/raw/voice.wav")
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/raw-staging", storage_options=s3.options)
    result = omnihuman_video(
        image=f"s3://{s3.bucket}/raw/portrait.png",
        audio=f"s3://{s3.bucket}/raw/voice.wav",
        destination=str(tmp_path / "from-s3.mp4"),
        credentials=credentials_for(emulator),
        polling=FAST_POLL,
        storage=storage,
    )
    assert probe_video(result.location).duration == pytest.approx(3.0, abs=0.1)
    assert not fs.exists(f"{s3.bucket}/raw-staging/inputs")
    assert sum("/raw/" in url for url in emulator.stats().fetched_urls) == 2


def test_without_staging_the_image_goes_inline_and_http_audio_passes_through(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=asset_host.url_for("voice.wav"),
        destination=str(tmp_path / "inline.mp4"),
        credentials=credentials_for(emulator),
        polling=FAST_POLL,
    )
    assert probe_video(result.location).video_codec == "h264"
    assert emulator.stats().fetched_urls == [asset_host.url_for("voice.wav")]


def test_a_succeeded_status_with_a_video_delivers_a_playable_mp4(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    """Other models on the same endpoint answer `succeeded`; the video is what counts."""
    emulator.config.status_words = {"completed": "succeeded"}
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=asset_host.url_for("voice.wav"),
        destination=str(tmp_path / "succeeded.mp4"),
        credentials=credentials_for(emulator),
        polling=FAST_POLL,
        timeout=60,
    )
    video = probe_video(result.location)
    assert video.video_codec == "h264" and video.audio_codec == "aac"
    assert abs(video.duration - 3.0) <= 1 / 25 + 0.05
    assert set(emulator.stats().generations.values()) == {"completed"}


def test_local_audio_without_staging_says_how_to_configure_it(
    emulator: Emulator, samples: Path, tmp_path: Path
) -> None:
    with pytest.raises(StagingRequiredError, match="storage=MediaStorage"):
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=str(samples / "voice.wav"),
            destination=str(tmp_path / "never.mp4"),
            credentials=credentials_for(emulator),
            polling=FAST_POLL,
        )
    assert emulator.stats().accepted_posts + emulator.stats().rejected_posts == 0


def test_rerunning_identical_inputs_returns_the_stored_video_without_paying(
    emulator: Emulator, samples: Path, tmp_path: Path, local_storage: tuple[MediaStorage, AssetHost]
) -> None:
    storage, _ = local_storage
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": str(samples / "voice.wav"),
        "destination": str(tmp_path / "again.mp4"),
        "credentials": credentials_for(emulator),
        "storage": storage,
        "polling": FAST_POLL,
    }
    first = omnihuman_video(**arguments)
    emulator.config.result_ttl_seconds = 0.0  # the API's link is dead by now
    second = omnihuman_video(**arguments)
    assert second.reused and not first.reused
    assert second.generation_id == first.generation_id
    assert second.location == first.location
    stats = emulator.stats()
    assert stats.accepted_posts == 1
    assert list(stats.accepted_by_input.values()) == [1]

    emulator.config.result_ttl_seconds = 3600.0
    forced = omnihuman_video(**arguments, force_new=True)
    assert forced.generation_id != first.generation_id and not forced.reused
    assert emulator.stats().accepted_posts == 2


def summaries_of(state: State[Any]) -> list[str]:
    """The markdown summaries a flow run created (not its link artifact)."""
    with get_client(sync_client=True) as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        artifacts = client.read_artifacts(flow_run_filter=runs)
    texts = [str(artifact.data) for artifact in artifacts if artifact.type == "markdown"]
    # The summary opens with the poster picture (base64, any letters), then its heading.
    heading = "# OmniHuman video\n"
    return [text[text.index(heading) :] for text in texts if heading in text]


def test_the_summary_and_the_result_show_the_cost_in_dollars_and_a_reuse_costs_nothing(
    emulator: Emulator, samples: Path, tmp_path: Path, local_storage: tuple[MediaStorage, AssetHost]
) -> None:
    storage, _ = local_storage
    credentials = AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)
    credentials.credits_per_usd = 1_000_000  # an account's own rate, not the published one
    arguments: dict[str, Any] = {
        "image": str(samples / "portrait.png"),
        "audio": str(samples / "voice.wav"),
        "destination": str(tmp_path / "priced.mp4"),
        "credentials": credentials,
        "storage": storage,
        "polling": FAST_POLL,
    }
    state = omnihuman_video(**arguments, return_state=True)
    result = state.result()
    assert isinstance(result, OmniHumanResult) and result.credits_used
    # The emulator bills 630,000 credits per second of audio, as the API's own example does.
    assert result.credits_used == pytest.approx(3.0 * 630_000, rel=0.02)
    assert result.cost_usd == pytest.approx(result.credits_used / 1_000_000)
    cost = f"{result.credits_used:,.0f} credits (${result.cost_usd:.2f})"
    assert re.fullmatch(r"1,8\d\d,\d{3} credits \(\$1\.\d\d\)", cost), cost
    (summary,) = summaries_of(state)
    assert f"- **Cost**: {cost}\n" in summary
    assert "e+" not in summary

    state = omnihuman_video(**arguments, return_state=True)
    again = state.result()
    assert again.reused and again.cost_usd == result.cost_usd
    (summary,) = summaries_of(state)
    assert f"- **Cost**: 0 credits now ($0.00); paid earlier: {cost}\n" in summary
    assert emulator.stats().accepted_posts == 1


def test_wrong_key_fails_at_once_without_retries(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    with pytest.raises(AuthenticationError):
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.wav"),
            destination=str(tmp_path / "never.mp4"),
            credentials=credentials_for(emulator, key="sk-not-a-real-key"),
            polling=FAST_POLL,
        )
    stats = emulator.stats()
    assert stats.rejected_posts == 1 and stats.accepted_posts == 0
    assert not (tmp_path / "never.mp4").exists()


def test_a_failed_generation_fails_the_flow_with_its_id_and_message(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    emulator.inject("generation_error", route="post")
    with pytest.raises(GenerationFailedError) as caught:
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.wav"),
            destination=str(tmp_path / "never.mp4"),
            credentials=credentials_for(emulator),
            polling=FAST_POLL,
        )
    assert caught.value.generation_id in emulator.stats().generations
    assert caught.value.message in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_an_expired_video_url_is_a_named_error(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    emulator.config.result_ttl_seconds = 0.0
    with pytest.raises(ResultExpiredError) as caught:
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.mp3"),
            destination=str(tmp_path / "never.mp4"),
            credentials=credentials_for(emulator),
            polling=FAST_POLL,
        )
    assert caught.value.generation_id in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("image_name", "audio_name", "error"),
    [
        ("bad.png", "voice.wav", InvalidImageError),
        ("portrait.png", "long.wav", InvalidAudioError),
        ("portrait.png", "empty.wav", InvalidAudioError),
    ],
    ids=["bad-image", "31s-audio", "empty-audio"],
)
def test_bad_inputs_fail_before_any_post_and_leave_nothing_behind(
    emulator: Emulator,
    samples: Path,
    tmp_path: Path,
    local_storage: tuple[MediaStorage, AssetHost],
    image_name: str,
    audio_name: str,
    error: type[Exception],
) -> None:
    storage, _ = local_storage
    (tmp_path / "bad.png").write_bytes((samples / "portrait.png").read_bytes()[:300])
    (tmp_path / "empty.wav").write_bytes(b"")
    folder = {name: tmp_path for name in ("bad.png", "empty.wav")}
    out = tmp_path / "out"
    with pytest.raises(error) as caught:
        omnihuman_video(
            image=str(folder.get(image_name, samples) / image_name),
            audio=str(folder.get(audio_name, samples) / audio_name),
            destination=str(out / "never.mp4"),
            credentials=credentials_for(emulator),
            polling=FAST_POLL,
            storage=storage,
            split_long_audio=False,
        )
    assert (image_name if error is InvalidImageError else audio_name) in str(caught.value)
    stats = emulator.stats()
    assert stats.accepted_posts == 0 and stats.rejected_posts == 0
    assert not out.exists()
    assert not (tmp_path / "staging" / "inputs").exists()


def test_two_subflows_with_different_inputs_in_one_parent_flow(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    credentials = credentials_for(emulator)

    @flow
    def campaign() -> list[OmniHumanResult]:
        return [
            omnihuman_video(
                image=str(samples / "portrait.png"),
                audio=asset_host.url_for(name),
                destination=str(tmp_path / f"{name}.mp4"),
                credentials=credentials,
                polling=FAST_POLL,
            )
            for name in ("voice.wav", "voice.mp3")
        ]

    results = campaign()
    assert len({r.generation_id for r in results}) == 2
    durations = sorted(round(probe_video(r.location).duration) for r in results)
    assert durations == [3, 4]
    assert emulator.stats().accepted_posts == 2


def test_callable_from_an_async_flow(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    credentials = credentials_for(emulator)

    @flow
    async def async_pipeline() -> OmniHumanResult:
        await asyncio.sleep(0)
        return omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.wav"),
            destination=str(tmp_path / "async.mp4"),
            credentials=credentials,
            polling=FAST_POLL,
        )

    result = asyncio.run(async_pipeline())
    assert probe_video(result.location).audio_codec == "aac"


def test_distinct_voice_tracks_are_distinct_generations(
    emulator: Emulator, samples: Path, tmp_path: Path, local_storage: tuple[MediaStorage, AssetHost]
) -> None:
    storage, _ = local_storage
    other = write_sample_voice(tmp_path / "other.wav", seconds=2.0)
    ids = {
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=str(audio),
            destination=str(tmp_path / f"{audio.stem}.mp4"),
            credentials=credentials_for(emulator),
            polling=FAST_POLL,
            storage=storage,
        ).generation_id
        for audio in (samples / "voice.wav", other)
    }
    assert len(ids) == 2


def test_a_deleted_delivery_is_downloaded_again_without_paying(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": asset_host.url_for("voice.wav"),
        "destination": str(tmp_path / "kept.mp4"),
        "credentials": credentials_for(emulator),
        "polling": FAST_POLL,
    }
    first = omnihuman_video(**arguments)
    Path(first.location).unlink()
    second = omnihuman_video(**arguments)
    assert probe_video(second.location).duration == pytest.approx(3.0, abs=0.1)
    assert second.generation_id == first.generation_id
    assert emulator.stats().accepted_posts == 1
    assert emulator.stats().downloads == 2


def test_a_lost_submission_answer_is_never_resubmitted_without_force_new(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": asset_host.url_for("voice.wav"),
        "destination": str(tmp_path / "maybe.mp4"),
        "credentials": credentials_for(emulator),
        "polling": FAST_POLL,
    }
    emulator.inject("lost_response", route="post")
    with pytest.raises(AmbiguousSubmissionError):
        omnihuman_video(**arguments)
    with pytest.raises(AmbiguousSubmissionError, match="earlier run"):
        omnihuman_video(**arguments)
    assert emulator.stats().accepted_posts == 1
    forced = omnihuman_video(**arguments, force_new=True)
    assert probe_video(forced.location).audio_codec == "aac"
    assert emulator.stats().accepted_posts == 2
    assert omnihuman_video(**arguments).reused  # and from now on, the forced one is reused
    assert emulator.stats().accepted_posts == 2


def test_a_timed_out_run_resumes_the_same_generation_when_rerun(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": asset_host.url_for("voice.mp3"),
        "destination": str(tmp_path / "patient.mp4"),
        "credentials": credentials_for(emulator),
        "polling": FAST_POLL,
    }
    with pytest.raises(GenerationTimeoutError) as caught:
        omnihuman_video(**arguments, timeout=0.01)
    assert caught.value.generation_id in emulator.stats().generations
    result = omnihuman_video(**arguments)
    assert result.generation_id == caught.value.generation_id
    assert emulator.stats().accepted_posts == 1


def test_a_destination_overwritten_by_other_inputs_gets_the_right_video_back(
    emulator: Emulator, samples: Path, asset_host: AssetHost, tmp_path: Path
) -> None:
    shared = str(tmp_path / "shared.mp4")
    common = {"credentials": credentials_for(emulator), "polling": FAST_POLL}
    image = str(samples / "portrait.png")
    three = omnihuman_video(image, asset_host.url_for("voice.wav"), shared, **common)
    omnihuman_video(image, asset_host.url_for("voice.mp3"), shared, **common)
    assert probe_video(shared).duration == pytest.approx(4.0, abs=0.1)
    again = omnihuman_video(image, asset_host.url_for("voice.wav"), shared, **common)
    assert again.generation_id == three.generation_id
    assert probe_video(shared).duration == pytest.approx(3.0, abs=0.1)
    assert emulator.stats().accepted_posts == 2


def test_a_missing_destination_bucket_fails_before_any_post(
    emulator: Emulator, samples: Path, asset_host: AssetHost, s3: S3
) -> None:
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/x", storage_options=s3.options)
    with pytest.raises(InputError, match="no-such-bucket-4821") as caught:
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.wav"),
            destination="s3://no-such-bucket-4821/video.mp4",
            credentials=credentials_for(emulator),
            storage=storage,
            polling=FAST_POLL,
        )
    assert "bucket" in str(caught.value)
    assert emulator.stats().accepted_posts + emulator.stats().rejected_posts == 0


def test_an_unreachable_api_fails_the_flow_without_task_retries(
    samples: Path, asset_host: AssetHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client-side check alone (no CLI preflight): no task retries a wrong address."""
    base_url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.INFO), pytest.raises(ServiceUnreachableError) as caught:
        omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=asset_host.url_for("voice.wav"),
            destination=str(tmp_path / "never.mp4"),
            credentials=AimlApiCredentials(api_key=TEST_KEY, base_url=base_url),
            polling=FAST_POLL,
        )
    assert base_url in str(caught.value)
    failed = [r.getMessage() for r in caplog.records if "ServiceUnreachableError" in r.getMessage()]
    assert failed, "the failure was not logged"
    assert not [m for m in failed if "will start" in m], "a task retried a wrong address"
    assert not (tmp_path / "never.mp4").exists()
