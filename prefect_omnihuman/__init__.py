"""Prefect integration for ByteDance OmniHuman 1.5 talking-avatar videos on the AI/ML API."""

from .client import AsyncOmniHumanClient, OmniHumanClient
from .credentials import AimlApiCredentials
from .models import Generation, Phase, VideoGenerationRequest

__all__ = [
    "AimlApiCredentials",
    "AsyncOmniHumanClient",
    "Generation",
    "OmniHumanClient",
    "Phase",
    "VideoGenerationRequest",
]
