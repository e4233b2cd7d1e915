"""No secret in any log record, artifact, persisted result, flow-run record, CLI output or error.

The single-video flow, the batch flow (a voice row and a text row, so the narrated flow
and text-to-speech too) and the CLI run at DEBUG with S3 staging on moto; the CLI and a
second flow run use a wrong key, and their output and exception text are scanned.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker

from prefect_omnihuman import (
    AimlApiCredentials,
    BatchResult,
    MediaStorage,
    omnihuman_batch,
    omnihuman_video,
)
from prefect_omnihuman.emulator import Emulator
from prefect_omnihuman.errors import AuthenticationError
from prefect_omnihuman.media.samples import write_sample_voice

from ..conftest import FAST_POLL, S3, TEST_KEY

WRONG_KEY = "sk-wrong-but-still-secret-41c2"


@pytest.fixture
def debug_logging(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """DEBUG on every logger that could see a secret, captured by caplog."""
    names = ["", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect_omnihuman"]
    names += ["httpx", "httpcore", "s3fs", "botocore", "fsspec"]
    for name in names:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def everything_prefect_recorded() -> list[str]:
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        texts = [log.message for log in client.read_logs()]
        for artifact in client.read_artifacts():
            texts.append(f"{artifact.data} {artifact.description} {artifact.key}")
        for run in client.read_flow_runs():
            texts.append(f"{run.parameters} {run.state.message if run.state else ''}")
        for task_run in client.read_task_runs():
            texts.append(
                f"{task_run.task_inputs} {task_run.state.message if task_run.state else ''}"
            )
    return texts


def persisted_files() -> list[str]:
    home = Path(os.environ["PREFECT_HOME"])
    return [
        path.read_bytes().decode(errors="replace") for path in home.rglob("*") if path.is_file()
    ]


def run_batch_with_a_spoken_row(
    s3: S3,
    storage: MediaStorage,
    credentials: AimlApiCredentials,
    samples: Path,
    tmp_path: Path,
) -> BatchResult:
    """The batch flow over a manifest in S3: one voice row, one text row (the narrated flow)."""
    prefix = f"{s3.bucket}/secrets-batch"
    fs = s3.fs()
    fs.put_file(str(samples / "portrait.png"), f"{prefix}/ada.png")
    fs.put_file(str(write_sample_voice(tmp_path / "batch.wav", seconds=2.2)), f"{prefix}/ada.wav")
    rows = [
        "image,audio,text,out,voice,tts_model",
        "ada.png,ada.wav,,videos/voice.mp4,,",
        'ada.png,,"Hello, and welcome.",videos/text.mp4,nova,openai/tts-1',
    ]
    fs.pipe(f"{prefix}/batch.csv", ("\n".join(rows) + "\n").encode())
    state = omnihuman_batch(
        f"s3://{prefix}/batch.csv",
        credentials=credentials,
        storage=storage,
        concurrency=2,
        limit_name=f"omnihuman-secrets-{uuid.uuid4().hex[:8]}",
        polling=FAST_POLL,
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, BatchResult)
    return result


def test_no_secret_reaches_logs_artifacts_results_or_errors(
    prefect_api: str,
    emulator: Emulator,
    samples: Path,
    s3: S3,
    tmp_path: Path,
    debug_logging: pytest.LogCaptureFixture,
) -> None:
    caplog = debug_logging
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/secrets", storage_options=s3.options)
    arguments = {
        "image": str(samples / "portrait.png"),
        "audio": str(samples / "voice.wav"),
        "destination": f"s3://{s3.bucket}/secrets/video.mp4",
        "storage": storage,
        "polling": FAST_POLL,
    }
    credentials = AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)
    emulator.inject("rate_limit", route="post")
    emulator.inject("drop_connection", route="get")
    result = omnihuman_video(credentials=credentials, **arguments)
    batch = run_batch_with_a_spoken_row(s3, storage, credentials, samples, tmp_path)
    assert emulator.stats().accepted_tts == 1  # the text row went through text-to-speech
    errors: list[str] = []
    with pytest.raises(AuthenticationError) as caught:
        omnihuman_video(
            credentials=AimlApiCredentials(api_key=WRONG_KEY, base_url=emulator.url),
            **{
                **arguments,
                "audio": str(samples / "voice.mp3"),
                "destination": str(tmp_path / "x.mp4"),
            },
        )
    errors.append(f"{caught.value!r} {caught.value}")

    cli_voice = write_sample_voice(tmp_path / "cli-voice.wav", seconds=2.5)
    env = {
        **os.environ,
        **s3.env,
        "AIMLAPI_API_KEY": WRONG_KEY,
        "AIMLAPI_BASE_URL": emulator.url,
        "PREFECT_API_URL": prefect_api,
    }
    cli = subprocess.run(
        [
            str(Path(sys.executable).with_name("omnihuman")),
            "generate",
            "--image",
            str(samples / "portrait.png"),
            "--audio",
            str(cli_voice),
            "--out",
            str(tmp_path / "cli.mp4"),
            "--stage",
            f"s3://{s3.bucket}/secrets-cli",  # staged with the secret from the environment
            "--verbose",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1
    assert "AuthenticationError" in cli.stderr

    texts = [
        result.model_dump_json(),
        batch.model_dump_json(),
        repr(credentials),
        repr(storage),
        cli.stdout,
        cli.stderr,
        *errors,
        *(record.getMessage() for record in caplog.records),
        *(str(record.exc_info) for record in caplog.records if record.exc_info),
        *everything_prefect_recorded(),
        *persisted_files(),
    ]
    assert any(result.generation_id in text for text in texts)
    for secret in (TEST_KEY, WRONG_KEY, S3.secret):
        leaks = [text[:200] for text in texts if secret in text]
        assert not leaks, f"{secret[:6]}... leaked: {leaks[:3]}"
