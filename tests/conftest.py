"""Shared fixtures: an isolated offline Prefect home, the emulator, sample media.

The environment is set before anything imports Prefect, so no test can reach
for the network or a developer's own Prefect profile.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TEST_HOME = Path(tempfile.mkdtemp(prefix="omnihuman-tests-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_TEST_HOME / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # Commands stop their temporary Prefect servers when they end, so no server outlives
        # its test; tests/cli/test_cli_kept_server.py tests the kept one.
        "OMNIHUMAN_SERVER_KEEP_SECONDS": "0",
    }
)
for _name in (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_DATABASE_CONNECTION_URL",  # the servers the tests start use their own homes
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
):
    os.environ.pop(_name, None)
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)

import pytest  # noqa: E402

from prefect_omnihuman.api.polling import PollSchedule  # noqa: E402
from prefect_omnihuman.api.retries import RetryPolicy  # noqa: E402
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig  # noqa: E402
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice  # noqa: E402

from .prefect_db import migrated_database, seed_home, shared_folder  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--long`: run the reliability suite at full size (see tests/reliability)."""
    parser.addoption(
        "--long",
        action="store_true",
        default=os.environ.get("OMNIHUMAN_LONG_TESTS") == "1",
        help="run the long version of the reliability suite (also OMNIHUMAN_LONG_TESTS=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the `heavy` tests first, so the test workers finish together (longest first);
    skip the `long` ones unless `--long`."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="runs with --long (make test-long)")
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip)


TEST_KEY = "sk-test-7f3a9c0e51d24b8e"

#: Retries and polls fast enough for tests; the behaviour is the same as the defaults.
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.02, max_delay=0.2)
FAST_POLL = PollSchedule(
    min_interval=0.05, max_interval=0.3, base_seconds=0.24, seconds_per_audio_second=0.024
)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_events(event_filter: Any, limit: int = 50) -> list[Any]:
    """The events the Prefect server has stored that match `event_filter` (newest first).

    Uses the REST route (`POST /events/filter`) because the client's own `read_events`
    only exists from Prefect 3.6.1, and `make test-compat` runs the oldest supported Prefect.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.events import ReceivedEvent

    body = {"filter": event_filter.model_dump(mode="json"), "limit": limit}
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter", json=body)
    response.raise_for_status()
    return [ReceivedEvent.model_validate(event) for event in response.json()["events"]]


@pytest.fixture(scope="session")
def samples() -> Path:
    """A folder of generated inputs: a portrait and voice tracks of several lengths."""
    folder = _TEST_HOME / "samples"
    folder.mkdir(exist_ok=True)
    write_sample_portrait(folder / "portrait.png")
    write_sample_voice(folder / "voice.wav", seconds=3.0)
    write_sample_voice(folder / "voice.mp3", seconds=4.0)
    write_sample_voice(folder / "long.wav", seconds=31.0)
    return folder


@pytest.fixture(scope="session")
def asset_host(samples: Path) -> Iterator[AssetHost]:
    """A static file server on loopback that hosts the samples, like a CDN would."""
    with AssetHost(samples) as host:
        yield host


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh emulator of the AI/ML API with time sped up 250 times (jobs of about 0.3 s)."""
    config = EmulatorConfig(
        api_keys=[TEST_KEY],
        time_scale=0.004,
        seed=7,
        retry_after_seconds=0.2,
        video_max_side=256,  # a third of the rendering's CPU; tests do not look at the size
    )
    with Emulator(config) as server:
        yield server


@pytest.fixture(autouse=True)
def _own_result_records(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test keeps Prefect's result and cache records in its own folder (commands it
    starts inherit it).

    The emulator of one test can get the loopback port an earlier test's emulator had, and
    the service URL is part of a generation's cache key: with shared records, a test with
    the same inputs reconnected to a generation the new emulator never made (its video 404s).
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    folder = tmp_path_factory.mktemp("prefect-results")
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(folder))  # the name the tests' pods set
    monkeypatch.delenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", raising=False)  # it would win
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: folder}):
        yield


@pytest.fixture(scope="session")
def prefect_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect database at the latest migration, shared by this session's test workers."""
    return migrated_database(shared_folder(tmp_path_factory))


@pytest.fixture(scope="session", autouse=True)
def _migrated_test_home(prefect_database: Path) -> None:
    """The tests' own PREFECT_HOME starts with a migrated database: the temporary servers
    that commands and flows without a Prefect API start there skip the migrations."""
    seed_home(_TEST_HOME / "prefect", prefect_database)


@pytest.fixture(scope="session")
def prefect_api(prefect_database: Path) -> Iterator[str]:
    """A throwaway Prefect API (SQLite in its own home), started once per test session.

    The same server `omnihuman generate` starts when no API is set, on a copy of the
    migrated database. Its fresh database gets no block types at start-up (seconds of CPU
    per server): tests register the ones they use by saving or loading blocks, as
    `prefect block register` does.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_omnihuman.cli_server import TemporaryPrefectServer, heartbeats_off_by_default

    home = _TEST_HOME / "api-server"
    seed_home(home, prefect_database)
    os.environ["PREFECT_HOME"], test_home = str(home), os.environ["PREFECT_HOME"]
    try:
        server = TemporaryPrefectServer()  # its environment is copied now
    finally:
        os.environ["PREFECT_HOME"] = test_home
    try:
        server.wait_ready()
        # The flows this process runs send no heartbeats, as on the commands' temporary
        # server: each run's end would wait up to 1 s for Prefect's heartbeat thread.
        with temporary_settings(
            updates={PREFECT_API_URL: server.api_url},
            set_defaults=heartbeats_off_by_default(),
        ):
            _inactive_status_poll_budget()
            yield server.api_url
    finally:
        server.stop()


def _inactive_status_poll_budget() -> None:
    """Batches create the fleet-wide status-poll limit (5/s, a real-time rate) when it is
    missing; the tests' emulator runs hundreds of times faster, so here it exists inactive
    and rows poll freely. The budget itself is tested in tests/workflows/test_poll_budget.py."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from prefect_omnihuman.workflows.poll_pacing import STATUS_POLLS_LIMIT

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=STATUS_POLLS_LIMIT, limit=5, slot_decay_per_second=5.0, active=False
            )
        )


class S3:
    """A moto S3 server on loopback with one bucket, and the options s3fs needs for it."""

    bucket = "omnihuman-tests"
    key_id = "AKIATESTOMNIHUMAN"
    secret = "moto-secret-9b1c4e7a"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    @property
    def options(self) -> dict[str, object]:
        return {
            "key": self.key_id,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    @property
    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for s3fs in a subprocess."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fs(self):  # type: ignore[no-untyped-def]
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free loopback port, started once, stopped at the end."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    store = S3(f"http://127.0.0.1:{port}")
    store.fs().call_s3("create_bucket", Bucket=S3.bucket)
    try:
        yield store
    finally:
        server.stop()
