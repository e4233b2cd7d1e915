"""Prefect's own storage blocks as `MediaStorage`: S3Bucket, RemoteFileSystem, LocalFileSystem."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

from prefect_omnihuman import MediaStorage
from prefect_omnihuman.errors import InputError
from prefect_omnihuman.storage.media_storage import fetchable_url, stage_bytes
from prefect_omnihuman.storage.prefect_blocks import as_media_storage, load_storage_block

from ..conftest import S3


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS_* variables: whatever reaches S3 must come from the block."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    yield


def s3_bucket(s3: S3, folder: str = "team-media") -> S3Bucket:
    """A prefect-aws S3Bucket block for the moto bucket, as a user would configure it."""
    return S3Bucket(
        bucket_name=s3.bucket,
        bucket_folder=folder,
        credentials=AwsCredentials(
            aws_access_key_id=s3.key_id,
            aws_secret_access_key=s3.secret,
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint),
        ),
    )


def test_an_s3_bucket_becomes_its_folder_with_the_blocks_credentials(s3: S3) -> None:
    storage = as_media_storage(s3_bucket(s3, folder="/team-media/"))
    assert storage.base_url == f"s3://{s3.bucket}/team-media"
    assert storage.options() == {
        "key": s3.key_id,
        "secret": s3.secret,
        "client_kwargs": {"region_name": "us-east-1", "endpoint_url": s3.endpoint},
    }
    assert s3.secret not in repr(storage)
    root = S3Bucket(bucket_name=s3.bucket, credentials=AwsCredentials())
    assert as_media_storage(root).base_url == f"s3://{s3.bucket}"
    assert as_media_storage(root).options() == {}


@pytest.mark.usefixtures("no_aws_environment")
def test_an_s3_bucket_stages_and_presigns_with_its_own_keys(s3: S3) -> None:
    bucket = s3_bucket(s3)
    storage = as_media_storage(bucket)
    staged = stage_bytes(b"voice bytes", storage, suffix=".wav")
    assert staged.location.startswith(f"s3://{s3.bucket}/team-media/inputs/")
    signed_by = parse_qs(urlparse(staged.url).query)
    assert s3.key_id in (signed_by.get("AWSAccessKeyId") or signed_by["X-Amz-Credential"])[0]
    assert httpx.get(staged.url).content == b"voice bytes"
    # The block itself sees the object at the same place under its folder.
    relative = staged.location.removeprefix(f"s3://{s3.bucket}/team-media/")
    assert bucket.read_path(relative) == b"voice bytes"


@pytest.mark.usefixtures("no_aws_environment")
def test_a_remote_file_system_uses_its_basepath_and_settings(s3: S3) -> None:
    block = RemoteFileSystem(basepath=f"s3://{s3.bucket}/remote-fs", settings=s3.options)
    storage = as_media_storage(block)
    assert storage.base_url == f"s3://{s3.bucket}/remote-fs"
    staged = stage_bytes(b"portrait bytes", storage, suffix=".png")
    assert httpx.get(fetchable_url(staged.location, storage)).content == b"portrait bytes"
    # A path relative to the basepath: Prefect 3.4 joins a full URL onto the basepath again.
    assert block.read_path(staged.location.removeprefix(block.basepath)) == b"portrait bytes"


def test_a_local_file_system_is_its_absolute_basepath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert as_media_storage(LocalFileSystem(basepath="media")).base_url == str(tmp_path / "media")
    assert as_media_storage(LocalFileSystem()).base_url == str(tmp_path)


def test_other_blocks_are_refused_with_the_kinds_that_work() -> None:
    with pytest.raises(InputError, match=r"Secret block cannot stage.*S3Bucket"):
        as_media_storage(Secret(value="x"))


@pytest.mark.usefixtures("prefect_api")
def test_saved_blocks_load_by_slug_and_a_bare_name_is_a_media_storage(
    s3: S3, tmp_path: Path
) -> None:
    s3_bucket(s3).save("team-media", overwrite=True)
    LocalFileSystem(basepath=str(tmp_path / "local")).save("team-media", overwrite=True)
    MediaStorage(base_url=str(tmp_path / "plain")).save("team-media", overwrite=True)

    from_s3 = load_storage_block("s3-bucket/team-media")
    assert from_s3.base_url == f"s3://{s3.bucket}/team-media"
    assert from_s3.options()["client_kwargs"]["endpoint_url"] == s3.endpoint
    assert load_storage_block("local-file-system/team-media").base_url == str(tmp_path / "local")
    assert load_storage_block("team-media").base_url == str(tmp_path / "plain")
    assert load_storage_block("omnihuman-media-storage/team-media").base_url == str(
        tmp_path / "plain"
    )
    with pytest.raises(InputError, match=r"'gcs-bucket' cannot stage.*s3-bucket"):
        load_storage_block("gcs-bucket/team-media")


def test_an_s3_bucket_name_without_prefect_aws_names_the_extra_to_install() -> None:
    # A fresh interpreter in which prefect_aws cannot be imported, as without the extra.
    script = (
        "import sys; sys.modules['prefect_aws'] = None\n"
        "from prefect_omnihuman.storage.prefect_blocks import load_storage_block\n"
        "try:\n    load_storage_block('s3-bucket/team-media')\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.startswith("InputError")
    assert "pip install 'prefect-omnihuman[aws]'" in result.stdout
