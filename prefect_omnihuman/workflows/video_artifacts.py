"""What a run shows in the Prefect UI and in the asset graph: a picture of the video, a
link to it, and its lineage.

**Pictures.** Prefect's UI renders markdown artifacts and artifact descriptions as
markdown, images included, in both its UIs (`/` and `/v2/`). The browser must fetch the
picture itself, so a `file://` or private `s3://` address shows nothing, and a presigned
URL stops working when it expires (7 days at most). The picture is therefore always
inlined as a small JPEG `data:` URI (a contact sheet of a few frames, ~20-40 kB; a
thumbnail of a few kB per batch row), which the UI shows whatever storage holds the
video and for as long as the artifact exists.

**Links to the video.** Per storage: a `public_base_url` gives a plain URL that never
expires; an S3-like store without one gives a presigned URL, with its expiry stated
beside it; a local file is named by its path (browsers do not open `file://` links from
a web page).

**Lineage.** The delivered video is declared a Prefect asset (`prefect.assets.materialize`)
keyed by its storage URI (`s3://bucket/videos/x.mp4`, `file:///abs/path.mp4`; never a
presigned URL), with the portrait and the voice track as upstream assets. Prefect Cloud
draws them as inputs -> video; an open-source server records the `prefect.asset.*`
events in its event feed. A delivery served from the record of an earlier run is not a
new materialization and emits nothing, as a `Cached` task does in Prefect.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prefect import task
from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.types.names import validate_valid_asset_key

from prefect_omnihuman.media.poster import VideoPictures, data_uri, video_pictures
from prefect_omnihuman.storage.media_storage import (
    SIGNABLE_PROTOCOLS,
    MediaStorage,
    Source,
    display_name,
    filesystem,
    is_http,
    is_local,
    local_path,
    protocol_of,
)

#: How long a presigned link to a video in an artifact stays valid: S3's maximum.
LINK_EXPIRY_SECONDS = 7 * 24 * 3600
#: A batch artifact inlines thumbnails for this many rows; later rows get links only,
#: so the artifact stays well under a megabyte.
MAX_INLINE_THUMBNAILS = 60


@task(name="picture-video", cache_policy=NO_CACHE, persist_result=False, retries=0)
def picture_video(location: str, storage: MediaStorage | None = None) -> VideoPictures | None:
    """A contact sheet and a thumbnail of the stored video, or None (with a warning).

    Reads the video where it was delivered (an fsspec file reads only the parts it
    needs). A picture is a nicety: no failure here fails the run.
    """
    options = storage.options_for(location) if storage and not is_local(location) else None
    try:
        if is_local(location):
            return video_pictures(local_path(location))
        fs, path = filesystem(location, options)
        with fs.open(path, "rb") as handle:
            return video_pictures(handle)
    except Exception as error:  # the picture must never cost the video
        get_run_logger().warning(
            "No picture of the video at %s for the UI (%s: %s)",
            display_name(location),
            type(error).__name__,
            error,
        )
        return None


def video_link(location: str, storage: MediaStorage | None = None) -> tuple[str, str]:
    """A link to the video for the UI, and a note on it (its expiry, say), per storage."""
    if is_local(location):
        return local_path(location).as_uri(), "a file on the machine that ran the flow"
    if is_http(location):
        return location, ""
    base = storage.base_url.rstrip("/") + "/" if storage else ""
    if storage and storage.public_base_url and location.startswith(base):
        relative = location[len(base) :]
        return f"{storage.public_base_url.rstrip('/')}/{quote(relative)}", ""
    if protocol_of(location) in SIGNABLE_PROTOCOLS:
        try:
            fs, path = filesystem(location, storage.options_for(location) if storage else None)
            signed: str = fs.sign(path, expiration=LINK_EXPIRY_SECONDS)
        except Exception:  # no credentials to sign with: name the object instead
            return location, ""
        expires = datetime.now(timezone.utc) + timedelta(seconds=LINK_EXPIRY_SECONDS)
        return signed, f"presigned link, expires {expires:%Y-%m-%d %H:%M} UTC"
    return location, ""


def poster_markdown(pictures: VideoPictures | None, location: str, link: tuple[str, str]) -> str:
    """The picture and the link, as the top of a run's summary artifact."""
    name = Path(display_name(location)).name or "video"
    href, note = link
    lines = []
    if pictures is not None:
        lines.append(f"![{_alt(name)}]({data_uri(pictures.sheet)})\n")
    lines.append(f"**Video**: [{name}]({href})" + (f" ({note})" if note else "") + "\n\n")
    return "\n".join(lines)


