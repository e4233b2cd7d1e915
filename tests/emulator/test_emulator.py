"""The emulator of the AI/ML API, over real HTTP with plain httpx: routes, limits, faults, stats.

These tests pin the behaviour every other test (and the demo) relies on, so they talk to
the emulator the way any client would, without the project's own client.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig, FaultConfig
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

KEY = "sk-emulator-test-5b1e0d"
MODEL = "bytedance/omnihuman/v1.5"
GENERATIONS = "/v2/video/generations"
PENDING = ("queued", "waiting", "active", "generating")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A portrait, voice tracks of 3, 2 and 31 s, and a file that is not media."""
    folder = tmp_path_factory.mktemp("emulator-media")
    write_sample_portrait(folder / "portrait.png", size=256)
    write_sample_voice(folder / "voice.wav", seconds=3.0)
    write_sample_voice(folder / "short.mp3", seconds=2.0)
    write_sample_voice(folder / "long.wav", seconds=31.0)
    (folder / "notes.txt").write_text("not an image, not a sound\n")
    return folder


@pytest.fixture(scope="module")
def assets(media: Path) -> Iterator[AssetHost]:
    with AssetHost(media) as host:
        yield host


def make_emulator(**overrides: Any) -> Emulator:
    settings: dict[str, Any] = {
        "api_keys": [KEY, "sk-second-key"],
        "time_scale": 0.004,
        "seed": 3,
        "retry_after_seconds": 0.25,
    }
    settings.update(overrides)
    return Emulator(EmulatorConfig(**settings))


@pytest.fixture
def api() -> Iterator[Emulator]:
    with make_emulator() as emulator:
        yield emulator


@pytest.fixture
def slow_api() -> Iterator[Emulator]:
    """Jobs of about 3 s: each pending status lasts about 0.5 s, long enough for a loaded
    machine's polls to see every one (at the usual 0.004 a status lasts 47 ms, and a full run
    on three test workers once saw only the last two)."""
    with make_emulator(time_scale=0.04) as emulator:
        yield emulator


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(assets: AssetHost, audio: str = "voice.wav", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "image_url": assets.url_for("portrait.png"),
        "audio_url": assets.url_for(audio),
        **extra,
    }


def submit(http: httpx.Client, api: Emulator, payload: Any, key: str = KEY) -> httpx.Response:
    return http.post(api.url + GENERATIONS, json=payload, headers=auth(key))


def poll(http: httpx.Client, api: Emulator, generation_id: str, key: str = KEY) -> httpx.Response:
    return http.get(
        api.url + GENERATIONS, params={"generation_id": generation_id}, headers=auth(key)
    )


def wait(
    http: httpx.Client, api: Emulator, generation_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = poll(http, api, generation_id).json()
        if answer["status"] not in PENDING:
            return dict(answer)
        time.sleep(0.02)
    raise AssertionError(f"{generation_id} still pending after {timeout} s")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- auth and validation ---------------------------------------------------------------------


def test_missing_or_wrong_key_is_401_with_the_gateway_body(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    answers = [
        http.post(api.url + GENERATIONS, json=body(assets)),
        submit(http, api, body(assets), key="sk-wrong"),
        http.get(api.url + GENERATIONS, params={"generation_id": "x"}, headers=auth("sk-wrong")),
        http.post(api.url + GENERATIONS, json=body(assets), headers={"Authorization": KEY}),
    ]
    for answer in answers:
        assert answer.status_code == 401
        payload = answer.json()
        assert payload["statusCode"] == 401 and payload["message"] == "Unauthorized"
        assert payload["path"].startswith(GENERATIONS)
        assert payload["requestId"] == answer.headers["x-request-id"]
        assert payload["timestamp"].endswith("Z")
    stats = api.stats()
    assert stats.accepted_posts == 0 and stats.rejected_posts == 3
    assert stats.fetched_urls == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "bytedance/omnihuman/v9"}, "bytedance/omnihuman/v9"),
        ({"image_url": "ftp://example.com/face.png"}, "image_url must be an http(s) URL"),
        ({"image_url": "data:image/png;base64,%%%"}, "valid base64"),
        ({"audio_url": "data:audio/wav;base64,UklGRg=="}, "data URIs are not accepted"),
        ({"image_url": "notes.txt"}, "image_url is not a decodable image"),
        ({"audio_url": "notes.txt"}, "audio_url is not decodable audio"),
        ({"audio_url": "missing.wav"}, "Could not download audio_url: HTTP 404"),
        ({"image_url": "unreachable"}, "Could not download image_url:"),
        ({"audio_url": "long.wav"}, "Audio must be under 30s long, got 31.0 s"),
    ],
    ids=[
        "unknown-model",
        "image-not-http",
        "broken-data-uri",
        "audio-data-uri",
        "image-not-media",
        "audio-not-media",
        "audio-404",
        "image-unreachable",
        "audio-31s",
    ],
)
def test_bad_submissions_are_400_with_a_readable_message(
    api: Emulator,
    assets: AssetHost,
    http: httpx.Client,
    change: dict[str, str],
    message: str,
) -> None:
    payload = body(assets)
    for field, value in change.items():
        if value == "unreachable":
            value = f"http://127.0.0.1:{closed_port()}/face.png"
        elif field.endswith("_url") and "." in value and ":" not in value:
            value = assets.url_for(value)
        payload[field] = value

    answer = submit(http, api, payload)

    assert answer.status_code == 400
    error = answer.json()
    assert set(error) == {"statusCode", "message", "path", "requestId", "timestamp"}
    assert message in error["message"]
    assert api.stats().accepted_posts == 0
    assert api.stats().rejected_posts == 1


