"""Pictures of a video for a UI: a contact sheet of a few frames and a small thumbnail.

Both are small JPEGs (a few kB to a few tens of kB), cheap enough to inline in a
Prefect artifact as a `data:` URI, which the browser shows whatever storage holds
the video. PyAV decodes the frames (no ffmpeg binary); Pillow lays them out.

```python
from prefect_omnihuman.media.poster import data_uri, video_pictures

pictures = video_pictures("talk.mp4")          # 4 frames across the video
open("sheet.jpg", "wb").write(pictures.sheet)  # ~20-40 kB
markdown = f"![talk]({data_uri(pictures.thumbnail)})"
```
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from typing import IO

import av
from PIL import Image

from prefect_omnihuman.errors import InvalidVideoError

__all__ = ["VideoPictures", "data_uri", "video_pictures"]

#: Dark gap between the frames of a contact sheet, in pixels.
_GAP = 4
_GAP_COLOUR = (24, 24, 27)


@dataclass(frozen=True)
class VideoPictures:
    """JPEG bytes of a video's contact sheet and of its thumbnail (the middle frame)."""

    sheet: bytes
    thumbnail: bytes
    frames: int


def data_uri(jpeg: bytes) -> str:
    """A `data:image/jpeg;base64,...` URI that a browser shows without fetching anything."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def video_pictures(
    video: str | os.PathLike[str] | bytes | IO[bytes],
    *,
    frames: int = 4,
    sheet_height: int = 180,
    thumbnail_height: int = 64,
    quality: int = 70,
) -> VideoPictures:
    """Decode `frames` frames spread over the video and make a contact sheet and a thumbnail.

    Args:
        video: A local path, the MP4's bytes, or a seekable binary file (an fsspec file
            reads only the parts it needs).
        frames: How many frames the sheet shows, side by side.
        sheet_height: Height of the sheet in pixels; each frame keeps its aspect ratio.
        thumbnail_height: Height of the thumbnail in pixels.
        quality: JPEG quality (1-95).

    Raises:
        InvalidVideoError: The file has no decodable video frame.
    """
    pictures = _frames_at_fractions(video, [(i + 0.5) / frames for i in range(frames)])
    tiles = [_scaled(picture, sheet_height) for picture in pictures]
    width = sum(tile.width for tile in tiles) + _GAP * (len(tiles) - 1)
    sheet = Image.new("RGB", (width, sheet_height), _GAP_COLOUR)
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + _GAP
    thumbnail = _scaled(pictures[len(pictures) // 2], thumbnail_height)
    return VideoPictures(
        sheet=_jpeg(sheet, quality), thumbnail=_jpeg(thumbnail, quality), frames=len(pictures)
    )


def _frames_at_fractions(
    video: str | os.PathLike[str] | bytes | IO[bytes], fractions: list[float]
) -> list[Image.Image]:
    """One picture per fraction of the video's length; a short video repeats frames."""
    source: str | IO[bytes] = (
        io.BytesIO(video) if isinstance(video, bytes) else video  # type: ignore[assignment]
    )
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                raise InvalidVideoError("the file has no video track")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            length = _seconds(container, stream)
            pictures: list[Image.Image] = []
            for fraction in fractions:
                picture = _frame_near(container, stream, fraction * length)
                if picture is None and pictures:
                    picture = pictures[-1]
                if picture is not None:
                    pictures.append(picture)
    except InvalidVideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise InvalidVideoError(f"could not decode the video ({error})") from None
    if not pictures:
        raise InvalidVideoError("the video has no decodable frame")
    return pictures


def _seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _frame_near(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seconds: float
) -> Image.Image | None:
    """The first frame at or after `seconds` (seeking to the keyframe before it)."""
    if stream.time_base is not None and seconds > 0:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
    last = None
    for frame in container.decode(stream):
        last = frame
        if frame.time is None or frame.time >= seconds - 1e-3:
            break
    if last is None:
        return None
    picture: Image.Image = last.to_image()  # type: ignore[no-untyped-call]
    return picture


def _scaled(picture: Image.Image, height: int) -> Image.Image:
    width = max(1, round(picture.width * height / picture.height))
    return picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def _jpeg(picture: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()
