"""Making a raw portrait and voice track fit for OmniHuman, with Pillow and PyAV only.

Both functions return the prepared file's bytes and a list of what they changed, in
words a log reader understands; storing the result is the caller's business (the
`prepare_image` / `prepare_audio` tasks put it in the storage layer). The output
is a function of the input bytes and the settings only, so preparing the same file
twice gives the same bytes, and the generation fingerprint, hence its cache, holds.

```python
from prefect_omnihuman.media.prep import prepare_audio, prepare_image

image = prepare_image("phone-photo.jpg")   # upright, RGB, <= 2048 px, <= 10 MB, EXIF removed
audio = prepare_audio("take-3.flac")       # 44.1 kHz mono WAV, silence trimmed, -16 LUFS
print(image.changes, audio.changes)
```
"""

from __future__ import annotations

import io
import math
import os
import warnings
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from prefect_omnihuman.errors import InvalidAudioError, InvalidImageError
from prefect_omnihuman.media.loudness import frame_levels, integrated_loudness
from prefect_omnihuman.media.probe import (
    _IMAGE_FIX,
    MediaSource,
    _check_present,
    _decode_pcm,
    _file_arg,
    _label,
    _open_audio,
)

__all__ = ["PreparedAudio", "PreparedImage", "encode_wav", "prepare_audio", "prepare_image"]

ImageFormat = Literal["auto", "png", "jpeg"]
AudioFormat = Literal["wav", "mp3"]

#: A face needs some pixels: OmniHuman's results degrade fast below this shorter side.
MIN_FACE_SIDE = 256
MAX_SIDE = 2048
MAX_IMAGE_BYTES = 10 * 1024 * 1024
TARGET_LUFS = -16.0
PEAK_CEILING_DBFS = -1.0
#: Silence left before the first and after the last word, so onsets are not clipped.
KEEP_SILENCE_SECONDS = 0.15

