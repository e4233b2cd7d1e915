"""Prefect integration for ByteDance OmniHuman 1.5 talking-avatar videos on the AI/ML API."""

from .batch import BatchResult, RowOutcome, omnihuman_batch
from .client import AsyncOmniHumanClient, OmniHumanClient
from .credentials import AimlApiCredentials
from .flows import omnihuman_narrated_video, omnihuman_video
from .input_tasks import prepare_audio, prepare_image, synthesize_speech
from .models import DEFAULT_TTS_MODEL, Generation, Phase, VideoGenerationRequest
from .results import OmniHumanResult, SynthesizedSpeech
from .storage import MediaStorage
from .tasks import download_video, poll_generation, submit_generation, upload_asset, validate_inputs

__all__ = [
    "DEFAULT_TTS_MODEL",
    "AimlApiCredentials",
    "AsyncOmniHumanClient",
    "BatchResult",
    "Generation",
    "MediaStorage",
    "OmniHumanClient",
    "OmniHumanResult",
    "Phase",
    "RowOutcome",
    "SynthesizedSpeech",
    "VideoGenerationRequest",
    "download_video",
    "omnihuman_batch",
    "omnihuman_narrated_video",
    "omnihuman_video",
    "poll_generation",
    "prepare_audio",
    "prepare_image",
    "submit_generation",
    "synthesize_speech",
    "upload_asset",
    "validate_inputs",
]
