"""Checking a submission like the real service: its JSON, its model, and both media inputs.

The two URLs are fetched and decoded, so a broken link or a file that is not media
is refused at submission time with a 400, before anything is queued.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from prefect_omnihuman.api.models import DEFAULT_MODEL, MAX_AUDIO_SECONDS, MAX_INPUT_BYTES
from prefect_omnihuman.errors import InvalidAudioError, InvalidImageError
from prefect_omnihuman.media.probe import AudioInfo, ImageInfo, probe_audio, probe_image

#: Inputs larger than this are refused rather than held in memory.

_IMAGE_DATA_URI = re.compile(r"data:image/([\w.+-]+);base64,(.*)", re.DOTALL | re.IGNORECASE)


class Rejection(Exception):
    """A request the emulator refuses, with the status and body to answer.

    Attributes:
        status: The HTTP status.
        message: For the gateway shape `{statusCode, message, path, requestId, timestamp}`.
        detail: For the validation shape `{"detail": [{loc, msg, type}]}`; wins over `message`.
    """

    def __init__(
        self, status: int, message: str = "", *, detail: list[dict[str, Any]] | None = None
    ) -> None:
        self.status = status
        self.message = message
        self.detail = detail
        super().__init__(message or json.dumps(detail))


@dataclass(frozen=True)
class Submission:
    """A request that passed every check, with the media it points to."""

    image: bytes
    audio: bytes
    image_info: ImageInfo
    audio_info: AudioInfo

    @property
    def input_key(self) -> str:
        """sha256(image) + ":" + sha256(audio): the same files give the same key, whatever URL."""
        return f"{_sha256(self.image)}:{_sha256(self.audio)}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a POST, schema-checked; raises `Rejection` (400)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejection(400, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejection(
            400,
            detail=[
                {"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}
            ],
        )
    problems: list[dict[str, Any]] = []
    for name in ("model", "image_url", "audio_url"):
        if name not in body or body[name] is None:
            problems.append({"loc": ["body", name], "msg": "Field required", "type": "missing"})
        elif not isinstance(body[name], str):
            problems.append(
                {
                    "loc": ["body", name],
                    "msg": "Input should be a valid string",
                    "type": "string_type",
                }
            )
    if problems:
        raise Rejection(400, detail=problems)
    if body["model"] != DEFAULT_MODEL:
        raise Rejection(
            400, f"Invalid model {body['model']!r}: this endpoint serves only {DEFAULT_MODEL!r}"
        )
    return body


def check_urls(body: dict[str, Any]) -> None:
    """Refuse URLs of the wrong kind before fetching anything."""
    image_url: str = body["image_url"]
    audio_url: str = body["audio_url"]
    if not (_is_http(image_url) or image_url.lower().startswith("data:image/")):
        raise Rejection(
            400, "image_url must be an http(s) URL or a base64 data URI (data:image/...;base64,...)"
        )
    if audio_url.lower().startswith("data:"):
        raise Rejection(
            400, "audio_url must be an http(s) URL: data URIs are not accepted for audio"
        )
    if not _is_http(audio_url):
        raise Rejection(400, "audio_url must be an http(s) URL")


def load_submission(
    body: dict[str, Any], client: httpx.Client, on_fetch: Callable[[str], None]
) -> Submission:
    """Fetch and decode both inputs of a schema-checked body; raises `Rejection` (400)."""
    check_urls(body)
    image_url: str = body["image_url"]
    audio_url: str = body["audio_url"]
    if _is_http(image_url):
        on_fetch(image_url)
        image = _download(client, "image_url", image_url)
    else:
        image = _decode_image_data_uri(image_url)
    try:
        image_info = probe_image(image, name=_file_name(image_url))
    except InvalidImageError as error:
        raise Rejection(400, f"image_url is not a decodable image: {error}") from None

    on_fetch(audio_url)
    audio = _download(client, "audio_url", audio_url)
    try:
        audio_info = probe_audio(audio, name=_file_name(audio_url))
    except InvalidAudioError as error:
        raise Rejection(400, f"audio_url is not decodable audio: {error}") from None
    if audio_info.duration >= MAX_AUDIO_SECONDS:
        raise Rejection(
            400,
            f"Audio must be under {MAX_AUDIO_SECONDS:g}s long, got {audio_info.duration:.1f} s",
        )
    return Submission(image, audio, image_info, audio_info)


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _file_name(url: str) -> str | None:
    if not _is_http(url):
        return None
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name or None


def _decode_image_data_uri(uri: str) -> bytes:
    match = _IMAGE_DATA_URI.fullmatch(uri.strip())
    if match is None:
        raise Rejection(400, "image_url data URI must look like data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(re.sub(r"\s+", "", match.group(2)), validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(400, "image_url data URI does not hold valid base64") from None


def _download(client: httpx.Client, field: str, url: str) -> bytes:
    try:
        with client.stream("GET", url) as response:
            if not response.is_success:
                raise Rejection(400, f"Could not download {field}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_INPUT_BYTES:
                    raise Rejection(
                        400, f"Could not download {field}: larger than {MAX_INPUT_BYTES} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        raise Rejection(400, f"Could not download {field}: {reason}") from None
