"""Narrations longer than the model's limit: split at pauses, and stitch the parts' videos.

`split_narration` cuts a long voice track into WAV parts under the limit, each cut in
the middle of a pause (silence detection on the decoded audio), so no word is cut
where the window holds a pause. `stitch_videos` puts the parts' videos back in order
as one MP4 whose soundtrack is the original narration, continuous, and whose length is
the narration's within one frame. No Prefect here: `workflows/long_narration.py` runs the ordinary
tasks around these.

```python
from prefect_omnihuman.media.narration import split_narration, stitch_videos

segments = split_narration("talk.mp3", Path("work"))     # [Segment(0, 0.0, 22.3, ...), ...]
... one video per segment.path ...
stitch_videos(videos, [s.start for s in segments], "talk.mp3", "talk.mp4")
```
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from prefect_omnihuman.api.models import MAX_AUDIO_SECONDS
from prefect_omnihuman.errors import InvalidVideoError
from prefect_omnihuman.media.loudness import Levels, frame_levels, silent_runs
from prefect_omnihuman.media.prep import encode_wav
from prefect_omnihuman.media.probe import MediaSource, VideoInfo, _decode_pcm, _label, probe_video

__all__ = [
    "MAX_SEGMENT_SECONDS",
    "MIN_PAUSE_SECONDS",
    "Cut",
    "Segment",
    "plan_cuts",
    "split_narration",
    "stitch_videos",
]

#: Longest part sent to the API: the model's limit less a safety margin.
MAX_SEGMENT_SECONDS = MAX_AUDIO_SECONDS - 1.5
#: Shortest part the splitter makes (the last one included), unless the track is shorter.
MIN_SEGMENT_SECONDS = 3.0
#: A silence this long is a pause between phrases; shorter ones are gaps between words.
MIN_PAUSE_SECONDS = 0.3
#: Shortest silence still counted as a gap between words.
MIN_GAP_SECONDS = 0.04

CutKind = Literal["pause", "gap", "forced"]


@dataclass(frozen=True)
class Cut:
    """Where one part ends and the next begins.

    Attributes:
        seconds: The cut, in the middle of the silence it was placed in.
        kind: "pause" (a silence of `MIN_PAUSE_SECONDS` or more), "gap" (no pause in reach,
            so the longest gap between words), or "forced" (no silence at all: the quietest
            moment).
        silence: Seconds of silence around the cut.
    """

    seconds: float
    kind: CutKind
    silence: float


@dataclass(frozen=True)
class Segment:
    """One part of a narration, written as a 16-bit WAV file.

    Attributes:
        index: 0-based position.
        start: Seconds into the narration where it starts.
        end: Seconds into the narration where it ends (the next part's start).
        path: The WAV file.
        cut: How its end was chosen, None for the last part.
    """

    index: int
    start: float
    end: float
    path: Path
    cut: Cut | None

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.end - self.start


def _best_cut(
    runs: list[tuple[float, float]], levels: Levels, low: float, high: float, min_pause: float
) -> Cut:
    """The cut in [low, high]: the latest pause, else the longest word gap, else the quietest."""
    inside = [(a, b) for a, b in runs if low <= (a + b) / 2 <= high]
    pauses = [(a, b) for a, b in inside if b - a >= min_pause]
    if pauses:
        # The latest pause makes the fewest parts (each one a paid generation).
        a, b = pauses[-1]
        return Cut((a + b) / 2, "pause", b - a)
    if inside:
        a, b = max(inside, key=lambda run: run[1] - run[0])
        return Cut((a + b) / 2, "gap", b - a)
    first = int(np.ceil(low / levels.hop))
    last = max(first + 1, int(high / levels.hop))
    window = levels.db[first:last]
    # The latest of the quietest moments (within 1 dB), again for the fewest parts.
    quietest = first + int(np.flatnonzero(window <= window.min() + 1.0)[-1])
    return Cut(quietest * levels.hop + levels.frame / 2, "forced", 0.0)


def plan_cuts(
    mono: npt.NDArray[np.float32],
    rate: int,
    *,
    max_seconds: float = MAX_SEGMENT_SECONDS,
    min_seconds: float = MIN_SEGMENT_SECONDS,
    min_pause: float = MIN_PAUSE_SECONDS,
) -> list[Cut]:
    """Where to cut a mono track so every part is under `max_seconds`.

    Greedy from the start: each cut is the latest pause that keeps the part under
    `max_seconds` and leaves at least `min_seconds` for what follows, which makes the
    fewest parts. Only when no pause is in reach does it cut in the longest gap
    between words, and only when there is no silence at all, at the quietest moment.

    Example:
        >>> [cut.seconds for cut in plan_cuts(decode_audio("talk.wav"), 16000)]  # doctest: +SKIP
        [22.34, 46.31, 70.31]
    """
    if max_seconds <= 2 * min_seconds:
        raise ValueError("max_seconds must be more than twice min_seconds")
    duration = mono.shape[0] / rate
    levels = frame_levels(mono, rate)
    runs = silent_runs(levels, MIN_GAP_SECONDS)
    cuts: list[Cut] = []
    start = 0.0
    while duration - start >= max_seconds:
        low = start + min_seconds
        high = min(start + max_seconds, duration - min_seconds)
        cut = _best_cut(runs, levels, low, high, min_pause)
        cuts.append(cut)
        start = cut.seconds
    return cuts


def split_narration(
    source: MediaSource,
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_seconds: float = MAX_SEGMENT_SECONDS,
    min_pause: float = MIN_PAUSE_SECONDS,
) -> list[Segment]:
    """Cut a voice track into WAV parts under `max_seconds`, at pauses; one part if it fits.

    The parts keep the source's sample rate and channels and are exact sample ranges of
    it, so they add up to the whole, and the same input always gives the same bytes.

    Raises:
        InvalidAudioError: The track does not decode.

    Example:
        >>> [round(s.duration, 1) for s in split_narration("talk.mp3", "work")]  # doctest: +SKIP
        [22.3, 24.0, 24.0, 24.7]
    """
    label = _label(source, name)
    pcm, rate = _decode_pcm(source, label, sample_rate=lambda native: native, layout=None)
    mono: npt.NDArray[np.float32] = pcm.mean(axis=0, dtype=np.float32)
    cuts = plan_cuts(mono, rate, max_seconds=max_seconds, min_pause=min_pause)
    bounds = [0, *(round(cut.seconds * rate) for cut in cuts), pcm.shape[1]]
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    segments = []
    for index, (first, last) in enumerate(itertools.pairwise(bounds)):
        path = target / f"part-{index:02d}.wav"
        path.write_bytes(encode_wav(np.ascontiguousarray(pcm[:, first:last]), rate))
        cut = cuts[index] if index < len(cuts) else None
        segments.append(Segment(index, first / rate, last / rate, path, cut))
    return segments


# -- stitching ---------------------------------------------------------------------------------


class _Frames:
    """The frame of one video showing at a given time, decoding forward only."""

    def __init__(self, path: str) -> None:
        self.container = av.open(path, "r")
        if not self.container.streams.video:
            self.container.close()
            raise InvalidVideoError(f"{path}: the file has no video stream.")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.frames: Iterator[av.VideoFrame] = self.container.decode(self.stream)
        self.current = next(self.frames, None)
        if self.current is None:
            self.container.close()
            raise InvalidVideoError(f"{path}: the video stream has no decodable frame.")
        self.upcoming = next(self.frames, None)

    def at(self, seconds: float) -> av.VideoFrame:
        while self.upcoming is not None and (self.upcoming.time or 0.0) <= seconds + 1e-6:
            self.current, self.upcoming = self.upcoming, next(self.frames, None)
        assert self.current is not None
        return self.current

    def close(self) -> None:
        self.container.close()


def _aac_rate(native: int) -> int:
    return 44100 if native % 11025 == 0 else 48000


def _audio_frame(
    pcm: npt.NDArray[np.float32], start: int, end: int, rate: int, layout: str
) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm[:, start:end]), format="fltp", layout=layout
    )
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame


def stitch_videos(
    videos: Sequence[str | os.PathLike[str]],
    starts: Sequence[float],
    narration: MediaSource,
    destination: str | os.PathLike[str],
    *,
    crf: int = 18,
    preset: str = "veryfast",
) -> VideoInfo:
    """One H.264 + AAC MP4 of the parts' videos in order, over the original narration.

    `starts[i]` is where part `i` begins in the narration. Output frame `n` shows the
    frame part `i` shows `n / fps - starts[i]` seconds in, so a part whose video runs a
    little short or long neither drifts nor shifts the parts after it; the frame rate
    and size are the first part's. The parts' own soundtracks are dropped: the
    narration is encoded once, whole, so the audio has no seams. The video lasts as
    long as the narration, within one frame; the file appears only once complete.

    Example:
        >>> stitch_videos(["a.mp4", "b.mp4"], [0.0, 22.3], "talk.wav", "talk.mp4")  # doctest: +SKIP
        VideoInfo(duration=47.0, width=512, height=512, frame_rate=25.0, ...)
    """
    if not videos or len(videos) != len(starts):
        raise ValueError("give one start time per video, and at least one video")
    first = probe_video(videos[0])
    fps = Fraction(first.frame_rate).limit_denominator(1001) if first.frame_rate > 0 else 25
    width, height = first.width // 2 * 2, first.height // 2 * 2
    pcm, rate = _decode_pcm(narration, _label(narration, None), sample_rate=_aac_rate, layout=None)
    total = pcm.shape[1] / rate
    n_frames = max(1, round(total * fps))
    layout = "mono" if pcm.shape[0] == 1 else "stereo"

    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        with av.open(partial, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": str(crf)})
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            sound = out.add_stream("aac", rate=rate)
            sound.layout = layout
            sound.bit_rate = 128_000 if layout == "mono" else 192_000
            part, frames, sent = 0, _Frames(os.fspath(videos[0])), 0
            try:
                for index in range(n_frames):
                    now = float(index / fps)
                    while part + 1 < len(videos) and now >= starts[part + 1] - 1e-9:
                        frames.close()
                        part += 1
                        frames = _Frames(os.fspath(videos[part]))
                    picture = frames.at(now - starts[part])
                    frame = picture.reformat(width=width, height=height, format="yuv420p")
                    frame.pts, frame.time_base = index, 1 / Fraction(fps)
                    out.mux(video.encode(frame))
                    # Keep the audio up with the video so the muxer interleaves as it goes.
                    upto = min(pcm.shape[1], round((index + 1) * rate / fps))
                    if upto > sent:
                        out.mux(sound.encode(_audio_frame(pcm, sent, upto, rate, layout)))
                        sent = upto
            finally:
                frames.close()
            if sent < pcm.shape[1]:
                out.mux(sound.encode(_audio_frame(pcm, sent, pcm.shape[1], rate, layout)))
            out.mux(video.encode(None))
            out.mux(sound.encode(None))
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return probe_video(target)
