"""Prefect tasks for one video: validate, upload, submit, poll, download.

Before them, optionally: `synthesize_speech` (text to a stored voice track, paid for
once) and `prepare_image` / `prepare_audio` (make raw media fit; see `prep`); these
live in `speech_and_prep_tasks` and are importable from here too.

Each is thin over the client, storage and media modules, with retries fitted to
its failures: transient ones (429, 5xx, dropped connections) are retried, permanent
ones (bad input, 401/403/400, a generation in `error`, an expired URL, a possibly
accepted submission) never are.

`submit_generation` is the one that costs money. Its result is persisted under a
cache key made of the inputs' content hashes, the model and its parameters, so a
re-run after a crash, kill or failure reconnects to the generation already paid for.
Identical submissions running at once wait for each other under a lock on that key
(`storage/locks.py`). Submissions, stored videos and failed generations are announced as
Prefect events (`events.py`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from prefect.transactions import IsolationLevel

from prefect_omnihuman.api.client import DEFAULT_WAIT_TIMEOUT
from prefect_omnihuman.api.models import MAX_AUDIO_SECONDS, VideoGenerationRequest
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.retries import RetryPolicy
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    GenerationFailedError,
    InvalidVideoError,
    NotFoundError,
    ResultExpiredError,
    StorageError,
)
from prefect_omnihuman.media.input_checks import check_inputs
from prefect_omnihuman.media.probe import VideoInfo, probe_video
from prefect_omnihuman.results import (
    CheckedInputs,
    DeliveredVideo,
    StagedAsset,
    SubmittedGeneration,
)
from prefect_omnihuman.storage.locks import SharedFileLockManager
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    check_destination,
    deliver_file,
    spool_file_for,
    stage_asset,
    stamp_of,
)
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.events import emit_completed, emit_failed, emit_submitted
from prefect_omnihuman.workflows.poll_pacing import status_poll_limiter, timing_history
from prefect_omnihuman.workflows.retry_conditions import (
    retry_storage,
    retry_transient,
    retry_unaccepted_submission,
)

RESULT_SERIALIZER = "json"


def submission_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The submission's identity: content hashes, model, parameters; never credentials."""
    return f"omnihuman-submit-{parameters['fingerprint']}"


#: Identical submissions running at once (threads, processes, workers sharing the lock
#: folder) wait for each other's record instead of both paying: see `storage/locks.py`.
SUBMISSION_CACHE_POLICY = CacheKeyFnPolicy(cache_key_fn=submission_cache_key).configure(
    isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=SharedFileLockManager()
)


def completion_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A completed generation stays completed: keyed by its id."""
    submitted: SubmittedGeneration = parameters["submitted"]
    return f"omnihuman-completed-{submitted.generation.id.replace(':', '-').replace('/', '-')}"


@task(
    name="validate-inputs",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_storage,
)
def validate_inputs(
    image: Source,
    audio: Source,
    storage: MediaStorage | None = None,
    destination: str | None = None,
    audio_limit: float | None = MAX_AUDIO_SECONDS,
) -> CheckedInputs:
    """Decode the image (Pillow) and the audio (PyAV) and check the 30 s limit.

    Runs before anything is paid for; a bad file raises a typed `InputError` that
    names the file and the fix. With `destination`, also checks it can be written.
    `audio_limit=None` accepts longer audio (a narration that will be split).
    """
    checked = check_inputs(image, audio, storage, audio_limit)
    if destination is not None:
        check_destination(destination, storage.options_for(destination) if storage else None)
    get_run_logger().info(
        "Inputs OK: image %s (%sx%s, %s), audio %s (%.2f s)",
        checked.image.source,
        checked.image.width,
        checked.image.height,
        checked.image.format,
        checked.audio.source,
        checked.audio.duration or 0.0,
    )
    return checked


@task(
    name="upload-asset",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_storage,
)
def upload_asset(source: Source, staging: MediaStorage | None, kind: str) -> StagedAsset:
    """Make a local file, bytes, an fsspec URL or an http(s) URL fetchable by the API.

    See `storage.stage_asset` for the rules. The returned URL may be presigned; it is
    never logged.
    """
    staged = stage_asset(source, staging, kind=kind)
    where = staged.location if staged.location != "inline" else "inline (base64 data URI)"
    verb = "Uploaded" if staged.uploaded else "Using"
    get_run_logger().info("%s %s %s", verb, kind, where)
    return StagedAsset(url=staged.url, location=staged.location, uploaded=staged.uploaded)


@task(
    name="submit-generation",
    cache_policy=SUBMISSION_CACHE_POLICY,
    persist_result=True,
    result_serializer=RESULT_SERIALIZER,
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unaccepted_submission,
)
def submit_generation(
    request: VideoGenerationRequest,
    credentials: AimlApiCredentials,
    fingerprint: str,
    audio_seconds: float | None = None,
    force_new: bool = False,
) -> SubmittedGeneration:
    """POST the generation once; re-runs with the same fingerprint get the cached one.

    Call it `.with_options(refresh_cache=True)` with `force_new=True` to pay for a
    new generation anyway. A submission whose fate is unknown (its answer was lost)
    is remembered too: re-runs refuse to submit again unless `force_new`.
    """
    logger = get_run_logger()
    store = get_result_store()
    marker = f"omnihuman-ambiguous-{fingerprint}"
    if not force_new and store.exists(marker):
        raise AmbiguousSubmissionError(f"an earlier run's {store.read(marker).result}")
    try:
        with credentials.get_client(log=logger) as client:
            generation = client.submit(request)
    except AmbiguousSubmissionError as error:
        store.write(error.cause, key=marker)
        raise
    credits = generation.credits_used
    logger.info(
        "Generation %s accepted%s",
        generation.id,
        f" ({credits:g} credits)" if credits is not None else "",
    )
    emit_submitted(
        generation.id, fingerprint=fingerprint, audio_seconds=audio_seconds, credits_used=credits
    )
    return SubmittedGeneration(
        generation=generation,
        fingerprint=fingerprint,
        submitted_at=time.time(),
        audio_seconds=audio_seconds,
    )


@task(
    name="poll-generation",
    cache_key_fn=completion_cache_key,
    persist_result=True,
    result_serializer=RESULT_SERIALIZER,
    retries=0,
)
async def poll_generation(
    submitted: SubmittedGeneration,
    credentials: AimlApiCredentials,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    polling: PollSchedule | None = None,
) -> SubmittedGeneration:
    """Wait for the generation to finish, polling adaptively, and return it completed.

    The schedule follows what earlier jobs of this model on this service took (the
    timing history, see `poll_pacing`), and each status request takes a slot of the
    fleet-wide `omnihuman-status-polls` rate limit when it exists. Status changes are
    logged with the generation id. 429/5xx/dropped connections only slow the polling
    down. A timeout raises `GenerationTimeoutError` with the id; re-running the flow
    resumes waiting for the same generation.
    """
    logger = get_run_logger()
    limiter = await status_poll_limiter()
    async with credentials.get_async_client(
        log=logger, poll=polling, timing=timing_history(), before_status_request=limiter
    ) as client:
        try:
            done = await client.wait(
                submitted.generation,
                timeout=timeout,
                audio_seconds=submitted.audio_seconds,
                started_at=submitted.submitted_at,
            )
        except NotFoundError as error:
            raise NotFoundError(
                f"generation {submitted.generation.id} is unknown to the API (records of old "
                "generations expire); pass force_new=True to generate the video again",
                status_code=error.status_code,
                request_id=error.request_id,
            ) from None
        except GenerationFailedError as error:
            emit_failed(submitted.generation.id, error)
            raise
    return submitted.model_copy(update={"generation": done})


def delivery_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A delivery is identified by the generation and the destination."""
    completed: SubmittedGeneration = parameters["completed"]
    identity = f"{completed.generation.id}\n{parameters['destination']}"
    return f"omnihuman-delivery-{hashlib.sha256(identity.encode()).hexdigest()}"


