"""End to end on a real Prefect server: blocks as code, `prefect deploy`, two process workers.

A `prefect server start` (on a throwaway PostgreSQL, as the README advises for more than
one flow run at a time) on a free loopback port; the blocks from
`blocks/create_blocks.py`; the deployments of `deployments/prefect.yaml`, deployed from a
copy of the repository; two workers (one flow run each, like two containers: own home
and result storage, sharing only the S3 bucket with its ledger); and two runs of the
scheduled batch deployment at once, on the same 8-row manifest in moto's S3. Every row
must be delivered, paid for once across both workers, and the generations in flight must
never exceed the shared concurrency limit.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_omnihuman import BatchResult
from prefect_omnihuman.emulator import Emulator, EmulatorConfig
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_voice

from .. import postgres
from ..conftest import S3, TEST_KEY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "omnihuman"
ROWS = 8
LIMIT = 3
E2E_TIME_SCALE = 0.02
README_MARKER = "<!-- README deployment example: tested by tests/batch/test_deployment_e2e.py -->"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc), so nothing a worker started survives."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process's group (and strays below it), then SIGKILL after `grace`."""
    if process.poll() is not None:
        return
    strays = descendants(process.pid)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for target in (process.pid, *strays):
            try:
                if target == process.pid:
                    os.killpg(process.pid, signum)
                else:
                    os.kill(target, signum)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=10)


