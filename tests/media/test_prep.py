"""Asset preparation: phone photos and studio takes made fit for the API, saying what changed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect import flow

from prefect_omnihuman import MediaStorage, prepare_audio, prepare_image
from prefect_omnihuman.errors import InvalidAudioError, InvalidImageError
from prefect_omnihuman.media import prep
from prefect_omnihuman.media.loudness import integrated_loudness
from prefect_omnihuman.media.probe import decode_audio, probe_audio, probe_image
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice
from prefect_omnihuman.results import PreparedAsset

EXIF_ORIENTATION = 0x0112


def sideways_phone_photo(samples: Path, path: Path) -> Image.Image:
    """A JPEG stored sideways with EXIF orientation 6 and a camera make; returns it upright."""
    upright = Image.open(samples / "portrait.png").convert("RGB").crop((64, 0, 448, 512))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    exif[0x010F] = "PhoneMaker"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    return upright


def test_a_rotated_exif_jpeg_comes_out_upright_rgb_and_without_metadata(
    samples: Path, tmp_path: Path
) -> None:
    upright = sideways_phone_photo(samples, tmp_path / "phone.jpg")
    assert Image.open(tmp_path / "phone.jpg").size == (512, 384)  # as stored: sideways

    prepared = prep.prepare_image(tmp_path / "phone.jpg")

    assert prepared.suffix == ".jpg" and (prepared.width, prepared.height) == (384, 512)
    assert any("rotated it 90 degrees clockwise" in change for change in prepared.changes)
    assert any("removed EXIF" in change for change in prepared.changes)
    out = Image.open(io.BytesIO(prepared.data))
    assert out.mode == "RGB" and out.size == (384, 512)
    assert not out.getexif()  # no orientation left to apply twice
    difference = np.abs(np.asarray(out, np.int16) - np.asarray(upright, np.int16)).mean()
    assert difference < 4  # the same picture, the right way up


def test_transparency_size_and_file_size_are_fixed_and_reported(tmp_path: Path) -> None:
    rgba = np.zeros((2400, 3000, 4), np.uint8)  # transparent, with an opaque noisy middle
    rgba[300:2100, 300:2700, :3] = np.random.default_rng(4).integers(0, 255, (1800, 2400, 3))
    rgba[300:2100, 300:2700, 3] = 255
    big = Image.fromarray(rgba, "RGBA")
    big.save(tmp_path / "big.png")

    prepared = prep.prepare_image(tmp_path / "big.png", max_bytes=2_000_000)

    assert max(prepared.width, prepared.height) <= prep.MAX_SIDE
    assert len(prepared.data) <= 2_000_000 and prepared.suffix == ".jpg"
    assert any("RGBA" in change for change in prepared.changes)
    assert any("scaled it from 3000x2400" in change for change in prepared.changes)
    assert any("JPEG" in change for change in prepared.changes)
    corner = Image.open(io.BytesIO(prepared.data)).convert("RGB").getpixel((5, 5))
    assert min(corner) > 240  # transparency became white, not black


def test_a_fine_portrait_is_left_as_it_is(samples: Path) -> None:
    prepared = prep.prepare_image(samples / "portrait.png")
    assert prepared.changes == []
    assert prepared.data == (samples / "portrait.png").read_bytes()


def test_an_image_too_small_to_hold_a_face_is_refused(tmp_path: Path) -> None:
    write_sample_portrait(tmp_path / "thumb.png", size=120)
    with pytest.raises(InvalidImageError, match="too small to hold a face") as caught:
        prep.prepare_image(tmp_path / "thumb.png")
    assert "thumb.png" in str(caught.value) and "256 px" in str(caught.value)


def test_a_48_khz_stereo_flac_becomes_a_trimmed_normalised_mono_wav(tmp_path: Path) -> None:
    # Silence planted at both ends: 0.6 s at the start, and from 7.3 s to the end.
    take = write_sample_voice(
        tmp_path / "take.flac", seconds=8.0, sample_rate=48000, channels=2, pauses=(0.0, 7.3)
    )
    prepared = prep.prepare_audio(take)

    (tmp_path / "prepared.wav").write_bytes(prepared.data)
    info = probe_audio(tmp_path / "prepared.wav")
    assert (info.sample_rate, info.channels, info.codec) == (44100, 1, "pcm_s16le")
    changes = " | ".join(prepared.changes)
    for expected in ("resampled 48000 Hz to 44100 Hz", "downmixed 2 channels to mono",
                     "silence at the start", "silence at the end", "normalised loudness",
                     "converted flac to WAV"):  # fmt: skip
        assert expected in changes
    # About 0.5 s trimmed at the start and 0.6 s at the end, 0.15 s of silence kept each side.
    assert 6.6 < info.duration < 7.1
    assert info.duration == pytest.approx(prepared.duration, abs=1e-3)
    samples = decode_audio(tmp_path / "prepared.wav", sample_rate=44100)
    assert integrated_loudness(samples, 44100) == pytest.approx(prep.TARGET_LUFS, abs=0.3)
    assert float(np.abs(samples).max()) <= 10 ** (prep.PEAK_CEILING_DBFS / 20) + 1e-3
    # Preparing the result again changes nothing, and the same input gives the same bytes.
    assert prep.prepare_audio(tmp_path / "prepared.wav").changes == []
    assert prep.prepare_audio(take).data == prepared.data


def test_mp3_output_and_silence_only_input(tmp_path: Path) -> None:
    voice = write_sample_voice(tmp_path / "voice.wav", seconds=3.0)
    mp3 = prep.prepare_audio(voice, format="mp3")
    (tmp_path / "voice.mp3").write_bytes(mp3.data)
    assert probe_audio(tmp_path / "voice.mp3").codec == "mp3"

    silent = prep.encode_wav(np.zeros(24000, np.float32), 24000)
    with pytest.raises(InvalidAudioError, match="only silence"):
        prep.prepare_audio(silent, name="silent.wav")


@pytest.mark.usefixtures("prefect_api")
def test_the_tasks_store_prepared_files_under_the_storage_and_keep_fine_ones_in_place(
    samples: Path, tmp_path: Path
) -> None:
    storage = MediaStorage(base_url=str(tmp_path / "media"))
    sideways_phone_photo(samples, tmp_path / "phone.jpg")
    write_sample_voice(tmp_path / "take.flac", seconds=4.0, sample_rate=48000, channels=2)

    @flow
    def prepare_all() -> tuple[PreparedAsset, PreparedAsset, PreparedAsset, PreparedAsset]:
        return (
            prepare_image(str(tmp_path / "phone.jpg"), storage),
            prepare_audio(str(tmp_path / "take.flac"), storage),
            prepare_image(str(samples / "portrait.png"), storage),
            prepare_audio(str(tmp_path / "take.flac"), storage),
        )

    image, audio, fine, audio_again = prepare_all()

    assert image.location.startswith(str(tmp_path / "media" / "prepared" / "image"))
    assert audio.location.startswith(str(tmp_path / "media" / "prepared" / "audio"))
    assert probe_image(image.location).height == 512 and image.changes
    assert probe_audio(audio.location).channels == 1 and audio.duration
    assert fine.location == str(samples / "portrait.png") and fine.changes == []
    assert audio_again.location == audio.location and audio_again.sha256 == audio.sha256
