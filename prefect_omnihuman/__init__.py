"""Prefect integration for ByteDance OmniHuman 1.5 talking-avatar videos on the AI/ML API."""
# ruff: noqa: E402  (the `omnihuman` command starts its server before the imports)

from .cli_server import start_server_early

# Run as the `omnihuman` command: its temporary Prefect server boots during the imports below.
start_server_early()

from .api.client import AsyncOmniHumanClient, OmniHumanClient
from .api.models import DEFAULT_TTS_MODEL, Generation, Phase, VideoGenerationRequest
from .batch.batch_flow import BatchResult, RowOutcome, omnihuman_batch
from .results import OmniHumanResult, SynthesizedSpeech
from .storage.media_storage import MediaStorage
from .workflows.credentials import AimlApiCredentials
from .workflows.generation_tasks import (
    download_video,
    poll_generation,
    submit_generation,
    upload_asset,
    validate_inputs,
)
from .workflows.speech_and_prep_tasks import prepare_audio, prepare_image, synthesize_speech
from .workflows.video_flows import omnihuman_narrated_video, omnihuman_video

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
