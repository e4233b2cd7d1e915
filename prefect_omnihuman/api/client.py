"""HTTP clients for the AI/ML API's video generations, usable without Prefect.

`OmniHumanClient` and `AsyncOmniHumanClient` have the same shape:
`submit` -> `get` -> `wait` -> `stream_video`, plus `synthesize_speech` (text-to-speech,
`POST /v1/tts`) for the voice track. Requests are built and answers
mapped to the error tree in `_Protocol`, shared by both; the two classes only send
and sleep. Retries follow `retries.RetryPolicy`: idempotent GETs are retried on any
transient failure, a POST only when it provably was not accepted.

A wrong address fails fast: until the API root has answered once in this process, a
refused connection or a host that does not resolve raises `ServiceUnreachableError`,
which nothing retries. Afterwards a refused connection is a passing outage, retried.

Example:
    ```python
    from prefect_omnihuman.api.client import OmniHumanClient

    with OmniHumanClient(api_key="...") as client:
        generation = client.submit(image_url="https://...", audio_url="https://...")
        done = client.wait(generation.id)
        print(done.video_url)
    ```
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import os
import random
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import httpx
from pydantic import SecretStr, ValidationError

from prefect_omnihuman.api.models import (
    DEFAULT_MODEL,
    DEFAULT_TTS_MODEL,
    Generation,
    Phase,
    SpeechAnswer,
    SpeechRequest,
    VideoGenerationRequest,
    error_message_from_body,
    is_known_status,
)
from prefect_omnihuman.api.polling import CompletionWindow, PollSchedule
from prefect_omnihuman.api.retries import (
    RetryPolicy,
    as_submission_error,
    is_safe_to_resubmit,
    is_transient,
)
from prefect_omnihuman.api.timing import PROCESS_TIMINGS, TimingBook, TimingSample, learned_window
from prefect_omnihuman.api.tls import shared_tls_context
from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    ApiError,
    AuthenticationError,
    GenerationFailedError,
    GenerationTimeoutError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ResultExpiredError,
    ServerError,
    ServiceUnreachableError,
    SpeechDownloadError,
    TransportError,
)

DEFAULT_BASE_URL = "https://api.aimlapi.com"
GENERATIONS_PATH = "/v2/video/generations"
TTS_PATH = "/v1/tts"
DEFAULT_WAIT_TIMEOUT = 3600.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

logger = logging.getLogger("prefect_omnihuman.api.client")

# A string, so that Python 3.10 (where LoggerAdapter is not subscriptable) can import this.
Logger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"
StatusCallback = Callable[[Generation], None]
#: Called before every status request (a fleet-wide rate limit, say); may be a coroutine
#: function for the async client.
BeforeStatusRequest = Callable[[], Any]
T = TypeVar("T")

# httpx failures raised before a single byte of the request could reach the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def transport_error(exc: httpx.TransportError) -> TransportError:
    """Our `TransportError` for an httpx failure, recording whether it may have been sent."""
    sent = not isinstance(exc, _NOT_SENT)
    detail = str(exc) or type(exc).__name__
    where = "before the request was sent" if not sent else "after the request was sent"
    try:
        # Without the query: a presigned video URL's signature stays out of messages.
        target = f" ({exc.request.method} {exc.request.url.copy_with(query=None)})"
    except RuntimeError:  # raised without its request
        target = ""
    return TransportError(f"{type(exc).__name__} {where}{target}: {detail}", sent=sent)


#: API roots that have answered (any HTTP status) in this process; see `unreachable_reason`.
_ANSWERED_ROOTS: set[str] = set()
_ANSWERED_LOCK = threading.Lock()


def _note_answer(base_url: str) -> None:
    if base_url not in _ANSWERED_ROOTS:
        with _ANSWERED_LOCK:
            _ANSWERED_ROOTS.add(base_url)


def has_answered(base_url: str) -> bool:
    """Whether the API at `base_url` has answered any request in this process."""
    return base_url.rstrip("/") in _ANSWERED_ROOTS


def unreachable_reason(exc: httpx.TransportError) -> str | None:
    """Why a failed connection means a wrong address: refused, or the host is unknown.

    Only meaningful before the service has answered once: afterwards the same
    failures are a passing outage (a restart, a deploy) and are retried.
    """
    if not isinstance(exc, httpx.ConnectError):
        return None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"its host name does not resolve ({cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused (nothing listens there)"
        cause = cause.__cause__ or cause.__context__
    return None


def check_reachable(base_url: str, *, timeout: float = 5.0) -> None:
    """Raise `ServiceUnreachableError` at once if `base_url` is a wrong address.

    A cheap check before anything slow starts (a Prefect server, a batch): it resolves
    the host and opens one TCP connection, sending nothing. Only a host that does not
    resolve or a refused connection raise; anything else (a slow network, a proxy in
    the environment) is left to the client's own retries.

    Example:
        ```python
        check_reachable("http://127.0.0.1:8787")  # raises if nothing listens there
        ```
    """
    url = httpx.URL(base_url)
    host = url.host
    if not host or url.scheme not in ("http", "https"):
        return
    if any(urllib.request.getproxies_environment().get(s) for s in (url.scheme, "all")):
        return  # the proxy, not this machine, connects to the API
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror as exc:
        reason = f"its host name does not resolve ({exc.strerror or exc})"
    except ConnectionRefusedError:
        reason = "the connection was refused (nothing listens there)"
    except OSError:
        return
    raise ServiceUnreachableError(base_url.rstrip("/"), reason)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number (fractions tolerated) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_error(response: httpx.Response) -> ApiError:
    """Map an error answer to the exception tree, keeping the server's message."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = error_message_from_body(body)
    request_id = None
    if isinstance(body, dict) and isinstance(body.get("requestId"), str):
        request_id = body["requestId"]
    request_id = request_id or response.headers.get("x-request-id")
    status = response.status_code
    kinds: dict[int, type[ApiError]] = {
        400: InvalidRequestError,
        401: AuthenticationError,
        402: InsufficientCreditsError,
        403: InsufficientCreditsError,
        404: NotFoundError,
        422: InvalidRequestError,
    }
    if status == 429:
        kind: type[ApiError] = RateLimitError
    elif status >= 500:
        kind = ServerError
    else:
        kind = kinds.get(status, ApiError)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return kind(
        message,
        status_code=status,
        request_id=request_id,
        retry_after=retry_after,
        fix=_fix_for(status, response),
    )


