"""The long-narration path of `omnihuman_video`: split at pauses, one generation per part, stitch.

The model takes audio under 30 s. A longer narration is cut at pauses into parts of
at most `narration.MAX_SEGMENT_SECONDS`; every part becomes its own generation with
the same portrait, run concurrently through the very tasks a short video uses
(validate, upload, submit, poll, download), so each part is cached under its own
fingerprint and a re-run pays for none of them again. The parts' videos are then
stitched in order over the original narration (`narration.stitch_videos`).

N parts are N paid generations. Part videos are kept under the storage block's
`videos/parts/`, so a re-run neither downloads nor stitches again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_run_logger

from prefect_omnihuman.api.models import VideoGenerationRequest
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.pricing import credits_to_usd, format_cost, format_reused_cost
from prefect_omnihuman.errors import StagingRequiredError
from prefect_omnihuman.media.narration import Segment, split_narration, stitch_videos
from prefect_omnihuman.media.poster import data_uri
from prefect_omnihuman.results import (
    CheckedInputs,
    DeliveredVideo,
    NarrationSegment,
    OmniHumanResult,
    StitchedVideo,
    SubmittedGeneration,
    generation_fingerprint,
)
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    deliver_file,
    filesystem,
    is_local,
    local_path,
    read_source,
    spool_file_for,
    stamp_of,
    storage_failure,
    suffix_of,
)
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
from prefect_omnihuman.workflows.retry_conditions import retry_storage
from prefect_omnihuman.workflows.video_artifacts import (
    asset_key,
    card_description,
    declare_video_asset,
    picture_video,
    poster_markdown,
    video_link,
)

__all__ = ["generate_segmented", "stitch_video"]


def stitch_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A stitched video is identified by its parts, the narration and the destination."""
    parts: list[DeliveredVideo] = parameters["parts"]
    identity = {
        "generations": [part.generation_id for part in parts],
        "starts": [round(start, 6) for start in parameters["starts"]],
        "narration": parameters["narration_sha256"],
        "destination": parameters["destination"],
    }
    blob = json.dumps(identity, sort_keys=True).encode()
    return f"omnihuman-stitch-{hashlib.sha256(blob).hexdigest()}"


def _local_copy(location: str, folder: Path, storage: MediaStorage | None) -> Path:
    """A local path of a stored part video, fetching it when it is not on this machine."""
    if is_local(location):
        return local_path(location)
    target = folder / f"{hashlib.sha256(location.encode()).hexdigest()[:16]}.mp4"
    try:
        fs, path = filesystem(location, storage.options_for(location) if storage else None)
        fs.get_file(path, str(target))
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, location) from None
    return target


@task(
    name="stitch-video",
    cache_key_fn=stitch_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_storage,
)
def stitch_video(
    parts: list[DeliveredVideo],
    starts: list[float],
    narration: str,
    narration_sha256: str,
    destination: str,
    storage: MediaStorage | None = None,
) -> StitchedVideo:
    """Join the parts' videos in order over the original narration and store the MP4.

    `narration` is a local file. The result is recorded, so a re-run with the same
    parts finds the stored video instead of stitching again.
    """
    logger = get_run_logger()
    options = storage.options_for(destination) if storage else None
    with tempfile.TemporaryDirectory(prefix="omnihuman-stitch-") as work:
        videos = [_local_copy(part.location, Path(work), storage) for part in parts]
        spool = spool_file_for(destination)
        try:
            info = stitch_videos(videos, starts, Path(narration), spool)
            size = spool.stat().st_size
            deliver_file(spool, destination, options)
        finally:
            spool.unlink(missing_ok=True)
    logger.info(
        "Stitched %d parts into %s (%.2f s, %.1f MB)",
        len(parts),
        destination,
        info.duration,
        size / 1e6,
    )
    return StitchedVideo(
        location=destination,
        size_bytes=size,
        duration=info.duration,
        width=info.width,
        height=info.height,
        generation_ids=[part.generation_id for part in parts],
        stamp=stamp_of(destination, options),
    )


def _total_cost(result: OmniHumanResult, credits_per_usd: float) -> str:
    """What the video cost: parts paid in this run, and parts an earlier run paid for."""
    if not any(s.reused for s in result.segments):
        return format_cost(result.credits_used, credits_per_usd)
    now = sum(s.credits_used or 0.0 for s in result.segments if not s.reused)
    earlier = sum(s.credits_used or 0.0 for s in result.segments if s.reused)
    return format_reused_cost(earlier, credits_per_usd, now=now)


