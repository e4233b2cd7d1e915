"""Blocks and schedules from what users type: block names, URLs and the environment.

Shared by the flows, the command line and the deployable pipelines in `flows/`, so
that every entry point finds credentials and storage the same way.
"""

from __future__ import annotations

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


def polling_capped(max_interval: float | None) -> PollSchedule | None:
    """An adaptive schedule that never waits more than `max_interval` s (None: the default)."""
    if max_interval is None:
        return None
    interval = max(0.05, max_interval)
    return PollSchedule(min_interval=min(1.0, interval), max_interval=interval)
