"""Pydantic shapes of the AI/ML API's video generation requests and answers.

The service's answers are looser than its documentation: statuses beyond the
documented four, errors as objects or strings, usage in credits or tokens. The
models accept all of that and expose a small, stable surface (`Generation.phase`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODEL = "bytedance/omnihuman/v1.5"
MAX_AUDIO_SECONDS = 30.0
#: Largest input file the API (and this integration) accepts.
MAX_INPUT_BYTES = 64 * 1024 * 1024
DEFAULT_TTS_MODEL = "openai/gpt-4o-mini-tts"
#: Voices sent when none is given, for the model families that require one.
DEFAULT_VOICES = {"openai/": "alloy"}

PENDING_STATUSES = frozenset({"queued", "waiting", "active", "processing", "generating"})
COMPLETED_STATUSES = frozenset({"completed"})
ERROR_STATUSES = frozenset({"error", "failed"})


class Phase(str, Enum):
    """Where a generation stands, whatever words the API used for its status."""

    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"


def phase_of(status: str) -> Phase:
    """Map an API status word alone to a phase; unknown words count as pending.

    `Generation.phase` also looks at the answer: one with a video is complete.
    """
    word = status.strip().lower()
    if word in COMPLETED_STATUSES:
        return Phase.COMPLETED
    if word in ERROR_STATUSES:
        return Phase.ERROR
    return Phase.PENDING


def is_known_status(status: str) -> bool:
    """Whether the status is one the API is known to send."""
    word = status.strip().lower()
    return word in PENDING_STATUSES | COMPLETED_STATUSES | ERROR_STATUSES


class VideoGenerationRequest(BaseModel):
    """The body of `POST /v2/video/generations`.

    Fields beyond the three documented ones (for example `prompt` or
    `resolution`) are passed through unchanged.

    Example:
        ```python
        request = VideoGenerationRequest(
            image_url="https://example.com/face.png",
            audio_url="https://example.com/voice.mp3",
        )
        ```
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(DEFAULT_MODEL, description="The video model to run.")
    image_url: str = Field(..., description="URL or base64 data URI of the portrait image.")
    audio_url: str = Field(..., description="URL of the voice track (under 30 s).")

    def payload(self) -> dict[str, Any]:
        """The JSON body to send, extra fields included, unset optionals left out."""
        return self.model_dump(mode="json", exclude_none=True)


class VideoFile(BaseModel):
    """The generated video: a temporary URL and, sometimes, its duration."""

    model_config = ConfigDict(extra="allow")

    url: str
    duration: float | None = None


class Usage(BaseModel):
    """What a generation cost; the API reports credits or tokens."""

    model_config = ConfigDict(extra="allow")

    credits_used: float | None = None
    tokens_used: float | None = None


class Meta(BaseModel):
    """Additional details the API attaches to a generation."""

    model_config = ConfigDict(extra="allow")

    usage: Usage | None = None


class ErrorInfo(BaseModel):
    """Why a generation failed, normalised from the API's several error shapes."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    message: str = "no message given"


class Generation(BaseModel):
    """A video generation as the API reports it (both the POST and the GET answer).

    Example:
        ```python
        generation = client.get("3fdd5350-...:bytedance/omnihuman/v1.5")
        if generation.phase is Phase.COMPLETED:
            print(generation.video.url)
        ```
    """

    model_config = ConfigDict(extra="allow")

    id: str = Field(..., description="Generation id; it carries a `:model` suffix.")
    status: str = Field(..., description="The API's status word, kept as sent.")
    video: VideoFile | None = None
    duration: float | None = None
    error: ErrorInfo | None = None
    meta: Meta | None = None

    @field_validator("error", mode="before")
    @classmethod
    def _normalise_error(cls, value: Any) -> Any:
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, str):
            return {"message": value}
        if not isinstance(value, dict):
            return {"message": str(value)}
        message = value.get("message")
        if message is None or message == "":
            return {**value, "message": _flatten_error_detail(value)}
        if not isinstance(message, str):
            return {**value, "message": str(message)}
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _status_as_text(cls, value: Any) -> Any:
        return "" if value is None else str(value)

    @property
    def phase(self) -> Phase:
        """Pending, completed or error, whatever status word the API used.

        An answer that carries a video URL is complete, whatever its word (the API's
        docs show `succeeded` for other models on the same endpoint), unless the word
        says error. An unknown word without a video counts as pending.
        """
        phase = phase_of(self.status)
        if phase is Phase.PENDING and self.video_url:
            return Phase.COMPLETED
        return phase

    @property
    def video_url(self) -> str | None:
        """The temporary URL of the finished video, if there is one."""
        return self.video.url if self.video else None

    @property
    def video_duration(self) -> float | None:
        """The video's duration in seconds, when the API reports it."""
        if self.video and self.video.duration is not None:
            return self.video.duration
        return self.duration

    @property
    def credits_used(self) -> float | None:
        """Credits (or, where the API counts those, tokens) this generation used."""
        usage = self.meta.usage if self.meta else None
        if usage is None:
            return None
        return usage.credits_used if usage.credits_used is not None else usage.tokens_used

    @property
    def model_name(self) -> str | None:
        """The model named in the id's `:model` suffix, if present."""
        _, sep, model = self.id.partition(":")
        return model if sep else None


def _flatten_error_detail(payload: dict[str, Any]) -> str:
    """A readable message from `{detail: [...]}` or other message-less error shapes."""
    detail = payload.get("detail")
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                msg = str(item.get("msg", item))
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts) or "no message given"
    if isinstance(detail, str):
        return detail
    for key in ("error", "name", "code"):
        if isinstance(payload.get(key), str) and payload[key]:
            return str(payload[key])
    meaningful = {key: value for key, value in payload.items() if value not in (None, "")}
    return str(meaningful) if meaningful else "no message given"


def error_message_from_body(body: Any) -> str:
    """The human message in an HTTP error body, whatever shape the API chose.

    Accepts `{name, message}`, `{detail: [{loc, msg, type}]}`, the gateway's
    `{message, path, requestId, statusCode, timestamp}`, nested `{error: {...}}`,
    a list of messages, or plain text.
    """
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, list):
            return "; ".join(str(m) for m in message)
        if isinstance(message, str) and message:
            return message
        error = body.get("error")
        if isinstance(error, dict):
            return error_message_from_body(error)
        return _flatten_error_detail(body)
    if isinstance(body, list):
        return "; ".join(error_message_from_body(item) for item in body)
    text = str(body).strip()
    return text[:500] if text else "no message given"


def default_voice(model: str) -> str | None:
    """The voice used for `model` when none is given (None: the service's own default)."""
    matches = (voice for prefix, voice in DEFAULT_VOICES.items() if model.startswith(prefix))
    return next(matches, None)


class SpeechRequest(BaseModel):
    """The body of `POST /v1/tts`; fields beyond these (`speed`, `response_format`, ...) pass.

    Example:
        ```python
        request = SpeechRequest(model="deepgram/aura-2", text="Hello!", voice="thalia")
        ```
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(DEFAULT_TTS_MODEL, description="The text-to-speech model.")
    text: str = Field(..., min_length=1, description="What to say.")
    voice: str | None = Field(None, description="The voice; the model's default when None.")

    def payload(self) -> dict[str, Any]:
        """The JSON body to send, extra fields included, unset optionals left out."""
        return self.model_dump(mode="json", exclude_none=True)


class SpeechAudio(BaseModel):
    """Where the service put synthesised audio (JSON-answering models)."""

    model_config = ConfigDict(extra="allow")

    url: str


class SpeechAnswer(BaseModel):
    """The JSON answer of `POST /v1/tts` for models that do not stream: `{"audio": {"url"}}`."""

    model_config = ConfigDict(extra="allow")

    audio: SpeechAudio
