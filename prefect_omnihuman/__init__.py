"""Prefect integration for ByteDance OmniHuman 1.5 talking-avatar videos on the AI/ML API."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .cli_server import start_server_early

# Run as the `omnihuman` command: its temporary Prefect server boots while the command imports.
start_server_early()

if TYPE_CHECKING:
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

# The public names load on first use (PEP 562): importing the package, or `omnihuman --help`,
# does not pay seconds of Prefect imports; each command imports what it uses.
_EXPORTS = {
    "AimlApiCredentials": ".workflows.credentials",
    "AsyncOmniHumanClient": ".api.client",
    "BatchResult": ".batch.batch_flow",
    "DEFAULT_TTS_MODEL": ".api.models",
    "Generation": ".api.models",
    "MediaStorage": ".storage.media_storage",
    "OmniHumanClient": ".api.client",
    "OmniHumanResult": ".results",
    "Phase": ".api.models",
    "RowOutcome": ".batch.batch_flow",
    "SynthesizedSpeech": ".results",
    "VideoGenerationRequest": ".api.models",
    "download_video": ".workflows.generation_tasks",
    "omnihuman_batch": ".batch.batch_flow",
    "omnihuman_narrated_video": ".workflows.video_flows",
    "omnihuman_video": ".workflows.video_flows",
    "poll_generation": ".workflows.generation_tasks",
    "prepare_audio": ".workflows.speech_and_prep_tasks",
    "prepare_image": ".workflows.speech_and_prep_tasks",
    "submit_generation": ".workflows.generation_tasks",
    "synthesize_speech": ".workflows.speech_and_prep_tasks",
    "upload_asset": ".workflows.generation_tasks",
    "validate_inputs": ".workflows.generation_tasks",
}


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


if not TYPE_CHECKING:  # type checkers see the imports above, and flag unknown names

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
