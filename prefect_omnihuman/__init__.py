"""Prefect integration for ByteDance OmniHuman 1.5 talking-avatar videos on the AI/ML API."""

from .client import AsyncOmniHumanClient, OmniHumanClient
from .credentials import AimlApiCredentials
from .flows import omnihuman_video
from .models import Generation, Phase, VideoGenerationRequest
from .results import OmniHumanResult
from .storage import MediaStorage
from .tasks import download_video, poll_generation, submit_generation, upload_asset, validate_inputs

__all__ = [
    "AimlApiCredentials",
    "AsyncOmniHumanClient",
    "Generation",
    "MediaStorage",
    "OmniHumanClient",
    "OmniHumanResult",
    "Phase",
    "VideoGenerationRequest",
    "download_video",
    "omnihuman_video",
    "poll_generation",
    "submit_generation",
    "upload_asset",
    "validate_inputs",
]