class Cluster:
    """The server, its environment, and the workers started against it."""

    def __init__(self, folder: Path, s3: S3) -> None:
        self.folder = folder
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.shared_storage = folder / "shared-results"
        self.project = folder / "project"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AIMLAPI_"))},
            **s3.env,
            "PREFECT_HOME": str(folder / "server-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.shared_storage),
            # The README's advice for short jobs: a row denied a slot of the generations
            # limit retries within 2 s, not the server's default of up to 30 s (x 1.3 jitter).
            "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
        }

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Path:
        log = self.folder / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN / "prefect"), *args],
            env=env or self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return log

    def run(self, *command: str, cwd: Path | None = None, **extra: str) -> str:
        done = subprocess.run(
            list(command),
            env={**self.env, **extra},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done.stdout

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.processes[0].poll() is None, (self.folder / "server.log").read_text()
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        pytest.fail("the Prefect server never became healthy")

    def stop_all(self) -> None:
        # Workers first: a worker whose server has gone can hang on shutdown.
        for process in reversed(self.processes):
            stop(process)


@contextmanager
def running_cluster(folder: Path, s3: S3, database: str | None = None) -> Iterator[Cluster]:
    """A real Prefect server (on `database`, else SQLite in its home); every process it
    and the test start is stopped afterwards."""
    cluster = Cluster(folder, s3)
    server_env = {**cluster.env}
    if database:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    try:
        cluster.start(
            "server", "server", "start", "--host", "127.0.0.1", "--port", str(cluster.port),
            env=server_env,
        )  # fmt: skip
        cluster.wait_healthy()
        yield cluster
    finally:
        # This process's event and log senders may be bound to this server (the README's
        # flow ran here): flush and retire them while it is up, so later tests get new ones.
        EventsWorker.drain_all(timeout=15)
        APILogWorker.drain_all(timeout=15)
        cluster.stop_all()
    assert all(process.poll() is not None for process in cluster.processes)


@pytest.fixture
def cluster(tmp_path: Path, s3: S3) -> Iterator[Cluster]:
    """A real Prefect server on SQLite: enough for one flow run at a time."""
    with running_cluster(tmp_path, s3) as cluster:
        yield cluster


@pytest.fixture
def postgres_cluster(tmp_path: Path, s3: S3) -> Iterator[Cluster]:
    """A real Prefect server on PostgreSQL, as the README says to run one under load."""
    reason = postgres.missing_reason()
    if reason:
        pytest.skip(reason)
    with (
        postgres.throwaway_postgres() as database,
        running_cluster(tmp_path, s3, database.url) as cluster,
    ):
        yield cluster


@pytest.fixture
def e2e_emulator() -> Iterator[Emulator]:
    """Jobs of a few seconds, with the service's own cap far above our limit."""
    config = EmulatorConfig(
        api_keys=[TEST_KEY], time_scale=E2E_TIME_SCALE, seed=11, retry_after_seconds=0.2
    )
    with Emulator(config) as server:
        yield server


def upload_manifest(s3: S3, samples: Path, folder: Path) -> tuple[str, list[str]]:
    """12 distinct voices and one portrait in S3, and a CSV manifest with relative paths."""
    fs = s3.fs()
    prefix = f"{s3.bucket}/e2e"
    fs.put_file(str(samples / "portrait.png"), f"{prefix}/faces/ada.png")
    lines = ["image,audio,out"]
    for n in range(1, ROWS + 1):
        voice = write_sample_voice(folder / f"v{n}.wav", seconds=1.0 + n / 20)
        fs.put_file(str(voice), f"{prefix}/voices/v{n}.wav")
        lines.append(f"faces/ada.png,voices/v{n}.wav,videos/{n}.mp4")
    fs.pipe(f"{prefix}/batch.csv", ("\n".join(lines) + "\n").encode())
    return f"s3://{prefix}/batch.csv", [f"s3://{prefix}/videos/{n}.mp4" for n in range(1, ROWS + 1)]


def copy_project(target: Path) -> None:
    """What a worker machine has: the flows and the deployment file (the package is
    installed in the environment)."""
    for folder in ("flows", "deployments"):
        shutil.copytree(
            ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__")
        )


def readme_example() -> Callable[..., BatchResult]:
    """The README's `run_deployment` example, compiled as written."""
    text = (ROOT / "README.md").read_text()
    found = re.search(re.escape(README_MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert found, "the README's deployment example is missing"
    namespace: dict[str, Any] = {"__name__": "readme_deployment_example"}
    exec(compile(found.group(1), "README.md", "exec"), namespace)
    flow: Callable[..., BatchResult] = namespace["weekly_campaign"]
    return flow


def wait_final(flow_run_ids: list[UUID], timeout: float = 240.0) -> list[object]:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in flow_run_ids]
            if all(run.state and run.state.is_final() for run in runs):
                return runs
            if time.monotonic() > deadline:
                pytest.fail(f"flow runs not finished: {[run.state for run in runs]}")
            time.sleep(1)


@pytest.mark.heavy
def test_two_workers_run_the_scheduled_batch_deployment_within_the_shared_limit(
    postgres_cluster: Cluster, e2e_emulator: Emulator, s3: S3, samples: Path, tmp_path: Path
) -> None:
    cluster = postgres_cluster
    manifest, outs = upload_manifest(s3, samples, tmp_path)
    copy_project(cluster.project)

    def create_blocks() -> str:
        return cluster.run(
            sys.executable,
            str(ROOT / "blocks" / "create_blocks.py"),
            AIMLAPI_API_KEY=TEST_KEY,
            AIMLAPI_BASE_URL=e2e_emulator.url,
            OMNIHUMAN_STORAGE_URL=f"s3://{s3.bucket}/e2e/staging",
        )

    def create_poll_budget() -> str:
        # The fleet's status-poll budget, as the README says to set it up: 5 requests a
        # second at the real service's pace, scaled like the emulator's time (else its
        # time-scaled jobs would queue for slots).
        polls = f"{5 / E2E_TIME_SCALE:g}"
        return cluster.run(
            str(BIN / "prefect"), "gcl", "create", "omnihuman-status-polls",
            "--limit", polls, "--slot-decay-per-second", polls,
        )  # fmt: skip

    def deploy() -> str:
        cluster.run(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
        return cluster.run(
            str(BIN / "prefect"), "--no-prompt", "deploy", "--all",
            "--prefect-file", "deployments/prefect.yaml",
            cwd=cluster.project, OMNIHUMAN_BATCH_MANIFEST=manifest,
        )  # fmt: skip

    # Independent set-up commands, each a Prefect CLI process, run side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        steps = [pool.submit(step) for step in (create_blocks, create_poll_budget, deploy)]
        blocks = steps[0].result()
        for step in steps[1:]:
            step.result()
    assert blocks.splitlines() == [
        "created: aimlapi-credentials/aimlapi",
        "created: omnihuman-media-storage/omnihuman-media",
    ]

    worker_logs = []
    for name in ("worker-1", "worker-2"):
        env = {
            **cluster.env,
            # Like separate containers: own home and result storage, no lock folder; only
            # the S3 bucket (and the ledger in it) and the Prefect server are shared.
            "PREFECT_HOME": str(tmp_path / f"{name}-home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / f"{name}-results"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "OMNIHUMAN_PROJECT_DIR": str(cluster.project),
        }
        worker_logs.append(
            cluster.start(
                name, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1", env=env
            )
        )

    # Two batch runs of the same manifest at once: one started and left to run, the other
    # from another team's flow that waits for it (the README's example, run as written).
    weekly_campaign = readme_example()
    options = {"concurrency": LIMIT, "polling": {"min_interval": 0.1, "max_interval": 0.5}}
    with temporary_settings({PREFECT_API_URL: cluster.api_url}):
        other = run_deployment("omnihuman-batch/daily-batch", parameters=options, timeout=0)
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(
                contextvars.copy_context().run, weekly_campaign, manifest, options
            )
            campaign = waiting.result(timeout=300)
        wait_final([other.id])
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("omnihuman-batch/daily-batch")
            of_deployment = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
            # Ours: the one started directly, and the campaign's (a subflow run of it).
            runs = [r for r in of_deployment if r.id == other.id or r.parent_task_run_id]
            upcoming = [r for r in of_deployment if r.state_type == StateType.SCHEDULED]
            limit = client.read_global_concurrency_limit_by_name("omnihuman-generations")
            tables = [
                json.loads(str(artifact.data))
                for artifact in client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
                )
                if artifact.key == "omnihuman-batch"
            ]

    assert isinstance(campaign, BatchResult) and len(campaign.rows) == ROWS
    assert not campaign.failures and campaign.estimate and campaign.estimate.audio_seconds < 600
    assert len(runs) == 2
    for run in runs:
        assert run.state and run.state.is_completed(), [
            log.read_text()[-3000:] for log in worker_logs
        ]
    stats = e2e_emulator.stats()
    assert stats.accepted_posts == ROWS and set(stats.accepted_by_input.values()) == {1}
    assert 2 <= stats.peak_concurrency <= LIMIT, stats.peak_concurrency
    assert limit.limit == LIMIT
    fs = s3.fs()
    assert all(fs.size(out) > 0 for out in outs)
    fs.get_file(outs[-1], str(tmp_path / "last.mp4"))
    assert probe_video(tmp_path / "last.mp4").audio_codec == "aac"
    assert len(tables) == 2 and all(len(table) == ROWS for table in tables)
    assert all(row["status"] in ("delivered", "reused") for table in tables for row in table)

    # One flow run on each worker, sharing one limit and the ledger in S3, nothing on disk.
    ran_on = {
        # The flow run's own output ("View at .../flow-run/ID") shows where it ran.
        name: [str(r.id) for r in runs if f"flow-run/{r.id}" in log.read_text()]
        for name, log in zip(("worker-1", "worker-2"), worker_logs, strict=True)
    }
    assert sorted(len(ids) for ids in ran_on.values()) == [1, 1], ran_on

    # The deployment as declared: the schedule, parameters, and its own run limit.
    assert [s.schedule.cron for s in deployment.schedules] == ["0 6 * * 1-5"]  # type: ignore[union-attr]
    assert upcoming, "the scheduler created no runs for the schedule"
    assert all(
        (r.expected_start_time.hour, r.expected_start_time.minute) == (6, 0)  # type: ignore[union-attr]
        and r.expected_start_time.weekday() < 5  # type: ignore[union-attr]
        for r in upcoming
    )
    assert deployment.parameters["manifest"] == manifest
    assert deployment.global_concurrency_limit and deployment.global_concurrency_limit.limit == 2
    assert deployment.work_pool_name == POOL