_ORIENTATIONS = {
    2: "mirrored it left to right",
    3: "rotated it 180 degrees",
    4: "flipped it upside down",
    5: "mirrored it and rotated it 90 degrees counter-clockwise",
    6: "rotated it 90 degrees clockwise",
    7: "mirrored it and rotated it 90 degrees clockwise",
    8: "rotated it 90 degrees counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    """A portrait ready for the API.

    Attributes:
        data: The file's bytes (the original bytes when nothing had to change).
        suffix: ".png" or ".jpg".
        width: Pixels, upright.
        height: Pixels, upright.
        changes: What was done, one sentence each; empty when the input was fine as it was.
    """

    data: bytes = field(repr=False)
    suffix: str
    width: int
    height: int
    changes: list[str]


@dataclass(frozen=True)
class PreparedAudio:
    """A voice track ready for the API.

    Attributes:
        data: The file's bytes (the original bytes when nothing had to change).
        suffix: ".wav" or ".mp3".
        duration: Seconds.
        sample_rate: Hz.
        loudness: Integrated loudness of the result, LUFS.
        changes: What was done, one sentence each; empty when the input was fine as it was.
    """

    data: bytes = field(repr=False)
    suffix: str
    duration: float
    sample_rate: int
    loudness: float
    changes: list[str]


# -- images ------------------------------------------------------------------------------------


def _open_image(source: MediaSource, label: str) -> Image.Image:
    _check_present(source, label, InvalidImageError, "image", _IMAGE_FIX)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(_file_arg(source))
            image.load()
    except UnidentifiedImageError:
        raise InvalidImageError(
            "is not an image Pillow can read (wrong format or not an image at all).",
            source=label,
            fix=_IMAGE_FIX,
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(
            "has too many pixels to open safely.", source=label, fix="Scale it down first."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(
            f"could not be decoded: the image data is damaged or incomplete ({exc}).",
            source=label,
            fix="Re-export or re-download the image, then try again.",
        ) from exc
    return image


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _encode_image(image: Image.Image, kind: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buffer.getvalue()


def prepare_image(
    source: MediaSource,
    *,
    name: str | None = None,
    format: ImageFormat = "auto",
    max_side: int = MAX_SIDE,
    max_bytes: int = MAX_IMAGE_BYTES,
    min_side: int = MIN_FACE_SIDE,
) -> PreparedImage:
    """Upright RGB PNG or JPEG, at most `max_side` px and `max_bytes`, metadata removed.

    Applies the EXIF orientation (phones store portraits sideways plus a tag),
    flattens transparency onto white, converts any colour mode to RGB, scales down,
    and re-encodes (PNG, or JPEG for JPEG inputs with `format="auto"`), lowering JPEG
    quality and then the size until the file fits `max_bytes`.

    Raises:
        InvalidImageError: It does not decode, or its shorter side is under `min_side`
            px (too small to hold a face).

    Example:
        >>> prepared = prepare_image("IMG_0042.jpg")  # doctest: +SKIP
        >>> prepared.changes  # doctest: +SKIP
        ['applied the EXIF orientation: rotated it 90 degrees clockwise', 'removed EXIF ...']
    """
    label = _label(source, name)
    image = _open_image(source, label)
    changes: list[str] = []
    source_format = (image.format or "unknown").upper()
    exif = image.getexif()
    orientation = exif.get(_EXIF_ORIENTATION)
    with image:
        upright = ImageOps.exif_transpose(image)
    if orientation in _ORIENTATIONS:
        changes.append(f"applied the EXIF orientation: {_ORIENTATIONS[orientation]}")
    if any(tag != _EXIF_ORIENTATION for tag in exif) or "icc_profile" in upright.info:
        changes.append("removed EXIF metadata and colour profile")

    width, height = upright.size
    if min(width, height) < min_side:
        raise InvalidImageError(
            f"is {width}x{height} px, too small to hold a face.",
            source=label,
            fix=f"Use a portrait at least {min_side} px on its shorter side "
            "(512 px or more works best).",
        )
    if upright.mode != "RGB":
        changes.append(f"converted {upright.mode} pixels to RGB")
    picture = _flatten(upright)

    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
        changes.append(f"scaled it from {width}x{height} to {size[0]}x{size[1]} px")

    # Pillow names some phone JPEGs "MPO" (a JPEG with a second, hidden picture).
    source_format = "JPEG" if source_format == "MPO" else source_format
    kind = "jpeg" if format == "jpeg" or (format == "auto" and source_format == "JPEG") else "png"
    if {"PNG": "png", "JPEG": "jpeg"}.get(source_format) != kind:
        changes.append(f"converted {source_format} to {kind.upper()}")
    if not changes:
        original = _read(source)
        if len(original) <= max_bytes:
            return PreparedImage(original, _suffix(kind), width, height, [])

    data = _encode_image(picture, kind, quality=92)
    if len(data) > max_bytes:
        data, picture, kind = _fit(picture, kind, max_bytes, changes)
    return PreparedImage(data, _suffix(kind), picture.width, picture.height, changes)


def _read(source: MediaSource) -> bytes:
    return source if isinstance(source, bytes) else Path(os.fspath(source)).read_bytes()


def _suffix(kind: str) -> str:
    return ".jpg" if kind == "jpeg" else ".png"


def _fit(
    picture: Image.Image, kind: str, max_bytes: int, changes: list[str]
) -> tuple[bytes, Image.Image, str]:
    """Lower JPEG quality, then the size, until the file fits `max_bytes`."""
    if kind == "png":
        changes.append("re-encoded it as JPEG to fit the size limit")
        kind = "jpeg"
    while True:
        for quality in (90, 85, 80, 75):
            data = _encode_image(picture, kind, quality)
            if len(data) <= max_bytes:
                changes.append(f"saved it at JPEG quality {quality} to fit {max_bytes / 1e6:g} MB")
                return data, picture, kind
        size = (max(1, round(picture.width * 0.8)), max(1, round(picture.height * 0.8)))
        changes.append(f"scaled it to {size[0]}x{size[1]} px to fit {max_bytes / 1e6:g} MB")
        picture = picture.resize(size, Image.Resampling.LANCZOS)


# -- audio -------------------------------------------------------------------------------------


def encode_wav(pcm: npt.NDArray[np.float32], sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of mono `(n,)` or planar `(channels, n)` float audio.

    Written with the standard library, so the same samples always give the same bytes.
    """
    planar = pcm.reshape(1, -1) if pcm.ndim == 1 else pcm
    ints = np.clip(np.rint(planar.T * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(planar.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(ints.tobytes())
    return buffer.getvalue()


def _encode_mp3(mono: npt.NDArray[np.float32], sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate)
        stream.layout = "mono"
        stream.bit_rate = 128_000
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(mono.reshape(1, -1)), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def prepare_audio(
    source: MediaSource,
    *,
    name: str | None = None,
    format: AudioFormat = "wav",
    sample_rate: int = 44100,
    target_lufs: float = TARGET_LUFS,
    peak_ceiling: float = PEAK_CEILING_DBFS,
    keep_silence: float = KEEP_SILENCE_SECONDS,
) -> PreparedAudio:
    """Mono `sample_rate` Hz WAV or MP3, silence trimmed at both ends, loudness normalised.

    Decodes anything PyAV reads (WAV, FLAC, MP3, M4A, Ogg/Opus, a video's soundtrack),
    resamples, downmixes to mono, trims leading and trailing silence to `keep_silence`
    seconds, and applies one gain so the integrated loudness (BS.1770) is `target_lufs`,
    or less if the peak would pass `peak_ceiling` dBFS. Nothing else is touched: no
    compression, no filtering, pauses inside the speech are kept.

    Raises:
        InvalidAudioError: It does not decode or holds only silence.

    Example:
        >>> prepare_audio("take-3.flac").changes  # doctest: +SKIP
        ['resampled 48000 Hz to 44100 Hz', 'downmixed 2 channels to mono', ...]
    """
    label = _label(source, name)
    container, stream = _open_audio(source, label)
    with container:
        native_rate, channels = stream.sample_rate, stream.channels
        codec = stream.codec.canonical_name
        container_format = container.format.name
    pcm, rate = _decode_pcm(source, label, sample_rate=sample_rate, layout=None)
    changes: list[str] = []
    if native_rate != rate:
        changes.append(f"resampled {native_rate} Hz to {rate} Hz")
    mono: npt.NDArray[np.float32] = pcm.mean(axis=0, dtype=np.float32)
    if channels > 1:
        changes.append(f"downmixed {channels} channels to mono")

    levels = frame_levels(mono, rate)
    span = levels.voiced_span()
    if span is None or levels.db.max() < -70.0:
        raise InvalidAudioError(
            "holds only silence.", source=label, fix="Check the recording has the voice in it."
        )
    # Less than 50 ms is not worth a change (nor a re-encode).
    first = max(0, round((span[0] - keep_silence) * rate))
    first = first if first / rate >= 0.05 else 0
    last = min(mono.shape[0], round((span[1] + keep_silence) * rate))
    last = last if (mono.shape[0] - last) / rate >= 0.05 else mono.shape[0]
    if first:
        changes.append(f"trimmed {first / rate:.2f} s of silence at the start")
    if last < mono.shape[0]:
        changes.append(f"trimmed {(mono.shape[0] - last) / rate:.2f} s of silence at the end")
    mono = np.ascontiguousarray(mono[first:last])

    loudness = integrated_loudness(mono, rate)
    peak = 20 * math.log10(max(float(np.max(np.abs(mono))), 1e-9))
    gain = min(target_lufs - loudness, peak_ceiling - peak)
    if abs(gain) >= 0.5:
        mono = (mono * np.float32(10 ** (gain / 20))).astype(np.float32)
        limited = " (limited by the peak ceiling)" if gain < target_lufs - loudness else ""
        changes.append(
            f"normalised loudness from {loudness:.1f} to {loudness + gain:.1f} LUFS "
            f"({gain:+.1f} dB){limited}"
        )
        loudness += gain

    wanted = {"wav": ("wav", "pcm_s16le"), "mp3": ("mp3", "mp3")}[format]
    if (container_format, codec) != wanted:
        changes.append(f"converted {codec} to {format.upper()}")
    if not changes:
        original = _read(source)
        return PreparedAudio(original, f".{format}", mono.shape[0] / rate, rate, loudness, [])
    np.clip(mono, -1.0, 1.0, out=mono)
    data = encode_wav(mono, rate) if format == "wav" else _encode_mp3(mono, rate)
    return PreparedAudio(data, f".{format}", mono.shape[0] / rate, rate, loudness, changes)
