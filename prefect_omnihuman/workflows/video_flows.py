"""The reusable flow: one portrait and one voice track in, one stored talking video out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.blocks.core import Block
from prefect.logging import get_run_logger
from pydantic.json_schema import SkipJsonSchema

from prefect_omnihuman.api.client import DEFAULT_WAIT_TIMEOUT
from prefect_omnihuman.api.models import (
    DEFAULT_MODEL,
    DEFAULT_TTS_MODEL,
    MAX_AUDIO_SECONDS,
    VideoGenerationRequest,
)
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.pricing import credits_to_usd, format_cost, format_reused_cost
from prefect_omnihuman.errors import InputError, StagingRequiredError
from prefect_omnihuman.media.input_checks import check_image
from prefect_omnihuman.media.poster import data_uri
from prefect_omnihuman.results import OmniHumanResult, SubmittedGeneration, generation_fingerprint
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    is_local,
    local_path,
    stamp_of,
)
from prefect_omnihuman.workflows.block_loading import resolve_credentials, resolve_storage
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.generation_slots import generation_slot
from prefect_omnihuman.workflows.generation_tasks import (
    download_video,
    poll_generation,
    submit_generation,
    upload_asset,
    validate_inputs,
)
from prefect_omnihuman.workflows.interruption import (
    raise_if_interrupted,
    stops_waits_on_interrupt,
)
from prefect_omnihuman.workflows.long_narration import generate_segmented
from prefect_omnihuman.workflows.speech_and_prep_tasks import (
    prepare_audio,
    prepare_image,
    synthesize_speech,
)
from prefect_omnihuman.workflows.video_artifacts import (
    asset_key,
    card_description,
    declare_video_asset,
    picture_video,
    poster_markdown,
    video_link,
)


def _link(location: str) -> str:
    return Path(location).resolve().as_uri() if is_local(location) else location


def _report_cost(result: OmniHumanResult, credits_per_usd: float) -> str:
    """What the video cost this run: nothing when it reused an earlier generation."""
    if result.reused:
        return format_reused_cost(result.credits_used, credits_per_usd)
    return format_cost(result.credits_used, credits_per_usd)


def _report(result: OmniHumanResult, credits_per_usd: float) -> str:
    rows = "\n".join(f"| {step} | {seconds:.2f} s |" for step, seconds in result.timings.items())
    cost = _report_cost(result, credits_per_usd)
    return (
        f"# OmniHuman video\n\n"
        f"- **Generation id**: `{result.generation_id}`\n"
        f"- **Stored at**: `{result.location}`\n"
        f"- **Duration**: {result.duration:.2f} s, {result.size_bytes / 1e6:.2f} MB\n"
        f"- **Cost**: {cost}\n"
        f"- **Model**: `{result.model}`\n"
        f"- **Reused an earlier generation**: {'yes' if result.reused else 'no'}\n\n"
        f"| Step | Time |\n|---|---|\n{rows}\n"
    )


@flow(name="omnihuman-video")
def omnihuman_video(
    image: str | Path | bytes,
    audio: str | Path | bytes,
    destination: str | None = None,
    credentials: AimlApiCredentials | str | None = None,
    storage: MediaStorage | SkipJsonSchema[Block] | str | None = None,
    model: str = DEFAULT_MODEL,
    model_params: dict[str, Any] | None = None,
    force_new: bool = False,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    polling: PollSchedule | None = None,
    split_long_audio: bool = True,
) -> OmniHumanResult:
    """Turn a portrait and a voice track into a stored, lip-synced talking video.

    Validates both inputs (before any credit is spent), stages them where the API
    can fetch them, submits once, polls adaptively and streams the video to
    `destination`. Re-running with the same inputs reconnects to the generation
    already paid for (or returns the stored video) unless `force_new=True`.

    Args:
        image: Portrait: local path, bytes, fsspec URL (s3://...) or http(s) URL.
        audio: Voice track, in the same forms. 30 s or longer, it is split at pauses into
            parts (one paid generation each) whose videos are stitched over it; see
            `workflows/long_narration`. That needs `storage`, to stage the parts.
        destination: Path or fsspec URL for the MP4; defaults to `videos/` in `storage`.
        credentials: An `AimlApiCredentials` block or a saved block's name.
        storage: Where to stage local inputs and deliver to: a `MediaStorage` block (or its
            name), or a prefect-aws `S3Bucket`, `RemoteFileSystem` or `LocalFileSystem`
            (or `s3-bucket/NAME`, `remote-file-system/NAME`, `local-file-system/NAME`).
        model: The video model.
        model_params: Extra request fields passed to the API unchanged.
        force_new: Pay for a new generation even if these inputs were generated before.
        timeout: Seconds to wait for the generation before `GenerationTimeoutError`.
        polling: How often to check on the generation (the default adapts to the job).
        split_long_audio: False to refuse audio of 30 s or more (`InvalidAudioError`)
            instead of splitting it.

    Example:
        ```python
        from prefect import flow
        from prefect_omnihuman import AimlApiCredentials, omnihuman_video

        @flow
        def welcome_video():
            return omnihuman_video(
                image="s3://assets/faces/ada.png",
                audio="s3://assets/voices/welcome.mp3",
                destination="s3://videos/welcome.mp4",
                credentials=AimlApiCredentials.load("BLOCK_NAME"),
            )
        ```
    """
    logger = get_run_logger()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(step: str, since: float) -> float:
        now = time.perf_counter()
        timings[step] = round(now - since, 3)
        return now

    creds = resolve_credentials(credentials)
    store = resolve_storage(storage)
    params = dict(model_params or {})
    image_source: Source = image
    audio_source: Source = audio

    audio_limit = None if split_long_audio else MAX_AUDIO_SECONDS
    checked = validate_inputs(image_source, audio_source, store, destination, audio_limit)
    fingerprint = generation_fingerprint(
        checked, model=model, params=params, service=creds.base_url
    )
    if destination is None:
        if store is None:
            raise InputError(
                "no destination for the video",
                fix="pass destination='out.mp4' (or an fsspec URL), or a storage block",
            )
        destination = store.url_for(f"videos/{fingerprint[:24]}.mp4")
    elif is_local(destination):
        # Absolute, so the delivery record names one file whatever the working directory.
        destination = str(local_path(destination))
    mark = lap("validate", started)
    if (checked.audio.duration or 0.0) >= MAX_AUDIO_SECONDS:
        return generate_segmented(
            image_source,
            audio_source,
            checked,
            fingerprint,
            destination,
            creds,
            store,
            model=model,
            params=params,
            force_new=force_new,
            timeout=timeout,
            polling=polling,
            timings=timings,
        )

    image_asset = upload_asset(image_source, store, "image")
    audio_asset = upload_asset(audio_source, store, "audio")
    mark = lap("upload", mark)

    request = VideoGenerationRequest(
        model=model, image_url=image_asset.url, audio_url=audio_asset.url, **params
    )
    submit = submit_generation.with_options(refresh_cache=True) if force_new else submit_generation
    with stops_waits_on_interrupt(), generation_slot():
        raise_if_interrupted("submitting a generation")
        state = submit(
            request, creds, fingerprint, checked.audio.duration, force_new, store, return_state=True
        )
        submitted = state.result()
        reused = (state.is_completed() and state.name == "Cached") or submitted.reused
        if reused:
            logger.info("Reconnected to generation %s (no new charge)", submitted.generation.id)
        mark = lap("submit", mark)

        # An async task: submitted to the task runner so this sync flow can wait on it.
        completed = cast(
            SubmittedGeneration,
            poll_generation.submit(submitted, creds, timeout, polling, store).result(),
        )
        mark = lap("wait", mark)

    delivery = download_video(completed, destination, creds, store, return_state=True)
    delivered = delivery.result()
    options = store.options_for(destination) if store else None
    if stamp_of(delivered.location, options) != delivered.stamp:
        logger.info(
            "The video recorded at %s is gone or was replaced; downloading it again", destination
        )
        delivery = download_video.with_options(refresh_cache=True)(
            completed, destination, creds, store, return_state=True
        )
        delivered = delivery.result()
    lap("download", mark)
    timings["total"] = round(time.perf_counter() - started, 3)

    generation = completed.generation
    credits = generation.credits_used or submitted.generation.credits_used
    pictures = picture_video(delivered.location, store)
    result = OmniHumanResult(
        generation_id=generation.id,
        location=delivered.location,
        source_url=generation.video_url,
        duration=delivered.duration,
        size_bytes=delivered.size_bytes,
        credits_used=credits,
        cost_usd=credits_to_usd(credits, creds.credits_per_usd),
        model=model,
        fingerprint=fingerprint,
        reused=reused,
        timings=timings,
        thumbnail=data_uri(pictures.thumbnail) if pictures else None,
    )
    create_link_artifact(
        link=_link(result.location),
        link_text=Path(result.location).name,
        description=f"OmniHuman video of generation {result.generation_id}",
    )
    create_markdown_artifact(
        markdown=poster_markdown(pictures, result.location, video_link(result.location, store))
        + _report(result, creds.credits_per_usd),
        description=card_description(pictures, f"OmniHuman generation {result.generation_id}"),
    )
    if delivery.name != "Cached":
        declare_video_asset(
            result.location,
            [
                asset_key(image_source, image_asset.location),
                asset_key(audio_source, audio_asset.location),
            ],
            {"generation_id": result.generation_id, "model": model, "duration": result.duration},
            store,
        )
    logger.info(
        "Video of generation %s stored at %s (%.2f s); cost: %s",
        result.generation_id,
        result.location,
        result.duration,
        _report_cost(result, creds.credits_per_usd),
    )
    return result


@flow(name="omnihuman-narrated-video")
def omnihuman_narrated_video(
    text: str,
    image: str | Path | bytes,
    destination: str | None = None,
    credentials: AimlApiCredentials | str | None = None,
    storage: MediaStorage | SkipJsonSchema[Block] | str | None = None,
    voice: str | None = None,
    tts_model: str = DEFAULT_TTS_MODEL,
    model: str = DEFAULT_MODEL,
    model_params: dict[str, Any] | None = None,
    force_new: bool = False,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    polling: PollSchedule | None = None,
    prepare: bool = True,
    tts_options: dict[str, Any] | None = None,
) -> OmniHumanResult:
    """Script and portrait in, talking video out: text-to-speech, preparation, `omnihuman_video`.

    The portrait is prepared (or, with `prepare=False`, checked) first, so a bad one
    fails before the speech is paid for; then the text is spoken (`synthesize_speech`,
    paid once per text, model, voice and options), the voice track prepared (silence
    trimmed, loudness normalised), and the video made by `omnihuman_video` as a
    subflow, which splits a narration of 30 s or more into parts. `storage` is
    required: the speech is a new file the API must fetch.

    Args:
        text: What the avatar says.
        image: Portrait: local path, bytes, fsspec URL or http(s) URL.
        voice: The text-to-speech voice (OpenAI models default to "alloy").
        tts_model: The text-to-speech model, e.g. "deepgram/aura-2".
        prepare: Prepare the portrait and the speech before the video (see `prep`).
        tts_options: Extra text-to-speech request fields (`speed`, `response_format`, ...).
        force_new: Pay again for both the speech and the video.
        destination, credentials, storage, model, model_params, timeout, polling: as for
            `omnihuman_video`.

    Example:
        ```python
        result = omnihuman_narrated_video(
            "Hi, I am Ada. Welcome to the team!",
            image="s3://assets/faces/ada.png",
            credentials=AimlApiCredentials.load("BLOCK_NAME"),
            storage=MediaStorage.load("media"),
            voice="nova",
        )
        ```
    """
    logger = get_run_logger()
    creds = resolve_credentials(credentials)
    store = resolve_storage(storage)
    if not text.strip():
        raise InputError("the text to speak is empty", fix="give the words the avatar says")
    if store is None:
        raise StagingRequiredError(
            "the speech is a new file, and the API fetches audio from a URL",
            source="text-to-speech",
            fix="pass storage=MediaStorage(base_url='s3://bucket/prefix', ...) (or --stage)",
        )
    portrait: str | Path | bytes = image
    if prepare:
        portrait = prepare_image(image, store).location
    else:
        check_image(image, store)

    synthesize = synthesize_speech
    if force_new:
        synthesize = synthesize_speech.with_options(refresh_cache=True)
    arguments = (text, creds, store, tts_model, voice, tts_options)
    speech = synthesize(*arguments, force_new=force_new)
    if stamp_of(speech.location, store.options_for(speech.location)) is None:
        # Re-publishes the local copy kept when it was paid for; pays only if that is gone too.
        logger.info("The speech recorded at %s is gone; storing it again", speech.location)
        speech = synthesize_speech.with_options(refresh_cache=True)(*arguments)
    voice_track = prepare_audio(speech.location, store).location if prepare else speech.location

    return omnihuman_video(
        image=portrait,
        audio=voice_track,
        destination=destination,
        credentials=creds,
        storage=store,
        model=model,
        model_params=model_params,
        force_new=force_new,
        timeout=timeout,
        polling=polling,
    )
