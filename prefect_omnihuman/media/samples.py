"""Sample portraits and voices for the demo and the tests, made here so nothing is downloaded."""

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

# suffix -> (container format, encoder) for write_sample_voice
_VOICE_FORMATS = {
    ".wav": ("wav", "pcm_s16le"),
    ".flac": ("flac", "flac"),
    ".mp3": ("mp3", "libmp3lame"),
    ".m4a": ("ipod", "aac"),
    ".ogg": ("ogg", "libopus"),
}
_PAUSE_SECONDS = 0.6


def write_sample_portrait(path: str | os.PathLike[str], *, size: int = 512) -> Path:
    """Draw a friendly cartoon face on a plain background; PNG or JPEG by the suffix.

    The mouth sits where the emulator's renderer animates it (centre, 64 % down).

    Example:
        >>> write_sample_portrait("portrait.png", size=512)  # doctest: +SKIP
        PosixPath('portrait.png')
    """
    target = Path(path)
    if target.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
        raise ValueError(f"{target}: write the portrait as .png, .jpg or .webp")
    if size < 1:
        raise ValueError("size must be at least 1 px")
    scale = 4  # draw large and downsample: Pillow's shapes are not antialiased
    s = size * scale
    img = Image.new("RGB", (s, s), (186, 214, 232))
    draw = ImageDraw.Draw(img)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (round(x0 * s), round(y0 * s), round(x1 * s), round(y1 * s))

    skin, shade, hair = (246, 208, 176), (226, 184, 150), (92, 60, 42)
    line = max(1, round(0.012 * s))
    draw.ellipse(box(0.10, 0.80, 0.90, 1.40), fill=(72, 112, 168))  # shoulders
    draw.rectangle(box(0.42, 0.66, 0.58, 0.86), fill=shade)  # neck
    draw.ellipse(box(0.21, 0.10, 0.79, 0.70), fill=hair)  # hair behind the head
    for x in (0.245, 0.755):  # ears
        draw.ellipse(box(x - 0.035, 0.42, x + 0.035, 0.54), fill=shade)
    draw.ellipse(box(0.26, 0.17, 0.74, 0.78), fill=skin)  # face
    draw.chord(box(0.25, 0.10, 0.75, 0.46), 180, 360, fill=hair)  # fringe
    for x in (0.40, 0.60):
        draw.ellipse(box(x - 0.045, 0.425, x + 0.045, 0.485), fill=(255, 255, 255))
        draw.ellipse(box(x - 0.021, 0.434, x + 0.021, 0.476), fill=(50, 38, 34))
        draw.ellipse(box(x + 0.002, 0.440, x + 0.012, 0.450), fill=(255, 255, 255))
        draw.arc(box(x - 0.05, 0.375, x + 0.05, 0.425), 200, 340, fill=hair, width=line)
        draw.ellipse(
            box(x - 0.05 + (x - 0.5) * 0.5, 0.56, x + 0.03 + (x - 0.5) * 0.5, 0.60),
            fill=(242, 172, 160),
        )  # cheeks
    draw.arc(box(0.47, 0.50, 0.53, 0.565), 20, 160, fill=shade, width=line)  # nose
    draw.arc(box(0.43, 0.585, 0.57, 0.655), 15, 165, fill=(160, 64, 70), width=line)  # smile
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".png":
        img.save(target)
    else:
        img.save(target, quality=92)
    return target


def _synthesise_voice(
    seconds: float, sample_rate: int, pauses: Sequence[float]
) -> npt.NDArray[np.float32]:
    """Speech-like mono audio: voiced syllables in words, with exact silences at `pauses`."""
    n = round(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    silences = sorted((p, min(p + _PAUSE_SECONDS, seconds)) for p in pauses)
    rng = np.random.default_rng(1505)
    t = 0.12
    word_f0 = 150.0
    left_in_word = 0
    while t < seconds - 0.12:
        if left_in_word == 0:
            left_in_word = int(rng.integers(1, 5))
            word_f0 = float(rng.uniform(110.0, 220.0))
        length = float(rng.uniform(0.17, 0.24))
        blocking = [end for start, end in silences if t < end and t + length > start]
        if blocking:
            t = max(blocking) + 0.08
            left_in_word = 0
            continue
        start = round(t * sample_rate)
        m = min(round(length * sample_rate), n - start)
        _add_syllable(out[start : start + m], sample_rate, word_f0, rng)
        t += length
        left_in_word -= 1
        if left_in_word == 0:
            t += float(rng.uniform(0.07, 0.16))  # gap between words
    for begin, end in silences:  # guarantee digital silence, whatever was drawn
        out[round(begin * sample_rate) : round(end * sample_rate)] = 0.0
    peak = float(np.max(np.abs(out))) or 1.0
    return (out * (0.6 / peak)).astype(np.float32)


def _add_syllable(
    span: npt.NDArray[np.float64], sample_rate: int, f0: float, rng: np.random.Generator
) -> None:
    m = span.shape[0]
    tt = np.arange(m) / sample_rate
    glide = f0 * (1.0 + rng.uniform(-0.08, 0.08) * tt / max(tt[-1], 1e-9))
    vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * 5.5 * tt + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(glide * vibrato) / sample_rate
    # Vowel-ish colour: a random formant emphasis over six harmonics.
    formant = rng.uniform(2.0, 5.0)
    voice = sum(
        math.exp(-((k - formant) ** 2) / 4.0) / k**0.5 * np.sin(k * phase) for k in range(1, 7)
    )
    envelope = np.sin(np.pi * np.arange(m) / m) ** 0.7 * rng.uniform(0.6, 1.0)
    consonant = rng.standard_normal(m) * np.exp(-tt / 0.012) * 0.15
    span += voice * envelope + consonant


def _has_encoder(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def write_sample_voice(
    path: str | os.PathLike[str],
    *,
    seconds: float = 6.0,
    sample_rate: int = 24000,
    pauses: Sequence[float] = (),
    channels: int = 1,
) -> Path:
    """Synthesise a speech-like voice track (there is no TTS offline) and write it.

    About four voiced syllables a second, grouped in words, with real digital silence of
    0.6 s starting at each time in `pauses`. The format follows the suffix: .wav
    (pcm_s16le), .flac, .mp3 (libmp3lame), .m4a (AAC) or .ogg (Opus; 8/12/16/24/48 kHz).

    Example:
        >>> write_sample_voice("voice.wav", seconds=8.0, pauses=(2.5, 5.5))  # doctest: +SKIP
        PosixPath('voice.wav')
    """
    target = Path(path)
    try:
        container_format, codec = _VOICE_FORMATS[target.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{target}: write the voice as one of {', '.join(_VOICE_FORMATS)}"
        ) from None
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    if any(not 0 <= p < seconds for p in pauses):
        raise ValueError(f"every pause must start within the track (0 to {seconds} s)")
    if not _has_encoder(codec):
        raise RuntimeError(f"this PyAV build has no {codec} encoder; write .wav or .flac instead")

    mono = _synthesise_voice(seconds, sample_rate, pauses)
    # A slightly quieter right channel makes a stereo file that is not two equal copies.
    pcm = np.ascontiguousarray(np.stack([mono, mono * 0.8])[:channels])
    layout = "mono" if channels == 1 else "stereo"
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(os.fspath(target), "w", format=container_format) as out:
        stream = cast(av.AudioStream, out.add_stream(codec, rate=sample_rate))
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0
        frame.time_base = Fraction(1, sample_rate)
        # PyAV converts the sample format and cuts frames to the encoder's frame size.
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return target
