"""Batch rows start longest generation first, by the audio's header or the text's length."""

from __future__ import annotations

from pathlib import Path

from prefect_omnihuman.batch.manifest import ManifestRow
from prefect_omnihuman.batch.row_order import expected_audio_seconds, longest_first
from prefect_omnihuman.media.samples import write_sample_voice


def test_rows_are_ordered_longest_first_and_unknown_lengths_keep_their_order_last(
    tmp_path: Path,
) -> None:
    def row(number: int, **voice: str) -> ManifestRow:
        return ManifestRow(row=number, image="face.png", **voice)

    voices = {s: write_sample_voice(tmp_path / f"v{s}.wav", seconds=s) for s in (2.0, 6.0, 4.0)}
    broken = tmp_path / "broken.mp3"
    broken.write_text("not audio")
    rows = [
        row(1, audio="https://cdn.example.com/remote.mp3"),
        row(2, audio=str(voices[2.0])),
        row(3, audio=str(broken)),
        row(4, audio=str(voices[6.0])),
        row(5, text="word " * 45),  # ~15 characters a second: about 15 s
        row(6, audio=str(voices[4.0])),
    ]

    assert abs(expected_audio_seconds(rows[3]) - 6.0) < 0.1
    assert [r.row for r in longest_first(rows)] == [5, 4, 6, 2, 1, 3]
