"""The credentials block: the AI/ML API key, where the API lives, and clients built from them."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from prefect_omnihuman.api.client import DEFAULT_BASE_URL, AsyncOmniHumanClient, OmniHumanClient
from prefect_omnihuman.api.pricing import CREDITS_PER_USD
from prefect_omnihuman.errors import AuthenticationError

API_KEY_ENV = "AIMLAPI_API_KEY"
BASE_URL_ENV = "AIMLAPI_BASE_URL"

DOCUMENTATION_URL = "https://docs.aimlapi.com/api-references/video-models/bytedance/omnihuman-1.5"


class AimlApiCredentials(CredentialsBlock):
    """Credentials for the AI/ML API, which serves ByteDance OmniHuman 1.5.

    The key is stored as a secret: Prefect shows it masked, and no log line,
    repr or exception of this package contains it.

    Example:
        Load a saved block and generate a video:
        ```python
        from prefect_omnihuman import AimlApiCredentials

        credentials = AimlApiCredentials.load("BLOCK_NAME")
        with credentials.get_client() as client:
            generation = client.submit(image_url="https://...", audio_url="https://...")
        ```
    """

    _block_type_name: ClassVar[str] = "AIMLAPI Credentials"
    _block_type_slug: ClassVar[str] = "aimlapi-credentials"
    _documentation_url: ClassVar[Any] = DOCUMENTATION_URL

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The AI/ML API key, sent as a Bearer token.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="Root URL of the API; point it at an emulator for offline runs.",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one HTTP request may take before it counts as failed.",
    )
    credits_per_usd: float = Field(
        default=CREDITS_PER_USD,
        gt=0,
        title="Credits per USD",
        description="Credits one US dollar buys, to show costs in dollars; the API's "
        "published rate is 2,000,000. Change it if your account pays another rate.",
    )

    @classmethod
    def from_env(cls, *, base_url: str | None = None) -> AimlApiCredentials:
        """Credentials from `AIMLAPI_API_KEY` (and `AIMLAPI_BASE_URL` when set).

        Only used when asked for: a block never reads the environment by itself.
        """
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise AuthenticationError(
                f"{API_KEY_ENV} is not set: export your AI/ML API key, or load a saved "
                f"AimlApiCredentials block instead",
                status_code=401,
            )
        url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        return cls(api_key=SecretStr(key), base_url=url)

    def get_client(self, **kwargs: Any) -> OmniHumanClient:
        """A synchronous client; keyword arguments go to `OmniHumanClient`."""
        kwargs.setdefault("log", self.logger)
        return OmniHumanClient(self.api_key, base_url=self.base_url, timeout=self.timeout, **kwargs)

    def get_async_client(self, **kwargs: Any) -> AsyncOmniHumanClient:
        """An asynchronous client; keyword arguments go to `AsyncOmniHumanClient`."""
        kwargs.setdefault("log", self.logger)
        return AsyncOmniHumanClient(
            self.api_key, base_url=self.base_url, timeout=self.timeout, **kwargs
        )
