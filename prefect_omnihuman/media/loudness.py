"""Levels, silences and loudness of decoded audio: what preparation and splitting measure.

Pure numpy over float PCM in [-1, 1] (see `media.decode_audio`); no Prefect, no I/O.

```python
from prefect_omnihuman.media.loudness import frame_levels, integrated_loudness, silent_runs

levels = frame_levels(mono, 16000)          # dBFS every 10 ms, and a silence threshold
pauses = silent_runs(levels, 0.3)           # [(start_s, end_s), ...] of 0.3 s or more
lufs = integrated_loudness(mono, 16000)     # ITU-R BS.1770: K-weighted, gated
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SILENCE_FLOOR_DB", "Levels", "frame_levels", "integrated_loudness", "silent_runs"]

#: Level reported for digital silence, in dBFS.
SILENCE_FLOOR_DB = -120.0
FRAME_SECONDS = 0.02
HOP_SECONDS = 0.01

Pcm = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Levels:
    """Short-term RMS levels of a track.

    Attributes:
        db: dBFS of the window starting at each hop.
        hop: Seconds between windows.
        frame: Seconds each window covers.
        duration: Seconds of audio measured.
        threshold: dBFS under which a window counts as silence, chosen from the track itself.
    """

    db: npt.NDArray[np.float64]
    hop: float
    frame: float
    duration: float
    threshold: float

    @property
    def silent(self) -> npt.NDArray[np.bool_]:
        """Which windows are silence."""
        result: npt.NDArray[np.bool_] = self.db < self.threshold
        return result

    def voiced_span(self) -> tuple[float, float] | None:
        """Seconds from the first to the end of the last non-silent window, or None."""
        voiced = np.flatnonzero(~self.silent)
        if voiced.size == 0:
            return None
        start = float(voiced[0]) * self.hop
        end = min(self.duration, float(voiced[-1]) * self.hop + self.frame)
        return start, end


def frame_levels(
    mono: Pcm, rate: int, *, hop: float = HOP_SECONDS, frame: float = FRAME_SECONDS
) -> Levels:
    """RMS level of every `frame`-second window, `hop` seconds apart, and a silence threshold.

    The threshold adapts to the recording: 40 dB under its loud parts (95th percentile),
    raised to 6 dB over a noisy background (5th percentile), but never closer than 15 dB
    to the loud parts, so a noisy track finds no silence rather than silence everywhere.
    """
    hop_n = max(1, round(hop * rate))
    frame_n = max(hop_n, round(frame * rate))
    n = mono.shape[0]
    squares = np.concatenate([[0.0], np.cumsum(mono.astype(np.float64) ** 2)])
    starts = np.arange(0, max(n, 1), hop_n)
    ends = np.minimum(starts + frame_n, n)
    counts = np.maximum(ends - starts, 1)
    rms = np.sqrt(np.maximum(squares[ends] - squares[np.minimum(starts, n)], 0.0) / counts)
    db = 20 * np.log10(np.maximum(rms, 10 ** (SILENCE_FLOOR_DB / 20)))
    loud = float(np.percentile(db, 95))
    background = float(np.percentile(db, 5))
    threshold = min(max(loud - 40.0, background + 6.0), loud - 15.0)
    return Levels(
        db=db, hop=hop_n / rate, frame=frame_n / rate, duration=n / rate, threshold=threshold
    )


def silent_runs(levels: Levels, min_seconds: float = 0.0) -> list[tuple[float, float]]:
    """`(start, end)` seconds of every stretch of silence at least `min_seconds` long."""
    silent = levels.silent.astype(np.int8)
    edges = np.diff(np.concatenate([[0], silent, [0]]))
    runs = []
    for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        start = float(first) * levels.hop
        # The last silent window ends `frame` after it starts.
        end = min(levels.duration, float(stop - 1) * levels.hop + levels.frame)
        if end - start >= min_seconds:
            runs.append((start, end))
    return runs


def _biquad_response(
    b: tuple[float, float, float], a: tuple[float, float, float], z: npt.NDArray[np.complex128]
) -> npt.NDArray[np.complex128]:
    zi = 1 / z
    response: npt.NDArray[np.complex128] = (b[0] + b[1] * zi + b[2] * zi**2) / (
        a[0] + a[1] * zi + a[2] * zi**2
    )
    return response


def _k_weighting(n_fft: int, rate: int) -> npt.NDArray[np.complex128]:
    """BS.1770's K-weighting (a +4 dB high shelf, then a 38 Hz high-pass) at the rfft bins.

    The biquads are derived for `rate` as libebur128 does; at 48 kHz they are the
    standard's own coefficients.
    """
    z = np.exp(2j * np.pi * np.fft.rfftfreq(n_fft, 1 / rate) / rate)
    # High shelf: about +4 dB above 1.7 kHz (the head's acoustic effect).
    k = math.tan(math.pi * 1681.974450955533 / rate)
    q = 0.7071752369554196
    vh = 10 ** (3.999843853973347 / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = _biquad_response(
        ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0),
        (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0),
        z,
    )
    # High-pass at 38 Hz: low rumble does not count as loudness.
    k = math.tan(math.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    highpass = _biquad_response(
        (1.0, -2.0, 1.0), (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0), z
    )
    weights: npt.NDArray[np.complex128] = shelf * highpass
    return weights


def integrated_loudness(pcm: Pcm, rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4), of mono `(n,)` or planar `(channels, n)`.

    K-weighted mean square over 400 ms blocks (75 % overlap), gated at -70 LUFS and
    then 10 LU under the ungated level. Silence gives `-inf`.

    Example:
        >>> t = np.arange(48000 * 3) / 48000
        >>> round(integrated_loudness(np.sin(2 * np.pi * 997 * t).astype(np.float32), 48000), 1)
        -3.0
    """
    channels = pcm.reshape(1, -1) if pcm.ndim == 1 else pcm
    n = channels.shape[1]
    if n == 0:
        return -math.inf
    # Filtering by FFT equals the IIR filters once their (short) tail has room: pad 0.5 s.
    n_fft = 1 << (n + rate // 2 - 1).bit_length()
    weights = _k_weighting(n_fft, rate)
    block = min(n, round(0.4 * rate))
    step = max(1, round(0.1 * rate))
    starts = np.arange(0, n - block + 1, step)
    power = np.zeros(starts.shape[0])
    for channel in channels:
        weighted = np.fft.irfft(np.fft.rfft(channel.astype(np.float64), n_fft) * weights, n_fft)
        squares = np.concatenate([[0.0], np.cumsum(weighted[:n] ** 2)])
        power += (squares[starts + block] - squares[starts]) / block
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(power)
    gated = power[loudness > -70.0]
    if gated.size == 0:
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(gated.mean())) - 10.0
    kept = power[(loudness > -70.0) & (loudness > relative)]
    return -0.691 + 10 * math.log10(float(kept.mean()))