def _fix_for(status: int, response: httpx.Response) -> str | None:
    """What to do about an answer whose status alone tells: the key, the balance, the URL."""
    try:
        request: httpx.Request | None = response.request
    except RuntimeError:  # a response built by hand, without its request
        request = None
    if status == 401:
        where = f" for {request.url.scheme}://{request.url.netloc.decode()}" if request else ""
        return (
            f"check the API key (AIMLAPI_API_KEY, or the AimlApiCredentials block's api_key) "
            f"is a valid AI/ML API key{where}"
        )
    if status in (402, 403):
        return "top up the AI/ML API balance, or use a key whose account may run this model"
    if status == 404 and request is not None and request.method == "POST":
        # A POST goes to a fixed route: only a wrong root URL can make it unknown.
        url = str(request.url.copy_with(query=None))
        base = next(
            (url.removesuffix(p) for p in (GENERATIONS_PATH, TTS_PATH) if url.endswith(p)), url
        )
        return (
            f"check base_url ({base}): it must be the API's root, like {DEFAULT_BASE_URL}, "
            f"without /v1 or /v2"
        )
    return None


def _generation(response: httpx.Response) -> Generation:
    try:
        return Generation.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise ServerError(
            f"unreadable generation in the answer ({type(exc).__name__})",
            status_code=response.status_code,
        ) from None


