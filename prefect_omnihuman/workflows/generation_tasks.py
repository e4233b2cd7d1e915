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

import asyncio
import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from prefect.transactions import IsolationLevel

from prefect_omnihuman.api.client import DEFAULT_WAIT_TIMEOUT, OmniHumanClient
from prefect_omnihuman.api.models import MAX_AUDIO_SECONDS, Generation, VideoGenerationRequest
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.pricing import format_cost
from prefect_omnihuman.api.retries import RetryPolicy
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    GenerationFailedError,
    InvalidVideoError,
    LedgerWriteError,
    NotFoundError,
    OmniHumanError,
    ResultExpiredError,
    StorageError,
)
from prefect_omnihuman.media.input_checks import check_inputs
from prefect_omnihuman.media.probe import VideoInfo, probe_video
from prefect_omnihuman.results import (
    CheckedInputs,
    DeliveredVideo,
    LedgerDelivery,
    LedgerRecord,
    StagedAsset,
    SubmittedGeneration,
)
from prefect_omnihuman.storage.ledger import GenerationLedger, ledger_for
from prefect_omnihuman.storage.locks import SharedFileLockManager
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    check_destination,
    deliver_file,
    filesystem,
    spool_file_for,
    stage_asset,
    stamp_of,
)
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.events import emit_completed, emit_failed, emit_submitted
from prefect_omnihuman.workflows.interruption import until_interrupted
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
    storage: MediaStorage | None = None,
) -> SubmittedGeneration:
    """POST the generation once; re-runs with the same fingerprint get the recorded one.

    With `storage`, what was paid for is kept in its ledger (`<storage>/ledger/`), which
    every worker and container that shares the storage reads: the generation is claimed
    there before the POST and recorded the moment it is accepted, so no other worker
    pays for the same inputs. Without it, Prefect's persisted result (with a lock on its
    cache key) plays that part on one machine.

    Call it `.with_options(refresh_cache=True)` with `force_new=True` to pay for a
    new generation anyway. A submission whose fate is unknown (its answer was lost)
    is remembered too: re-runs refuse to submit again unless `force_new`.
    """
    logger = get_run_logger()
    store = get_result_store()
    marker = f"omnihuman-ambiguous-{fingerprint}"
    if not force_new and store.exists(marker):
        raise AmbiguousSubmissionError(f"an earlier run's {store.read(marker).result}")
    ledger = ledger_for(storage)
    if ledger is None:
        return _pay(request, credentials, fingerprint, audio_seconds, logger, store, marker)
    reservation = ledger.reserve(fingerprint, force_new=force_new)
    if reservation.record is not None:
        return _recorded(reservation.record, logger)
    if force_new:
        ledger.supersede(fingerprint)
    if reservation.claim is None:  # no exclusive create: record, but rely on the local lock
        submitted = _pay(request, credentials, fingerprint, audio_seconds, logger, store, marker)
        return _record_submission(ledger, submitted, request, credentials, 0, False, logger)
    with ledger.holding(fingerprint, reservation.claim):
        try:
            submitted = _pay(
                request, credentials, fingerprint, audio_seconds, logger, store, marker
            )
        except AmbiguousSubmissionError as error:
            _record_ambiguous(ledger, fingerprint, request, credentials, audio_seconds, error)
            raise
        return _record_submission(
            ledger,
            submitted,
            request,
            credentials,
            reservation.claim.number,
            reservation.suspected_duplicate,
            logger,
        )


def _pay(
    request: VideoGenerationRequest,
    credentials: AimlApiCredentials,
    fingerprint: str,
    audio_seconds: float | None,
    logger: Any,
    store: Any,
    marker: str,
) -> SubmittedGeneration:
    """The paid POST itself."""
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
        f" ({format_cost(credits, credentials.credits_per_usd)})" if credits is not None else "",
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


