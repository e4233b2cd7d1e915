"""Text-to-speech in front: the emulated /v1/tts, the client, the paid-once task, the flow."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prefect import flow

from prefect_omnihuman import (
    AimlApiCredentials,
    MediaStorage,
    OmniHumanClient,
    SynthesizedSpeech,
    omnihuman_narrated_video,
    synthesize_speech,
)
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    InputError,
    InvalidAudioError,
    InvalidImageError,
    InvalidRequestError,
    SpeechDownloadError,
    StagingRequiredError,
)
from prefect_omnihuman.media.probe import probe_audio, probe_video
from prefect_omnihuman.media.samples import write_sample_portrait

from ..conftest import FAST_POLL, FAST_RETRY, TEST_KEY

SCRIPT = (
    "Hello, I am Ada, and I look after the robots here. "
    "Today I will show you around the workshop. Please follow me!"
)


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[MediaStorage]:
    """A local staging folder published over loopback HTTP, like a bucket behind a CDN."""
    folder = tmp_path / "staging"
    folder.mkdir()
    with AssetHost(folder) as host:
        yield MediaStorage(base_url=str(folder), public_base_url=host.url)


def credentials_for(emulator: Emulator) -> AimlApiCredentials:
    return AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("model", "style"),
    [
        ("openai/tts-1", "url"),
        ("deepgram/aura-2", "stream"),
        ("elevenlabs/eleven_multilingual_v2", "stream"),
    ],
)
def test_the_client_gets_real_audio_in_both_answer_styles(
    emulator: Emulator, tmp_path: Path, model: str, style: str
) -> None:
    with OmniHumanClient(TEST_KEY, base_url=emulator.url, retry=FAST_RETRY) as client:
        client.synthesize_speech("Hi there.", tmp_path / "short", model=model)
        long = client.synthesize_speech(SCRIPT, tmp_path / "long", model=model)
    assert (long.url is not None) == (style == "url")
    assert long.suffix == ".mp3" and long.size_bytes == (tmp_path / "long").stat().st_size
    # Words take time: about 2.5 a second, with the sentence pauses on top.
    assert (
        probe_audio(tmp_path / "short").duration
        < 2.5
        < 9.0
        < probe_audio(tmp_path / "long").duration
    )
    stats = emulator.stats()
    assert stats.accepted_tts == 2 and stats.accepted_tts_by_text[text_key(SCRIPT)] == 1
    assert stats.tts_downloads == (2 if style == "url" else 0)
    assert stats.accepted_posts == 0


def test_a_tts_post_is_retried_only_when_provably_not_accepted(
    emulator: Emulator, tmp_path: Path
) -> None:
    with OmniHumanClient(TEST_KEY, base_url=emulator.url, retry=FAST_RETRY) as client:
        emulator.inject("rate_limit", route="tts")
        emulator.inject("server_error", route="tts", status=503)
        client.synthesize_speech("Once.", tmp_path / "once", model="deepgram/aura-2")
        assert emulator.stats().accepted_tts == 1

        for kind, status in (
            ("server_error", 500),
            ("lost_response", None),
            ("drop_connection", None),
        ):
            emulator.inject(kind, route="tts", status=status)
            with pytest.raises(AmbiguousSubmissionError):
                client.synthesize_speech("Maybe.", tmp_path / "maybe")
        with pytest.raises(InvalidRequestError, match="at most 2000 characters"):
            client.synthesize_speech("word " * 500, tmp_path / "long", model="deepgram/aura-2")
        with pytest.raises(InvalidRequestError, match="Invalid model"):
            client.synthesize_speech("Hi.", tmp_path / "x", model="acme/tts")
    stats = emulator.stats()
    # 1 + the lost answer (accepted, then lost); never a second try of an ambiguous POST.
    assert stats.accepted_tts == 2
    assert sum(stats.faults_injected.values()) == 5


class _BreaksOffMidStream(BaseHTTPRequestHandler):
    """Answers a TTS POST with 200 audio/mpeg, then hangs up a tenth of the way through."""

    posts = 0

    def do_POST(self) -> None:
        type(self).posts += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\xff\xfb" + b"\0" * 9998)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_speech_stream_that_breaks_off_is_ambiguous_and_not_retried(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BreaksOffMidStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        with (
            OmniHumanClient(TEST_KEY, base_url=base_url, retry=FAST_RETRY) as client,
            pytest.raises(AmbiguousSubmissionError, match="broke off"),
        ):
            client.synthesize_speech("Hello.", tmp_path / "cut.mp3", model="deepgram/aura-2")
    finally:
        server.shutdown()
        server.server_close()
    assert _BreaksOffMidStream.posts == 1


class _AnswersGarbage(BaseHTTPRequestHandler):
    """Answers a TTS POST with 200 audio/mpeg whose bytes are no audio at all."""

    posts = 0

    def do_POST(self) -> None:
        type(self).posts += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>this is not audio</html>" * 40
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_undecodable_paid_speech_is_reported_again_without_paying_again(
    prefect_api: str, staging: MediaStorage
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnswersGarbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    credentials = AimlApiCredentials(
        api_key=TEST_KEY, base_url=f"http://127.0.0.1:{server.server_address[1]}"
    )

    @flow
    def speak() -> SynthesizedSpeech:
        return synthesize_speech("Garbage in.", credentials, staging, model="deepgram/aura-2")

    try:
        for _ in range(2):
            with pytest.raises(InvalidAudioError, match="does not decode"):
                speak()
    finally:
        server.shutdown()
        server.server_close()
    assert _AnswersGarbage.posts == 1


def test_the_emulator_refuses_empty_text_and_a_wrong_key(emulator: Emulator) -> None:
    url = f"{emulator.url}/v1/tts"
    body = {"model": "openai/tts-1", "text": "   "}
    empty = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TEST_KEY}"})
    wrong = httpx.post(url, json={**body, "text": "Hi"}, headers={"Authorization": "Bearer nope"})
    assert empty.status_code == 400 and empty.json()["detail"][0]["loc"] == ["body", "text"]
    assert wrong.status_code == 401
    assert emulator.stats().rejected_tts == 2 and emulator.stats().accepted_tts == 0


def test_the_task_stores_the_speech_and_never_pays_twice_for_it(
    emulator: Emulator, prefect_api: str, staging: MediaStorage
) -> None:
    credentials = credentials_for(emulator)

    @flow
    def speak() -> SynthesizedSpeech:
        return synthesize_speech(SCRIPT, credentials, staging, model="openai/tts-1")

    first = speak()
    second = speak()
    assert first == second
    assert first.voice == "alloy"  # OpenAI models need a voice; the default one is recorded
    assert first.location.startswith(staging.url_for("speech/")) and first.location.endswith(".mp3")
    assert probe_audio(first.location).duration == pytest.approx(first.duration)
    assert hashlib.sha256(Path(first.location).read_bytes()).hexdigest() == first.sha256
    assert emulator.stats().accepted_tts == 1


def test_a_lost_tts_answer_is_not_paid_for_again_on_a_rerun(
    emulator: Emulator, prefect_api: str, staging: MediaStorage
) -> None:
    credentials = credentials_for(emulator)

    @flow
    def speak(force_new: bool = False) -> SynthesizedSpeech:
        task = (
            synthesize_speech.with_options(refresh_cache=True) if force_new else synthesize_speech
        )
        return task("Lost in the post.", credentials, staging, force_new=force_new)

    emulator.inject("lost_response", route="tts")
    with pytest.raises(AmbiguousSubmissionError):
        speak()
    with pytest.raises(AmbiguousSubmissionError, match="earlier run"):
        speak()
    assert emulator.stats().accepted_tts == 1
    assert speak(force_new=True).duration > 0
    assert emulator.stats().accepted_tts == 2


def test_speech_whose_download_keeps_failing_is_not_paid_for_twice(
    emulator: Emulator, prefect_api: str, staging: MediaStorage
) -> None:
    credentials = credentials_for(emulator)

    @flow
    def speak() -> SynthesizedSpeech:
        return synthesize_speech("Paid, then unreachable.", credentials, staging)

    # Every attempt of the GET: a paid speech's download gets twice the usual 6 tries.
    emulator.inject("rate_limit", route="download", times=12)
    with pytest.raises(SpeechDownloadError, match="charged"):
        speak()
    stats = emulator.stats()
    assert stats.accepted_tts == 1  # the task did not retry the paid POST
    assert stats.faults_injected == {"rate_limit/download": 12}


@pytest.mark.parametrize("tts_model", ["openai/gpt-4o-mini-tts", "deepgram/aura-2"])
def test_text_in_talking_video_out_through_either_answer_style(
    emulator: Emulator,
    prefect_api: str,
    samples: Path,
    tmp_path: Path,
    staging: MediaStorage,
    tts_model: str,
) -> None:
    arguments = {
        "text": SCRIPT,
        "image": str(samples / "portrait.png"),
        "destination": str(tmp_path / "ada.mp4"),
        "credentials": credentials_for(emulator),
        "storage": staging,
        "tts_model": tts_model,
        "voice": "nova",
        "polling": FAST_POLL,
    }
    result = omnihuman_narrated_video(**arguments)

    video = probe_video(tmp_path / "ada.mp4")
    assert video.video_codec == "h264" and video.audio_codec == "aac"
    assert 8.0 < video.duration < 12.0 and result.duration == pytest.approx(video.duration)
    stats = emulator.stats()
    assert stats.accepted_tts == 1 and stats.accepted_posts == 1
    assert stats.tts_downloads == (1 if tts_model.startswith("openai/") else 0)
    # The speech reached the API prepared: 44.1 kHz mono WAV, from the storage block.
    prepared = list((tmp_path / "staging" / "prepared" / "audio").iterdir())
    assert len(prepared) == 1 and probe_audio(prepared[0]).sample_rate == 44100

    again = omnihuman_narrated_video(**arguments)
    assert again.reused and again.generation_id == result.generation_id
    assert emulator.stats().accepted_tts == 1 and emulator.stats().accepted_posts == 1


def test_the_chained_flow_fails_before_paying_for_speech_when_it_cannot_finish(
    emulator: Emulator, prefect_api: str, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    write_sample_portrait(tmp_path / "thumb.png", size=100)
    common = {"credentials": credentials_for(emulator), "polling": FAST_POLL}
    face = str(samples / "portrait.png")
    with pytest.raises(StagingRequiredError):
        omnihuman_narrated_video(SCRIPT, face, str(tmp_path / "a.mp4"), **common)
    with pytest.raises(InputError, match="empty"):
        omnihuman_narrated_video("  ", face, str(tmp_path / "b.mp4"), storage=staging, **common)
    with pytest.raises(InvalidImageError, match="too small"):
        omnihuman_narrated_video(SCRIPT, str(tmp_path / "thumb.png"), storage=staging, **common)
    stats = emulator.stats()
    assert stats.accepted_tts + stats.rejected_tts + stats.accepted_posts == 0
