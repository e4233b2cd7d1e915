"""Blocks and schedules from what users type: block names, URLs and the environment.

Shared by the flows, the command line and the deployable pipelines in `flows/`, so
that every entry point finds credentials and storage the same way.
"""

from __future__ import annotations

import math
import os

from prefect.blocks.core import Block

from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.errors import InputError
from prefect_omnihuman.storage.media_storage import MediaStorage
from prefect_omnihuman.storage.prefect_blocks import as_media_storage, load_storage_block
from prefect_omnihuman.workflows.credentials import AimlApiCredentials


def resolve_credentials(credentials: AimlApiCredentials | str | None) -> AimlApiCredentials:
    """A credentials block, loading it by name when given a string."""
    if isinstance(credentials, AimlApiCredentials):
        return credentials
    if isinstance(credentials, str) and credentials:
        loaded: AimlApiCredentials = AimlApiCredentials.load(credentials)  # type: ignore[assignment]
        return loaded
    raise InputError(
        "no AI/ML API credentials given",
        fix="pass credentials=AimlApiCredentials(api_key=...), the name of a saved "
        "AimlApiCredentials block, or AimlApiCredentials.from_env()",
    )


def resolve_storage(storage: MediaStorage | Block | str | None) -> MediaStorage | None:
    """A storage block as a `MediaStorage`, loading it by name when given a string.

    Besides `MediaStorage`, a prefect-aws `S3Bucket`, a `RemoteFileSystem` or a
    `LocalFileSystem` (objects, or saved ones named `s3-bucket/NAME` and so on) are
    converted; a bare name loads a `MediaStorage`. See `storage/prefect_blocks`.
    """
    if isinstance(storage, str) and storage:
        return load_storage_block(storage)
    return as_media_storage(storage) if isinstance(storage, Block) else None


def credentials_from(
    block: str | None = None, *, base_url: str | None = None
) -> AimlApiCredentials:
    """The saved block `block` (with `base_url` overriding its own), else `AIMLAPI_API_KEY`.

    Example:
        ```python
        credentials = credentials_from(None, base_url="http://127.0.0.1:8787")
        ```
    """
    if block:
        credentials = resolve_credentials(block)
        return credentials.model_copy(update={"base_url": base_url}) if base_url else credentials
    return AimlApiCredentials.from_env(base_url=base_url)


def storage_from(
    block: str | None = None, *, url: str | None = None, public_url: str | None = None
) -> MediaStorage | None:
    """Storage at the fsspec `url` when given, else the saved block `block`, else none."""
    if url:
        return MediaStorage(base_url=url, public_base_url=public_url)
    return resolve_storage(block)


#: Multiplies the command line's polling schedule: an emulator's `--time-scale`.
POLL_TIME_SCALE_ENV = "OMNIHUMAN_POLL_TIME_SCALE"


def polling_capped(max_interval: float | None) -> PollSchedule | None:
    """An adaptive schedule that never waits more than `max_interval` s (None: the default).

    With `OMNIHUMAN_POLL_TIME_SCALE` set (to an emulator's `--time-scale`), the schedule's
    built-in guess and intervals are scaled by it, as `PollSchedule.scaled` does.
    """
    schedule = None
    if max_interval is not None:
        interval = max(0.05, max_interval)
        schedule = PollSchedule(
            min_interval=min(1.0, interval), max_interval=interval, max_wait_before_window=interval
        )
    scale = poll_time_scale()
    return schedule if scale is None else (schedule or PollSchedule()).scaled(scale)


def poll_time_scale() -> float | None:
    """`OMNIHUMAN_POLL_TIME_SCALE` as a number, None when unset."""
    raw = os.environ.get(POLL_TIME_SCALE_ENV, "").strip()
    if not raw:
        return None
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(
            f"{POLL_TIME_SCALE_ENV}={raw!r} is not a positive number",
            fix=f"set it to the emulator's --time-scale (e.g. 0.1), or unset {POLL_TIME_SCALE_ENV}",
        )
    return scale