class _Protocol:
    """What the sync and async clients share: settings, requests, answers, polling state."""

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = 60.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        log: Logger | None = None,
        timing: TimingBook | None = None,
        before_status_request: BeforeStatusRequest | None = None,
    ) -> None:
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not key.get_secret_value().strip():
            raise AuthenticationError(
                "no API key given: pass api_key, or set AIMLAPI_API_KEY and use "
                "AimlApiCredentials.from_env()",
                status_code=401,
            )
        self._api_key = key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollSchedule()
        self.log: Logger = log or logger
        self.timing: TimingBook = timing if timing is not None else PROCESS_TIMINGS
        self.before_status_request = before_status_request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key=SecretStr('**********'))"

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "verify": shared_tls_context(),
            "headers": {
                "Authorization": f"Bearer {self._api_key.get_secret_value()}",
                "Accept": "application/json",
                "User-Agent": "prefect-omnihuman",
            },
        }

    def _transport_error(self, exc: httpx.TransportError) -> TransportError:
        """Our error for a failed request to the API root: unreachable, or transient."""
        if not has_answered(self.base_url):
            reason = unreachable_reason(exc)
            if reason is not None:
                return ServiceUnreachableError(self.base_url, reason)
        return transport_error(exc)

    def _note_retry(
        self, what: str, attempt: int, error: Exception, delay: float, attempts: int
    ) -> None:
        self.log.warning(
            "%s failed (%s); retry %d of %d in %.1f s", what, error, attempt, attempts - 1, delay
        )

    @staticmethod
    def _finished(generation: Generation) -> Generation:
        if generation.phase is Phase.ERROR:
            message = generation.error.message if generation.error else "no message given"
            raise GenerationFailedError(generation.id, message)
        return generation


def model_of(generation_id: str) -> str:
    """The model named by a generation id's `:model` suffix (the default model without one)."""
    _, colon, model = generation_id.partition(":")
    return model if colon and model else DEFAULT_MODEL


#: A job done at its first check is recorded as this fraction of the check's time.
FIRST_CHECK_SHRINK = 0.9


