"""SIGTERM stops `omnihuman generate` as promptly as Ctrl-C, and the re-run resumes.

Every normal shutdown sends SIGTERM first (`docker stop`, Kubernetes, systemd, `timeout`,
a Prefect worker cancelling a run). Each test runs the real command against the
emulator, with jobs slowed down so the run is polling when the signal arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.types._datetime import now

from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.media.probe import probe_video

from ..batch.test_deployment_e2e import (  # noqa: F401  (`cluster` is the fixture)
    BIN,
    POOL,
    ROOT,
    Cluster,
    cluster,
    copy_project,
    wait_final,
)
from ..conftest import S3, TEST_KEY

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))
#: The issue's bar; the acceptance allows 15 s.
PROMPT_EXIT_SECONDS = 10.0


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Jobs of minutes: the run is still polling when it is stopped."""
    with Emulator(EmulatorConfig(api_keys=[TEST_KEY], time_scale=30.0)) as server:
        yield server


def generate(
    asset_host: AssetHost, emulator: Emulator, out: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            OMNIHUMAN, "generate",
            "--image", asset_host.url_for("portrait.png"),
            "--audio", asset_host.url_for("voice.wav"),
            "--out", str(out), "--base-url", emulator.url, "--max-poll-interval", "0.5",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        start_new_session=True,
    )  # fmt: skip


def wait_until_polling(process: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while " is queued" not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def stopped_within(process: subprocess.Popen[bytes], *, group: bool) -> float:
    """SIGTERM the command (or its whole process group, as `timeout` does): seconds to exit."""
    started = time.monotonic()
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("omnihuman generate ignored SIGTERM for a minute")
    return time.monotonic() - started


def processes_with(setting: str) -> list[int]:
    """Live processes whose environment holds `setting` (the command's PREFECT_HOME)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and setting.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIMLAPI_", "PREFECT_API"))}
    # The machine may be busy: a slow start is not what these tests are about.
    return {
        **env,
        "AIMLAPI_API_KEY": TEST_KEY,
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        **extra,
    }


def rerun_delivers_without_a_new_post(
    asset_host: AssetHost, emulator: Emulator, out: Path, env: dict[str, str], log: Path
) -> None:
    stats = emulator.stats()
    assert stats.accepted_posts == 1
    (generation_id,) = stats.accepted_at
    emulator.complete_now(generation_id)
    again = generate(asset_host, emulator, out, env, log)
    stdout, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log.read_text()[-3000:]
    assert stdout.decode().strip() == str(out)
    assert probe_video(out).video_codec == "h264"
    assert emulator.stats().accepted_posts == 1
    assert "no new charge" in log.read_text()


@pytest.mark.long
def test_sigterm_to_the_group_stops_generate_with_its_temporary_server_and_rerun_resumes(
    slow_emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    out = tmp_path / "videos" / "talk.mp4"
    env = command_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    log = tmp_path / "first.log"
    process = generate(asset_host, slow_emulator, out, env, log)
    wait_until_polling(process, log)

    # As `timeout` does: the whole process group, the temporary server's too.
    seconds = stopped_within(process, group=True)

    text = log.read_text()
    assert seconds < PROMPT_EXIT_SECONDS, text[-3000:]
    assert process.returncode == 128 + signal.SIGTERM
    assert "Finished in state Crashed" in text and "run the same command again" in text
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert not processes_with(env["PREFECT_HOME"]), "the temporary server outlived the command"

    rerun_delivers_without_a_new_post(asset_host, slow_emulator, out, env, tmp_path / "second.log")


def test_sigterm_stops_generate_on_a_prefect_server_recorded_as_crashed(
    prefect_api: str,
    slow_emulator: Emulator,
    asset_host: AssetHost,
    tmp_path: Path,
) -> None:
    """The session's Prefect server, which the command does not own: it stays up."""
    out = tmp_path / "videos" / "talk.mp4"
    env = command_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "cli-home"))
    log = tmp_path / "first.log"
    since = now("UTC")
    process = generate(asset_host, slow_emulator, out, env, log)
    wait_until_polling(process, log)

    seconds = stopped_within(process, group=False)

    assert seconds < PROMPT_EXIT_SECONDS, log.read_text()[-3000:]
    assert process.returncode == 128 + signal.SIGTERM
    assert not out.parent.exists() or not list(out.parent.iterdir())
    this_test = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=this_test)
    assert [run.state.name for run in runs if run.state] == ["Crashed"]

    rerun_delivers_without_a_new_post(asset_host, slow_emulator, out, env, tmp_path / "second.log")


@pytest.mark.long  # its own server and worker: make test-long
def test_cancelling_a_deployment_run_on_a_process_worker_ends_it_cancelled(
    cluster: Cluster,  # noqa: F811
    slow_emulator: Emulator,
    asset_host: AssetHost,
    s3: S3,
    tmp_path: Path,
) -> None:
    copy_project(cluster.project)
    cluster.run(
        sys.executable, str(ROOT / "blocks" / "create_blocks.py"),
        AIMLAPI_API_KEY=TEST_KEY, AIMLAPI_BASE_URL=slow_emulator.url,
        OMNIHUMAN_STORAGE_URL=f"s3://{s3.bucket}/cancel/staging",
    )  # fmt: skip
    cluster.run(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
    cluster.run(
        str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "single-video",
        "--prefect-file", "deployments/prefect.yaml",
        cwd=cluster.project, OMNIHUMAN_BATCH_MANIFEST="s3://unused/batch.csv",
    )  # fmt: skip
    worker_env = {
        **cluster.env,
        "PREFECT_HOME": str(tmp_path / "worker-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "OMNIHUMAN_PROJECT_DIR": str(cluster.project),
    }
    worker_log = cluster.start("worker", "worker", "start", "--pool", POOL, env=worker_env)
    out = f"s3://{s3.bucket}/cancel/videos/talk.mp4"
    parameters = {
        "image": asset_host.url_for("portrait.png"),
        "audio": asset_host.url_for("voice.wav"),
        "destination": out,
        "polling": {"min_interval": 0.1, "max_interval": 0.5},
    }
    with temporary_settings({PREFECT_API_URL: cluster.api_url}):
        run = run_deployment("omnihuman-video/single-video", parameters=parameters, timeout=0)
        deadline = time.monotonic() + 300
        while slow_emulator.stats().accepted_posts == 0:
            assert time.monotonic() < deadline, worker_log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1.0)  # polling now

        started = time.monotonic()
        cluster.run(str(BIN / "prefect"), "flow-run", "cancel", str(run.id))
        (final,) = wait_final([run.id], timeout=120)
        seconds = time.monotonic() - started

    assert final.state and final.state.name == "Cancelled", worker_log.read_text()[-3000:]
    # Well within the worker's grace period before it would kill the process (30 s).
    assert seconds < 30, seconds
    assert not s3.fs().exists(out)
    assert slow_emulator.stats().accepted_posts == 1