def test_schema_problems_use_the_detail_shape(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    missing = body(assets)
    del missing["audio_url"]
    wrong_type = {**body(assets), "image_url": 42}

    answers = [submit(http, api, missing), submit(http, api, wrong_type)]
    not_json = http.post(
        api.url + GENERATIONS,
        content=b"{not json",
        headers={**auth(), "Content-Type": "application/json"},
    )

    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == {
        "detail": [{"loc": ["body", "audio_url"], "msg": "Field required", "type": "missing"}]
    }
    assert answers[1].json()["detail"][0]["loc"] == ["body", "image_url"]
    assert answers[1].json()["detail"][0]["type"] == "string_type"
    assert not_json.status_code == 400 and "JSON" in not_json.json()["message"]


def test_unknown_generation_is_404_and_a_missing_id_is_400(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    unknown = poll(http, api, f"00000000-0000-0000-0000-000000000000:{MODEL}")
    missing = http.get(api.url + GENERATIONS, headers=auth())
    generation_id = submit(http, api, body(assets)).json()["id"]
    foreign = poll(http, api, generation_id, key="sk-second-key")

    assert unknown.status_code == 404 and unknown.json()["statusCode"] == 404
    assert missing.status_code == 400
    assert missing.json()["detail"][0]["loc"] == ["query", "generation_id"]
    assert foreign.status_code == 404  # one account cannot see another's generations


# -- the happy path ------------------------------------------------------------------------


def test_a_generation_moves_through_every_status_and_yields_a_playable_mp4(
    slow_api: Emulator, assets: AssetHost, http: httpx.Client, tmp_path: Path
) -> None:
    api = slow_api
    created = submit(http, api, body(assets, prompt="ignored extra field"))
    assert created.status_code == 200
    accepted = created.json()
    assert accepted["id"].endswith(f":{MODEL}") and accepted["status"] == "queued"
    assert accepted["meta"]["usage"]["tokens_used"] == 630_000 * 3

    seen: list[str] = []
    while not seen or seen[-1] in PENDING:
        answer = poll(http, api, accepted["id"]).json()
        if not seen or seen[-1] != answer["status"]:
            seen.append(answer["status"])
        time.sleep(0.005)
    noticed_at = time.time()

    assert seen == ["queued", "waiting", "active", "generating", "completed"]
    assert answer["error"] is None
    assert answer["duration"] == pytest.approx(3.0, abs=0.04)
    assert answer["video"]["duration"] == answer["duration"]
    download = http.get(answer["video"]["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert int(download.headers["content-length"]) == len(download.content) > 1000
    video = tmp_path / "talking.mp4"
    video.write_bytes(download.content)
    with av.open(str(video)) as container:
        assert container.streams.video and container.streams.audio
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert container.streams.video[0].codec_context.name == "h264"
        assert audio.duration is not None and audio.time_base is not None
        assert float(audio.duration * audio.time_base) == pytest.approx(3.0, abs=1 / 25)

    stats = api.stats()
    assert stats.generations == {accepted["id"]: "completed"}
    assert stats.completed_at[accepted["id"]] <= noticed_at
    assert stats.polls_by_generation[accepted["id"]] >= len(seen)
    assert stats.downloads == 1 and stats.accepted_posts == 1
    assert stats.fetched_urls == [assets.url_for("portrait.png"), assets.url_for("voice.wav")]


def test_the_rendered_video_s_frame_rate_and_size_are_configurable(
    assets: AssetHost, http: httpx.Client, tmp_path: Path
) -> None:
    with make_emulator(video_fps=10, video_max_side=128) as small:
        accepted = submit(http, small, body(assets)).json()
        answer = wait(http, small, accepted["id"])
        (tmp_path / "small.mp4").write_bytes(http.get(answer["video"]["url"]).content)
    info = probe_video(tmp_path / "small.mp4")
    assert (info.width, info.height, info.frame_rate) == (128, 128, 10.0)
    assert info.duration == pytest.approx(3.0, abs=0.1) and info.audio_codec == "aac"


def test_an_image_data_uri_is_accepted_and_not_fetched(
    api: Emulator, assets: AssetHost, media: Path, http: httpx.Client
) -> None:
    portrait = base64.b64encode((media / "portrait.png").read_bytes()).decode()
    payload = body(assets, "short.mp3", image_url=f"data:image/png;base64,{portrait}")

    generation_id = submit(http, api, payload).json()["id"]
    api.complete_now(generation_id)
    done = poll(http, api, generation_id).json()

    assert done["status"] == "completed"
    assert done["duration"] == pytest.approx(2.0, abs=0.04)
    assert http.head(done["video"]["url"]).status_code == 200
    assert api.stats().fetched_urls == [assets.url_for("short.mp3")]


def test_the_completion_moment_does_not_depend_on_polling(
    assets: AssetHost, http: httpx.Client
) -> None:
    with make_emulator(base_seconds=0.0, seconds_per_audio_second=0.0) as api:
        generation_id = submit(http, api, body(assets)).json()["id"]
        while api.stats().generations[generation_id] != "completed":
            time.sleep(0.05)
        time.sleep(0.3)
        completed_at = api.stats().completed_at[generation_id]
        assert poll(http, api, generation_id).json()["status"] == "completed"
        assert api.stats().completed_at[generation_id] == completed_at
        assert completed_at < time.time() - 0.25


def test_the_acceptance_moment_is_reported(assets: AssetHost, http: httpx.Client) -> None:
    with make_emulator() as api:
        before = time.time()
        generation_id = submit(http, api, body(assets)).json()["id"]
        after = time.time()
        accepted_at = api.stats().accepted_at

    assert list(accepted_at) == [generation_id]
    assert before <= accepted_at[generation_id] <= after


# -- limits -----------------------------------------------------------------------------------


def test_the_per_key_concurrency_cap_answers_429_with_retry_after(
    assets: AssetHost, http: httpx.Client
) -> None:
    with make_emulator(time_scale=1.0, max_concurrent_per_key=2) as api:
        first = [submit(http, api, body(assets)).json()["id"] for _ in range(2)]
        refused = submit(http, api, body(assets))
        other_key = submit(http, api, body(assets), key="sk-second-key")
        api.complete_now(first[0])
        after_one_finished = submit(http, api, body(assets))
        stats = api.stats()

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "0.25"
    assert "concurrency limit" in refused.json()["message"].lower()
    assert other_key.status_code == 200
    assert after_one_finished.status_code == 200
    assert stats.accepted_posts == 4 and stats.rejected_posts == 1
    assert stats.peak_concurrency == 3
    assert sorted(stats.peak_concurrency_by_key.values()) == [1, 2]
    assert KEY not in stats.model_dump_json() and "sk-second-key" not in stats.model_dump_json()


def test_video_urls_expire_like_temporary_links(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    api.config.result_ttl_seconds = 0.5
    done = wait(http, api, submit(http, api, body(assets)).json()["id"])
    url = done["video"]["url"]
    assert http.get(url).status_code == 200

    time.sleep(0.6)
    expired = http.get(url)

    assert expired.status_code == 403
    assert "Request has expired" in expired.text
    assert expired.headers["content-type"] == "application/xml"
    assert http.head(url).status_code == 403
    assert poll(http, api, done["id"]).json()["video"]["url"] == url  # no fresh link
    assert http.get(url.replace(".mp4", "0.mp4")).status_code == 404


def test_a_download_rate_slows_video_downloads_down(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    url = wait(http, api, submit(http, api, body(assets)).json()["id"])["video"]["url"]
    video = http.get(url).content
    api.config.download_bytes_per_second = len(video) / 0.5

    started = time.monotonic()
    throttled = http.get(url)
    elapsed = time.monotonic() - started

    assert throttled.status_code == 200 and throttled.content == video
    assert elapsed >= 0.45
    assert api.stats().downloads == 2


def test_a_chunked_body_is_read_like_any_other(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    payload = json.dumps(body(assets)).encode()
    answer = http.post(
        api.url + GENERATIONS,
        content=iter([payload[:20], payload[20:]]),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert answer.status_code == 200


def test_inputs_are_counted_by_content_not_by_url(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    for signature in ("a", "b"):
        payload = body(assets)
        payload["image_url"] += f"?X-Amz-Signature={signature}"
        payload["audio_url"] += f"?X-Amz-Signature={signature}"
        assert submit(http, api, payload).status_code == 200
    assert submit(http, api, body(assets, "short.mp3")).status_code == 200

    counts = api.stats().accepted_by_input
    assert sorted(counts.values()) == [1, 2]
    assert all(len(key) == 64 + 1 + 64 for key in counts)


# -- faults ----------------------------------------------------------------------------------


def test_server_error_is_a_5xx_and_nothing_is_accepted(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    api.inject("server_error")
    api.inject("server_error", status=503)
    random_status = submit(http, api, body(assets))
    chosen_status = submit(http, api, body(assets))
    recovered = submit(http, api, body(assets))

    assert random_status.status_code in (500, 502, 503, 504)
    assert random_status.json()["statusCode"] == random_status.status_code
    assert chosen_status.status_code == 503
    assert recovered.status_code == 200
    stats = api.stats()
    assert stats.accepted_posts == 1 and stats.rejected_posts == 2
    assert stats.faults_injected == {"server_error/post": 2}


def test_rate_limit_fault_answers_429_with_retry_after(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    generation_id = submit(http, api, body(assets)).json()["id"]
    api.inject("rate_limit", route="get", times=2)

    answers = [poll(http, api, generation_id) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "0.25"
    assert api.stats().faults_injected == {"rate_limit/get": 2}


def test_dropped_connections_give_no_answer_or_half_a_video(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    api.inject("drop_connection", route="post")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        submit(http, api, body(assets))
    assert api.stats().accepted_posts == 0

    done = wait(http, api, submit(http, api, body(assets)).json()["id"])
    api.inject("drop_connection", route="download")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(done["video"]["url"])
    assert http.get(done["video"]["url"]).status_code == 200
    assert api.stats().faults_injected == {"drop_connection/post": 1, "drop_connection/download": 1}


def test_a_lost_response_still_accepts_the_generation(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    api.config.time_scale = 0.04  # still queued when a busy machine reads the stats
    api.inject("lost_response")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        submit(http, api, body(assets))

    stats = api.stats()
    assert stats.accepted_posts == 1
    assert list(stats.generations.values()) == ["queued"]


def test_generation_error_ends_the_job_in_error_with_a_message(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    api.inject("generation_error")
    accepted = submit(http, api, body(assets))
    assert accepted.status_code == 200

    failed = wait(http, api, accepted.json()["id"])

    assert failed["status"] == "error"
    assert failed["video"] is None
    assert failed["error"]["name"] == "GenerationError"
    assert "emulated failure" in failed["error"]["message"]
    assert api.stats().completed_at == {}


def test_a_failed_render_ends_the_job_in_error(
    api: Emulator, assets: AssetHost, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_renderer(*args: object, **kwargs: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr("prefect_omnihuman.emulator.server.render_talking_video", broken_renderer)
    failed = wait(http, api, submit(http, api, body(assets)).json()["id"])

    assert failed["status"] == "error"
    assert failed["error"] == {
        "name": "GenerationError",
        "message": "Rendering failed: encoder exploded",
    }


def test_random_faults_are_seeded_and_respect_routes(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    generation_id = submit(http, api, body(assets)).json()["id"]

    def statuses() -> list[int]:
        api.set_faults(FaultConfig(rate=0.5, kinds=["rate_limit"], routes=["get"], seed=11))
        return [poll(http, api, generation_id).status_code for _ in range(12)]

    first, second = statuses(), statuses()
    assert first == second and {429, 200} == set(first)
    assert submit(http, api, body(assets)).status_code == 200  # POST is not among the routes
    api.set_faults(FaultConfig())
    assert poll(http, api, generation_id).status_code == 200
    with pytest.raises(ValueError, match="lost_response"):
        api.inject("lost_response", route="get")


# -- admin, lifecycle, CLI -----------------------------------------------------------------


def test_admin_endpoints_control_and_report_without_auth(
    api: Emulator, assets: AssetHost, http: httpx.Client
) -> None:
    admin = api.url + "/_emulator"
    assert http.get(admin + "/health").json()["status"] == "ok"
    faults = {"rate": 1.0, "kinds": ["server_error"], "routes": ["post", "get", "download"]}
    assert http.post(admin + "/faults", json=faults).status_code == 200
    assert http.get(admin + "/faults").json()["rate"] == 1.0
    assert http.get(admin + "/stats").status_code == 200  # admin routes are never faulted
    assert submit(http, api, body(assets)).status_code >= 500

    assert http.post(admin + "/faults", json={"rate": 0}).status_code == 200
    injected = http.post(admin + "/inject", json={"kind": "rate_limit", "route": "post"})
    assert injected.status_code == 200
    assert submit(http, api, body(assets)).status_code == 429
    assert submit(http, api, body(assets)).status_code == 200
    assert http.post(admin + "/inject", json={"kind": "nope"}).status_code == 400

    stats = http.get(admin + "/stats").json()
    assert stats["accepted_posts"] == 1 and stats["rejected_posts"] == 2
    assert stats["faults_injected"] == {"server_error/post": 1, "rate_limit/post": 1}

    assert http.post(admin + "/reset").status_code == 200
    cleared = http.get(admin + "/stats").json()
    assert cleared["accepted_posts"] == 0 and cleared["generations"] == {}


def test_stop_is_quick_and_cuts_keep_alive_connections(
    assets: AssetHost, http: httpx.Client
) -> None:
    api = make_emulator().start()
    health = api.url + "/_emulator/health"
    assert http.get(health).status_code == 200  # a keep-alive connection is now open
    submit(http, api, body(assets))

    started = time.monotonic()
    api.stop()

    assert time.monotonic() - started < 3.0
    with pytest.raises(httpx.TransportError):
        http.get(health)


def test_the_command_line_serves_until_terminated(http: httpx.Client) -> None:
    port = closed_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect_omnihuman.emulator", "--port", str(port), "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip().endswith(f"http://127.0.0.1:{port}")
        answer = http.get(f"http://127.0.0.1:{port}{GENERATIONS}", params={"generation_id": "x"})
        assert answer.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_the_api_docs_python_example_runs_unchanged_against_the_emulator(
    assets: AssetHost,
) -> None:
    python = ROOT / ".venv" / "bin" / "python"
    with make_emulator(api_keys=[KEY]) as api:
        environment = {
            **os.environ,
            "SEED_API_KEY": KEY,
            "SEED_BASE_URL": api.url + "/v2",
            "SEED_IMAGE_URL": assets.url_for("portrait.png"),
            "SEED_AUDIO_URL": assets.url_for("voice.wav"),
        }
        run = subprocess.run(
            [str(python) if python.exists() else sys.executable, "tests/seed_example.py"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=environment,
            timeout=60,
        )
        stats = api.stats()

    assert run.returncode == 0, run.stderr
    assert "Status: completed" in run.stdout
    assert f"'url': '{api.url}/files/" in run.stdout
    assert stats.accepted_posts == 1
    assert list(stats.polls_by_generation.values()) == [2]  # completed by the second poll
