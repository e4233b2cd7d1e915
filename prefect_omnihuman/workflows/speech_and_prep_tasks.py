"""Prefect tasks that make a video's inputs: speech from text, and prepared image and audio.

`synthesize_speech` is paid, so it is idempotent like `submit_generation`: its result
is persisted under a cache key made of the text, model, voice, options and service,
and the audio is first kept in a local folder named by that key, so neither a retry,
a crash after the answer, nor a re-run pays for the same speech twice.

Files these tasks make go to `destination` when given, else under the `storage`
block (`speech/...`, `prepared/...`), else in `PREFECT_HOME/omnihuman/` (kept across
runs, so cached results keep pointing at real files). All three are importable from
`prefect_omnihuman.workflows.generation_tasks` too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_result_store
from prefect.settings import PREFECT_HOME

from prefect_omnihuman.api.models import DEFAULT_TTS_MODEL, default_voice
from prefect_omnihuman.errors import AmbiguousSubmissionError, InputError, InvalidAudioError
from prefect_omnihuman.media import prep
from prefect_omnihuman.media.probe import probe_audio
from prefect_omnihuman.results import PreparedAsset, SynthesizedSpeech
from prefect_omnihuman.storage.media_storage import (
    MediaStorage,
    Source,
    deliver_file,
    display_name,
    is_http,
    is_local,
    local_path,
    read_source,
    sha256_hex,
    spool_file_for,
)
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.retry_conditions import retry_speech, retry_storage

__all__ = ["prepare_audio", "prepare_image", "synthesize_speech", "work_folder"]


def work_folder(kind: str) -> Path:
    """`PREFECT_HOME/omnihuman/<kind>`: where files made here go when there is no storage."""
    folder = Path(PREFECT_HOME.value()).expanduser() / "omnihuman" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def speech_identity(
    text: str, model: str, voice: str | None, options: dict[str, Any] | None, service: str
) -> str:
    """The identity of paid speech: text, model, voice, options and service; never credentials."""
    identity = {
        "text": text,
        "model": model,
        "voice": voice,
        "options": options or {},
        "service": service.rstrip("/"),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def speech_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """`omnihuman-speech-<identity>`: the same words in the same voice are paid for once."""
    model = parameters.get("model") or DEFAULT_TTS_MODEL
    voice = parameters.get("voice") or default_voice(model)
    credentials: AimlApiCredentials = parameters["credentials"]
    text, options = parameters["text"], parameters.get("options")
    return f"omnihuman-speech-{speech_identity(text, model, voice, options, credentials.base_url)}"


def _publish(data: bytes, location: str, storage: MediaStorage | None) -> str:
    """Write `data` to a path or fsspec URL, whole or not at all; returns the location."""
    if is_local(location):
        location = str(local_path(location))
    spool = spool_file_for(location)
    try:
        spool.write_bytes(data)
        deliver_file(spool, location, storage.options_for(location) if storage else None)
    finally:
        spool.unlink(missing_ok=True)
    return location


def _paid_speech(folder: Path, identity: str) -> Path | None:
    """The audio already paid for under `identity` (a decodable one first), if any."""
    found = sorted(folder.glob(f"{identity}.*"), key=lambda path: path.suffix == ".invalid")
    return found[0] if found else None


def _undecodable(path: Path, model: str) -> InvalidAudioError:
    return InvalidAudioError(
        f"the text-to-speech service ({model}) returned audio that does not decode; it was "
        f"paid for and is kept at {path}.",
        source="text-to-speech",
        fix="re-running reports this again at no charge; pass force_new=True to pay for new "
        "speech, or try another model or response_format.",
    )


@task(
    name="synthesize-speech",
    cache_key_fn=speech_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_speech,
)
def synthesize_speech(
    text: str,
    credentials: AimlApiCredentials,
    storage: MediaStorage | None = None,
    model: str = DEFAULT_TTS_MODEL,
    voice: str | None = None,
    options: dict[str, Any] | None = None,
    destination: str | None = None,
    force_new: bool = False,
) -> SynthesizedSpeech:
    """Text to a stored voice track with the AI/ML API's `POST /v1/tts`, paid for once.

    Both answer styles work (a JSON audio URL, or the audio streamed back). The audio
    goes to `destination` (path or fsspec URL), else to `speech/<hash>.<ext>` under
    `storage`, else stays in `PREFECT_HOME/omnihuman/speech/`; it is measured with
    PyAV. OpenAI models get the voice "alloy" when none is given. Re-runs with the
    same text, model, voice, options and service return the cached record (see the
    module); a cached record whose file was deleted does not bring it back. Call it
    `.with_options(refresh_cache=True)` with `force_new=True` to pay again.

    Example:
        ```python
        speech = synthesize_speech("Welcome aboard!", AimlApiCredentials.load("BLOCK_NAME"),
                                   MediaStorage.load("media"), voice="nova")
        omnihuman_video(image="face.png", audio=speech.location, ...)
        ```
    """
    logger = get_run_logger()
    if not text.strip():
        raise InputError("the text to speak is empty", fix="give the words to say")
    voice = voice or default_voice(model)
    identity = speech_identity(text, model, voice, options, credentials.base_url)
    folder = work_folder("speech")
    local = None if force_new else _paid_speech(folder, identity)
    if local is not None:
        logger.info("Using the speech already paid for (%s)", local.name)
    else:
        local = _buy_speech(text, credentials, model, voice, options, folder, identity, force_new)
    if local.suffix == ".invalid":
        raise _undecodable(local, model)
    try:
        info = probe_audio(local, name=f"speech from {model}")
    except InvalidAudioError:
        bad = local.replace(local.with_suffix(".invalid"))
        raise _undecodable(bad, model) from None
    data = local.read_bytes()
    if destination is None and storage is not None:
        destination = storage.url_for(f"speech/{identity[:24]}{local.suffix}")
    location = _publish(data, destination, storage) if destination else str(local)
    logger.info("Speech (%.2f s, %s, voice %s) stored at %s", info.duration, model, voice, location)
    return SynthesizedSpeech(
        location=location,
        duration=info.duration,
        model=model,
        voice=voice,
        sha256=sha256_hex(data),
        size_bytes=len(data),
        fingerprint=identity,
    )


def _buy_speech(
    text: str,
    credentials: AimlApiCredentials,
    model: str,
    voice: str | None,
    options: dict[str, Any] | None,
    folder: Path,
    identity: str,
    force_new: bool,
) -> Path:
    """POST the speech once and keep it as `folder/<identity>.<ext>`."""
    logger = get_run_logger()
    store = get_result_store()
    marker = f"omnihuman-speech-ambiguous-{identity}"
    if not force_new and store.exists(marker):
        raise AmbiguousSubmissionError(f"an earlier run's {store.read(marker).result}")
    handle, name = tempfile.mkstemp(prefix=f".{identity}.", suffix=".part", dir=folder)
    os.close(handle)
    spool = Path(name)
    try:
        with credentials.get_client(log=logger) as client:
            speech = client.synthesize_speech(
                text, spool, model=model, voice=voice, options=options
            )
        local = folder / f"{identity}{speech.suffix}"
        spool.replace(local)
        (folder / f"{identity}.invalid").unlink(missing_ok=True)
        return local
    except AmbiguousSubmissionError as error:
        store.write(error.cause, key=marker)
        raise
    finally:
        spool.unlink(missing_ok=True)


def _read(source: Source, storage: MediaStorage | None) -> bytes:
    if isinstance(source, bytes) or storage is None or is_local(os.fspath(source)):
        return read_source(source)
    return read_source(source, options=storage.options_for(os.fspath(source)))


def _prepared_location(
    data: bytes, suffix: str, kind: str, storage: MediaStorage | None, destination: str | None
) -> str:
    if destination is not None:
        return destination
    name = f"{sha256_hex(data)[:32]}{suffix}"
    if storage is not None:
        return storage.url_for(f"prepared/{kind}/{name}")
    return str(work_folder(f"prepared/{kind}") / name)


def _unchanged(source: Source, destination: str | None) -> str | None:
    """The source itself, when nothing changed and it can be used as it is."""
    if destination is not None or isinstance(source, bytes):
        return None
    text = os.fspath(source)
    return str(local_path(text)) if is_local(text) and not is_http(text) else text


@task(
    name="prepare-image",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_storage,
)
def prepare_image(
    source: Source,
    storage: MediaStorage | None = None,
    destination: str | None = None,
    format: prep.ImageFormat = "auto",
    max_side: int = prep.MAX_SIDE,
    max_bytes: int = prep.MAX_IMAGE_BYTES,
    min_side: int = prep.MIN_FACE_SIDE,
) -> PreparedAsset:
    """Make a portrait fit for the API (see `prep.prepare_image`) and store it.

    An image that needs no change is used where it is; otherwise the prepared file
    goes to `destination`, else `prepared/image/<hash>` under `storage`, else
    `PREFECT_HOME/omnihuman/prepared/image/`. What changed is logged and returned.

    Example:
        ```python
        portrait = prepare_image("s3://raw/phone-photo.jpg", storage)
        print(portrait.location, portrait.changes)
        ```
    """
    prepared = prep.prepare_image(
        _read(source, storage),
        name=display_name(source),
        format=format,
        max_side=max_side,
        max_bytes=max_bytes,
        min_side=min_side,
    )
    location = None if prepared.changes else _unchanged(source, destination)
    if location is None:
        location = _prepared_location(prepared.data, prepared.suffix, "image", storage, destination)
        location = _publish(prepared.data, location, storage)
    get_run_logger().info(
        "Image %s prepared: %s",
        display_name(source),
        "; ".join(prepared.changes) or "nothing to change",
    )
    return PreparedAsset(
        location=location,
        changes=prepared.changes,
        kind="image",
        sha256=sha256_hex(prepared.data),
        size_bytes=len(prepared.data),
        width=prepared.width,
        height=prepared.height,
    )


@task(
    name="prepare-audio",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_storage,
)
def prepare_audio(
    source: Source,
    storage: MediaStorage | None = None,
    destination: str | None = None,
    format: prep.AudioFormat = "wav",
    sample_rate: int = 44100,
    target_lufs: float = prep.TARGET_LUFS,
) -> PreparedAsset:
    """Make a voice track fit for the API (see `prep.prepare_audio`) and store it.

    Same storage rules as `prepare_image`, under `prepared/audio/`. The output depends
    only on the input bytes and the settings, so re-runs produce the same file (and so
    reuse the same paid generation).

    Example:
        ```python
        voice = prepare_audio("take-3.flac", storage)  # 44.1 kHz mono WAV at -16 LUFS
        ```
    """
    prepared = prep.prepare_audio(
        _read(source, storage),
        name=display_name(source),
        format=format,
        sample_rate=sample_rate,
        target_lufs=target_lufs,
    )
    location = None if prepared.changes else _unchanged(source, destination)
    if location is None:
        location = _prepared_location(prepared.data, prepared.suffix, "audio", storage, destination)
        location = _publish(prepared.data, location, storage)
    get_run_logger().info(
        "Audio %s prepared (%.2f s): %s",
        display_name(source),
        prepared.duration,
        "; ".join(prepared.changes) or "nothing to change",
    )
    return PreparedAsset(
        location=location,
        changes=prepared.changes,
        kind="audio",
        sha256=sha256_hex(prepared.data),
        size_bytes=len(prepared.data),
        duration=prepared.duration,
    )