class _Waiter:
    """The state of one `wait`: elapsed time, last status, the window and the next delay."""

    def __init__(
        self,
        protocol: _Protocol,
        generation: str | Generation,
        timeout: float,
        audio_seconds: float | None,
        on_status: StatusCallback | None,
        started_at: float | None,
    ) -> None:
        self.protocol = protocol
        self.generation_id = generation if isinstance(generation, str) else generation.id
        self.timeout = timeout
        self.on_status = on_status
        self.audio_seconds = audio_seconds
        self.model = model_of(self.generation_id)
        self.started = time.monotonic()
        # Elapsed time since submission (not since this wait began) drives the schedule,
        # so a resumed wait picks up where the job really is.
        self.offset = max(0.0, time.time() - started_at) if started_at else 0.0
        self.window = self._window()
        self.last_status = "unknown"
        self.warned_unknown = False
        self.checks = 0
        # The submission's own answer says pending at elapsed 0: the first check can wait.
        fresh = not isinstance(generation, str) and generation.phase is Phase.PENDING
        self.pending_at: float | None = 0.0 if fresh else None
        self.sleep_first = fresh and self.window is not None and self.offset < self.window.low

    def _window(self) -> CompletionWindow | None:
        protocol = self.protocol
        try:
            samples = protocol.timing.samples(self.model, protocol.base_url)
        except Exception as error:  # a history that cannot be read only costs precision
            protocol.log.warning("Could not read the timing history (%s); using the guess", error)
            samples = []
        window = learned_window(samples, self.audio_seconds, protocol.poll)
        if window is not None:
            protocol.log.debug(
                "Expecting %s within %.0f-%.0f s (typically %.0f s, from %d earlier jobs)",
                self.generation_id,
                window.low,
                window.high,
                window.typical,
                len(samples),
            )
            return window
        return protocol.poll.guess(self.audio_seconds)

    def _record(self, seen_at: float) -> None:
        """Teach the timing history how long this job took (between the last two checks)."""
        if self.audio_seconds is None or self.pending_at is None:
            return
        seconds = (self.pending_at + seen_at) / 2
        if self.checks == 1 and self.window is not None:
            # Done at the first check (at the window's start), pending only at submission:
            # it ended before the check, most likely not long before (halfway would be an
            # outlier). Recording a little less than the check opens the next window a
            # little earlier, and again while jobs are done at their first check: the
            # check itself would keep every later window as late as this one was.
            seconds = seen_at * FIRST_CHECK_SHRINK
        sample = TimingSample(
            model=self.model,
            service=self.protocol.base_url,
            audio_seconds=self.audio_seconds,
            seconds=seconds,
        )
        try:
            self.protocol.timing.record(sample)
        except Exception as error:  # losing a sample only costs precision
            self.protocol.log.warning("Could not record the job's timing (%s)", error)

    def waited(self) -> float:
        return time.monotonic() - self.started

    def observe(self, generation: Generation) -> Generation | None:
        """Record a poll's answer; the finished generation once it is done."""
        elapsed = self.offset + self.waited()
        self.checks += 1
        if generation.status != self.last_status:
            self.protocol.log.info(
                "Generation %s is %s (%.0f s)",
                generation.id,
                generation.status,
                self.offset + self.waited(),
            )
            self._check_status(generation)
            self.last_status = generation.status
            if self.on_status:
                self.on_status(generation)
        if generation.phase is Phase.PENDING:
            self.pending_at = elapsed
            return None
        if generation.phase is Phase.COMPLETED:
            self._record(elapsed)
        return _Protocol._finished(generation)

    def _check_status(self, generation: Generation) -> None:
        """Warn once per generation about a status word outside the known set."""
        pending = generation.phase is Phase.PENDING
        if pending and not self.warned_unknown and not is_known_status(generation.status):
            self.warned_unknown = True
            self.protocol.log.warning(
                "Generation %s reported unknown status %r without a video; treating it as "
                "still pending until an answer carries the video",
                generation.id,
                generation.status,
            )

    def poll_failed(self, error: Exception) -> None:
        """A poll failed even after the request's own retries: keep waiting unless permanent."""
        if not is_transient(error):
            raise error
        self.protocol.log.warning(
            "Could not check generation %s (%s); will try again", self.generation_id, error
        )

    def next_delay(self) -> float:
        """Seconds to sleep, or raise `GenerationTimeoutError` when time is up."""
        waited = self.waited()
        if waited >= self.timeout:
            raise GenerationTimeoutError(self.generation_id, waited, self.last_status)
        schedule = self.protocol.poll
        delay = schedule.delay(self.offset + waited, self.window)
        # Never later than planned, a little earlier at random (by at most a tenth of the
        # densest spacing, so a long wait still ends at the window): many rows' polls spread.
        delay -= random.uniform(0.0, 0.1) * min(delay, 2 * schedule.min_interval)
        return min(delay, max(0.0, self.timeout - waited))


def _video_url(generation: Generation) -> str:
    url = generation.video_url
    if generation.phase is not Phase.COMPLETED or not url:
        raise ValueError(
            f"generation {generation.id} is {generation.status!r} and has no video yet; "
            "wait for it first"
        )
    return url


def _download_error(generation: Generation, response: httpx.Response) -> Exception:
    if response.status_code in (401, 403, 404, 410):
        return ResultExpiredError(generation.id, response.status_code)
    return api_error(response)


_AUDIO_SUFFIXES = {
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/wave": ".wav",
    "audio/x-wav": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
    "audio/webm": ".webm",
}
_AUDIO_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"))


