"""What a run leaves in Prefect: a picture of the video in its artifacts, and its lineage
as asset events (a throwaway Prefect server, the emulator over HTTP, moto's S3)."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from prefect_omnihuman import AimlApiCredentials, MediaStorage, OmniHumanResult, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.workflows.video_artifacts import (
    MAX_INLINE_THUMBNAILS,
    asset_key,
    batch_gallery,
)

from ..conftest import FAST_POLL, S3, TEST_KEY, read_events

pytestmark = pytest.mark.usefixtures("prefect_api")

DATA_URI = re.compile(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)")
MATERIALIZED = "prefect.asset.materialization.succeeded"


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[MediaStorage]:
    """A local staging folder published over loopback HTTP, like a bucket behind a CDN."""
    folder = tmp_path / "staging"
    folder.mkdir()
    with AssetHost(folder) as host:
        yield MediaStorage(base_url=str(folder), public_base_url=host.url)


def _run(emulator: Emulator, **kwargs: Any) -> tuple[OmniHumanResult, UUID]:
    state = omnihuman_video(
        credentials=AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url),
        polling=FAST_POLL,
        return_state=True,
        **kwargs,
    )
    return state.result(), state.state_details.flow_run_id  # type: ignore[return-value]


def _markdown_artifact(flow_run_id: UUID) -> tuple[str, str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    (summary,) = [a for a in artifacts if "# OmniHuman video" in str(a.data)]
    return str(summary.data), str(summary.description)


def _jpeg_of(text: str) -> Image.Image:
    match = DATA_URI.search(text)
    assert match, text[:300]
    return Image.open(io.BytesIO(base64.b64decode(match.group(1))))


def _materializations(key: str, expected: int, wait: float = 20.0) -> list[Any]:
    """The asset events of `key` in the server's event feed (events arrive asynchronously)."""
    query = EventFilter(
        event=EventNameFilter(prefix=["prefect.asset."]),
        resource=EventResourceFilter(id=[key]),
    )
    deadline = time.monotonic() + wait
    while True:
        events = [e for e in read_events(query) if e.event == MATERIALIZED]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_the_summary_shows_a_contact_sheet_and_the_card_a_thumbnail(
    emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    destination = tmp_path / "videos" / "poster.mp4"
    result, run_id = _run(
        emulator,
        image=str(samples / "portrait.png"),
        audio=(samples / "voice.wav").read_bytes(),
        destination=str(destination),
        storage=staging,
    )
    markdown, description = _markdown_artifact(run_id)

    sheet = _jpeg_of(markdown)
    assert sheet.format == "JPEG" and sheet.height == 180 and sheet.width > 3 * 180
    assert len(markdown) < 80_000
    assert f"[poster.mp4]({destination.as_uri()})" in markdown
    card = _jpeg_of(description)
    assert card.height == 64 and description.startswith("OmniHuman generation ")
    assert result.thumbnail and _jpeg_of(result.thumbnail).size == card.size


def test_the_delivered_video_is_an_asset_with_its_inputs_upstream(
    emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    destination = tmp_path / "videos" / "lineage.mp4"
    arguments: dict[str, Any] = {
        "image": str(samples / "portrait.png"),
        "audio": (samples / "voice.wav").read_bytes(),
        "destination": str(destination),
        "storage": staging,
    }
    result, _ = _run(emulator, **arguments)
    key = "file://" + destination.as_posix()

    (event,) = _materializations(key, expected=1)
    upstream = {r.id for r in event.related if r.role == "asset"}
    # The portrait by its path, the voice (given as bytes) by where it was staged.
    assert "file://" + (samples / "portrait.png").as_posix() in upstream
    (voice,) = upstream - {"file://" + (samples / "portrait.png").as_posix()}
    assert voice.startswith("file://" + (tmp_path / "staging" / "inputs").as_posix())
    assert event.payload["generation_id"] == result.generation_id

    # The re-run delivers nothing new (its delivery is Cached): no new materialization.
    again, _ = _run(emulator, **arguments)
    assert again.reused
    time.sleep(3)
    assert len(_materializations(key, expected=2, wait=0)) == 1


def test_on_s3_the_key_is_the_object_uri_and_the_link_states_its_expiry(
    emulator: Emulator, samples: Path, s3: S3
) -> None:
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/ui-test", storage_options=s3.options)
    destination = f"s3://{s3.bucket}/ui-test/videos/s3-poster.mp4"
    _, run_id = _run(
        emulator,
        image=str(samples / "portrait.png"),
        audio=str(samples / "voice.mp3"),
        destination=destination,
        storage=storage,
    )
    markdown, _ = _markdown_artifact(run_id)
    assert _jpeg_of(markdown).height == 180
    assert re.search(r"\(presigned link, expires \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", markdown)

    (event,) = _materializations(destination, expected=1)
    assert event.resource.id == destination
    assert all("?" not in r.id for r in event.related)


def test_a_large_batch_inlines_the_first_thumbnails_and_links_the_rest() -> None:
    rows = [
        (
            n,
            "delivered",
            f"s3://b/out/{n}.mp4",
            "data:image/jpeg;base64,AAAA",
            (f"https://cdn/{n}", ""),
        )
        for n in range(1, MAX_INLINE_THUMBNAILS + 6)
    ]
    gallery = batch_gallery([*rows, (999, "failed", None, None, None)])
    assert gallery.count("data:image/jpeg;base64,") == MAX_INLINE_THUMBNAILS
    assert gallery.count("](https://cdn/") == MAX_INLINE_THUMBNAILS + 5
    assert "- **Row 999** (failed)\n" in gallery
    assert f"first {MAX_INLINE_THUMBNAILS} rows" in gallery


def test_asset_keys_are_storage_uris_never_signed_urls(tmp_path: Path) -> None:
    assert asset_key(str(tmp_path / "a.png")) == f"file://{tmp_path.as_posix()}/a.png"
    assert asset_key("s3://bucket/faces/ada.png") == "s3://bucket/faces/ada.png"
    assert asset_key("https://cdn.example/v.mp3?X-Amz-Signature=abc") == "https://cdn.example/v.mp3"
    assert asset_key(b"bytes", "s3://bucket/inputs/ab/abc.wav") == "s3://bucket/inputs/ab/abc.wav"
    assert asset_key(b"bytes", "inline") is None
    # Prefect refuses spaces in keys: no lineage rather than a failed run.
    assert asset_key(str(tmp_path / "my face.png")) is None