def _record_submission(
    ledger: GenerationLedger,
    submitted: SubmittedGeneration,
    request: VideoGenerationRequest,
    credentials: AimlApiCredentials,
    claim: int,
    suspected_duplicate: bool,
    logger: Any,
) -> SubmittedGeneration:
    """Write the ledger record of an accepted generation, retrying storage hiccups."""
    generation = submitted.generation
    record = LedgerRecord(
        fingerprint=submitted.fingerprint,
        generation_id=generation.id,
        model=request.model,
        service=credentials.base_url.rstrip("/"),
        audio_seconds=submitted.audio_seconds,
        status="submitted",
        submitted_at=submitted.submitted_at,
        credits=generation.credits_used,
        suspected_duplicate=suspected_duplicate,
        claim=claim,
    )
    try:
        _with_storage_retries(lambda: ledger.write(record), logger, "Recording in the ledger")
    except OmniHumanError as error:
        logger.error(
            "Generation %s was paid for but could not be recorded in the ledger; recover it "
            "with `omnihuman download %s --out ...`",
            generation.id,
            generation.id,
        )
        raise LedgerWriteError(
            generation.id, ledger.record_url(submitted.fingerprint), str(error)
        ) from None
    return submitted.model_copy(update={"ledger": record})


def _record_ambiguous(
    ledger: GenerationLedger,
    fingerprint: str,
    request: VideoGenerationRequest,
    credentials: AimlApiCredentials,
    audio_seconds: float | None,
    error: AmbiguousSubmissionError,
) -> None:
    """Remember, for every worker, that these inputs may have been paid for."""
    record = LedgerRecord(
        fingerprint=fingerprint,
        model=request.model,
        service=credentials.base_url.rstrip("/"),
        audio_seconds=audio_seconds,
        status="ambiguous",
        submitted_at=time.time(),
        suspected_duplicate=True,
        error=error.cause,
    )
    with suppress(OmniHumanError):  # the claim stays held; its lease runs out instead
        ledger.write(record)


def _recorded(record: LedgerRecord, logger: Any) -> SubmittedGeneration:
    """A generation some worker already paid for, as the ledger has it (no new charge)."""
    if record.status == "ambiguous" or record.generation_id is None:
        raise AmbiguousSubmissionError(f"an earlier run's {record.error or 'lost answer'}")
    status = {"completed": "completed", "delivered": "completed", "failed": "error"}
    generation = Generation(
        id=record.generation_id,
        status=status.get(record.status, "queued"),
        error={"message": record.error} if record.status == "failed" else None,
        meta={"usage": {"tokens_used": record.credits}} if record.credits is not None else None,
    )
    logger.info(
        "Reconnected to generation %s from the ledger (%s; no new charge)",
        record.generation_id,
        record.status,
    )
    return SubmittedGeneration(
        generation=generation,
        fingerprint=record.fingerprint,
        submitted_at=record.submitted_at,
        audio_seconds=record.audio_seconds,
        ledger=record,
        reused=True,
    )