def card_description(pictures: VideoPictures | None, text: str) -> str:
    """An artifact description: the UI shows it (as markdown) on the run's Artifacts tab."""
    if pictures is None:
        return text
    return f"{text}\n\n![poster]({data_uri(pictures.thumbnail)})"


def batch_gallery(
    rows: list[tuple[int, str, str | None, str | None, tuple[str, str] | None]],
) -> str:
    """A markdown gallery of a batch: each row's thumbnail (the first rows) and video link.

    Each item is (row, status, location, thumbnail data URI, link); Prefect's table
    artifacts show pictures in the old UI only, so the gallery is markdown.
    """
    lines = ["# OmniHuman batch: the videos\n"]
    inlined = 0
    for row, status, location, thumbnail, link in rows:
        item = f"- **Row {row}** ({status})"
        if thumbnail and inlined < MAX_INLINE_THUMBNAILS:
            item += f" ![row {row}]({thumbnail})"
            inlined += 1
        if location and link:
            href, note = link
            name = Path(display_name(location)).name
            item += f" [{name}]({href})" + (f" ({note})" if note else "")
        lines.append(item)
    if inlined == MAX_INLINE_THUMBNAILS and len(rows) > inlined:
        lines.append(f"\nThumbnails are shown for the first {inlined} rows; the rest are links.")
    return "\n".join(lines) + "\n"


def _alt(text: str) -> str:
    return text.replace("[", "(").replace("]", ")")


def asset_key(source: Source | None, staged: str | None = None) -> str | None:
    """The asset key of a video or input: its storage URI, or None if it has none.

    Local paths become `file://` URIs; http(s) URLs lose their query (signatures);
    bytes are known by where they were staged (`staged`). Keys Prefect would refuse
    (a space in a path, say) give None: lineage is skipped, never the video.
    """
    if isinstance(source, bytes) or source is None:
        if not staged or staged == "inline":
            return None
        source = staged
    text = os.fspath(source)
    key = "file://" + local_path(text).as_posix() if is_local(text) else display_name(text)
    try:
        return validate_valid_asset_key(key)
    except ValueError:
        return None


def declare_video_asset(
    location: str,
    inputs: list[str | None],
    metadata: dict[str, Any],
    storage: MediaStorage | None = None,
) -> None:
    """Materialize the video as a Prefect asset with `inputs` (asset keys) upstream.

    Call it once per new delivery, from the flow that made the video.
    """
    key = asset_key(location)
    if key is None:
        get_run_logger().info(
            "No lineage for %s: it has no usable asset key", display_name(location)
        )
        return
    href, note = video_link(location, storage)
    # A presigned URL expires and carries a signature: only lasting URLs go in. No `url=None`:
    # Prefect 3.4 to 3.6 copies an explicit None into the event, which then fails to emit.
    lasting_url = {"url": href} if is_http(href) and not note else {}
    properties = AssetProperties(
        name=Path(display_name(location)).name,
        description="Talking-avatar video made by OmniHuman from the upstream portrait and voice",
        **lasting_url,
    )
    video = Asset(key=key, properties=properties)
    upstream = sorted({dep for dep in inputs if dep is not None and dep != key})
    record = materialize(
        video,
        asset_deps=list(upstream),
        name="materialize-video",
        cache_policy=NO_CACHE,
        persist_result=False,
    )(_record_video_metadata)
    record(key, metadata)


def _record_video_metadata(key: str, metadata: dict[str, Any]) -> None:
    add_asset_metadata(key, metadata)
