"""What the tasks and the flow return: small pydantic records that persist as JSON.

None of them holds a secret: no API key, no storage credentials, no presigned URL.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_omnihuman.api.models import Generation


class MediaCheck(BaseModel):
    """One validated input file."""

    source: str = Field(description="The input as named by the user (URL without query).")
    sha256: str = Field(description="Content hash; identical bytes share it.")
    size_bytes: int
    kind: str = Field(description="'image' or 'audio'.")
    format: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(default=None, description="Seconds, for audio.")


class CheckedInputs(BaseModel):
    """The image and audio after validation, ready to be staged and paid for."""

    image: MediaCheck
    audio: MediaCheck


def generation_fingerprint(
    inputs: CheckedInputs, *, model: str, params: dict[str, Any], service: str
) -> str:
    """The identity of a paid generation: input contents, model, parameters, service.

    Credentials are deliberately left out; the service URL is in, because a
    generation id from one service (an emulator, say) means nothing to another.
    """
    identity = {
        "image": inputs.image.sha256,
        "audio": inputs.audio.sha256,
        "model": model,
        "params": params,
        "service": service.rstrip("/"),
    }
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class StagedAsset(BaseModel):
    """An input the API can fetch: its URL is kept out of logs and persisted results."""

    url: str = Field(repr=False, description="URL for the API (may be presigned).")
    location: str | None = Field(default=None, description="Where it was staged, if copied.")
    uploaded: bool = False


LedgerStatus = Literal["submitted", "completed", "delivered", "failed", "ambiguous"]


class LedgerDelivery(BaseModel):
    """Where a paid generation's video was stored, and how to recognise the file there."""

    generation_id: str
    location: str
    stamp: str | None = None
    size_bytes: int
    duration: float
    width: int
    height: int
    delivered_at: float


class LedgerRecord(BaseModel):
    """What was paid for: one generation, as the ledger in the user's storage keeps it.

    Never holds a secret or a presigned URL: the video's temporary URL is fetched
    again from the API by id when needed.
    """

    fingerprint: str
    generation_id: str | None = Field(
        default=None, description="None only for an ambiguous submission (no answer came)."
    )
    model: str
    service: str = Field(description="The API root the generation was paid on.")
    audio_seconds: float | None = None
    status: LedgerStatus
    submitted_at: float
    completed_at: float | None = None
    delivered_at: float | None = None
    credits: float | None = None
    deliveries: list[LedgerDelivery] = Field(default_factory=list)
    suspected_duplicate: bool = Field(
        default=False,
        description="A worker that claimed these inputs died without recording an answer; "
        "it may have paid for a generation too.",
    )
    claim: int = Field(default=0, description="The claim this generation was paid under.")
    error: str | None = None

    def delivery_at(self, location: str) -> LedgerDelivery | None:
        """The recorded delivery to `location`, if any."""
        return next((d for d in self.deliveries if d.location == location), None)


class SubmittedGeneration(BaseModel):
    """A paid generation, persisted so re-runs reconnect to it instead of paying again."""

    generation: Generation
    fingerprint: str
    submitted_at: float = Field(description="Epoch seconds when it was accepted.")
    audio_seconds: float | None = None
    ledger: LedgerRecord | None = Field(
        default=None, description="Its record in the storage's ledger, when there is one."
    )
    reused: bool = Field(
        default=False, description="True when an earlier run (any worker) paid for it."
    )


class DeliveredVideo(BaseModel):
    """A finished video at its destination, checked to be playable."""

    generation_id: str
    location: str
    size_bytes: int
    duration: float
    width: int
    height: int
    stamp: str | None = Field(
        default=None, description="Identity of the stored file; changes if it is overwritten."
    )


class NarrationSegment(BaseModel):
    """One part of a narration too long for one generation: a generation of its own."""

    index: int
    start: float = Field(description="Seconds into the narration where the part starts.")
    end: float = Field(description="Seconds into the narration where the part ends.")
    generation_id: str
    credits_used: float | None = None
    cost_usd: float | None = Field(
        default=None, description="`credits_used` in US dollars, at the credentials' rate."
    )
    reused: bool = Field(description="True when this part's generation was paid for earlier.")
    cut: str | None = Field(
        default=None, description="How the part's end was chosen: pause, gap or forced."
    )


class OmniHumanResult(BaseModel):
    """What `omnihuman_video` returns: where the video is and what it cost.

    Example:
        ```python
        result = omnihuman_video(image="face.png", audio="voice.mp3", destination="out.mp4", ...)
        print(result.location, result.generation_id, result.credits_used, result.cost_usd)
        ```
    """

    generation_id: str
    location: str = Field(description="Where the video is stored (path or fsspec URL).")
    source_url: str | None = Field(
        default=None, description="The API's temporary video URL (expires)."
    )
    duration: float = Field(description="Video duration in seconds.")
    size_bytes: int
    credits_used: float | None = Field(
        default=None, description="Credits (or tokens) the API reported."
    )
    cost_usd: float | None = Field(
        default=None,
        description="`credits_used` in US dollars, at the credentials' `credits_per_usd`. "
        "When `reused`, an earlier run paid it and this run spent nothing.",
    )
    model: str
    fingerprint: str = Field(description="Identity of the inputs, model and parameters.")
    reused: bool = Field(description="True when no new generation was paid for.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per step.")
    segments: list[NarrationSegment] = Field(
        default_factory=list,
        description="For narrations split into parts (one paid generation each), the parts; "
        "generation_id is then the first part's.",
    )
    thumbnail: str | None = Field(
        default=None,
        repr=False,
        description="A small JPEG of the video's middle frame as a data: URI, for UIs.",
    )


class SynthesizedSpeech(BaseModel):
    """Speech made by `synthesize_speech`, stored, measured, and paid for once.

    Example:
        ```python
        speech = synthesize_speech("Welcome aboard!", credentials, storage)
        print(speech.location, speech.duration)
        ```
    """

    location: str = Field(description="Where the audio is stored (path or fsspec URL).")
    duration: float = Field(description="Seconds.")
    model: str
    voice: str | None
    sha256: str = Field(description="Content hash of the audio.")
    size_bytes: int
    fingerprint: str = Field(default="", description="Identity of text, model, voice, options.")


class PreparedAsset(BaseModel):
    """A portrait or voice track after `prepare_image` / `prepare_audio`."""

    location: str = Field(description="Where the prepared file is (path or fsspec URL).")
    changes: list[str] = Field(description="What preparation changed; empty if nothing.")
    kind: str = Field(description="'image' or 'audio'.")
    sha256: str
    size_bytes: int
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(default=None, description="Seconds, for audio.")


class StitchedVideo(BaseModel):
    """The parts' videos joined over the whole narration, checked and stored."""

    location: str
    size_bytes: int
    duration: float
    width: int
    height: int
    generation_ids: list[str]
    stamp: str | None = Field(
        default=None, description="Identity of the stored file; changes if it is overwritten."
    )