def _report(result: OmniHumanResult, credits_per_usd: float) -> str:
    def reused(s: NarrationSegment) -> str:
        paid = format_cost(s.credits_used, credits_per_usd)
        return f"yes (paid earlier: {paid})" if s.reused else "no"

    rows = "\n".join(
        f"| {s.index + 1} | {s.start:.2f}-{s.end:.2f} s | `{s.generation_id}` | "
        f"{format_cost(0.0 if s.reused else s.credits_used, credits_per_usd)} | {reused(s)} |"
        for s in result.segments
    )
    steps = "\n".join(f"| {step} | {seconds:.2f} s |" for step, seconds in result.timings.items())
    return (
        f"# OmniHuman video of a long narration\n\n"
        f"- **Stored at**: `{result.location}`\n"
        f"- **Duration**: {result.duration:.2f} s, {result.size_bytes / 1e6:.2f} MB\n"
        f"- **Parts**: {len(result.segments)} (one paid generation each)\n"
        f"- **Cost**: {_total_cost(result, credits_per_usd)}\n\n"
        f"| Part | Narration | Generation | Cost now | Reused |\n|---|---|---|---|---|\n{rows}\n\n"
        f"| Step | Time |\n|---|---|\n{steps}\n"
    )


def _delivered(
    future: PrefectFuture[Any],
    completed: SubmittedGeneration,
    credentials: AimlApiCredentials,
    storage: MediaStorage,
) -> DeliveredVideo:
    """The part's stored video, downloaded again if the recorded file is gone."""
    delivered: DeliveredVideo = future.result()
    if stamp_of(delivered.location, storage.options_for(delivered.location)) != delivered.stamp:
        get_run_logger().info(
            "The part video at %s is gone; downloading it again", delivered.location
        )
        delivered = download_video.with_options(refresh_cache=True)(
            completed, delivered.location, credentials, storage
        )
    return delivered


