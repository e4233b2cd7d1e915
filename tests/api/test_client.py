"""The typed client against the emulator over real HTTP: success, statuses, every error kind."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from prefect_omnihuman.api.client import AsyncOmniHumanClient, OmniHumanClient
from prefect_omnihuman.api.models import Phase
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.retries import NO_RETRIES, RetryPolicy, is_safe_to_resubmit, is_transient
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidRequestError,
    NotFoundError,
    ResultExpiredError,
    ServiceUnreachableError,
    TransportError,
)
from prefect_omnihuman.media.probe import probe_video

from ..conftest import FAST_POLL, FAST_RETRY, TEST_KEY, free_port


def make_client(emulator: Emulator, key: str = TEST_KEY, **kwargs: object) -> OmniHumanClient:
    options: dict[str, object] = {"retry": FAST_RETRY, "poll": FAST_POLL, "timeout": 30.0}
    options.update(kwargs)
    return OmniHumanClient(key, base_url=emulator.url, **options)  # type: ignore[arg-type]


def inputs(asset_host: AssetHost, audio: str = "voice.wav") -> dict[str, str]:
    return {
        "image_url": asset_host.url_for("portrait.png"),
        "audio_url": asset_host.url_for(audio),
    }


def save(client: OmniHumanClient, generation, path: Path) -> Path:  # type: ignore[no-untyped-def]
    with client.stream_video(generation) as chunks, path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    return path


def test_submit_wait_and_download_a_playable_video(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    seen: list[str] = []
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
        assert generation.id.endswith(":bytedance/omnihuman/v1.5")
        assert generation.phase is Phase.PENDING
        done = client.wait(generation, on_status=lambda g: seen.append(g.status))
        video = probe_video(save(client, done, tmp_path / "out.mp4"))

    assert done.phase is Phase.COMPLETED and done.video_url
    assert done.credits_used and done.credits_used > 0
    assert seen[-1] == "completed"
    assert abs(video.duration - 3.0) <= 1 / 25 + 0.05
    assert video.video_codec == "h264" and video.audio_codec == "aac"
    assert emulator.stats().accepted_posts == 1


def test_a_succeeded_answer_with_its_video_completes_the_wait(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    emulator.config.status_words = {"completed": "succeeded"}
    with make_client(emulator) as client:
        done = client.wait(client.submit(**inputs(asset_host)))
        video = probe_video(save(client, done, tmp_path / "out.mp4"))
    assert done.status == "succeeded" and done.phase is Phase.COMPLETED
    assert video.video_codec == "h264" and video.audio_codec == "aac"


def test_unknown_words_without_a_video_stay_pending_with_one_warning(
    emulator: Emulator, asset_host: AssetHost, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.status_words = {"waiting": "rendering", "active": "upscaling"}
    # Each status lasts 15 % of a 2.5 s job, long enough to be seen even on a busy machine.
    emulator.config.time_scale = 0.03
    seen: list[str] = []
    every_10ms = PollSchedule(min_interval=0.01, max_interval=0.01)
    with make_client(emulator, poll=every_10ms) as client:
        generation = client.submit(**inputs(asset_host, "voice.mp3"))
        with caplog.at_level(logging.WARNING, logger="prefect_omnihuman"):
            done = client.wait(generation, on_status=lambda g: seen.append(g.status))
    assert seen[-1] == "completed" and {"rendering", "upscaling"} <= set(seen)
    assert done.phase is Phase.COMPLETED
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "'rendering'" in warnings[0] and generation.id in warnings[0]


def test_wait_reports_every_status_the_service_goes_through(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    emulator.config.time_scale = 0.03  # each status lasts about 0.4 s: seen on a busy machine
    seen: list[str] = []
    every_10ms = PollSchedule(min_interval=0.01, max_interval=0.01)
    with make_client(emulator, poll=every_10ms) as client:
        generation = client.submit(**inputs(asset_host, "voice.mp3"))
        client.wait(generation, on_status=lambda g: seen.append(g.status))
    assert seen == ["queued", "waiting", "active", "generating", "completed"]


async def test_async_client_has_the_same_shape(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    async with AsyncOmniHumanClient(
        TEST_KEY, base_url=emulator.url, retry=FAST_RETRY, poll=FAST_POLL
    ) as client:
        generation = await client.submit(**inputs(asset_host))
        done = await client.wait(generation.id)
        again = await client.get(generation.id)
        out = tmp_path / "async.mp4"
        async with client.stream_video(done) as chunks:
            with out.open("wb") as handle:
                async for chunk in chunks:
                    handle.write(chunk)
    assert again.phase is Phase.COMPLETED
    assert probe_video(out).audio_codec == "aac"


def test_wrong_key_fails_at_once_without_retries(
    emulator: Emulator, asset_host: AssetHost, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        make_client(emulator, key="sk-wrong") as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.submit(**inputs(asset_host))
    assert caught.value.status_code == 401
    assert "retry" not in caplog.text.lower()
    assert emulator.stats().accepted_posts == 0


def test_errors_the_status_explains_say_what_to_do(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    with make_client(emulator, key="sk-wrong") as client, pytest.raises(AuthenticationError) as key:
        client.submit(**inputs(asset_host))
    assert key.value.fix and "API key" in key.value.fix and emulator.url in key.value.fix
    assert "sk-wrong" not in str(key.value)

    # The API docs' example sets base_url to ".../v2": the POST then misses its route.
    with (
        OmniHumanClient(TEST_KEY, base_url=f"{emulator.url}/v2", retry=FAST_RETRY) as client,
        pytest.raises(NotFoundError) as route,
    ):
        client.submit(**inputs(asset_host))
    assert str(route.value).endswith(
        f"Fix: check base_url ({emulator.url}/v2): it must be the API's root, like "
        "https://api.aimlapi.com, without /v1 or /v2"
    )


def test_out_of_credits_is_its_own_error(emulator: Emulator, asset_host: AssetHost) -> None:
    from prefect_omnihuman.errors import InsufficientCreditsError

    emulator.inject("out_of_credits", route="post")
    with make_client(emulator) as client, pytest.raises(InsufficientCreditsError) as caught:
        client.submit(**inputs(asset_host))
    assert caught.value.status_code == 403
    assert "Fix: top up the AI/ML API balance" in str(caught.value)
    assert emulator.stats().accepted_posts == 0


def test_invalid_request_keeps_the_servers_message(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    with make_client(emulator) as client:
        with pytest.raises(InvalidRequestError) as unknown_model:
            client.submit(model="bytedance/omnihuman/v9", **inputs(asset_host))
        with pytest.raises(InvalidRequestError) as too_long:
            client.submit(**inputs(asset_host, "long.wav"))
    assert "bytedance/omnihuman/v9" in str(unknown_model.value)
    assert "30" in too_long.value.message
    assert emulator.stats().accepted_posts == 0


def test_rate_limit_waits_for_retry_after_then_succeeds(
    emulator: Emulator, asset_host: AssetHost, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject("rate_limit", route="post", times=2)
    started = time.monotonic()
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
    elapsed = time.monotonic() - started
    # Two waits of Retry-After (0.2 s each, plus up to 10 % jitter), far above FAST_RETRY's own.
    assert elapsed >= 0.4
    assert generation.id
    assert emulator.stats().accepted_posts == 1
    assert caplog.text.count("retry") >= 2


def test_unavailable_service_is_retried_on_submit(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    emulator.inject("server_error", route="post", status=503)
    with make_client(emulator) as client:
        assert client.submit(**inputs(asset_host)).id
    assert emulator.stats().accepted_posts == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_error_after_sending_a_post_is_ambiguous_and_not_retried(
    emulator: Emulator, asset_host: AssetHost, status: int
) -> None:
    emulator.inject("server_error", route="post", status=status)
    with make_client(emulator) as client, pytest.raises(AmbiguousSubmissionError) as caught:
        client.submit(**inputs(asset_host))
    assert str(status) in str(caught.value)
    assert "force_new" in str(caught.value)
    assert sum(emulator.stats().faults_injected.values()) == 1


def test_lost_response_raises_ambiguous_submission_and_pays_once(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    emulator.inject("lost_response", route="post")
    with make_client(emulator) as client, pytest.raises(AmbiguousSubmissionError):
        client.submit(**inputs(asset_host))
    assert emulator.stats().accepted_posts == 1


def test_status_checks_survive_server_errors_and_dropped_connections(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
        emulator.inject("server_error", route="get", times=2)
        emulator.inject("drop_connection", route="get", times=2)
        emulator.inject("rate_limit", route="get", times=1)
        done = client.wait(generation)
    assert done.phase is Phase.COMPLETED
    assert sum(emulator.stats().faults_injected.values()) == 5


def test_a_failed_generation_raises_with_its_id_and_message(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    emulator.inject("generation_error", route="post")
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
        with pytest.raises(GenerationFailedError) as caught:
            client.wait(generation)
    assert caught.value.generation_id == generation.id
    assert caught.value.message and caught.value.message in str(caught.value)


def test_unknown_generation_is_not_found(emulator: Emulator) -> None:
    with make_client(emulator) as client, pytest.raises(NotFoundError):
        client.get("00000000-0000-0000-0000-000000000000:bytedance/omnihuman/v1.5")


def test_timeout_carries_the_generation_id(emulator: Emulator, asset_host: AssetHost) -> None:
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
        with pytest.raises(GenerationTimeoutError) as caught:
            client.wait(generation, timeout=0.01)
        # The job goes on: a later wait resumes it without a new submission.
        assert client.wait(generation).phase is Phase.COMPLETED
    assert caught.value.generation_id == generation.id
    assert emulator.stats().accepted_posts == 1


def test_expired_video_url_is_a_named_error(
    emulator: Emulator, asset_host: AssetHost, tmp_path: Path
) -> None:
    emulator.config.result_ttl_seconds = 0.0
    with make_client(emulator) as client:
        done = client.wait(client.submit(**inputs(asset_host)))
        time.sleep(0.05)
        with pytest.raises(ResultExpiredError) as caught:
            save(client, done, tmp_path / "late.mp4")
    assert caught.value.generation_id == done.id
    assert done.id in str(caught.value)


def test_a_refused_first_contact_fails_at_once_naming_the_address_and_the_fix() -> None:
    # 127.0.0.3: loopback, but no emulator of this process ever answered there (a reused
    # 127.0.0.1 port could have, and then a refusal is rightly treated as transient).
    base_url = f"http://127.0.0.3:{free_port()}"
    slow = RetryPolicy(max_attempts=5, base_delay=5.0)  # a retry would show in the time
    client = OmniHumanClient(TEST_KEY, base_url=base_url, retry=slow)
    started = time.monotonic()
    with client, pytest.raises(ServiceUnreachableError) as caught:
        client.submit(image_url="http://127.0.0.1:9/a.png", audio_url="http://127.0.0.1:9/a.wav")
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, TransportError) and caught.value.sent is False
    assert base_url in str(caught.value) and "refused" in str(caught.value)
    assert "--base-url" in str(caught.value) and "AIMLAPI_BASE_URL" in str(caught.value)
    assert not is_transient(caught.value) and not is_safe_to_resubmit(caught.value)


def test_a_host_that_does_not_resolve_fails_at_once() -> None:
    base_url = "https://api.aimlapi.invalid"
    client = OmniHumanClient(TEST_KEY, base_url=base_url, retry=RetryPolicy(base_delay=5.0))
    with client, pytest.raises(ServiceUnreachableError) as caught:
        client.get("some-id")
    assert base_url in str(caught.value) and "does not resolve" in str(caught.value)


def test_a_refused_connection_after_the_service_answered_is_retried(
    asset_host: AssetHost,
) -> None:
    """The service restarts on its own port: the client rides it out, it was no wrong address."""
    config = EmulatorConfig(api_keys=[TEST_KEY], time_scale=0.02, seed=7)
    first = Emulator(config).start()
    port = first.port
    patient = RetryPolicy(max_attempts=20, base_delay=0.1, max_delay=0.3)
    client = OmniHumanClient(TEST_KEY, base_url=first.url, retry=patient, poll=FAST_POLL)
    second = Emulator(config, port=port)
    try:
        with client:
            generation = client.submit(**inputs(asset_host))
            first.stop()
            with pytest.raises(TransportError) as refused:
                OmniHumanClient(TEST_KEY, base_url=first.url, retry=NO_RETRIES).get(generation.id)
            assert not isinstance(refused.value, ServiceUnreachableError)
            assert "refused" in str(refused.value)

            restart = threading.Timer(0.6, second.start)
            restart.start()
            started = time.monotonic()
            with pytest.raises(NotFoundError):  # the restarted emulator forgot the job
                client.get(generation.id)
            restart.join()
            assert time.monotonic() - started >= 0.5  # it waited for the restart
    finally:
        first.stop()
        second.stop()


def test_the_key_never_reaches_logs_reprs_or_errors(
    emulator: Emulator, asset_host: AssetHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with make_client(emulator) as client:
        texts.append(repr(client))
        emulator.inject("rate_limit", route="post")
        emulator.inject("drop_connection", route="get")
        done = client.wait(client.submit(**inputs(asset_host)))
        texts.append(done.model_dump_json())
        for kind in ("lost_response", "generation_error"):
            emulator.inject(kind, route="post")
            try:
                client.wait(client.submit(**inputs(asset_host)))
            except Exception as error:  # collecting every error's text
                texts.append(f"{error!r} {error}")
    try:
        make_client(emulator, key=TEST_KEY + "x").submit(**inputs(asset_host))
    except AuthenticationError as error:
        texts.append(f"{error!r} {error}")
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(str(record.exc_info) for record in caplog.records if record.exc_info)
    assert len(texts) > 5
    assert not [text for text in texts if TEST_KEY in text]


def test_get_itself_retries_server_errors_and_dropped_connections(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    with make_client(emulator) as client:
        generation = client.submit(**inputs(asset_host))
        emulator.inject("server_error", route="get", times=2, status=502)
        emulator.inject("drop_connection", route="get", times=2)
        assert client.get(generation.id).id == generation.id
    assert emulator.stats().faults_injected == {"server_error/get": 2, "drop_connection/get": 2}


@pytest.mark.parametrize(
    ("kind", "status", "error", "accepted"),
    [
        ("out_of_credits", None, "InsufficientCreditsError", 0),
        ("server_error", 500, "AmbiguousSubmissionError", 0),
        ("lost_response", None, "AmbiguousSubmissionError", 1),
    ],
)
async def test_async_submit_maps_errors_like_the_sync_client(
    emulator: Emulator,
    asset_host: AssetHost,
    kind: str,
    status: int | None,
    error: str,
    accepted: int,
) -> None:
    emulator.inject(kind, route="post", status=status)
    async with AsyncOmniHumanClient(
        TEST_KEY, base_url=emulator.url, retry=FAST_RETRY, poll=FAST_POLL
    ) as client:
        with pytest.raises(Exception) as caught:
            await client.submit(**inputs(asset_host))
    assert type(caught.value).__name__ == error
    assert emulator.stats().accepted_posts == accepted


async def test_async_client_rides_out_rate_limits_and_rejects_bad_keys(
    emulator: Emulator, asset_host: AssetHost
) -> None:
    emulator.inject("rate_limit", route="post", times=2)
    async with AsyncOmniHumanClient(
        TEST_KEY, base_url=emulator.url, retry=FAST_RETRY, poll=FAST_POLL
    ) as client:
        assert (await client.submit(**inputs(asset_host))).id
        with pytest.raises(InvalidRequestError):
            await client.submit(model="nope", **inputs(asset_host))
    async with AsyncOmniHumanClient("sk-bad", base_url=emulator.url) as client:
        with pytest.raises(AuthenticationError):
            await client.submit(**inputs(asset_host))
    assert emulator.stats().accepted_posts == 1


def test_clients_of_one_thread_share_a_tls_context_and_threads_do_not() -> None:
    """Building a context loads the CA bundle, so a thread builds one; httpcore changes a
    context on each TLS connection, so no two threads share one."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect_omnihuman.api.tls import shared_tls_context

    here = shared_tls_context()
    assert shared_tls_context() is here
    with ThreadPoolExecutor(max_workers=1) as pool:
        there = pool.submit(lambda: (shared_tls_context(), shared_tls_context())).result()
    assert there[0] is there[1] and there[0] is not here
