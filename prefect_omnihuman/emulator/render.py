"""The emulator's stand-in for OmniHuman: a real, playable talking-head MP4.

No model runs here. The portrait is shown still while an animated mouth and a level bar
follow the voice's loudness frame by frame, so anyone watching can tell the audio drove the
video; the voice itself is the soundtrack (AAC), in sync and of the same length.

```python
from prefect_omnihuman.emulator.render import render_talking_video

info = render_talking_video("portrait.png", "voice.wav", "talking.mp4")
info.duration, info.video_codec, info.audio_codec  # (6.0, 'h264', 'aac')
```
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageOps

from prefect_omnihuman.media.probe import (
    MediaSource,
    VideoInfo,
    _decode_pcm,
    _label,
    _opened_image,
    probe_video,
)

__all__ = ["render_talking_video"]

# Mouth openings are drawn once per level and reused: per-frame work is a table lookup.
_LEVELS = 16
_SUPERSAMPLE = 4
_GATE_DB = 40.0  # frames this far below the voice's loud parts count as silence
_BACKGROUND = (255, 255, 255)
_LIP = (168, 66, 74)
_INSIDE = (64, 18, 26)
_TONGUE = (214, 104, 112)
_BAR_BACK = (30, 30, 36)
_BAR_FILL = (92, 214, 120)


def render_talking_video(
    image: MediaSource,
    audio: MediaSource,
    destination: str | os.PathLike[str],
    *,
    fps: int = 25,
    max_side: int = 512,
) -> VideoInfo:
    """Render the portrait "speaking" the audio to an H.264 + AAC MP4 and describe the result.

    The video has `round(audio_duration * fps)` frames, so it lasts as long as the audio
    (within one frame). The file appears at `destination` only once complete.

    Raises:
        InvalidImageError: The image cannot be decoded or has an unusable size.
        InvalidAudioError: The audio cannot be decoded or is empty.

    Example:
        >>> render_talking_video("portrait.png", "voice.mp3", "out.mp4", fps=25)  # doctest: +SKIP
        VideoInfo(duration=6.0, width=512, height=512, frame_rate=25.0, video_codec='h264', ...)
    """
    if fps < 1:
        raise ValueError("fps must be at least 1")
    if max_side < 64:
        raise ValueError("max_side must be at least 64 px")
    portrait = _load_portrait(image, max_side)
    pcm, rate = _decode_pcm(audio, _label(audio, None), sample_rate=_aac_rate, layout=None)
    n_frames = max(1, round(pcm.shape[1] * fps / rate))
    levels = _mouth_levels(pcm.mean(axis=0), rate, fps, n_frames)
    pictures = _level_pictures(portrait)

    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        _write_mp4(partial, pictures, levels, pcm, rate, fps)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return probe_video(target)


def _aac_rate(native: int) -> int:
    """The soundtrack's rate: 44.1 kHz for the 11.025 kHz family, else 48 kHz."""
    return 44100 if native % 11025 == 0 else 48000


