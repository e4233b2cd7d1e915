"""The media layer: probing and decoding inputs, the sample writers, and the emulator's renderer.

Every input is generated here with the sample writers; nothing is downloaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from prefect_omnihuman.emulator.render import render_talking_video
from prefect_omnihuman.errors import InvalidAudioError, InvalidImageError, InvalidVideoError
from prefect_omnihuman.media.probe import (
    AudioInfo,
    VideoInfo,
    check_audio_audible,
    check_audio_length,
    decode_audio,
    probe_audio,
    probe_image,
    probe_video,
)
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

FPS = 25


def _rms(samples: npt.NDArray[np.float32], rate: int, start: float, end: float) -> float:
    part = samples[round(start * rate) : round(end * rate)].astype(np.float64)
    return float(np.sqrt(np.mean(part**2)))


# -- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".jpg", "JPEG")])
def test_probe_image_reads_sample_portraits(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = write_sample_portrait(tmp_path / f"face{suffix}", size=384)

    assert probe_image(path).__dict__ == {
        "width": 384,
        "height": 384,
        "format": fmt,
        "mode": "RGB",
    }


def test_probe_image_takes_bytes_and_the_name_to_blame(tmp_path: Path) -> None:
    data = write_sample_portrait(tmp_path / "face.png", size=128).read_bytes()

    assert probe_image(data).width == 128
    with pytest.raises(InvalidImageError, match=r"^upload\.png: .*truncated"):
        probe_image(data[: len(data) // 2], name="upload.png")


def test_probe_image_reports_the_upright_size_of_rotated_jpegs(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait on screen
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (200, 100), (200, 150, 120)).save(path, exif=exif)

    info = probe_image(path)

    assert (info.width, info.height) == (100, 200)


def _truncated_png(tmp_path: Path) -> Path:
    data = write_sample_portrait(tmp_path / "whole.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _truncated_jpeg(tmp_path: Path) -> Path:
    data = write_sample_portrait(tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _text_as_png(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is a shopping list, not a portrait\n")
    return path


def _empty_png(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.touch()
    return path


def _missing_png(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.png"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_truncated_png, "truncated"),
        (_truncated_jpeg, "truncated"),
        (_text_as_png, "not an image"),
        (_empty_png, "empty"),
        (_missing_png, "not found"),
    ],
)
def test_unusable_images_are_rejected_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], words: str
) -> None:
    path = make(tmp_path)

    with pytest.raises(InvalidImageError) as caught:
        probe_image(path)

    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)
    assert caught.value.fix


def test_images_too_small_for_a_face_or_absurdly_large_are_rejected(tmp_path: Path) -> None:
    tiny = write_sample_portrait(tmp_path / "tiny.png", size=32)
    with pytest.raises(InvalidImageError, match="too small to hold a face") as caught:
        probe_image(tiny)
    assert caught.value.fix and "64 px" in caught.value.fix

    banner = tmp_path / "banner.png"
    Image.new("RGB", (9000, 100)).save(banner)
    with pytest.raises(InvalidImageError, match="too large") as caught:
        probe_image(banner)
    assert caught.value.fix and "8192" in caught.value.fix


# -- audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".wav", "pcm_s16le"), (".flac", "flac"), (".mp3", "mp3"), (".m4a", "aac"), (".ogg", "opus")],
)
def test_sample_voice_lasts_exactly_as_asked(tmp_path: Path, suffix: str, codec: str) -> None:
    path = write_sample_voice(tmp_path / f"voice{suffix}", seconds=3.7)

    info = probe_audio(path)

    # MP3/AAC/Opus encoders pad the stream; the probe must report the real length.
    assert info.duration == pytest.approx(3.7, abs=0.01)
    assert (info.codec, info.channels) == (codec, 1)


def test_probe_audio_reads_a_48k_stereo_flac(tmp_path: Path) -> None:
    path = write_sample_voice(tmp_path / "studio.flac", seconds=2.5, sample_rate=48000, channels=2)

    assert probe_audio(path) == AudioInfo(
        duration=2.5, sample_rate=48000, channels=2, codec="flac", peak=pytest.approx(0.6, abs=0.01)
    )


def test_unusable_audio_is_rejected_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "voice.mp3"
    text.write_text("Hello, this is my voice, typed out.\n" * 40)
    empty = tmp_path / "silence.wav"
    empty.touch()
    picture = write_sample_portrait(tmp_path / "face.png", size=64)

    for path, words in [
        (text, "not an audio file"),
        (empty, "empty"),
        (tmp_path / "gone.wav", "not found"),
        (picture, "no audio stream"),
    ]:
        with pytest.raises(InvalidAudioError, match=words) as caught:
            probe_audio(path)
        assert caught.value.source == str(path)
        assert caught.value.fix

    with pytest.raises(InvalidAudioError, match=r"^<bytes>: .*empty"):
        probe_audio(b"")


@pytest.mark.parametrize("codec", ["pcm_u8", "pcm_s16le", "pcm_s32le", "pcm_f32le"])
def test_silent_audio_is_refused_and_a_quiet_voice_is_not(tmp_path: Path, codec: str) -> None:
    def wav(name: str, gain: float) -> Path:
        mono = decode_audio(
            write_sample_voice(tmp_path / "voice.wav", seconds=1.0), sample_rate=8000
        )
        path = tmp_path / name
        with av.open(str(path), "w", format="wav") as out:
            stream = cast(av.AudioStream, out.add_stream(codec, rate=8000))
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray((mono * gain)[None, :], format="fltp", layout="mono")
            frame.sample_rate = 8000
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return path

    quiet = probe_audio(wav("quiet.wav", 10 ** (-30 / 20) / 0.6))  # peaks at -30 dBFS
    assert quiet.peak == pytest.approx(10 ** (-30 / 20), rel=0.05)
    check_audio_audible(quiet, name="quiet.wav")

    with pytest.raises(InvalidAudioError, match=r"^silent\.wav: holds only silence") as caught:
        check_audio_audible(probe_audio(wav("silent.wav", 0.0)), name="silent.wav")
    assert caught.value.fix and "voice" in caught.value.fix


def test_check_audio_length_refuses_31_seconds(tmp_path: Path) -> None:
    info = probe_audio(write_sample_voice(tmp_path / "long.wav", seconds=31.0))

    with pytest.raises(InvalidAudioError, match=r"^long\.wav: is 31\.00 s long") as caught:
        check_audio_length(info, name="long.wav")
    assert caught.value.fix == "Trim it or split it into parts under 30 s."

    check_audio_length(AudioInfo(29.9, 24000, 1, "pcm_s16le"), name="ok.wav")
    with pytest.raises(InvalidAudioError):
        check_audio_length(AudioInfo(30.0, 24000, 1, "pcm_s16le"), name="edge.wav")


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".m4a", ".ogg"])
def test_decode_audio_gives_mono_float_with_the_planted_pauses_silent(
    tmp_path: Path, suffix: str
) -> None:
    path = write_sample_voice(tmp_path / f"voice{suffix}", seconds=4.0, pauses=(1.0, 2.6))

    samples = decode_audio(path, sample_rate=16000)

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.flags["C_CONTIGUOUS"]
    assert samples.shape[0] == pytest.approx(4.0 * 16000, abs=16)
    assert float(np.abs(samples).max()) <= 1.0
    # Inside each 0.6 s pause (lossy codecs smear a few ms at the edges).
    assert _rms(samples, 16000, 1.05, 1.55) < 1e-3
    assert _rms(samples, 16000, 2.65, 3.15) < 1e-3
    assert _rms(samples, 16000, 0.15, 0.95) > 0.05
    assert _rms(samples, 16000, 1.7, 2.5) > 0.05


def test_decode_audio_resamples_to_the_rate_asked(tmp_path: Path) -> None:
    path = write_sample_voice(tmp_path / "voice.flac", seconds=1.5, sample_rate=48000, channels=2)

    assert decode_audio(path, sample_rate=22050).shape == (round(1.5 * 22050),)


# -- video -------------------------------------------------------------------------------------


def test_probe_video_rejects_files_that_are_not_video(tmp_path: Path) -> None:
    voice = write_sample_voice(tmp_path / "voice.wav", seconds=1.0)
    text = tmp_path / "video.mp4"
    text.write_text("<html>404 Not Found</html>")

    with pytest.raises(InvalidVideoError, match="no video stream"):
        probe_video(voice)
    with pytest.raises(InvalidVideoError, match=r"video\.mp4: not a video file"):
        probe_video(text)
    with pytest.raises(InvalidVideoError, match="not found"):
        probe_video(tmp_path / "never-written.mp4")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, VideoInfo]:
    """A 4 s voice with a pause at 1.5-2.1 s, rendered once for the tests below."""
    folder = tmp_path_factory.mktemp("render")
    portrait = write_sample_portrait(folder / "face.png")
    voice = write_sample_voice(folder / "voice.mp3", seconds=4.0, pauses=(1.5,))
    return (
        folder / "talking.mp4",
        voice,
        render_talking_video(portrait, voice, folder / "talking.mp4"),
    )


def test_render_writes_an_h264_aac_mp4_as_long_as_the_voice(
    rendered: tuple[Path, Path, VideoInfo],
) -> None:
    video, voice, info = rendered
    voice_seconds = probe_audio(voice).duration

    assert info == probe_video(video)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height, info.frame_rate) == (512, 512, FPS)
    assert info.duration == pytest.approx(voice_seconds, abs=1 / FPS)
    assert info.audio_duration == pytest.approx(voice_seconds, abs=1 / FPS)
    with av.open(str(video)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.video[0].format.name == "yuv420p"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round(voice_seconds * FPS)


def test_render_moves_the_mouth_with_the_voice(rendered: tuple[Path, Path, VideoInfo]) -> None:
    video, voice, _ = rendered
    samples = decode_audio(voice, sample_rate=16000)
    loudness = [_rms(samples, 16000, i / FPS, (i + 1) / FPS) for i in range(4 * FPS)]
    loud = sorted(range(len(loudness)), key=loudness.__getitem__)[-5:]
    silent = list(range(round(1.65 * FPS), round(2.0 * FPS)))  # inside the 1.5-2.1 s pause
    assert max(loudness[i] for i in silent) == 0.0

    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="gray").astype(np.float64) for f in container.decode(video=0)]
    height, width = frames[0].shape
    mouth = (
        slice(int(0.55 * height), int(0.72 * height)),
        slice(int(0.38 * width), int(0.62 * width)),
    )
    forehead = (
        slice(int(0.28 * height), int(0.38 * height)),
        slice(int(0.38 * width), int(0.62 * width)),
    )

    def change(a: int, b: int, region: tuple[slice, slice]) -> float:
        return float(np.abs(frames[a][region] - frames[b][region]).mean())

    rest = silent[0]
    assert all(change(rest, s, mouth) < 1.0 for s in silent)  # a closed mouth stays closed
    assert all(change(rest, i, mouth) > 8.0 for i in loud)  # and opens on loud syllables
    assert all(change(rest, i, forehead) < 2.0 for i in loud)  # the rest of the face holds still


def test_render_keeps_orientation_and_stereo_and_44k(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = io.BytesIO()
    Image.new("RGB", (300, 151), (210, 160, 130)).save(photo, format="JPEG", exif=exif)
    voice = write_sample_voice(tmp_path / "v.flac", seconds=1.0, sample_rate=22050, channels=2)

    info = render_talking_video(photo.getvalue(), voice, tmp_path / "out" / "v.mp4", max_side=200)

    # Upright 151x300, scaled to fit 200 px and rounded down to even sides for yuv420p.
    assert (info.width, info.height) == (100, 200)
    with av.open(str(tmp_path / "out" / "v.mp4")) as container:
        audio = container.streams.audio[0]
        assert (audio.sample_rate, audio.channels) == (44100, 2)


def test_render_rejects_bad_inputs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    portrait = write_sample_portrait(tmp_path / "face.png", size=128)
    voice = write_sample_voice(tmp_path / "voice.wav", seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(InvalidImageError, match="<bytes>"):
        render_talking_video(b"GIF89a but not really", voice, out / "a.mp4")
    with pytest.raises(InvalidAudioError, match="<bytes>"):
        render_talking_video(portrait, b"\x00" * 2048, out / "b.mp4")

    assert list(out.iterdir()) == []
