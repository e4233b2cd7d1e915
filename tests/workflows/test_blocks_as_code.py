"""blocks/create_blocks.py: blocks from the environment, idempotent, secrets kept secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client

from prefect_omnihuman import AimlApiCredentials, MediaStorage

SCRIPT = Path(__file__).resolve().parents[2] / "blocks" / "create_blocks.py"
KEY = "sk-blocks-as-code-5d1e"
AWS_SECRET = "aws-secret-for-blocks-77"


def run_script(prefect_api: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIMLAPI_", "AWS_"))}
    env.update(PREFECT_API_URL=prefect_api, **variables)
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


def documents() -> dict[str, object]:
    """When each block document was last written, by name."""
    with get_client(sync_client=True) as client:
        return {
            name: client.read_block_document_by_name(name, slug).updated
            for name, slug in (
                ("ci-aimlapi", "aimlapi-credentials"),
                ("ci-media", "omnihuman-media-storage"),
            )
        }


def test_blocks_are_created_then_left_alone_then_updated(prefect_api: str) -> None:
    variables = {
        "AIMLAPI_API_KEY": KEY,
        "AIMLAPI_BASE_URL": "http://127.0.0.1:9/emulated",
        "OMNIHUMAN_CREDENTIALS_BLOCK": "ci-aimlapi",
        "OMNIHUMAN_STORAGE_BLOCK": "ci-media",
        "OMNIHUMAN_STORAGE_URL": "s3://ci-bucket/omnihuman",
        "AWS_ACCESS_KEY_ID": "AKIACI",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    first = run_script(prefect_api, **variables)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "created: aimlapi-credentials/ci-aimlapi",
        "created: omnihuman-media-storage/ci-media",
    ]
    credentials = AimlApiCredentials.load("ci-aimlapi")
    storage = MediaStorage.load("ci-media")
    assert credentials.api_key.get_secret_value() == KEY
    assert credentials.base_url == "http://127.0.0.1:9/emulated"
    assert storage.base_url == "s3://ci-bucket/omnihuman"
    assert storage.options() == {
        "key": "AKIACI",
        "secret": AWS_SECRET,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
    }
    stored = storage._block_document_id
    before = documents()

    second = run_script(prefect_api, **variables)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "unchanged: aimlapi-credentials/ci-aimlapi",
        "unchanged: omnihuman-media-storage/ci-media",
    ]
    assert documents() == before  # not even re-saved

    third = run_script(prefect_api, **{**variables, "AIMLAPI_API_KEY": KEY + "-rotated"})
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines() == [
        "updated: aimlapi-credentials/ci-aimlapi",
        "unchanged: omnihuman-media-storage/ci-media",
    ]
    rotated = AimlApiCredentials.load("ci-aimlapi")
    assert rotated.api_key.get_secret_value() == KEY + "-rotated"
    assert MediaStorage.load("ci-media")._block_document_id == stored
    for run in (first, second, third):
        assert KEY not in run.stdout + run.stderr and AWS_SECRET not in run.stdout + run.stderr


def test_without_a_key_it_says_what_to_set(prefect_api: str) -> None:
    run = run_script(prefect_api)
    assert run.returncode != 0 and "AIMLAPI_API_KEY" in run.stderr
