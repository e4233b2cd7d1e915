"""The batch flow in one process: a throwaway Prefect server, the emulator over HTTP, moto's S3."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import State
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker
from prefect.types._datetime import now

from prefect_omnihuman import AimlApiCredentials, BatchResult, MediaStorage, omnihuman_batch
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.errors import BudgetExceededError
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_voice

from ..conftest import FAST_POLL, S3, TEST_KEY, read_events

pytestmark = pytest.mark.usefixtures("prefect_api")


def emulator_with_jobs_scaled(time_scale: float) -> Emulator:
    """An emulator for batches: its jobs last `time_scale` x the real service's pace."""
    config = EmulatorConfig(
        api_keys=[TEST_KEY], time_scale=time_scale, seed=5, retry_after_seconds=0.2
    )
    return Emulator(config)


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Jobs of about two seconds, so rows clearly overlap."""
    with emulator_with_jobs_scaled(0.03) as server:
        yield server


@pytest.fixture
def overlapping_emulator() -> Iterator[Emulator]:
    """Jobs of about 4.5 s, so rows overlap even when a loaded machine starts them 2 s apart
    (jobs of 2 s did not, once: peak concurrency 1 in a full run)."""
    with emulator_with_jobs_scaled(0.07) as server:
        yield server


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[MediaStorage]:
    """A local staging folder published over loopback HTTP."""
    folder = tmp_path / "staging"
    folder.mkdir()
    with AssetHost(folder) as host:
        yield MediaStorage(base_url=str(folder), public_base_url=host.url)


def credentials_for(emulator: Emulator) -> AimlApiCredentials:
    return AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url)


def unique_limit() -> str:
    """A concurrency limit of this test only (the session's server outlives the test)."""
    return f"omnihuman-test-{uuid.uuid4().hex[:8]}"


def write_batch(folder: Path, samples: Path, rows: int, *, extra: tuple[str, ...] = ()) -> Path:
    """A CSV manifest of `rows` distinct voices (relative paths), plus `extra` raw lines."""
    (folder / "voices").mkdir(parents=True, exist_ok=True)
    (folder / "portrait.png").write_bytes((samples / "portrait.png").read_bytes())
    lines = ["image,audio,out"]
    for n in range(1, rows + 1):
        write_sample_voice(folder / "voices" / f"v{n}.wav", seconds=1.0 + n / 10)
        lines.append(f"portrait.png,voices/v{n}.wav,out/{n}.mp4")
    manifest = folder / "batch.csv"
    manifest.write_text("\n".join([*lines, *extra]) + "\n")
    return manifest


def run_batch(manifest: str, **arguments: Any) -> tuple[State[Any], BatchResult]:
    state = omnihuman_batch(manifest, return_state=True, polling=FAST_POLL, **arguments)
    result = state.result(raise_on_failure=False)
    assert isinstance(result, BatchResult), result
    return state, result


def test_two_bad_rows_are_reported_and_the_others_run_concurrently_within_the_limit(
    overlapping_emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes((samples / "portrait.png").read_bytes()[:200])
    manifest = write_batch(
        tmp_path,
        samples,
        6,
        extra=(f"{broken},voices/v1.wav,out/bad.mp4", "portrait.png,voices/gone.wav,out/x.mp4"),
    )
    state, result = run_batch(
        str(manifest),
        credentials=credentials_for(overlapping_emulator),
        storage=staging,
        concurrency=3,
        limit_name=unique_limit(),
    )

    assert state.is_failed()
    assert [row.status for row in result.rows] == ["delivered"] * 6 + ["failed"] * 2
    bad_image, gone = result.failures
    assert (bad_image.row, bad_image.error_type) == (7, "InvalidImageError")
    assert "broken.png" in (bad_image.error or "")
    assert (
        gone.row == 8 and "gone.wav" in (gone.error or "") and "no such file" in (gone.error or "")
    )
    assert "row 7: InvalidImageError" in (state.message or "")
    for row in result.rows[:6]:
        assert row.location == str(tmp_path / "out" / f"{row.row}.mp4")
        assert probe_video(row.location).audio_codec == "aac"
    stats = overlapping_emulator.stats()
    assert stats.accepted_posts == 6 and stats.rejected_posts == 0
    assert 2 <= stats.peak_concurrency <= 3, stats.peak_concurrency

    with get_client(sync_client=True) as client:
        flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        artifacts = {a.key: a for a in client.read_artifacts(flow_run_filter=flow_runs) if a.key}
        parameters = client.read_flow_run(state.state_details.flow_run_id).parameters  # type: ignore[arg-type]
        parent = FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])
        rows = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=parent))
    # Each row is a subflow run named after it (the bad rows fail in theirs).
    assert sorted(run.name for run in rows) == sorted(f"row-{n}" for n in range(1, 9))
    recorded = [str(parameters), state.message or "", result.model_dump_json()]
    recorded += [str(artifact.data) for artifact in artifacts.values()]
    assert not [text for text in recorded if TEST_KEY in text]
    table = json.loads(str(artifacts["omnihuman-batch"].data))
    assert isinstance(table, list) and [row["status"] for row in table].count("failed") == 2
    assert {"row", "status", "location", "duration", "cost", "error"} <= set(table[0])
    for line, row in zip(table[:6], result.rows[:6], strict=True):
        assert row.credits_used and row.cost_usd == pytest.approx(row.credits_used / 2_000_000)
        assert line["cost"] == f"{row.credits_used:,.0f} credits (${row.cost_usd:.2f})"
        assert re.fullmatch(r"\d{1,3}(,\d{3})+ credits \(\$\d\.\d\d\)", line["cost"]), line["cost"]
    assert [line["cost"] for line in table[6:]] == ["", ""]
    assert result.usd_spent == pytest.approx(result.credits_spent / 2_000_000)
    assert f"cost: {result.credits_spent:,.0f} credits (${result.usd_spent:.2f})" in str(
        artifacts["omnihuman-batch"].description
    )
    assert artifacts["omnihuman-batch-progress"].data == pytest.approx(100.0)
    # The videos, as a picture and a link per delivered row (markdown: both UIs show it).
    gallery = str(artifacts["omnihuman-batch-videos"].data)
    assert gallery.count("data:image/jpeg;base64,") == 6
    for n in range(1, 7):
        assert f"[{n}.mp4]({(tmp_path / 'out' / f'{n}.mp4').as_uri()})" in gallery
    assert "**Row 7** (failed)" in gallery and "**Row 8** (failed)" in gallery
    assert len(gallery) < 6 * 8_000


@pytest.mark.heavy
def test_rerunning_resumes_in_flight_rows_and_skips_delivered_ones_without_a_new_post(
    slow_emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    manifest = str(write_batch(tmp_path, samples, 3))
    arguments = {
        "credentials": credentials_for(slow_emulator),
        "storage": staging,
        "concurrency": 3,
        "limit_name": unique_limit(),
    }
    # Give up waiting long before the jobs end: the rows are paid for, still in flight.
    state, first = run_batch(manifest, timeout=0.3, **arguments)
    assert state.is_failed() and {row.error_type for row in first.rows} == {
        "GenerationTimeoutError"
    }
    assert slow_emulator.stats().accepted_posts == 3

    state, resumed = run_batch(manifest, **arguments)
    assert state.is_completed(), state.message
    assert [row.status for row in resumed.rows] == ["reused"] * 3
    assert resumed.credits_spent == 0.0 and resumed.usd_spent == 0.0
    for row in resumed.rows:
        assert row.cost() == (
            f"0 credits now ($0.00); paid earlier: {row.credits_used:,.0f} credits "
            f"(${row.cost_usd:.2f})"
        )
    assert resumed.spend().startswith("0 credits now ($0.00); paid earlier: ")
    assert {row.generation_id for row in resumed.rows} == set(slow_emulator.stats().generations)

    state, again = run_batch(manifest, **arguments)
    assert state.is_completed() and [row.status for row in again.rows] == ["reused"] * 3
    assert slow_emulator.stats().accepted_posts == 3


def test_the_budget_guard_refuses_before_any_post_and_counts_only_new_spend(
    emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    manifest = str(write_batch(tmp_path, samples, 3))  # 1.1 + 1.2 + 1.3 s of audio
    arguments = {
        "credentials": credentials_for(emulator),
        "storage": staging,
        "limit_name": unique_limit(),
    }
    with pytest.raises(BudgetExceededError, match=r"3\.6 s of audio > budget 3 s") as caught:
        omnihuman_batch(manifest, budget_seconds=3, **arguments)
    assert caught.value.estimated_credits == pytest.approx(3.6 * 630_000, rel=0.01)
    with pytest.raises(BudgetExceededError, match="credits"):
        omnihuman_batch(manifest, budget_credits=2_000_000, **arguments)
    # 3.6 s x 630,000 = 2,268,000 credits: $1.13 at the published 2,000,000 credits to $1.
    with pytest.raises(BudgetExceededError) as caught:
        omnihuman_batch(manifest, budget_usd=1, **arguments)
    assert "~$1.13 (2,268,000 credits) > budget $1.00 (2,000,000 credits)" in str(caught.value)
    assert caught.value.estimated_usd == pytest.approx(1.134, abs=0.01)
    stats = emulator.stats()
    assert stats.accepted_posts + stats.rejected_posts == 0 and not stats.fetched_urls
    assert not (tmp_path / "staging" / "inputs").exists() and not (tmp_path / "out").exists()

    state, first = run_batch(manifest, budget_usd=1.2, **arguments)
    assert state.is_completed() and first.estimate and first.estimate.generations == 3
    # Everything is paid for now: a re-run fits in any budget.
    state, again = run_batch(manifest, budget_seconds=0.1, **arguments)
    assert state.is_completed() and again.estimate and again.estimate.already_paid == 3
    assert again.estimate.audio_seconds == 0 and emulator.stats().accepted_posts == 3


def test_identical_rows_running_at_once_are_paid_once_and_delivered_to_each_out(
    slow_emulator: Emulator, samples: Path, s3: S3
) -> None:
    fs = s3.fs()
    prefix = f"{s3.bucket}/identical-{uuid.uuid4().hex[:6]}"
    fs.put_file(str(samples / "portrait.png"), f"{prefix}/faces/ada.png")
    fs.put_file(str(samples / "voice.wav"), f"{prefix}/voices/ada.wav")
    rows = [f"faces/ada.png,voices/ada.wav,videos/copy-{n}.mp4" for n in range(4)]
    fs.pipe(f"{prefix}/batch.csv", ("image,audio,out\n" + "\n".join(rows) + "\n").encode())
    storage = MediaStorage(base_url=f"s3://{prefix}/staging", storage_options=s3.options)

    state, result = run_batch(
        f"s3://{prefix}/batch.csv",
        credentials=credentials_for(slow_emulator),
        storage=storage,
        concurrency=4,
        limit_name=unique_limit(),
    )

    assert state.is_completed(), state.message
    stats = slow_emulator.stats()
    assert stats.accepted_posts == 1 and list(stats.accepted_by_input.values()) == [1]
    assert sorted(row.status for row in result.rows) == ["delivered", "reused", "reused", "reused"]
    assert len({row.generation_id for row in result.rows}) == 1
    assert result.credits_spent == pytest.approx(3.0 * 630_000, rel=0.02)
    for n in range(4):
        location = f"s3://{prefix}/videos/copy-{n}.mp4"
        assert result.rows[n].location == location
        assert fs.size(location) == fs.size(result.rows[0].location)


def read_generation_events(since: Any, expected: int) -> list[Any]:
    """The omnihuman.generation.* events the server has stored since `since`."""
    EventsWorker.drain_all(timeout=10)
    deadline = time.monotonic() + 30
    events: list[Any] = []
    query = EventFilter(
        event=EventNameFilter(prefix=["omnihuman.generation."]),
        occurred=EventOccurredFilter(since=since),
    )
    while time.monotonic() < deadline:
        events = read_events(query)
        if len(events) >= expected:
            break
        time.sleep(0.5)
    return events


def test_generation_events_reach_the_prefect_server(
    emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    since = now("UTC")
    manifest = str(write_batch(tmp_path, samples, 3))
    emulator.inject("generation_error", route="post")
    state, result = run_batch(
        manifest,
        credentials=credentials_for(emulator),
        storage=staging,
        concurrency=1,
        limit_name=unique_limit(),
    )
    assert state.is_failed() and [row.status for row in result.rows].count("delivered") == 2
    failed_row = result.failures[0]
    assert failed_row.error_type == "GenerationFailedError"

    events = read_generation_events(since, expected=6)
    by_name: dict[str, list[Any]] = {}
    for event in events:
        by_name.setdefault(event.event, []).append(event)
    submitted = by_name["omnihuman.generation.submitted"]
    completed = by_name["omnihuman.generation.completed"]
    [failed] = by_name["omnihuman.generation.failed"]
    generations = set(emulator.stats().generations)
    assert {e.resource.id for e in submitted} == {f"omnihuman.generation.{g}" for g in generations}
    assert {e.payload["location"] for e in completed} == {
        row.location for row in result.rows if row.status == "delivered"
    }
    assert failed.payload["error_type"] == "GenerationFailedError"
    assert failed.resource["prefect.resource.name"] in generations
    assert failed.resource.id not in {e.resource.id for e in completed}
    # Prefect relates each event to the run that emitted it, for automations.
    assert any(r.id.startswith("prefect.flow-run.") for r in completed[0].related)


def test_text_rows_are_spoken_first_by_the_narrated_flow(
    emulator: Emulator, samples: Path, tmp_path: Path, staging: MediaStorage
) -> None:
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text(
        f'{{"image": "{samples / "portrait.png"}", "audio": "{samples / "voice.wav"}", '
        f'"out": "a.mp4"}}\n'
        f'{{"image": "{samples / "portrait.png"}", "text": "Good morning, and welcome.", '
        f'"voice": "nova", "tts_model": "openai/tts-1", "out": "b.mp4"}}\n'
    )
    state, result = run_batch(
        str(manifest),
        credentials=credentials_for(emulator),
        storage=staging,
        limit_name=unique_limit(),
    )
    assert state.is_completed(), state.message
    spoken = result.rows[1]
    assert spoken.location == str(tmp_path / "b.mp4")
    assert probe_video(spoken.location).duration > 1.0
    stats = emulator.stats()
    assert stats.accepted_tts == 1 and stats.accepted_posts == 2
