"""Checking inputs before anything is paid for: they decode, they fit the API's limits."""

from __future__ import annotations

from prefect_omnihuman.api.models import MAX_AUDIO_SECONDS
from prefect_omnihuman.media.probe import (
    check_audio_audible,
    check_audio_length,
    probe_audio,
    probe_image,
)
from prefect_omnihuman.results import CheckedInputs, MediaCheck
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    display_name,
    is_local,
    read_source,
    sha256_hex,
)


def _options(source: Source, storage: MediaStorage | None) -> dict[str, object]:
    if storage is None or isinstance(source, bytes) or is_local(str(source)):
        return {}
    return storage.options_for(str(source))


def check_image(source: Source, storage: MediaStorage | None = None) -> MediaCheck:
    """Read and decode the portrait image; `InvalidImageError` names the file and the fix."""
    data = read_source(source, options=_options(source, storage))
    name = display_name(source)
    info = probe_image(data, name=name)
    return MediaCheck(
        source=name,
        sha256=sha256_hex(data),
        size_bytes=len(data),
        kind="image",
        format=info.format,
        width=info.width,
        height=info.height,
    )


def check_audio(
    source: Source,
    storage: MediaStorage | None = None,
    limit: float | None = MAX_AUDIO_SECONDS,
) -> MediaCheck:
    """Read and decode the voice track, check it is not silent and under the API's 30 s limit.

    `limit=None` skips the length check (for narrations that will be split).
    """
    data = read_source(source, options=_options(source, storage))
    name = display_name(source)
    info = probe_audio(data, name=name)
    check_audio_audible(info, name=name)
    if limit is not None:
        check_audio_length(info, name=name, limit=limit)
    return MediaCheck(
        source=name,
        sha256=sha256_hex(data),
        size_bytes=len(data),
        kind="audio",
        format=info.codec,
        duration=info.duration,
    )


def check_inputs(
    image: Source,
    audio: Source,
    storage: MediaStorage | None = None,
    audio_limit: float | None = MAX_AUDIO_SECONDS,
) -> CheckedInputs:
    """Both inputs checked; raises the first `InputError` found."""
    return CheckedInputs(
        image=check_image(image, storage), audio=check_audio(audio, storage, audio_limit)
    )
