"""The video's picture in Prefect's UI, seen by a real browser.

A `prefect server start` (with its UI, SQLite, its own home) on a free loopback port runs
a flow against the emulator; headless Chromium then opens the run's artifact pages and
the run's Artifacts tab, and checks the picture decoded (`naturalWidth > 0`). Skipped
only when Chromium is missing (`apt-get install -y chromium`).

`OMNIHUMAN_UI_SCREENSHOT=docs/artifact-poster.png` keeps the artifact page's screenshot
(the one in the README).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_omnihuman import AimlApiCredentials, MediaStorage, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator

from ..chromium import check_image_renders, chromium
from ..conftest import FAST_POLL, TEST_KEY, free_port
from ..prefect_db import seed_home

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (apt-get install -y chromium)"
)

PICTURE = "data:image/jpeg;base64,"


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, prefect_database: Path) -> Iterator[str]:
    """A Prefect server with its UI on loopback; the UI calls this server's API."""
    folder = tmp_path_factory.mktemp("prefect-ui")
    seed_home(folder / "home", prefect_database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_UI_ENABLED": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = folder / "server.log"
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/api/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Prefect server never became healthy"
            time.sleep(0.5)
        yield url
    finally:
        # This process's event and log senders are bound to this server: flush them first.
        EventsWorker.drain_all(timeout=15)
        APILogWorker.drain_all(timeout=15)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def test_a_run_s_artifacts_show_a_picture_of_the_video_in_a_real_browser(
    ui_server: str, emulator: Emulator, samples: Path, tmp_path: Path
) -> None:
    (tmp_path / "staging").mkdir()
    with (
        AssetHost(tmp_path / "staging") as host,
        temporary_settings({PREFECT_API_URL: f"{ui_server}/api"}),
    ):
        state = omnihuman_video(
            image=str(samples / "portrait.png"),
            audio=str(samples / "voice.wav"),
            destination=str(tmp_path / "videos" / "welcome.mp4"),
            credentials=AimlApiCredentials(api_key=TEST_KEY, base_url=emulator.url),
            storage=MediaStorage(base_url=str(tmp_path / "staging"), public_base_url=host.url),
            polling=FAST_POLL,
            return_state=True,
        )
        assert state.is_completed(), state.message
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
    (summary,) = [a for a in artifacts if "# OmniHuman video" in str(a.data)]

    # The artifact's own page, in the default UI (/v2/) and in the classic one (/).
    screenshot = tmp_path / "artifact.png"
    page = check_image_renders(
        f"{ui_server}/v2/artifacts/artifact/{summary.id}",
        PICTURE,
        height=180,
        screenshot=screenshot,
    )
    assert page.rendered, page.images
    assert page.rendered[0]["width"] > 3 * 180  # the contact sheet, 4 frames wide
    classic = check_image_renders(
        f"{ui_server}/artifacts/artifact/{summary.id}", PICTURE, height=180
    )
    assert classic.rendered, classic.images

    # The run's Artifacts tab: the card shows the thumbnail from the description.
    card = check_image_renders(
        f"{ui_server}/v2/runs/flow-run/{run_id}?tab=Artifacts", PICTURE, height=64
    )
    assert card.rendered, card.images

    keep = os.environ.get("OMNIHUMAN_UI_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)
