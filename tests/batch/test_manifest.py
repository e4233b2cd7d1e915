"""Manifests (CSV and JSONL, local and on S3), per-row problems, and the budget estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_omnihuman.api.models import DEFAULT_MODEL
from prefect_omnihuman.batch.budget import (
    CREDITS_PER_AUDIO_SECOND,
    RowCost,
    check_budget,
    cost_of_row,
    estimate_budget,
    text_seconds,
)
from prefect_omnihuman.batch.manifest import parse_manifest, read_manifest, resolve
from prefect_omnihuman.errors import BudgetExceededError, InvalidAudioError, ManifestError

from ..conftest import S3


def test_csv_rows_resolve_paths_against_the_manifest_and_keep_extra_parameters(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "batches" / "monday.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "image,audio,text,out,voice,model,resolution,seed\n"
        "faces/ada.png,voices/ada.wav,,out/ada.mp4,,,720p,42\n"
        "/abs/bob.png,,Hello there.,s3://bucket/bob.mp4,alloy,my/model,,\n"
        "https://cdn.example/c.png,https://cdn.example/c.mp3,,,,,,\n"
    )
    parsed = read_manifest(str(manifest))
    assert parsed.format == "csv" and not parsed.problems
    ada, bob, cdn = parsed.rows
    assert ada.image == str(tmp_path / "batches" / "faces" / "ada.png")
    assert ada.audio == str(tmp_path / "batches" / "voices" / "ada.wav")
    assert ada.out == str(tmp_path / "batches" / "out" / "ada.mp4")
    assert ada.model == DEFAULT_MODEL and ada.model_params == {"resolution": "720p", "seed": 42}
    assert bob.narrated and bob.text == "Hello there." and bob.voice == "alloy"
    assert bob.image == "/abs/bob.png" and bob.out == "s3://bucket/bob.mp4"
    assert bob.model == "my/model" and bob.model_params == {}
    assert cdn.image == "https://cdn.example/c.png" and cdn.out is None


def test_jsonl_manifest_on_s3_resolves_relative_paths_in_the_bucket(s3: S3) -> None:
    lines = [
        {"image": "faces/ada.png", "audio": "../voices/ada.wav", "out": "videos/ada.mp4"},
        {"image": "faces/bob.png", "text": "Hi!", "tts_model": "x/tts", "model_params": {"a": 1}},
    ]
    s3.fs().pipe(
        f"{s3.bucket}/manifests/jobs/today.jsonl",
        "\n".join(json.dumps(line) for line in lines).encode(),
    )
    parsed = read_manifest(f"s3://{s3.bucket}/manifests/jobs/today.jsonl", options=s3.options)
    assert parsed.format == "jsonl" and not parsed.problems
    ada, bob = parsed.rows
    assert ada.image == f"s3://{s3.bucket}/manifests/jobs/faces/ada.png"
    assert ada.audio == f"s3://{s3.bucket}/manifests/voices/ada.wav"
    assert ada.out == f"s3://{s3.bucket}/manifests/jobs/videos/ada.mp4"
    assert bob.tts_model == "x/tts" and bob.model_params == {"a": 1}


def test_every_bad_row_becomes_a_typed_readable_problem_and_good_rows_stay() -> None:
    text = "\n".join(
        [
            '{"image": "a.png", "audio": "a.wav", "out": "a.mp4"}',
            '{"audio": "b.wav", "out": "b.mp4"}',
            '{"image": "c.png", "audio": "c.wav", "text": "both", "out": "c.mp4"}',
            "{not json",
            '{"image": "e.png", "audio": "e.wav", "out": "a.mp4"}',
            '{"image": "f.png", "audio": "f.wav", "out": "f.mp4", "audio_url": "x"}',
            '["a", "list"]',
            '{"image": "h.png", "audio": "h.wav", "out": "h.mp4"}',
        ]
    )
    parsed = parse_manifest(text, source="/data/batch.jsonl")
    assert [row.row for row in parsed.rows] == [1, 8]
    problems = {problem.row: problem for problem in parsed.problems}
    assert sorted(problems) == [2, 3, 4, 5, 6, 7]
    assert all(problem.error_type == "ManifestError" for problem in problems.values())
    assert all("Fix:" in problem.message for problem in problems.values())  # says what to do
    assert "no image" in problems[2].message
    assert "exactly one of audio and text" in problems[3].message
    assert "not valid JSON" in problems[4].message
    assert "row 1's destination" in problems[5].message
    assert "audio_url" in problems[6].message
    assert "JSON object" in problems[7].message
    assert parsed.size == 8


def test_csv_with_too_many_cells_is_a_row_problem_not_a_crash() -> None:
    parsed = parse_manifest(
        "image,audio,out\na.png,a.wav,a.mp4,extra\nb.png,b.wav,b.mp4\n", source="m.csv"
    )
    assert [row.row for row in parsed.rows] == [2]
    assert parsed.problems[0].row == 1 and "more cells" in parsed.problems[0].message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("name,face\nx,y\n", "header"), ("", "header"), ("\n\n", "header")],
    ids=["wrong-header", "empty", "blank"],
)
def test_an_unusable_manifest_is_one_manifest_error(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        parse_manifest(text, source="m.csv")


def test_a_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nowhere\.csv"):
        read_manifest(str(tmp_path / "nowhere.csv"))


def test_resolve_keeps_urls_and_absolute_paths() -> None:
    assert resolve("s3://b/x.png", "/data/m.csv") == "s3://b/x.png"
    assert resolve("/x.png", "s3://b/m.csv") == "/x.png"
    assert resolve("x.png", "https://h/a/m.csv?sig=1") == "https://h/a/x.png"


def test_budget_counts_each_new_generation_once(samples: Path) -> None:
    row = parse_manifest(
        f"image,audio,out\n{samples / 'portrait.png'},{samples / 'voice.wav'},x.mp4\n",
        source="m.csv",
    ).rows[0]
    exact = cost_of_row(row, None, service="http://api")
    assert exact.audio_seconds == pytest.approx(3.0, abs=0.05) and not exact.estimated
    costs = [
        exact,
        exact.model_copy(update={"row": 2}),  # the same inputs again
        RowCost(row=3, audio_seconds=5.0, fingerprint="b", already_paid=True),
        RowCost(row=4, audio_seconds=text_seconds("x" * 150), estimated=True),
    ]
    estimate = estimate_budget(costs)
    assert estimate.generations == 2 and estimate.duplicates == 1 and estimate.already_paid == 1
    assert estimate.audio_seconds == pytest.approx(exact.audio_seconds + 10.0)
    assert estimate.credits == pytest.approx(estimate.audio_seconds * CREDITS_PER_AUDIO_SECOND)
    assert estimate.text_rows == 1
    check_budget(estimate, max_seconds=14, max_credits=10_000_000)
    with pytest.raises(BudgetExceededError, match="budget 12 s") as caught:
        check_budget(estimate, max_seconds=12)
    assert caught.value.estimated_seconds == estimate.audio_seconds
    with pytest.raises(BudgetExceededError, match="credits"):
        check_budget(estimate, max_credits=1_000)


def test_a_dollar_budget_converts_at_the_estimates_rate() -> None:
    costs = [RowCost(row=1, audio_seconds=8.0, fingerprint="a")]  # 5,040,000 credits
    estimate = estimate_budget(costs)
    assert estimate.usd == pytest.approx(2.52)
    assert "~5,040,000 credits ($2.52)" in estimate.describe()
    check_budget(estimate, max_usd=2.52)
    with pytest.raises(BudgetExceededError) as caught:
        check_budget(estimate, max_usd=2.5)
    assert "~$2.52 (5,040,000 credits) > budget $2.50 (5,000,000 credits)" in str(caught.value)
    assert caught.value.estimated_usd == pytest.approx(2.52)
    # An account that pays another rate: the same credits cost more dollars.
    dearer = estimate_budget(costs, credits_per_usd=1_000_000)
    with pytest.raises(BudgetExceededError, match=r"~\$5\.04 .* > budget \$5\.00"):
        check_budget(dearer, max_usd=5)
    with pytest.raises(BudgetExceededError, match=r"~5,040,000 credits \(\$2\.52\) > budget"):
        check_budget(estimate, max_credits=5_000_000)


def test_pricing_a_row_with_a_broken_voice_track_raises_its_input_error(
    samples: Path, tmp_path: Path
) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    row = parse_manifest(
        f"image,audio,out\n{samples / 'portrait.png'},{tmp_path / 'broken.wav'},x.mp4\n",
        source="m.csv",
    ).rows[0]
    with pytest.raises(InvalidAudioError, match=r"broken\.wav"):
        cost_of_row(row, None, service="http://api")