@task(
    name="download-video",
    cache_key_fn=delivery_cache_key,
    persist_result=True,
    result_serializer=RESULT_SERIALIZER,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_transient,
)
def download_video(
    completed: SubmittedGeneration,
    destination: str,
    credentials: AimlApiCredentials,
    storage: MediaStorage | None = None,
) -> DeliveredVideo:
    """Stream the video to `destination` (path or fsspec URL), check it, then publish it.

    Memory stays bounded (chunks go to a spool file); the destination gets the
    whole, playable file or nothing. An expired URL raises `ResultExpiredError`.
    The delivery is recorded, so a re-run finds the video without downloading again.
    """
    logger = get_run_logger()
    generation = completed.generation
    options = storage.options_for(destination) if storage else None
    spool = spool_file_for(destination)
    try:
        with credentials.get_client(log=logger) as client:
            try:
                size = client.download(generation, spool)
            except ResultExpiredError as error:
                emit_failed(generation.id, error)
                raise
            info = _checked_video(spool, generation.id)
            _deliver_with_retries(spool, destination, options, client.retry, logger)
        stamp = stamp_of(destination, options)
    finally:
        spool.unlink(missing_ok=True)
    logger.info(
        "Stored the video of %s at %s (%.2f s, %.1f MB)",
        generation.id,
        destination,
        info.duration,
        size / 1e6,
    )
    emit_completed(generation.id, location=destination, duration=info.duration, size_bytes=size)
    return DeliveredVideo(
        generation_id=generation.id,
        location=destination,
        size_bytes=size,
        duration=info.duration,
        width=info.width,
        height=info.height,
        stamp=stamp,
    )


def _checked_video(path: Path, generation_id: str) -> VideoInfo:
    """The probe of a downloaded video that has both a picture and a voice, or an error."""
    try:
        info = probe_video(path)
    except InvalidVideoError as error:
        raise InvalidVideoError(
            f"the video of generation {generation_id} is not playable ({error}); it was not "
            "stored. Re-run to download it again (no new charge)."
        ) from None
    if info.audio_codec is None:
        raise InvalidVideoError(
            f"the video of generation {generation_id} has no audio track; it was not stored"
        )
    return info


def _deliver_with_retries(
    spool: Path,
    destination: str,
    options: dict[str, Any] | None,
    policy: RetryPolicy,
    logger: Any,
) -> None:
    """Publish the checked video, retrying storage hiccups without downloading again."""
    attempt = 1
    while True:
        try:
            deliver_file(spool, destination, options)
            return
        except StorageError as error:
            if attempt >= policy.max_attempts:
                raise
            delay = policy.delay(attempt, error)
            logger.warning("Storing the video failed (%s); retrying in %.1f s", error, delay)
            time.sleep(delay)
            attempt += 1


# The tasks that make a video's inputs live beside these; importable from here too.
from prefect_omnihuman.workflows.speech_and_prep_tasks import prepare_audio as prepare_audio  # noqa: E402
from prefect_omnihuman.workflows.speech_and_prep_tasks import prepare_image as prepare_image  # noqa: E402
from prefect_omnihuman.workflows.speech_and_prep_tasks import synthesize_speech as synthesize_speech  # noqa: E402
