"""Pictures of a delivered video: the contact sheet shows frames from across the video."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from prefect_omnihuman.errors import InvalidVideoError
from prefect_omnihuman.media.poster import data_uri, video_pictures

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 20)]


def _striped_video(path: Path, *, seconds_per_colour: int = 1, fps: int = 10) -> Path:
    """An H.264 MP4 (320x240) whose picture changes colour every second."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for colour in COLOURS:
            picture = np.full((240, 320, 3), colour, dtype=np.uint8)
            for _ in range(seconds_per_colour * fps):
                for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _close(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel, colour, strict=False))


def test_the_sheet_shows_one_frame_from_each_part_of_the_video(tmp_path: Path) -> None:
    video = _striped_video(tmp_path / "stripes.mp4")
    pictures = video_pictures(video, frames=4, sheet_height=120)

    sheet = Image.open(io.BytesIO(pictures.sheet))
    assert sheet.format == "JPEG" and sheet.height == 120
    tile = 160  # 320x240 scaled to a height of 120
    assert sheet.width == 4 * tile + 3 * 4
    for index, colour in enumerate(COLOURS):
        centre = sheet.getpixel((index * (tile + 4) + tile // 2, 60))
        assert isinstance(centre, tuple) and _close(centre, colour), (index, centre)
    assert len(pictures.sheet) < 60_000

    thumbnail = Image.open(io.BytesIO(pictures.thumbnail))
    assert thumbnail.size == (85, 64)
    assert len(pictures.thumbnail) < 6_000


def test_bytes_and_open_files_work_like_paths(tmp_path: Path) -> None:
    video = _striped_video(tmp_path / "stripes.mp4")
    from_path = video_pictures(video, frames=2)
    assert video_pictures(video.read_bytes(), frames=2).sheet == from_path.sheet
    with video.open("rb") as handle:
        assert video_pictures(handle, frames=2).sheet == from_path.sheet


def test_data_uri_round_trips_the_jpeg() -> None:
    uri = data_uri(b"\xff\xd8jpeg")
    assert uri.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"\xff\xd8jpeg"


def test_a_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InvalidVideoError):
        video_pictures(junk)
