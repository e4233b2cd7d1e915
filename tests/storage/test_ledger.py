"""The ledger of paid generations: claims across workers, and the faults that stop a run."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from prefect_omnihuman import AimlApiCredentials, MediaStorage, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.errors import (
    ClaimWaitTimeoutError,
    InputError,
    LedgerRecordError,
    StorageError,
)
from prefect_omnihuman.media.input_checks import check_inputs
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.results import generation_fingerprint
from prefect_omnihuman.storage.ledger import Claim, GenerationLedger

from ..conftest import FAST_POLL, S3, TEST_KEY

pytestmark = pytest.mark.usefixtures("prefect_api")


def credentials_for(emulator: Emulator) -> AimlApiCredentials:
    return AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)


def s3_storage(s3: S3, prefix: str) -> MediaStorage:
    return MediaStorage(base_url=f"s3://{s3.bucket}/{prefix}", storage_options=s3.options)


def put_claim(ledger: GenerationLedger, fingerprint: str, *, host: str, age: float) -> None:
    now = time.time() - age
    claim = Claim(
        number=1, holder="other", host=host, pid=1, claimed_at=now, renewed_at=now,
        lease_seconds=ledger.lease_seconds,
    )  # fmt: skip
    ledger._write(ledger._claim_path(fingerprint, 1), claim.model_dump_json().encode())


def test_a_dead_workers_claim_is_taken_over_once_and_flagged_as_a_suspected_duplicate(
    s3: S3,
) -> None:
    ledger = GenerationLedger(s3_storage(s3, f"ledger-{uuid.uuid4().hex[:8]}"))
    fingerprint = uuid.uuid4().hex * 2
    put_claim(ledger, fingerprint, host="pod-that-died", age=ledger.lease_seconds + 1)
    first = ledger.reserve(fingerprint)
    assert first.claim is not None and first.claim.number == 2 and first.suspected_duplicate
    # A second worker finds claim 2 live (its holder is this process) and does not pay.
    ledger.wait_seconds = 0.5
    with pytest.raises(ClaimWaitTimeoutError, match=socket.gethostname()):
        ledger.reserve(fingerprint)


def test_a_live_claim_of_another_host_is_waited_for_not_paid(s3: S3) -> None:
    ledger = GenerationLedger(s3_storage(s3, f"ledger-{uuid.uuid4().hex[:8]}"))
    fingerprint = uuid.uuid4().hex * 2
    put_claim(ledger, fingerprint, host="busy-pod", age=0.0)
    ledger.wait_seconds = 0.6
    started = time.monotonic()
    with pytest.raises(ClaimWaitTimeoutError, match="busy-pod"):
        ledger.reserve(fingerprint)
    assert time.monotonic() - started < 5


def test_an_unparseable_record_stops_the_run_before_any_post(
    emulator: Emulator, samples: Path, s3: S3, tmp_path: Path
) -> None:
    storage = s3_storage(s3, f"bad-record-{uuid.uuid4().hex[:8]}")
    image, audio = samples / "portrait.png", samples / "voice.wav"
    checked = check_inputs(image, audio, None, None)
    fingerprint = generation_fingerprint(
        checked, model="bytedance/omnihuman/v1.5", params={}, service=emulator.url
    )
    ledger = GenerationLedger(storage)
    ledger._write(ledger._record_path(fingerprint), b'{"fingerprint": "truncated')
    with pytest.raises(LedgerRecordError, match=f"records/{fingerprint}.json"):
        omnihuman_video(
            image=image, audio=audio, destination=str(tmp_path / "out.mp4"),
            credentials=credentials_for(emulator), storage=storage,
        )  # fmt: skip
    assert emulator.stats().accepted_posts == 0
    assert not (tmp_path / "out.mp4").exists()


def test_a_missing_bucket_stops_the_run_before_any_post_naming_the_url(
    emulator: Emulator, samples: Path, s3: S3, tmp_path: Path
) -> None:
    storage = MediaStorage(base_url="s3://no-such-bucket-omnihuman/in", storage_options=s3.options)
    with pytest.raises(InputError) as raised:
        omnihuman_video(
            image=samples / "portrait.png", audio=samples / "voice.wav",
            destination=str(tmp_path / "out.mp4"), credentials=credentials_for(emulator),
            storage=storage,
        )  # fmt: skip
    message = str(raised.value)
    assert "s3://no-such-bucket-omnihuman/in" in message and "Fix:" in message
    assert len(message.splitlines()) == 1 and S3.secret not in message
    assert emulator.stats().accepted_posts == 0


def test_a_store_without_atomic_create_warns_once_and_still_delivers(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MediaStorage(base_url=f"memory://omnihuman-{uuid.uuid4().hex[:8]}")
    caplog.set_level(logging.WARNING, logger="prefect_omnihuman")
    result = omnihuman_video(
        image=f"{asset_host.url}/portrait.png", audio=f"{asset_host.url}/voice.wav",
        destination=str(tmp_path / "out.mp4"), credentials=credentials_for(emulator),
        storage=storage, polling=FAST_POLL,
    )  # fmt: skip
    assert probe_video(result.location).audio_codec == "aac"
    warnings = [r for r in caplog.records if "does not support exclusive create" in r.message]
    assert len(warnings) == 1 and storage.base_url in warnings[0].message
    # The record is still kept, for the spend report.
    (record,) = GenerationLedger(storage).records()
    assert record.generation_id == result.generation_id and record.status == "delivered"
    assert os.environ.get("OMNIHUMAN_LOCK_PATH") is None


def test_unreachable_storage_stops_the_run_before_any_post_naming_the_url_and_fix(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    from ..conftest import free_port

    options = {
        "key": "k", "secret": "unreachable-secret",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }  # fmt: skip
    storage = MediaStorage(base_url="s3://media/omnihuman", storage_options=options)
    with pytest.raises(StorageError) as raised:
        omnihuman_video(
            image=f"{asset_host.url}/portrait.png", audio=f"{asset_host.url}/voice.wav",
            destination=str(tmp_path / "out.mp4"), credentials=credentials_for(emulator),
            storage=storage,
        )  # fmt: skip
    message = str(raised.value)
    assert "s3://media/omnihuman/ledger" in message and "Fix:" in message
    assert len(message.splitlines()) == 1 and "unreachable-secret" not in message
    assert emulator.stats().accepted_posts == 0


def test_storage_without_credentials_stops_the_run_before_any_post(
    emulator: Emulator,
    asset_host: AssetHost,
    s3: S3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    options = {"client_kwargs": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"}}
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/no-creds", storage_options=options)
    with pytest.raises(InputError) as raised:
        omnihuman_video(
            image=f"{asset_host.url}/portrait.png", audio=f"{asset_host.url}/voice.wav",
            destination=str(tmp_path / "out.mp4"), credentials=credentials_for(emulator),
            storage=storage,
        )  # fmt: skip
    message = str(raised.value)
    assert f"s3://{s3.bucket}/no-creds/ledger" in message and "credentials" in message
    assert "Fix:" in message and len(message.splitlines()) == 1
    assert emulator.stats().accepted_posts == 0
