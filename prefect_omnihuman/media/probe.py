"""Probe, decode and generate the media OmniHuman works with, without an ffmpeg binary.

Images go through Pillow, audio and video through PyAV (which ships its own FFmpeg).
Every check raises an `InputError` subclass that names the file and says what to do,
so a bad input is caught before any credit is spent:

```python
from prefect_omnihuman.media.probe import check_audio_length, probe_audio, probe_image

probe_image("portrait.jpg")          # ImageInfo(width=1024, height=1280, format='JPEG', ...)
info = probe_audio("voice.mp3")      # AudioInfo(duration=12.48, sample_rate=44100, ...)
check_audio_length(info, name="voice.mp3")
```

The sample writers (the demo's and the tests' inputs) are in `samples.py`.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias

import av
import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from PIL import Image, UnidentifiedImageError

from prefect_omnihuman.api.models import MAX_AUDIO_SECONDS
from prefect_omnihuman.errors import (
    InputError,
    InvalidAudioError,
    InvalidImageError,
    InvalidVideoError,
)

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MIN_IMAGE_SIDE",
    "SILENT_PEAK_DBFS",
    "AudioInfo",
    "ImageInfo",
    "MediaSource",
    "VideoInfo",
    "check_audio_audible",
    "check_audio_length",
    "decode_audio",
    "probe_audio",
    "probe_image",
    "probe_video",
]

MediaSource: TypeAlias = str | os.PathLike[str] | bytes
"""A local path, or the raw bytes of a file."""

MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 50_000_000
#: A track whose loudest sample is quieter than this holds no voice to lip-sync. It is
#: below preparation's silence test (`prep`), so whatever this refuses, that refuses too.
SILENT_PEAK_DBFS = -70.0

_IMAGE_FIX = "Use a JPEG or PNG portrait with a clearly visible face."
_AUDIO_FIX = "Use a WAV, MP3, FLAC, M4A or OGG voice recording."

# EXIF orientations 5-8 rotate the picture by 90 degrees: width and height swap on display.
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ImageInfo:
    """What `probe_image` found. `width`/`height` are as displayed (EXIF orientation applied)."""

    width: int
    height: int
    format: str
    mode: str


@dataclass(frozen=True)
class AudioInfo:
    """What `probe_audio` found; `duration` is in seconds, exact to the sample.

    `peak` is the loudest sample's magnitude (1.0 = full scale), None when not measured.
    """

    duration: float
    sample_rate: int
    channels: int
    codec: str
    peak: float | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found; durations are in seconds."""

    duration: float
    width: int
    height: int
    frame_rate: float
    video_codec: str
    audio_codec: str | None
    audio_duration: float | None


# -- shared input handling ---------------------------------------------------------------------


def _label(source: MediaSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, bytes):
        return "<bytes>"
    return os.fspath(source)


def _check_present(
    source: MediaSource, label: str, error: type[InputError], kind: str, fix: str
) -> None:
    """Raise `error` for a missing path, a directory or an empty file/bytes."""
    if isinstance(source, bytes):
        if not source:
            raise error(f"the {kind} is empty (0 bytes).", source=label, fix=fix)
        return
    path = Path(os.fspath(source))
    if not path.exists():
        raise error(
            f"{kind} file not found.", source=label, fix="Check the path and that the file exists."
        )
    if path.is_dir():
        raise error(f"is a directory, not an {kind} file.", source=label, fix=fix)
    if path.stat().st_size == 0:
        raise error(f"the {kind} file is empty (0 bytes).", source=label, fix=fix)


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's words for a failure, without the errno and file name PyAV adds."""
    return exc.strerror or str(exc)


def _file_arg(source: MediaSource) -> Any:
    return io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)


# -- images ------------------------------------------------------------------------------------