@dataclass(frozen=True)
class SpeechFile:
    """Synthesised speech, written to a local file.

    Attributes:
        path: The local file.
        size_bytes: Its size.
        content_type: The media type the service declared for the audio.
        url: The service's (temporary) audio URL for JSON-answering models; None when the
            audio came back as the answer's body.
    """

    path: Path
    size_bytes: int
    content_type: str
    url: str | None

    @property
    def suffix(self) -> str:
        """The file extension the audio deserves: from its type, its URL, or its first bytes."""
        declared = _AUDIO_SUFFIXES.get(self.content_type.split(";")[0].strip().lower())
        if declared:
            return declared
        from_url = Path((self.url or "").split("?")[0]).suffix.lower()
        if from_url in _AUDIO_SUFFIXES.values():
            return from_url
        with open(self.path, "rb") as handle:
            head = handle.read(12)
        for magic, suffix in _AUDIO_MAGIC:
            if head.startswith(magic):
                return suffix
        return ".mp3" if head[:1] == b"\xff" else ".bin"


def _speech_body(
    text: str, model: str, voice: str | None, options: dict[str, Any] | None
) -> dict[str, Any]:
    return SpeechRequest(model=model, text=text, voice=voice, **(options or {})).payload()


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "").lower()


def _speech_url(response: httpx.Response) -> str:
    """The audio URL of a JSON answer; a paid answer without one is ambiguous, not retried."""
    try:
        return SpeechAnswer.model_validate(response.json()).audio.url
    except (ValueError, ValidationError):
        raise AmbiguousSubmissionError(
            f"HTTP {response.status_code} answer without an audio URL"
        ) from None


def _broken_stream(exc: httpx.TransportError) -> AmbiguousSubmissionError:
    return AmbiguousSubmissionError(f"the audio stream broke off: {transport_error(exc)}")


def _speech_logged(client: _Protocol, speech: SpeechFile, model: str) -> SpeechFile:
    how = "from its audio URL" if speech.url else "streamed"
    client.log.info("Synthesised speech with %s (%s, %d bytes)", model, how, speech.size_bytes)
    return speech


class OmniHumanClient(_Protocol):
    """Synchronous client for OmniHuman video generations on the AI/ML API.

    Args:
        api_key: The AI/ML API key (kept as a secret; never logged).
        base_url: The API's root, e.g. an emulator's `http://127.0.0.1:PORT`.
        timeout: Per-request timeout in seconds, or an `httpx.Timeout`.
        retry: Backoff for transient failures.
        poll: The adaptive schedule `wait` follows.
        log: Where progress and retries are logged (a Prefect run logger works).
        transport: An httpx transport, for proxies or tests.
        timing: Where finished jobs' durations are kept and learned from (default: this
            process's memory; `storage.timing_history.TimingHistory` shares them).
        before_status_request: Called before every status check, e.g. a fleet-wide rate
            limit (`workflows` passes Prefect's `rate_limit`).
    """

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = 60.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        log: Logger | None = None,
        transport: httpx.BaseTransport | None = None,
        timing: TimingBook | None = None,
        before_status_request: BeforeStatusRequest | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            poll=poll,
            log=log,
            timing=timing,
            before_status_request=before_status_request,
        )
        self._http = httpx.Client(transport=transport, **self._client_kwargs())

    def __enter__(self) -> OmniHumanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        _note_answer(self.base_url)
        if response.is_success:
            return response
        if stream:
            response.read()
        raise api_error(response)

    def _retrying(
        self,
        what: str,
        call: Callable[[], T],
        safe: Callable[[Exception], bool],
        attempts: int | None = None,
    ) -> T:
        attempts = attempts or self.retry.max_attempts
        attempt = 1
        while True:
            try:
                return call()
            except Exception as error:
                if attempt >= attempts or not safe(error):
                    raise
                delay = self.retry.delay(attempt, error)
                self._note_retry(what, attempt, error, delay, attempts)
                time.sleep(delay)
                attempt += 1

    def submit(self, request: VideoGenerationRequest | None = None, /, **fields: Any) -> Generation:
        """Start a paid generation; returns it with its id (status usually `queued`).

        Retried only when the request provably was not accepted (refused connection,
        429, 503). A failure after the request was sent raises
        `AmbiguousSubmissionError` instead of risking a second charge.
        """
        body = (request or VideoGenerationRequest(**fields)).payload()

        def post() -> Generation:
            try:
                response = self._send(self._http.build_request("POST", GENERATIONS_PATH, json=body))
                return _generation(response)
            except (ApiError, TransportError) as error:
                raise as_submission_error(error) from None

        generation = self._retrying("Submission", post, is_safe_to_resubmit)
        self.log.info("Submitted generation %s (status %s)", generation.id, generation.status)
        return generation

    def get(self, generation_id: str) -> Generation:
        """The generation's current state; transient failures are retried."""

        def fetch() -> Generation:
            if self.before_status_request is not None:
                self.before_status_request()
            request = self._http.build_request(
                "GET", GENERATIONS_PATH, params={"generation_id": generation_id}
            )
            return _generation(self._send(request))

        return self._retrying(f"Status check of {generation_id}", fetch, is_transient)

    def wait(
        self,
        generation: str | Generation,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        audio_seconds: float | None = None,
        started_at: float | None = None,
        on_status: StatusCallback | None = None,
    ) -> Generation:
        """Poll until the generation completes; return it with its video URL.

        Args:
            generation: The generation or its id.
            timeout: Seconds to wait before `GenerationTimeoutError` (which carries the id).
            audio_seconds: The voice track's length, to predict when the job ends.
            started_at: Epoch seconds of submission, when resuming an older job.
            on_status: Called with the generation whenever its status changes.

        Raises:
            GenerationFailedError: The generation ended in `error`.
            GenerationTimeoutError: It did not finish in time; it may still finish.
        """
        generation_id = generation if isinstance(generation, str) else generation.id
        waiter = _Waiter(self, generation, timeout, audio_seconds, on_status, started_at)
        if waiter.sleep_first:
            time.sleep(waiter.next_delay())
        while True:
            try:
                done = waiter.observe(self.get(generation_id))
            except (ApiError, TransportError) as error:
                waiter.poll_failed(error)
                done = None
            if done is not None:
                return done
            time.sleep(waiter.next_delay())

    @contextmanager
    def stream_video(
        self, generation: Generation, *, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> Iterator[Iterator[bytes]]:
        """Stream a completed generation's video, chunk by chunk, in bounded memory.

        The result URL is a temporary public link, so no API key is sent with it.

        Raises:
            ResultExpiredError: The temporary URL no longer serves the video.
        """
        url = _video_url(generation)
        try:
            with httpx.stream(
                "GET", url, timeout=self.timeout, follow_redirects=True, verify=shared_tls_context()
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _download_error(generation, response)
                yield response.iter_bytes(chunk_bytes)
        except httpx.TransportError as exc:
            raise transport_error(exc) from None

    def download(self, generation: Generation, path: str | os.PathLike[str]) -> int:
        """Write a completed generation's video to a local file; return its size.

        Streams in bounded memory. A dropped connection or 5xx restarts the download
        (per the retry policy); an expired URL raises `ResultExpiredError` at once.
        """

        def fetch() -> int:
            with self.stream_video(generation) as chunks, open(path, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                return handle.tell()

        return self._retrying(f"Download of {generation.id}", fetch, is_transient)

    def synthesize_speech(
        self,
        text: str,
        path: str | os.PathLike[str],
        *,
        model: str = DEFAULT_TTS_MODEL,
        voice: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> SpeechFile:
        """Turn text into speech (`POST /v1/tts`) and write the audio to `path`.

        The service answers JSON with an audio URL (OpenAI-style models), which is then
        downloaded, or the audio itself (Deepgram, ElevenLabs), told apart by the answer's
        Content-Type; either way the audio is streamed to `path` in bounded memory.
        The POST is paid, so like `submit` it is retried only when provably not accepted
        and raises `AmbiguousSubmissionError` otherwise (a stream that broke off too).

        Example:
            ```python
            speech = client.synthesize_speech("Hello!", "hello.mp3", model="deepgram/aura-2")
            print(speech.size_bytes, speech.suffix)
            ```
        """
        body = _speech_body(text, model, voice, options)

        def post() -> SpeechFile:
            try:
                request = self._http.build_request("POST", TTS_PATH, json=body)
                response = self._send(request, stream=True)
            except (ApiError, TransportError) as error:
                raise as_submission_error(error) from None
            content_type = response.headers.get("content-type", "")
            try:
                if _is_json(response):
                    response.read()
                    return SpeechFile(Path(path), 0, content_type, _speech_url(response))
                with open(path, "wb") as handle:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                        handle.write(chunk)
                    return SpeechFile(Path(path), handle.tell(), content_type, None)
            except httpx.TransportError as exc:
                raise _broken_stream(exc) from None
            finally:
                response.close()

        speech = self._retrying("Speech synthesis", post, is_safe_to_resubmit)
        if speech.url is not None:
            url = speech.url

            def fetch() -> SpeechFile:
                try:
                    with httpx.stream(
                        "GET",
                        url,
                        timeout=self.timeout,
                        follow_redirects=True,
                        verify=shared_tls_context(),
                    ) as response:
                        if not response.is_success:
                            response.read()
                            raise api_error(response)
                        with open(path, "wb") as handle:
                            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                                handle.write(chunk)
                            kind = response.headers.get("content-type", "")
                            return SpeechFile(Path(path), handle.tell(), kind, url)
                except httpx.TransportError as exc:
                    raise transport_error(exc) from None

            try:
                # The speech is paid for and its download is free: giving up means buying it
                # again, so the download gets twice the usual tries.
                speech = self._retrying(
                    "Download of the speech", fetch, is_transient, 2 * self.retry.max_attempts
                )
            except (ApiError, TransportError) as error:
                raise SpeechDownloadError(str(error)) from None
        return _speech_logged(self, speech, model)


class AsyncOmniHumanClient(_Protocol):
    """Asynchronous twin of `OmniHumanClient`, with the same methods as coroutines.

    Example:
        ```python
        async with AsyncOmniHumanClient(api_key="...") as client:
            generation = await client.submit(image_url=..., audio_url=...)
            done = await client.wait(generation)
        ```
    """

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = 60.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        log: Logger | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timing: TimingBook | None = None,
        before_status_request: BeforeStatusRequest | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            poll=poll,
            log=log,
            timing=timing,
            before_status_request=before_status_request,
        )
        self._http = httpx.AsyncClient(transport=transport, **self._client_kwargs())

    async def __aenter__(self) -> AsyncOmniHumanClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        _note_answer(self.base_url)
        if response.is_success:
            return response
        await response.aread()
        raise api_error(response)

    async def _retrying(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        safe: Callable[[Exception], bool],
        attempts: int | None = None,
    ) -> T:
        attempts = attempts or self.retry.max_attempts
        attempt = 1
        while True:
            try:
                return await call()
            except Exception as error:
                if attempt >= attempts or not safe(error):
                    raise
                delay = self.retry.delay(attempt, error)
                self._note_retry(what, attempt, error, delay, attempts)
                await asyncio.sleep(delay)
                attempt += 1

    async def submit(
        self, request: VideoGenerationRequest | None = None, /, **fields: Any
    ) -> Generation:
        """Start a paid generation; see `OmniHumanClient.submit`."""
        body = (request or VideoGenerationRequest(**fields)).payload()

        async def post() -> Generation:
            try:
                request = self._http.build_request("POST", GENERATIONS_PATH, json=body)
                return _generation(await self._send(request))
            except (ApiError, TransportError) as error:
                raise as_submission_error(error) from None

        generation = await self._retrying("Submission", post, is_safe_to_resubmit)
        self.log.info("Submitted generation %s (status %s)", generation.id, generation.status)
        return generation

    async def get(self, generation_id: str) -> Generation:
        """The generation's current state; see `OmniHumanClient.get`."""

        async def fetch() -> Generation:
            if self.before_status_request is not None:
                waited = self.before_status_request()
                if inspect.isawaitable(waited):
                    await waited
            request = self._http.build_request(
                "GET", GENERATIONS_PATH, params={"generation_id": generation_id}
            )
            return _generation(await self._send(request))

        return await self._retrying(f"Status check of {generation_id}", fetch, is_transient)

    async def wait(
        self,
        generation: str | Generation,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        audio_seconds: float | None = None,
        started_at: float | None = None,
        on_status: StatusCallback | None = None,
    ) -> Generation:
        """Poll until the generation completes; see `OmniHumanClient.wait`."""
        generation_id = generation if isinstance(generation, str) else generation.id
        waiter = _Waiter(self, generation, timeout, audio_seconds, on_status, started_at)
        if waiter.sleep_first:
            await asyncio.sleep(waiter.next_delay())
        while True:
            try:
                done = waiter.observe(await self.get(generation_id))
            except (ApiError, TransportError) as error:
                waiter.poll_failed(error)
                done = None
            if done is not None:
                return done
            await asyncio.sleep(waiter.next_delay())

    @asynccontextmanager
    async def stream_video(
        self, generation: Generation, *, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a completed generation's video; see `OmniHumanClient.stream_video`."""
        url = _video_url(generation)
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=True, verify=shared_tls_context()
                ) as http,
                http.stream("GET", url) as response,
            ):
                if not response.is_success:
                    await response.aread()
                    raise _download_error(generation, response)
                yield response.aiter_bytes(chunk_bytes)
        except httpx.TransportError as exc:
            raise transport_error(exc) from None

    async def download(self, generation: Generation, path: str | os.PathLike[str]) -> int:
        """Write a completed generation's video to a local file; see `OmniHumanClient.download`."""

        async def fetch() -> int:
            async with self.stream_video(generation) as chunks:
                with open(path, "wb") as handle:
                    async for chunk in chunks:
                        handle.write(chunk)
                    return handle.tell()

        return await self._retrying(f"Download of {generation.id}", fetch, is_transient)

    async def synthesize_speech(
        self,
        text: str,
        path: str | os.PathLike[str],
        *,
        model: str = DEFAULT_TTS_MODEL,
        voice: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> SpeechFile:
        """Turn text into speech and write it to `path`; see `OmniHumanClient.synthesize_speech`."""
        body = _speech_body(text, model, voice, options)

        async def post() -> SpeechFile:
            try:
                request = self._http.build_request("POST", TTS_PATH, json=body)
                response = await self._send(request, stream=True)
            except (ApiError, TransportError) as error:
                raise as_submission_error(error) from None
            content_type = response.headers.get("content-type", "")
            try:
                if _is_json(response):
                    await response.aread()
                    return SpeechFile(Path(path), 0, content_type, _speech_url(response))
                with open(path, "wb") as handle:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                        handle.write(chunk)
                    return SpeechFile(Path(path), handle.tell(), content_type, None)
            except httpx.TransportError as exc:
                raise _broken_stream(exc) from None
            finally:
                await response.aclose()

        speech = await self._retrying("Speech synthesis", post, is_safe_to_resubmit)
        if speech.url is not None:
            url = speech.url

            async def fetch() -> SpeechFile:
                try:
                    async with (
                        httpx.AsyncClient(
                            timeout=self.timeout, follow_redirects=True, verify=shared_tls_context()
                        ) as http,
                        http.stream("GET", url) as response,
                    ):
                        if not response.is_success:
                            await response.aread()
                            raise api_error(response)
                        with open(path, "wb") as handle:
                            async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                                handle.write(chunk)
                            kind = response.headers.get("content-type", "")
                            return SpeechFile(Path(path), handle.tell(), kind, url)
                except httpx.TransportError as exc:
                    raise transport_error(exc) from None

            try:
                # Paid for, free to download: twice the usual tries (see the sync client).
                speech = await self._retrying(
                    "Download of the speech", fetch, is_transient, 2 * self.retry.max_attempts
                )
            except (ApiError, TransportError) as error:
                raise SpeechDownloadError(str(error)) from None
        return _speech_logged(self, speech, model)
