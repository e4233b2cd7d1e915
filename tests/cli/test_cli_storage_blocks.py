"""`omnihuman generate --storage-block s3-bucket/NAME`: a saved prefect-aws block, no AWS_* set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prefect_omnihuman.emulator import Emulator

from ..conftest import S3, TEST_KEY
from ..storage.test_prefect_blocks import s3_bucket
from .test_cli import run_generate


def environment_without_aws(prefect_api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "AIMLAPI_API_KEY": TEST_KEY, "PREFECT_API_URL": prefect_api}


def test_generate_stages_and_delivers_through_a_saved_s3_bucket_block(
    prefect_api: str, emulator: Emulator, samples: Path, s3: S3
) -> None:
    s3_bucket(s3, folder="cli-team-media").save("cli-team-media", overwrite=True)
    destination = f"s3://{s3.bucket}/cli-team-media/videos/ada.mp4"
    result = run_generate(
        "--image", str(samples / "portrait.png"), "--audio", str(samples / "voice.wav"),
        "--out", destination, "--storage-block", "s3-bucket/cli-team-media",
        "--base-url", emulator.url, "--max-poll-interval", "0.3",
        env=environment_without_aws(prefect_api),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == destination
    fs = s3.fs()
    with fs.open(destination, "rb") as handle:
        assert handle.read(12)[4:8] == b"ftyp"
    staged = fs.find(f"{s3.bucket}/cli-team-media/inputs")
    assert sorted(Path(key).suffix for key in staged) == [".png", ".wav"]
    fetched = [url for url in emulator.stats().fetched_urls if url.startswith(s3.endpoint)]
    assert len(fetched) == 2 and all(s3.key_id in url for url in fetched)


def test_generate_with_a_block_type_that_cannot_store_says_which_can(
    prefect_api: str, emulator: Emulator, samples: Path, tmp_path: Path
) -> None:
    result: subprocess.CompletedProcess[str] = run_generate(
        "--image", str(samples / "portrait.png"), "--audio", str(samples / "voice.wav"),
        "--out", str(tmp_path / "x.mp4"), "--storage-block", "gcs-bucket/media",
        "--base-url", emulator.url,  # reachable, so the block is what fails
        env=environment_without_aws(prefect_api),
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "gcs-bucket" in lines[-1] and "s3-bucket" in lines[-1]
    assert "Traceback" not in result.stderr