def _with_storage_retries(
    call: Callable[[], None], logger: Any, what: str, policy: RetryPolicy | None = None
) -> None:
    """Run a storage write, retrying storage hiccups (default: the client's backoff)."""
    policy = policy or RetryPolicy()
    attempt = 1
    while True:
        try:
            call()
            return
        except StorageError as error:
            if attempt >= policy.max_attempts:
                raise
            delay = policy.delay(attempt, error)
            logger.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
            time.sleep(delay)
            attempt += 1


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
    storage: MediaStorage | None = None,
) -> SubmittedGeneration:
    """Wait for the generation to finish, polling adaptively, and return it completed.

    The schedule follows what earlier jobs of this model on this service took (the
    timing history, see `poll_pacing`; kept beside the ledger in `storage` when given, so
    every worker learns from every other), and each status request takes a slot of the
    fleet-wide `omnihuman-status-polls` rate limit when it exists. Status changes are
    logged with the generation id. 429/5xx/dropped connections only slow the polling
    down. A timeout raises `GenerationTimeoutError` with the id; re-running the flow
    resumes waiting for the same generation. With `storage`, the ledger records the
    completion (or failure), and a generation it already has as completed is not asked
    about again.
    """
    logger = get_run_logger()
    record = submitted.ledger
    if record is not None and record.status in ("completed", "delivered"):
        return submitted
    if record is not None and record.status == "failed" and record.generation_id:
        raise GenerationFailedError(record.generation_id, record.error or "failed")
    ledger = ledger_for(storage) if record is not None else None
    limiter = await status_poll_limiter()
    async with credentials.get_async_client(
        log=logger, poll=polling, timing=timing_history(storage), before_status_request=limiter
    ) as client:
        try:
            done = await until_interrupted(
                client.wait(
                    submitted.generation,
                    timeout=timeout,
                    audio_seconds=submitted.audio_seconds,
                    started_at=submitted.submitted_at,
                ),
                f"generation {submitted.generation.id}",
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
            if ledger is not None and record is not None:
                failed = record.model_copy(update={"status": "failed", "error": error.message})
                await asyncio.to_thread(_update_ledger, ledger, failed, logger)
            raise
    if ledger is not None and record is not None:
        record = record.model_copy(
            update={
                "status": "completed",
                "completed_at": time.time(),
                "credits": done.credits_used if done.credits_used is not None else record.credits,
            }
        )
        await asyncio.to_thread(_update_ledger, ledger, record, logger)
    return submitted.model_copy(update={"generation": done, "ledger": record})


def _update_ledger(ledger: GenerationLedger, record: LedgerRecord, logger: Any) -> None:
    """Record progress of an already recorded generation; a failure only costs a warning."""
    try:
        _with_storage_retries(lambda: ledger.write(record), logger, "Updating the ledger")
    except OmniHumanError as error:
        logger.warning(
            "Could not record %s of %s in the ledger (%s)",
            record.status,
            record.generation_id,
            error,
        )


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
    record = completed.ledger
    kept = _recorded_delivery(record, destination, options)
    if kept is not None:
        logger.info(
            "%s already holds the checked video of %s (ledger); no download", destination,
            generation.id,
        )  # fmt: skip
        return kept
    spool = spool_file_for(destination)
    try:
        with credentials.get_client(log=logger) as client:
            size = _fetch_video(client, generation, record, spool, storage, logger)
            info = _checked_video(spool, generation.id)
            _with_storage_retries(
                lambda: deliver_file(spool, destination, options),
                logger,
                "Storing the video",
                client.retry,
            )
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
    delivered = DeliveredVideo(
        generation_id=generation.id,
        location=destination,
        size_bytes=size,
        duration=info.duration,
        width=info.width,
        height=info.height,
        stamp=stamp,
    )
    ledger = ledger_for(storage) if record is not None else None
    if ledger is not None:
        entry = LedgerDelivery(**delivered.model_dump(), delivered_at=time.time())
        try:
            _with_storage_retries(
                lambda: ledger.add_delivery(completed.fingerprint, entry),
                logger,
                "Recording the delivery in the ledger",
            )
        except OmniHumanError as error:
            logger.warning("Could not record the delivery in the ledger (%s)", error)
    return delivered


def _recorded_delivery(
    record: LedgerRecord | None, destination: str, options: dict[str, Any] | None
) -> DeliveredVideo | None:
    """The ledger's delivery to `destination`, if the file there is still the one stored."""
    entry = record.delivery_at(destination) if record is not None else None
    if record is None or entry is None or entry.stamp is None or record.generation_id is None:
        return None
    if stamp_of(destination, options) != entry.stamp:
        return None
    return DeliveredVideo(**entry.model_dump(exclude={"delivered_at"}))


def _fetch_video(
    client: OmniHumanClient,
    generation: Generation,
    record: LedgerRecord | None,
    spool: Path,
    storage: MediaStorage | None,
    logger: Any,
) -> int:
    """Download the video to `spool`: from the API's link, else from an earlier delivery.

    A generation known only from the ledger has no link yet: one status request gets a
    fresh one. Once the API's link has expired, a copy delivered earlier (by any worker)
    whose file is unchanged serves instead.
    """
    try:
        if generation.video_url is None:
            generation = client.get(generation.id)
        return client.download(generation, spool)
    except (ResultExpiredError, NotFoundError) as error:
        for entry in record.deliveries if record is not None else []:
            options = storage.options_for(entry.location) if storage else None
            if entry.stamp is not None and stamp_of(entry.location, options) == entry.stamp:
                logger.info(
                    "The API's link to %s is gone; copying the video from %s",
                    generation.id,
                    entry.location,
                )
                fs, path = filesystem(entry.location, options)
                fs.get_file(path, str(spool))
                return spool.stat().st_size
        if isinstance(error, ResultExpiredError):
            emit_failed(generation.id, error)
        raise


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


# The tasks that make a video's inputs live beside these; importable from here too.
from prefect_omnihuman.workflows.speech_and_prep_tasks import prepare_audio as prepare_audio  # noqa: E402
from prefect_omnihuman.workflows.speech_and_prep_tasks import prepare_image as prepare_image  # noqa: E402
from prefect_omnihuman.workflows.speech_and_prep_tasks import synthesize_speech as synthesize_speech  # noqa: E402
