"""The flows take the storage blocks users already have: S3Bucket, RemoteFileSystem,
LocalFileSystem, as objects or saved blocks named `block-type-slug/name`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from prefect_omnihuman import AimlApiCredentials, omnihuman_batch, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.media.probe import probe_video

from ..conftest import FAST_POLL, S3, TEST_KEY
from ..storage.test_prefect_blocks import s3_bucket

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_* variables: whatever reaches S3 must come from the block."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)


def credentials_for(emulator: Emulator) -> AimlApiCredentials:
    return AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)


def signed_fetches(emulator: Emulator, s3: S3) -> list[str]:
    return [url for url in emulator.stats().fetched_urls if url.startswith(s3.endpoint)]


def test_an_s3_bucket_object_stages_local_files_and_receives_the_video(
    emulator: Emulator, samples: Path, s3: S3
) -> None:
    bucket = s3_bucket(s3, folder="flow-s3-bucket")
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.wav"),
        credentials=credentials_for(emulator),
        storage=bucket,
        polling=FAST_POLL,
    )
    prefix = f"s3://{s3.bucket}/flow-s3-bucket/videos/"
    assert result.location.startswith(prefix) and result.location.endswith(".mp4")
    fetched = signed_fetches(emulator, s3)
    assert len(fetched) == 2 and all(s3.key_id in url for url in fetched)
    video = bucket.read_path(result.location.removeprefix(f"s3://{s3.bucket}/flow-s3-bucket/"))
    assert video[4:8] == b"ftyp" and len(video) == result.size_bytes


def test_a_saved_s3_bucket_named_by_slug_as_a_deployment_parameter_would_be(
    emulator: Emulator, samples: Path, s3: S3
) -> None:
    s3_bucket(s3, folder="flow-saved").save("flow-saved", overwrite=True)
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.mp3"),
        credentials=credentials_for(emulator),
        storage="s3-bucket/flow-saved",
        polling=FAST_POLL,
    )
    assert result.location.startswith(f"s3://{s3.bucket}/flow-saved/videos/")
    assert s3.fs().size(result.location) == result.size_bytes


def test_a_remote_file_system_object_stages_and_delivers(
    emulator: Emulator, samples: Path, s3: S3
) -> None:
    block = RemoteFileSystem(basepath=f"s3://{s3.bucket}/flow-remote", settings=s3.options)
    result = omnihuman_video(
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.wav"),
        credentials=credentials_for(emulator),
        storage=block,
        polling=FAST_POLL,
    )
    assert result.location.startswith(f"s3://{s3.bucket}/flow-remote/videos/")
    assert len(signed_fetches(emulator, s3)) == 2
    # A path relative to the basepath: Prefect 3.4 joins a full URL onto the basepath again.
    assert block.read_path(result.location.removeprefix(block.basepath))[4:8] == b"ftyp"


def test_a_local_file_system_object_receives_the_video(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    result = omnihuman_video(
        image=asset_host.url_for("portrait.png"),
        audio=asset_host.url_for("voice.wav"),
        credentials=credentials_for(emulator),
        storage=LocalFileSystem(basepath=str(tmp_path / "media")),
        polling=FAST_POLL,
    )
    delivered = Path(result.location)
    assert delivered.parent == tmp_path / "media" / "videos"
    assert abs(probe_video(delivered).duration - 3.0) <= 1 / 25 + 0.05


def test_a_batch_stages_and_delivers_through_an_s3_bucket(
    emulator: Emulator, samples: Path, s3: S3, tmp_path: Path
) -> None:
    manifest = tmp_path / "rows.csv"
    manifest.write_text(
        "image,audio,out\n"
        f"{samples / 'portrait.png'},{samples / 'voice.wav'},"
        f"s3://{s3.bucket}/flow-batch/videos/one.mp4\n"
    )
    result = omnihuman_batch(
        str(manifest),
        credentials=credentials_for(emulator),
        storage=s3_bucket(s3, folder="flow-batch"),
        polling=FAST_POLL,
    )
    assert not result.failures and len(result.rows) == 1
    assert s3.fs().exists(f"s3://{s3.bucket}/flow-batch/videos/one.mp4")
