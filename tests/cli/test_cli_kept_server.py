"""The temporary Prefect server `omnihuman generate` keeps for the next command in its home.

Real commands in child processes, one fresh Prefect home (seeded with a migrated
database), the emulator over HTTP. The rest of the suite runs its commands with
OMNIHUMAN_SERVER_KEEP_SECONDS=0 (conftest), so none of their servers outlives its test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_omnihuman.cli_server import heartbeats_off_by_default
from prefect_omnihuman.emulator import AssetHost, Emulator
from prefect_omnihuman.kept_server import KEEP_SECONDS_VARIABLE, KeptServerFiles, KeptServerRecord
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

from ..conftest import TEST_KEY
from ..prefect_db import seed_home

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))
KEEP_SECONDS = 8  # a command's start-up under load stays well within it


def generate(
    host: AssetHost, emulator: Emulator, folder: Path, name: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    """`omnihuman generate` of a new voice track (in `folder`, which `host` serves)."""
    write_sample_voice(folder / f"{name}.wav", seconds=1.0 + len(name) / 10)
    return subprocess.Popen(
        [
            OMNIHUMAN, "generate",
            "--image", host.url_for("portrait.png"), "--audio", host.url_for(f"{name}.wav"),
            "--out", str(folder / f"{name}.mp4"), "--base-url", emulator.url,
            "--max-poll-interval", "0.3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finished(process: subprocess.Popen[str]) -> str:
    """The command's log, once it has exited 0."""
    _, log = process.communicate(timeout=300)
    assert process.returncode == 0, log[-3000:]
    return log


def heartbeat_sources(api_url: str) -> set[str]:
    """The flow runs that sent the server heartbeats, once its events are stored."""
    deadline = time.monotonic() + 5
    while True:
        answer = httpx.post(
            f"{api_url}/events/filter",
            json={"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}}},
            timeout=10,
        )
        answer.raise_for_status()
        sources = {event["resource"]["prefect.resource.id"] for event in answer.json()["events"]}
        if sources or time.monotonic() > deadline:
            return sources
        time.sleep(0.2)


def test_commands_in_one_home_share_the_kept_server_and_it_stops_once_unused(
    emulator: Emulator, prefect_database: Path, tmp_path: Path
) -> None:
    home = tmp_path / "prefect-home"
    seed_home(home, prefect_database)
    files = KeptServerFiles(home)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AIMLAPI_"))},
        "PREFECT_HOME": str(home),
        "AIMLAPI_API_KEY": TEST_KEY,
        KEEP_SECONDS_VARIABLE: str(KEEP_SECONDS),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        # The server stores events within 0.5 s, not 5 (well inside the keep time).
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    }
    record = None
    write_sample_portrait(tmp_path / "portrait.png")
    with AssetHost(tmp_path) as asset_host:
        try:
            # Two commands at once: one starts the server, the other waits for it.
            together = [generate(asset_host, emulator, tmp_path, name, env) for name in ("a", "bb")]
            logs = [finished(process) for process in together]
            assert sorted("started by this command" in log for log in logs) == [False, True], logs
            assert sum("started by another command" in log for log in logs) == 1
            record = KeptServerRecord.read(files)
            assert record and record.is_running()

            # A later command uses the same server (asking for flow run heartbeats).
            heartbeats = {**env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
            later = finished(generate(asset_host, emulator, tmp_path, "ccc", heartbeats))
            assert "started by another command" in later
            assert KeptServerRecord.read(files) == record
            assert emulator.stats().accepted_posts == 3

            # Its three flow runs are in the home's database, and the API key never reached
            # the server's environment.
            api_url = f"http://127.0.0.1:{record.port}/api"
            with (
                temporary_settings({PREFECT_API_URL: api_url}),
                get_client(sync_client=True) as client,
            ):
                runs = client.read_flow_runs()
            assert sorted(run.state_type for run in runs) == [StateType.COMPLETED] * 3
            assert TEST_KEY.encode() not in Path(f"/proc/{record.pid}/environ").read_bytes()
            # Nor does it run the automation services, so flow runs send it no heartbeats
            # (each run's end would wait for the heartbeat thread) unless asked to.
            settings = httpx.get(f"{api_url}/admin/settings", timeout=10).json()
            assert settings["server"]["services"]["triggers"]["enabled"] is False
            asked = next(run for run in runs if str(run.parameters["audio"]).endswith("ccc.wav"))
            # (Prefect releases without flow heartbeats send none, asked or not.)
            heartbeats_exist = bool(heartbeats_off_by_default())
            expected = {f"prefect.flow-run.{asked.id}"} if heartbeats_exist else set()
            assert heartbeat_sources(api_url) == expected

            # No command uses it: it stops after the keep time, and its record goes with it.
            deadline = time.monotonic() + KEEP_SECONDS + 30
            while record.is_running() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not record.is_running(), "the kept server did not stop once unused"
            assert not files.record.exists()
        finally:
            if record and record.is_running():
                os.kill(record.pid, signal.SIGKILL)


def test_a_bad_keep_time_fails_with_one_line_naming_the_variable(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AIMLAPI_"))},
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "AIMLAPI_API_KEY": TEST_KEY,
        KEEP_SECONDS_VARIABLE: "five minutes",
    }
    write_sample_portrait(tmp_path / "portrait.png")
    with AssetHost(tmp_path) as host:
        process = generate(host, emulator, tmp_path, "a", env)
    _, log = process.communicate(timeout=120)
    assert process.returncode == 1
    (line,) = log.strip().splitlines()
    assert f"{KEEP_SECONDS_VARIABLE}='five minutes' is not a number of seconds" in line
    assert "or 0 to stop it with the command" in line
    assert emulator.stats().accepted_posts == 0
    assert not (tmp_path / "prefect-home" / "omnihuman").exists()


def test_a_record_naming_another_process_or_unreadable_is_no_server(tmp_path: Path) -> None:
    """After a reboot, or in a new container on the same home, the recorded pid may belong to
    anything: only the kept server's app on the recorded port counts."""
    files = KeptServerFiles(tmp_path)
    files.folder.mkdir(parents=True)
    KeptServerRecord(os.getpid(), 41234, "some-identity").write(files)
    record = KeptServerRecord.read(files)
    assert record == KeptServerRecord(os.getpid(), 41234, "some-identity")
    assert not record.is_running()  # this process lives, but it is no kept server
    files.record.write_text("{not json")
    assert KeptServerRecord.read(files) is None
