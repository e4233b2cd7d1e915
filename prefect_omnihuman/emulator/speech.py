"""The emulated text-to-speech route, `POST /v1/tts`: real audio whose length follows the text.

As on the service, OpenAI-style models answer JSON `{"audio": {"url": ...}}` pointing at
a file the emulator serves, while Deepgram and ElevenLabs models answer with the audio
bytes themselves (chunked `audio/mpeg`, or `audio/wav` with `response_format: "wav"`).
Nothing is really spoken: the audio is `media.write_sample_voice`'s speech-like voice,
about 2.5 words a second (`speed` scales it), with a pause at every sentence end.

Same Bearer auth, error shapes and fault plan (route "tts") as the video route.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from prefect_omnihuman.emulator.faults import Fault
from prefect_omnihuman.emulator.inputs import Rejection
from prefect_omnihuman.emulator.state import EmulatorState
from prefect_omnihuman.media.samples import write_sample_voice


class _SpeechHost(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def _files_dir(self) -> Path | None: ...


class _Handler(Protocol):
    """What these routes need of the server's request handler (`server._Handler`).

    A protocol rather than an import, so this module does not import `server`, which
    imports it.
    """

    @property
    def wfile(self) -> io.BufferedIOBase: ...

    @property
    def state(self) -> EmulatorState: ...

    @property
    def emulator(self) -> _SpeechHost: ...

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...

    def _send(
        self, status: int, body: bytes, *, content_type: str = ..., head: bool = ...
    ) -> None: ...

    def _json(
        self, status: int, payload: Any, *, headers: dict[str, str] | None = None
    ) -> None: ...

    def _gateway_error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> None: ...

    def _rejection(self, rejection: Rejection) -> None: ...

    def _drop(self) -> None: ...

    def _authenticate(self) -> str | None: ...

    def _apply_api_fault(self, fault: Fault | None) -> bool: ...


TTS_PATH = "/v1/tts"
SPEECH_FILES_PREFIX = "/files/speech/"
WORDS_PER_SECOND = 2.5
SENTENCE_PAUSE_SECONDS = 0.6
SAMPLE_RATE = 24000

Style = Literal["url", "stream"]


@dataclass(frozen=True)
class SpeechModel:
    """How a text-to-speech model answers, and the longest text it takes."""

    style: Style
    max_characters: int


SPEECH_MODELS: dict[str, SpeechModel] = {
    "openai/tts-1": SpeechModel("url", 4096),
    "openai/tts-1-hd": SpeechModel("url", 4096),
    "openai/gpt-4o-mini-tts": SpeechModel("url", 4096),
    "deepgram/aura": SpeechModel("stream", 2000),
    "deepgram/aura-2": SpeechModel("stream", 2000),
    "elevenlabs/eleven_multilingual_v2": SpeechModel("stream", 10000),
    "elevenlabs/eleven_turbo_v2_5": SpeechModel("stream", 10000),
}
FORMATS = {"mp3": ("audio/mpeg", ".mp3"), "wav": ("audio/wav", ".wav")}
_FILE_NAME = re.compile(r"[0-9a-f]{32}\.(mp3|wav)")
_CHUNK = 16 * 1024


@dataclass(frozen=True)
class SpeechJob:
    """A checked `POST /v1/tts` body."""

    model: str
    text: str
    voice: str | None
    response_format: str
    speed: float

    @property
    def style(self) -> Style:
        return SPEECH_MODELS[self.model].style

    @property
    def text_key(self) -> str:
        """What the stats count accepted requests by: the text's SHA-256."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def _problem(field: str, message: str, kind: str) -> Rejection:
    return Rejection(400, detail=[{"loc": ["body", field], "msg": message, "type": kind}])