def _load_portrait(source: MediaSource, max_side: int) -> Image.Image:
    """The upright RGB portrait, at most `max_side` px long, with even sides for yuv420p."""
    with _opened_image(source, _label(source, None)) as (image, _):
        upright = ImageOps.exif_transpose(image)
        if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
            rgba = upright.convert("RGBA")
            flat = Image.new("RGB", rgba.size, _BACKGROUND)
            flat.paste(rgba, mask=rgba.getchannel("A"))
        else:
            flat = upright.convert("RGB")
    scale = min(1.0, max_side / max(flat.size))
    width = max(2, int(flat.width * scale) // 2 * 2)
    height = max(2, int(flat.height * scale) // 2 * 2)
    if (width, height) == flat.size:
        return flat
    return flat.resize((width, height), Image.Resampling.LANCZOS)


def _mouth_levels(
    mono: npt.NDArray[np.float32], rate: int, fps: int, n_frames: int
) -> npt.NDArray[np.intp]:
    """Quantised mouth opening (0 = closed .. _LEVELS-1) for each video frame."""
    edges = np.round(np.arange(n_frames + 1) * rate / fps).astype(np.intp)
    edges = np.clip(edges, 0, mono.shape[0])
    squared = np.concatenate([[0.0], np.cumsum(mono.astype(np.float64) ** 2)])
    counts = np.maximum(np.diff(edges), 1)
    rms = np.sqrt(np.maximum(np.diff(squared[edges]), 0.0) / counts)
    db = 20 * np.log10(np.maximum(rms, 1e-9))
    # Relative to the voice's own loud parts, so quiet recordings still move the mouth.
    loud = float(np.percentile(db, 90))
    floor = max(loud - _GATE_DB, -60.0)
    opening = np.clip((db - floor) / max(loud - floor, 1e-6), 0.0, 1.0)
    # Open at once, close over a few frames, as lips do.
    smoothed = np.empty_like(opening)
    previous = 0.0
    for i, value in enumerate(opening):
        previous = value if value >= previous else 0.5 * previous + 0.5 * value
        smoothed[i] = previous
    levels: npt.NDArray[np.intp] = np.rint(smoothed * (_LEVELS - 1)).astype(np.intp)
    return levels


def _level_pictures(portrait: Image.Image) -> list[npt.NDArray[np.uint8]]:
    """One yuv420p picture per mouth level: the portrait with that mouth and level bar."""
    width, height = portrait.size
    unit = min(width, height)
    cx, cy = width / 2, height * 0.635
    half_w = max(3.0, 0.075 * unit)
    max_half_h = max(2.0, 0.045 * unit)
    pad = 2
    box = (
        int(cx - half_w) - pad,
        int(cy - max_half_h) - pad,
        int(cx + half_w) + pad + 1,
        int(cy + max_half_h) + pad + 1,
    )
    patch = portrait.crop(box)
    bar_h = max(4, round(0.018 * height))
    bar_y = height - bar_h - max(2, round(0.012 * height))
    bar_x0, bar_x1 = round(0.1 * width), round(0.9 * width)

    pictures: list[npt.NDArray[np.uint8]] = []
    for level in range(_LEVELS):
        opening = level / (_LEVELS - 1)
        frame = portrait.copy()
        frame.paste(_draw_mouth(patch, half_w, max_half_h, opening), box[:2])
        draw = ImageDraw.Draw(frame)
        draw.rectangle((bar_x0, bar_y, bar_x1, bar_y + bar_h), fill=_BAR_BACK)
        fill_to = bar_x0 + round((bar_x1 - bar_x0) * opening)
        if fill_to > bar_x0:
            draw.rectangle((bar_x0, bar_y, fill_to, bar_y + bar_h), fill=_BAR_FILL)
        video_frame = av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24").reformat(
            format="yuv420p"
        )
        pictures.append(np.ascontiguousarray(video_frame.to_ndarray()))
    return pictures


def _draw_mouth(
    patch: Image.Image, half_w: float, max_half_h: float, opening: float
) -> Image.Image:
    """The mouth patch at `opening` (0..1), antialiased by drawing large and shrinking."""
    k = _SUPERSAMPLE
    size = (patch.width * k, patch.height * k)
    cx, cy = size[0] / 2, size[1] / 2
    w = half_w * (1.0 - 0.1 * opening) * k  # lips narrow a little as they open
    lip = max(1.5, 0.22 * max_half_h) * k
    h = (0.12 * max_half_h + opening * (max_half_h - lip / k)) * k
    result = patch.copy()

    def layer(shape: tuple[float, float, float, float], colour: tuple[int, int, int]) -> None:
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).ellipse(shape, fill=255)
        small = mask.resize(patch.size, Image.Resampling.BOX)
        result.paste(Image.new("RGB", patch.size, colour), (0, 0), small)

    layer((cx - w, cy - h - lip, cx + w, cy + h + lip), _LIP)
    layer((cx - w + lip, cy - h, cx + w - lip, cy + h), _INSIDE)
    if opening > 0.3:
        layer((cx - w * 0.5, cy + h * 0.1, cx + w * 0.5, cy + h), _TONGUE)
    return result


def _write_mp4(
    path: str,
    pictures: list[npt.NDArray[np.uint8]],
    levels: npt.NDArray[np.intp],
    pcm: npt.NDArray[np.float32],
    rate: int,
    fps: int,
) -> None:
    height, width = pictures[0].shape[0] * 2 // 3, pictures[0].shape[1]
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        x264 = {"preset": "ultrafast", "tune": "stillimage", "crf": "23"}
        video = out.add_stream("libx264", rate=fps, options=x264)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=rate)
        sound.layout = layout
        sound.bit_rate = 96_000 if layout == "mono" else 160_000

        sent = 0
        for index, level in enumerate(levels):
            frame = av.VideoFrame.from_ndarray(pictures[level], format="yuv420p")
            frame.pts = index
            out.mux(video.encode(frame))
            # Keep the audio up with the video so the muxer can interleave as it goes.
            upto = min(pcm.shape[1], round((index + 1) * rate / fps))
            if upto > sent:
                out.mux(sound.encode(_audio_frame(pcm, sent, upto, rate, layout)))
                sent = upto
        if sent < pcm.shape[1]:
            out.mux(sound.encode(_audio_frame(pcm, sent, pcm.shape[1], rate, layout)))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))


def _audio_frame(
    pcm: npt.NDArray[np.float32], start: int, end: int, rate: int, layout: str
) -> av.AudioFrame:
    """Samples `start:end` as a frame; PyAV re-cuts them to the AAC encoder's frame size."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm[:, start:end]), format="fltp", layout=layout
    )
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame
