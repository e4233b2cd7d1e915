"""The timing history: shared by processes through one JSON file, bounded in size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect_omnihuman.api.timing import TimingSample
from prefect_omnihuman.storage.timing_history import TimingHistory

from ..conftest import S3

ROOT = Path(__file__).resolve().parents[2]

RECORD = """
import sys
from prefect_omnihuman.api.timing import TimingSample
from prefect_omnihuman.storage.timing_history import TimingHistory

history = TimingHistory(sys.argv[1], window=int(sys.argv[3]))
for n in range(int(sys.argv[2])):
    history.record(TimingSample("model", "http://service", 8.0, 100.0 + n))
"""


def record_in_processes(path: Path, processes: int, each: int, window: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running = [
        subprocess.Popen([sys.executable, "-c", RECORD, str(path), str(each), str(window)], env=env)
        for _ in range(processes)
    ]
    assert all(process.wait(timeout=120) == 0 for process in running)


def test_samples_recorded_by_another_process_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "omnihuman" / "timing.json"
    record_in_processes(path, processes=1, each=3, window=20)
    samples = TimingHistory(path).samples("model", "http://service")
    assert [sample.seconds for sample in samples] == [100.0, 101.0, 102.0]
    assert TimingHistory(path).samples("model", "http://other") == []


def test_processes_writing_at_once_keep_a_valid_bounded_file(tmp_path: Path) -> None:
    path = tmp_path / "timing.json"
    record_in_processes(path, processes=3, each=15, window=10)
    data = json.loads(path.read_text())
    kept = data["services"]["model @ http://service"]["samples"]
    assert len(kept) == 10
    assert not list(tmp_path.glob("*.tmp"))


def test_the_file_keeps_only_the_most_recently_updated_services(tmp_path: Path) -> None:
    history = TimingHistory(tmp_path / "timing.json", window=2, max_services=3)
    for n in range(5):
        for _ in range(4):
            history.record(TimingSample("model", f"http://service-{n}", 8.0, 90.0, float(n)))
    data = json.loads((tmp_path / "timing.json").read_text())
    assert sorted(data["services"]) == [f"model @ http://service-{n}" for n in (2, 3, 4)]
    assert all(len(entry["samples"]) == 2 for entry in data["services"].values())


def test_a_torn_file_is_started_again_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "timing.json"
    path.write_text('{"services": {"model @ x": {"samples": [')
    history = TimingHistory(path)
    assert history.samples("model", "x") == []
    history.record(TimingSample("model", "x", 8.0, 90.0))
    assert len(history.samples("model", "x")) == 1


def test_the_history_can_live_in_a_bucket(s3: S3) -> None:
    url = f"s3://{s3.bucket}/ledger/timing/timing.json"
    history = TimingHistory(url, {**s3.options, "skip_instance_cache": True})
    history.record(TimingSample("model", "http://service", 8.0, 95.0))
    again = TimingHistory(url, {**s3.options, "skip_instance_cache": True})
    assert [sample.seconds for sample in again.samples("model", "http://service")] == [95.0]
