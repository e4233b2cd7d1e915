"""Blocks as code: create or update the OmniHuman blocks on a Prefect server from the environment.

Run it in CI/CD against the server (`PREFECT_API_URL`, and `PREFECT_API_KEY` for Cloud):

    AIMLAPI_API_KEY=... OMNIHUMAN_STORAGE_URL=s3://bucket/omnihuman python blocks/create_blocks.py

It is idempotent: a block that already holds these values is left untouched (and
reported `unchanged`), so running it twice changes nothing the second time.

- `AIMLAPI_API_KEY` (required): `AimlApiCredentials.api_key`;
- `AIMLAPI_BASE_URL`: its `base_url` (default: the real API);
- `OMNIHUMAN_CREDENTIALS_BLOCK`: the credentials block's name (default `aimlapi`);
- `OMNIHUMAN_STORAGE_URL`: `MediaStorage.base_url` (no storage block when unset);
- `OMNIHUMAN_STORAGE_PUBLIC_URL`: its `public_base_url`;
- `OMNIHUMAN_STORAGE_BLOCK`: the storage block's name (default `omnihuman-media`);
- `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: `storage_options` key,
  secret and token; `AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`: its `client_kwargs`.

Without `AWS_*` keys, `storage_options` stays empty and each worker uses its own
AWS credentials (instance role, environment). Secrets are never printed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from prefect_omnihuman import AimlApiCredentials, MediaStorage


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def storage_options_from_env() -> dict[str, Any]:
    """s3fs options from the standard AWS variables (empty when none is set)."""
    options: dict[str, Any] = {}
    for variable, option in (
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ):
        if _env(variable):
            options[option] = _env(variable)
    client_kwargs = {
        option: _env(variable)
        for variable, option in (
            ("AWS_ENDPOINT_URL", "endpoint_url"),
            ("AWS_DEFAULT_REGION", "region_name"),
        )
        if _env(variable)
    }
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def desired_blocks() -> dict[str, Block]:
    """The blocks the environment describes, by name."""
    key = _env("AIMLAPI_API_KEY")
    if key is None:
        raise SystemExit("AIMLAPI_API_KEY is not set: export the AI/ML API key first")
    credentials = AimlApiCredentials(api_key=SecretStr(key))
    if _env("AIMLAPI_BASE_URL"):
        credentials.base_url = os.environ["AIMLAPI_BASE_URL"].strip()
    blocks: dict[str, Block] = {
        _env("OMNIHUMAN_CREDENTIALS_BLOCK") or "aimlapi": credentials,
    }
    storage_url = _env("OMNIHUMAN_STORAGE_URL")
    if storage_url:
        blocks[_env("OMNIHUMAN_STORAGE_BLOCK") or "omnihuman-media"] = MediaStorage(
            base_url=storage_url,
            public_base_url=_env("OMNIHUMAN_STORAGE_PUBLIC_URL"),
            storage_options=storage_options_from_env(),
        )
    return blocks


def _values(block: Block) -> dict[str, Any]:
    """A block's field values, secrets revealed, for comparison only (never printed)."""
    dumped = block.model_dump(mode="json", context={"include_secrets": True})
    return {name: dumped.get(name) for name in type(block).model_fields}


def apply(name: str, block: Block) -> str:
    """Save `block` as `name` unless an identical one exists: created, updated or unchanged."""
    try:
        existing = type(block).load(name)
    except (ObjectNotFound, ValueError):
        existing = None
    if existing is not None and _values(existing) == _values(block):
        return "unchanged"
    block.save(name, overwrite=True)
    return "created" if existing is None else "updated"


def main() -> int:
    """Create or update every block; print one line per block."""
    for name, block in desired_blocks().items():
        outcome = apply(name, block)
        print(f"{outcome}: {block.get_block_type_slug()}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