def generate_segmented(
    image: Source,
    audio: Source,
    checked: CheckedInputs,
    fingerprint: str,
    destination: str,
    credentials: AimlApiCredentials,
    storage: MediaStorage | None,
    *,
    model: str,
    params: dict[str, Any],
    force_new: bool,
    timeout: float,
    polling: PollSchedule | None,
    timings: dict[str, float],
) -> OmniHumanResult:
    """Make one video from a narration too long for one generation; runs inside a flow.

    Raises:
        StagingRequiredError: No storage block: the parts are new files the API must fetch.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    if storage is None:
        raise StagingRequiredError(
            f"the narration is {checked.audio.duration or 0:.1f} s long, so it is split into "
            "parts under 30 s, and the API must fetch those new files from somewhere",
            source=checked.audio.source,
            fix="pass storage=MediaStorage(base_url='s3://bucket/prefix', ...) (or --stage), "
            "or split_long_audio=False to get the too-long error instead",
        )
    with tempfile.TemporaryDirectory(prefix="omnihuman-narration-") as work:
        folder = Path(work)
        remote = not isinstance(audio, bytes) and not is_local(str(audio))
        data = read_source(audio, options=storage.options_for(str(audio)) if remote else None)
        narration = folder / f"narration{suffix_of(audio, '.audio')}"
        narration.write_bytes(data)
        segments = split_narration(narration, folder / "parts", name=checked.audio.source)
        logger.info(
            "Narration of %.2f s split into %d parts at %s; each part is one paid generation",
            checked.audio.duration or 0.0,
            len(segments),
            ", ".join(f"{s.end:.2f} s ({s.cut.kind})" for s in segments if s.cut) or "no cut",
        )
        checks = [validate_inputs(image, str(s.path), storage) for s in segments]
        timings["split"] = round(time.perf_counter() - started, 3)

        image_asset = upload_asset(image, storage, "image")
        requests = []
        for segment, check in zip(segments, checks, strict=True):
            audio_asset = upload_asset(str(segment.path), storage, "audio")
            request = VideoGenerationRequest(
                model=model, image_url=image_asset.url, audio_url=audio_asset.url, **params
            )
            service = credentials.base_url
            part = generation_fingerprint(check, model=model, params=params, service=service)
            requests.append((request, part, segment.duration))

        submit = (
            submit_generation.with_options(refresh_cache=True) if force_new else submit_generation
        )
        submitted: list[PrefectFuture[Any]] = []
        polled: list[PrefectFuture[Any]] = []
        delivered: list[PrefectFuture[Any]] = []
        # In a batch the parts share the row's one slot, as the row's one narration.
        with stops_waits_on_interrupt(), generation_slot():
            raise_if_interrupted("submitting the parts")
            for request, part, seconds in requests:
                # Futures: the parts are generated at once, each through the usual tasks.
                submitted.append(
                    submit.submit(
                        request, credentials, part, seconds, force_new=force_new, storage=storage
                    )
                )
                upstream = cast(Any, submitted[-1])  # Prefect resolves a future to its result
                polled.append(
                    poll_generation.submit(upstream, credentials, timeout, polling, storage)
                )
                target = storage.url_for(f"videos/parts/{part[:24]}.mp4")
                waited = cast(Any, polled[-1])
                delivered.append(download_video.submit(waited, target, credentials, storage))
            wait([*submitted, *polled])
        wait(delivered)
        mark = time.perf_counter()
        timings["generate"] = round(mark - started - timings["split"], 3)

        # In chain order, so a failure surfaces as itself, not as its dependants' refusal.
        parts: list[DeliveredVideo] = []
        records: list[NarrationSegment] = []
        for segment, s_future, p_future, d_future in zip(
            segments, submitted, polled, delivered, strict=True
        ):
            s_future.result()
            completed: SubmittedGeneration = p_future.result()
            parts.append(_delivered(d_future, completed, credentials, storage))
            records.append(_record(segment, completed, s_future, credentials.credits_per_usd))

        stitched, fresh = _stitched(parts, segments, narration, checked, destination, storage)
        timings["stitch"] = round(time.perf_counter() - mark, 3)
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)

    credits = [r.credits_used for r in records if r.credits_used is not None]
    pictures = picture_video(stitched.location, storage)
    result = OmniHumanResult(
        generation_id=records[0].generation_id,
        location=stitched.location,
        source_url=None,
        duration=stitched.duration,
        size_bytes=stitched.size_bytes,
        credits_used=sum(credits) if credits else None,
        cost_usd=credits_to_usd(sum(credits), credentials.credits_per_usd) if credits else None,
        model=model,
        fingerprint=fingerprint,
        reused=all(r.reused for r in records),
        timings=timings,
        segments=records,
        thumbnail=data_uri(pictures.thumbnail) if pictures else None,
    )
    create_link_artifact(
        link=local_path(result.location).as_uri() if is_local(result.location) else result.location,
        link_text=Path(result.location).name,
        description=f"OmniHuman video of a {len(records)}-part narration",
    )
    per_usd = credentials.credits_per_usd
    create_markdown_artifact(
        markdown=poster_markdown(pictures, result.location, video_link(result.location, storage))
        + _report(result, per_usd),
        description=card_description(pictures, "OmniHuman long narration"),
    )
    if fresh:
        declare_video_asset(
            result.location,
            [asset_key(image, image_asset.location), asset_key(audio)],
            {"generation_ids": stitched.generation_ids, "model": model, "parts": len(records)},
            storage,
        )
    logger.info(
        "Video of %d parts stored at %s (%.2f s); cost: %s",
        len(records),
        result.location,
        result.duration,
        _total_cost(result, per_usd),
    )
    return result


def _record(
    segment: Segment,
    completed: SubmittedGeneration,
    future: PrefectFuture[Any],
    credits_per_usd: float,
) -> NarrationSegment:
    generation = completed.generation
    return NarrationSegment(
        index=segment.index,
        start=round(segment.start, 6),
        end=round(segment.end, 6),
        generation_id=generation.id,
        credits_used=generation.credits_used,
        cost_usd=credits_to_usd(generation.credits_used, credits_per_usd),
        reused=future.state.name == "Cached" or completed.reused,
        cut=segment.cut.kind if segment.cut else None,
    )


def _stitched(
    parts: list[DeliveredVideo],
    segments: list[Segment],
    narration: Path,
    checked: CheckedInputs,
    destination: str,
    storage: MediaStorage,
) -> tuple[StitchedVideo, bool]:
    """The stitched video at `destination`, made again if the recorded file is gone, and
    whether it was made in this run."""
    arguments: dict[str, Any] = {
        "parts": parts,
        "starts": [segment.start for segment in segments],
        "narration": str(narration),
        "narration_sha256": checked.audio.sha256,
        "destination": destination,
        "storage": storage,
    }
    state = stitch_video(**arguments, return_state=True)
    stitched: StitchedVideo = state.result()
    if stamp_of(destination, storage.options_for(destination)) != stitched.stamp:
        get_run_logger().info("The video recorded at %s is gone; stitching it again", destination)
        state = stitch_video.with_options(refresh_cache=True)(**arguments, return_state=True)
        stitched = state.result()
    return stitched, state.name != "Cached"