def probe_image(source: MediaSource, *, name: str | None = None) -> ImageInfo:
    """Open and fully decode a portrait image; raise `InvalidImageError` if it is unusable.

    Args:
        source: A local path or the file's bytes.
        name: How to name the image in errors (defaults to the path, or "<bytes>").

    Example:
        >>> probe_image("portrait.png")  # doctest: +SKIP
        ImageInfo(width=512, height=512, format='PNG', mode='RGB')
    """
    with _opened_image(source, _label(source, name)) as (_, info):
        return info


@contextmanager
def _opened_image(source: MediaSource, label: str) -> Iterator[tuple[Image.Image, ImageInfo]]:
    """Yield a checked, fully decoded Pillow image and its `ImageInfo`."""
    _check_present(source, label, InvalidImageError, "image", _IMAGE_FIX)
    try:
        with warnings.catch_warnings():
            # Sizes are checked below with our own, friendlier limits.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(_file_arg(source))
    except UnidentifiedImageError:
        raise InvalidImageError(
            "is not an image Pillow can read (wrong format or not an image at all).",
            source=label,
            fix=_IMAGE_FIX,
        ) from None
    except Image.DecompressionBombError:
        raise _too_large(label) from None
    except OSError as exc:
        raise InvalidImageError(
            f"could not be read ({exc}).", source=label, fix=_IMAGE_FIX
        ) from exc

    with image:
        # Rotation by EXIF only swaps the sides, so the limits can be checked before decoding.
        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            raise InvalidImageError(
                f"is {width}x{height} px, too small to hold a face.",
                source=label,
                fix=f"Use a portrait at least {MIN_IMAGE_SIDE} px on each side "
                "(512 px or more works best).",
            )
        if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
            raise _too_large(label, f" ({width}x{height} px)")
        try:
            image.load()
            # Some formats (PNG) keep EXIF after the pixels: read it only once loaded.
            rotated = image.getexif().get(_EXIF_ORIENTATION) in _ROTATED_ORIENTATIONS
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            what = "is truncated" if "truncated" in str(exc) else "could not be decoded"
            raise InvalidImageError(
                f"{what}: the image data is damaged or incomplete ({exc}).",
                source=label,
                fix="Re-export or re-download the image, then try again.",
            ) from exc
        if rotated:
            width, height = height, width
        format_ = image.format or "unknown"
        yield image, ImageInfo(width=width, height=height, format=format_, mode=image.mode)


def _too_large(label: str, size: str = "") -> InvalidImageError:
    return InvalidImageError(
        f"is too large{size}.",
        source=label,
        fix=f"Scale it down to at most {MAX_IMAGE_SIDE} px per side and "
        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; 1-2 k px is plenty for a portrait.",
    )


# -- audio -------------------------------------------------------------------------------------


def _open_audio(source: MediaSource, label: str) -> tuple[InputContainer, av.AudioStream]:
    """Open `source` with PyAV and return it with its first audio stream."""
    _check_present(source, label, InvalidAudioError, "audio", _AUDIO_FIX)
    try:
        container = av.open(_file_arg(source), "r")
    except av.FFmpegError as exc:
        raise InvalidAudioError(
            f"is not an audio file FFmpeg can read ({_reason(exc)}).", source=label, fix=_AUDIO_FIX
        ) from exc
    if not container.streams.audio:
        container.close()
        raise InvalidAudioError("has no audio stream.", source=label, fix=_AUDIO_FIX)
    return container, container.streams.audio[0]