def parse_speech_request(raw: bytes) -> SpeechJob:
    """The checked body of a text-to-speech request; raises `Rejection` (400)."""
    try:
        body: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejection(400, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _problem("body", "Input should be a valid dictionary", "dict_type")
    for name in ("model", "text"):
        if body.get(name) is None:
            raise _problem(name, "Field required", "missing")
        if not isinstance(body[name], str):
            raise _problem(name, "Input should be a valid string", "string_type")
    model, text = body["model"], body["text"]
    if model not in SPEECH_MODELS:
        known = ", ".join(sorted(SPEECH_MODELS))
        raise Rejection(400, f"Invalid model {model!r}: text-to-speech models are {known}")
    if not text.strip():
        raise _problem("text", "String should have at least 1 character", "string_too_short")
    limit = SPEECH_MODELS[model].max_characters
    if len(text) > limit:
        raise _problem("text", f"String should have at most {limit} characters", "string_too_long")
    voice = body.get("voice")
    if voice is not None and (not isinstance(voice, str) or not voice.strip()):
        raise _problem("voice", "Input should be a non-empty string", "string_type")
    response_format = body.get("response_format", "mp3")
    if response_format not in FORMATS:
        raise _problem("response_format", f"Input should be one of {list(FORMATS)}", "enum")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        raise _problem("speed", "Input should be a number from 0.25 to 4", "number_range")
    return SpeechJob(model, text, voice, response_format, float(speed))


def speech_timeline(text: str, speed: float = 1.0) -> tuple[float, list[float]]:
    """Seconds of audio for `text`, and where its sentence-end pauses start."""
    rate = WORDS_PER_SECOND * speed
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.split()]
    clock, pauses = 0.12, []
    for index, sentence in enumerate(sentences):
        clock += len(sentence.split()) / rate
        if index < len(sentences) - 1:
            pauses.append(round(clock, 3))
            clock += SENTENCE_PAUSE_SECONDS + 0.1
    return round(clock + 0.2, 3), pauses


def render_speech(job: SpeechJob, path: Path) -> Path:
    """Write the job's audio (decodable, speech-like, the right length) to `path`."""
    seconds, pauses = speech_timeline(job.text, job.speed)
    return write_sample_voice(path, seconds=seconds, sample_rate=SAMPLE_RATE, pauses=pauses)


def create_speech(handler: _Handler, raw: bytes) -> None:
    """Answer `POST /v1/tts`: faults first, then auth, validation, synthesis and the answer."""
    state = handler.state
    fault = state.draw_fault("tts")
    if handler._apply_api_fault(fault):
        state.record_tts(None)
        return
    lose_response = fault is not None and fault.kind == "lost_response"
    try:
        if handler._authenticate() is None:
            raise Rejection(401, "Unauthorized")
        job = parse_speech_request(raw)
    except Rejection as rejection:
        state.record_tts(None)
        if lose_response:
            handler._drop()
        else:
            handler._rejection(rejection)
        return
    files_dir = handler.emulator._files_dir
    if files_dir is None:
        raise ConnectionError("the emulator is stopping")
    content_type, suffix = FORMATS[job.response_format]
    token = uuid.uuid4().hex
    folder = files_dir / "speech" if job.style == "url" else Path(tempfile.mkdtemp())
    path = render_speech(job, folder / f"{token}{suffix}")
    state.record_tts(job.text_key)
    if lose_response:
        handler._drop()
    elif job.style == "url":
        url = f"{handler.emulator.url}{SPEECH_FILES_PREFIX}{token}{suffix}"
        handler._json(201, {"audio": {"url": url}})
    else:
        try:
            _stream(handler, path.read_bytes(), content_type)
        finally:
            path.unlink(missing_ok=True)
            folder.rmdir()


def _stream(handler: _Handler, data: bytes, content_type: str) -> None:
    """Send `data` chunk by chunk, as the streaming models do (no Content-Length)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for start in range(0, len(data), _CHUNK):
        chunk = data[start : start + _CHUNK]
        handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    handler.wfile.write(b"0\r\n\r\n")


def serve_speech_file(handler: _Handler, name: str, *, head: bool) -> None:
    """Serve a speech file made for an audio URL; download faults apply."""
    fault = handler.state.draw_fault("download")
    if fault is not None and fault.kind == "drop_connection":
        handler._drop()
        return
    if handler._apply_api_fault(fault):
        return
    files_dir = handler.emulator._files_dir
    path = files_dir / "speech" / name if files_dir and _FILE_NAME.fullmatch(name) else None
    if path is None or not path.is_file():
        handler._gateway_error(404, "The specified key does not exist.")
        return
    content_type = FORMATS[path.suffix.lstrip(".")][0]
    if not head:
        handler.state.record_tts_download()
    handler._send(200, path.read_bytes(), content_type=content_type, head=head)