def _declared_seconds(container: InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _exact_duration(decoded: float, declared: float | None) -> float:
    """Reconcile the decoded sample count with what the container declares.

    Counting decoded samples is exact for WAV, FLAC, MP3 (gapless info is applied) and
    Ogg/Opus (whose declared length includes the pre-skip), but AAC decoders emit the
    padded last frame: an MP4's edit list declares the real, slightly shorter length.
    """
    if declared is not None and 0 < decoded - declared < 0.1:
        return declared
    return decoded


def probe_audio(source: MediaSource, *, name: str | None = None) -> AudioInfo:
    """Decode a voice track to measure it; raise `InvalidAudioError` if it is unusable.

    The whole track is decoded, so the duration is exact and damage is found now rather
    than by the API. The 30 s limit is not enforced here: see `check_audio_length`.

    Example:
        >>> probe_audio("voice.wav")  # doctest: +SKIP
        AudioInfo(duration=6.0, sample_rate=24000, channels=1, codec='pcm_s16le')
    """
    label = _label(source, name)
    container, stream = _open_audio(source, label)
    with container:
        decoded = Fraction(0)
        peak = 0.0
        try:
            for frame in container.decode(stream):
                decoded += Fraction(frame.samples, frame.sample_rate or stream.sample_rate)
                peak = max(peak, _peak(frame))
        except av.FFmpegError as exc:
            raise InvalidAudioError(
                f"could not be decoded ({_reason(exc)}).", source=label, fix=_AUDIO_FIX
            ) from exc
        if decoded <= 0:
            raise InvalidAudioError(
                "contains no audio samples (zero length).", source=label, fix=_AUDIO_FIX
            )
        return AudioInfo(
            duration=_exact_duration(float(decoded), _declared_seconds(container, stream)),
            sample_rate=stream.sample_rate,
            channels=stream.channels,
            codec=stream.codec.canonical_name,
            peak=peak,
        )


def _peak(frame: av.AudioFrame) -> float:
    """The largest sample magnitude in a decoded frame, as a fraction of full scale."""
    samples = frame.to_ndarray()
    if samples.size == 0:
        return 0.0
    if np.issubdtype(samples.dtype, np.floating):
        return float(np.max(np.abs(samples)))
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return float(np.max(np.abs(samples.astype(np.int16) - 128))) / 128
    full_scale = float(2 ** (8 * samples.dtype.itemsize - 1))  # signed PCM: s16, s32, s64
    return float(np.max(np.abs(samples.astype(np.int64)))) / full_scale


def check_audio_audible(info: AudioInfo, *, name: str) -> None:
    """Raise `InvalidAudioError` if the track holds only silence: no voice to lip-sync.

    The API would take it and charge for a video of a face that never speaks.

    Example:
        >>> check_audio_audible(probe_audio("voice.wav"), name="voice.wav")  # doctest: +SKIP
    """
    if info.peak is None or info.peak >= 10 ** (SILENT_PEAK_DBFS / 20):
        return
    level = 20 * math.log10(info.peak) if info.peak > 0 else -math.inf
    loudest = (
        "every sample is zero" if info.peak == 0 else f"its loudest sample is {level:.0f} dBFS"
    )
    raise InvalidAudioError(
        f"holds only silence ({loudest}): there is no voice to lip-sync.",
        source=name,
        fix="Check the recording has the voice in it (the right microphone, not muted).",
    )


def check_audio_length(info: AudioInfo, *, name: str, limit: float = MAX_AUDIO_SECONDS) -> None:
    """Raise `InvalidAudioError` unless the track is shorter than `limit` seconds.

    Example:
        >>> check_audio_length(probe_audio("voice.wav"), name="voice.wav")  # doctest: +SKIP
    """
    if info.duration >= limit:
        raise InvalidAudioError(
            f"is {info.duration:.2f} s long; OmniHuman accepts audio under {limit:g} s.",
            source=name,
            fix=f"Trim it or split it into parts under {limit:g} s.",
        )


def _decode_pcm(
    source: MediaSource,
    label: str,
    *,
    sample_rate: int | Callable[[int], int],
    layout: str | None,
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode to planar float32 `(channels, samples)`, clipped to [-1, 1]; return it and its rate.

    `sample_rate` is a rate, or a function choosing one from the source's own rate.
    `layout=None` keeps mono as mono and downmixes anything wider to stereo.
    """
    container, stream = _open_audio(source, label)
    with container:
        if callable(sample_rate):
            sample_rate = sample_rate(stream.sample_rate)
        if layout is None:
            layout = "mono" if stream.channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        chunks: list[npt.NDArray[np.float32]] = []
        decoded = Fraction(0)
        try:
            for frame in container.decode(stream):
                decoded += Fraction(frame.samples, frame.sample_rate or stream.sample_rate)
                chunks.extend(_planar(f) for f in resampler.resample(frame))
            chunks.extend(_planar(f) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise InvalidAudioError(
                f"could not be decoded ({_reason(exc)}).", source=label, fix=_AUDIO_FIX
            ) from exc
        declared = _declared_seconds(container, stream)
    channels = 1 if layout == "mono" else 2
    pcm = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if pcm.shape[1] == 0 or decoded <= 0:
        raise InvalidAudioError(
            "contains no audio samples (zero length).", source=label, fix=_AUDIO_FIX
        )
    exact = round(_exact_duration(float(decoded), declared) * sample_rate)
    pcm = np.ascontiguousarray(pcm[:, :exact], dtype=np.float32)
    np.clip(pcm, -1.0, 1.0, out=pcm)
    return pcm, sample_rate


def _planar(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    return np.asarray(frame.to_ndarray(), dtype=np.float32)


def decode_audio(source: MediaSource, *, sample_rate: int = 16000) -> npt.NDArray[np.float32]:
    """Decode any audio file to one mono float32 array in [-1, 1] at `sample_rate` Hz.

    Example:
        >>> samples = decode_audio("voice.mp3", sample_rate=16000)  # doctest: +SKIP
        >>> samples.shape, samples.dtype  # doctest: +SKIP
        ((96000,), dtype('float32'))
    """
    pcm, _ = _decode_pcm(source, _label(source, None), sample_rate=sample_rate, layout="mono")
    mono: npt.NDArray[np.float32] = pcm[0]
    return mono


# -- video -------------------------------------------------------------------------------------


def probe_video(source: str | os.PathLike[str]) -> VideoInfo:
    """Check that a file is a playable video and describe it; raise `InvalidVideoError` if not.

    At least one video frame must decode. `audio_codec`/`audio_duration` are None without
    an audio track.

    Example:
        >>> probe_video("talking.mp4")  # doctest: +SKIP
        VideoInfo(duration=6.0, width=512, height=512, frame_rate=25.0, video_codec='h264', ...)
    """
    label = os.fspath(source)
    path = Path(label)
    if not path.is_file():
        raise InvalidVideoError(f"{label}: video file not found.")
    if path.stat().st_size == 0:
        raise InvalidVideoError(f"{label}: the video file is empty (0 bytes).")
    try:
        container = av.open(label, "r")
    except av.FFmpegError as exc:
        raise InvalidVideoError(
            f"{label}: not a video file FFmpeg can read ({_reason(exc)})."
        ) from exc
    with container:
        if not container.streams.video:
            raise InvalidVideoError(f"{label}: the file has no video stream.")
        video = container.streams.video[0]
        try:
            has_frame = next(iter(container.decode(video)), None) is not None
        except av.FFmpegError as exc:
            raise InvalidVideoError(
                f"{label}: the video stream does not decode ({_reason(exc)})."
            ) from exc
        if not has_frame:
            raise InvalidVideoError(f"{label}: the video stream has no decodable frame.")

        if container.duration is not None:
            duration = container.duration / 1_000_000
        elif video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        else:
            duration = 0.0
        rate = video.average_rate or video.guessed_rate or Fraction(0)
        audio_codec: str | None = None
        audio_duration: float | None = None
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_codec = audio.codec.canonical_name
            if audio.duration is not None and audio.time_base is not None:
                audio_duration = float(audio.duration * audio.time_base)
        return VideoInfo(
            duration=duration,
            width=video.width,
            height=video.height,
            frame_rate=float(rate),
            video_codec=video.codec.canonical_name,
            audio_codec=audio_codec,
            audio_duration=audio_duration,
        )
