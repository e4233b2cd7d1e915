"""The emulated AI/ML API over real HTTP: routes, auth, faults, and the `Emulator` lifecycle.

A stdlib `ThreadingHTTPServer` is used on purpose: faults need to close a socket
with no answer, or in the middle of a body, which ASGI servers do not allow.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import ValidationError

from prefect_omnihuman.api.tls import shared_tls_context
from prefect_omnihuman.emulator.config import EmulatorConfig, FaultConfig, Injection
from prefect_omnihuman.emulator.faults import Fault
from prefect_omnihuman.emulator.inputs import Rejection, Submission, load_submission, parse_body
from prefect_omnihuman.emulator.render import render_talking_video
from prefect_omnihuman.emulator.speech import (
    SPEECH_FILES_PREFIX,
    TTS_PATH,
    create_speech,
    serve_speech_file,
)
from prefect_omnihuman.emulator.state import EmulatorState, EmulatorStats, Job, key_fingerprint

logger = logging.getLogger("prefect_omnihuman.emulator")

GENERATIONS_PATH = "/v2/video/generations"
FILES_PREFIX = "/files/"
ADMIN_PREFIX = "/_emulator/"

#: The message of a generation failed by a `generation_error` fault.
GENERATION_ERROR_MESSAGE = (
    "The model could not animate this input (emulated failure). "
    "Submitting the same inputs again may fail the same way."
)

_SERVER_ERROR_MESSAGES = {
    500: "Internal server error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_CHUNK = 64 * 1024
_LOOPBACK = ("127.", "::1", "::ffff:127.")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _xml_error(code: str, message: str, **extra: str) -> bytes:
    fields = "".join(f"<{name}>{value}</{name}>" for name, value in extra.items())
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message>{fields}</Error>"
    ).encode()


class _Server(ThreadingHTTPServer):
    """Knows its emulator and its open connections, so `stop()` can cut idle keep-alives."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are routine here; keep stderr quiet.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One connection; each request is routed to the API, the file host or the admin API."""

    protocol_version = "HTTP/1.1"
    server_version = "omnihuman-emulator"
    # Headers and body go out as separate writes; Nagle would hold the body ~40 ms.
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    # -- plumbing ---------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no headers, so no API key can reach the log.
        logger.debug("%s %s", self.address_string(), format % args)

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    @property
    def state(self) -> EmulatorState:
        return self.server.emulator._state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
            if path.startswith(ADMIN_PREFIX):
                self._admin(method, path, body)
            elif path == GENERATIONS_PATH and method == "POST":
                self._create(body)
            elif path == GENERATIONS_PATH and method == "GET":
                self._poll(query)
            elif path == TTS_PATH and method == "POST":
                create_speech(self, body)
            elif path.startswith(SPEECH_FILES_PREFIX) and method in ("GET", "HEAD"):
                name = path[len(SPEECH_FILES_PREFIX) :]
                serve_speech_file(self, name, head=method == "HEAD")
            elif path.startswith(FILES_PREFIX) and method in ("GET", "HEAD"):
                self._download(path[len(FILES_PREFIX) :], head=method == "HEAD")
            else:
                self._gateway_error(404, f"Cannot {method} {path}")
        except Rejection as rejection:
            self._rejection(rejection)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            logger.exception("emulator failed on %s %s", method, path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._gateway_error(500, "Internal server error")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            self.close_connection = True
            raise Rejection(400, "Invalid Content-Length")
        return self.rfile.read(size) if size else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise Rejection(400, "Invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, *, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _gateway_error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        """The AI/ML API gateway's error body: statusCode, message, path, requestId, timestamp."""
        request_id = str(uuid.uuid4())
        payload = {
            "statusCode": status,
            "message": message,
            "path": self.path,
            "requestId": request_id,
            "timestamp": _now_iso(),
        }
        self._json(status, payload, headers={"x-request-id": request_id, **(headers or {})})

    def _rejection(self, rejection: Rejection) -> None:
        if rejection.detail is not None:
            self._json(rejection.status, {"detail": rejection.detail})
        else:
            self._gateway_error(rejection.status, rejection.message)

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": f"{self.emulator.config.retry_after_seconds:g}"}

    def _drop(self) -> None:
        """Close the socket with no (further) answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _authenticate(self) -> str | None:
        """The fingerprint of a valid Bearer key, or None."""
        scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        for key in self.emulator.config.api_keys:
            if hmac.compare_digest(token.encode(), key.encode()):
                return key_fingerprint(key)
        return None

    def _apply_api_fault(self, fault: Fault | None) -> bool:
        """Answer (or drop) for a fault that stops the request; True if one did."""
        if fault is None:
            return False
        if fault.kind == "drop_connection":
            self._drop()
        elif fault.kind == "server_error":
            status = fault.status or 500
            self._gateway_error(status, _SERVER_ERROR_MESSAGES.get(status, "Server error"))
        elif fault.kind == "rate_limit":
            self._gateway_error(
                429, "Too many requests: slow down and retry later", headers=self._retry_after()
            )
        elif fault.kind == "out_of_credits":
            self._gateway_error(
                403, "Insufficient credits: top up your AI/ML API balance to run this model"
            )
        else:
            return False
        return True

    # -- API routes -------------------------------------------------------------------------

    def _create(self, raw: bytes) -> None:
        fault = self.state.draw_fault("post")
        if self._apply_api_fault(fault):
            self.state.record_rejected_post()
            return
        lose_response = fault is not None and fault.kind == "lost_response"
        fail = fault is not None and fault.kind == "generation_error"
        key = self._authenticate()
        try:
            if key is None:
                raise Rejection(401, "Unauthorized")
            submission = load_submission(
                parse_body(raw), self.emulator._http, self.state.record_fetch
            )
        except Rejection as rejection:
            self.state.record_rejected_post()
            if lose_response:
                self._drop()
            else:
                self._rejection(rejection)
            return
        job = self.emulator._accept(key, submission, fail=fail)
        if job is None:
            limit = self.emulator.config.max_concurrent_per_key
            message = (
                f"Concurrency limit reached: this API key already has {limit} generations "
                f"in progress (limit {limit}). Retry when one of them has finished."
            )
            if lose_response:
                self._drop()
            else:
                self._gateway_error(429, message, headers=self._retry_after())
            return
        if lose_response:
            self._drop()
            return
        self._json(
            200,
            {
                "id": job.id,
                "status": self.emulator.config.status_word("queued"),
                "meta": {"usage": {"tokens_used": job.tokens_used}},
            },
        )

    def _poll(self, query: str) -> None:
        if self._apply_api_fault(self.state.draw_fault("get")):
            return
        key = self._authenticate()
        if key is None:
            self._gateway_error(401, "Unauthorized")
            return
        generation_id = (parse_qs(query).get("generation_id") or [""])[0].strip()
        if not generation_id:
            problem = {
                "loc": ["query", "generation_id"],
                "msg": "Field required",
                "type": "missing",
            }
            self._json(400, {"detail": [problem]})
            return
        view = self.state.poll(generation_id, key, self.emulator.url + FILES_PREFIX.rstrip("/"))
        if view is None:
            self._gateway_error(404, f"Generation {generation_id} not found")
            return
        self._json(200, view)

    def _download(self, name: str, *, head: bool) -> None:
        fault = self.state.draw_fault("download")
        xml = "application/xml"
        if fault is not None and fault.kind == "server_error":
            status = fault.status or 500
            text = _SERVER_ERROR_MESSAGES.get(status, "Server error")
            self._send(status, _xml_error("InternalError", text), content_type=xml, head=head)
            return
        if fault is not None and fault.kind == "rate_limit":
            body = _xml_error("SlowDown", "Please reduce your request rate.")
            headers = self._retry_after()
            self._send(429, body, content_type=xml, headers=headers, head=head)
            return
        drop = fault is not None and fault.kind == "drop_connection"
        token = name[: -len(".mp4")] if name.endswith(".mp4") else ""
        outcome, path = self.state.video_file(token) if token else ("missing", None)
        if drop and (head or path is None):
            self._drop()
            return
        if outcome == "expired":
            body = _xml_error(
                "AccessDenied", "Request has expired", ServerTime=_now_iso().replace(".000", "")
            )
            self._send(403, body, content_type=xml, head=head)
            return
        if path is None:
            body = _xml_error("NoSuchKey", "The specified key does not exist.")
            self._send(404, body, content_type=xml, head=head)
            return
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            body = _xml_error("NoSuchKey", "The specified key does not exist.")
            self._send(404, body, content_type=xml, head=head)
            return
        with handle:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "private, max-age=0")
            self.end_headers()
            if head:
                return
            self.state.record_download()
            # A dropped download stops half-way: headers promised more than was sent.
            budget = max(1, size // 2) if drop else size
            rate = self.emulator.config.download_bytes_per_second
            # Throttled: about twenty writes a second, so the pace is even, not bursty.
            step = _CHUNK if rate is None else max(1024, min(_CHUNK, int(rate / 20)))
            while budget > 0:
                chunk = handle.read(min(step, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                budget -= len(chunk)
                if rate is not None:
                    time.sleep(len(chunk) / rate)
        if drop:
            self._drop()

    # -- admin routes -----------------------------------------------------------------------

    def _admin(self, method: str, path: str, raw: bytes) -> None:
        if not self.client_address[0].startswith(_LOOPBACK):
            self._gateway_error(403, "The emulator's admin API answers on loopback only")
            return
        action = path[len(ADMIN_PREFIX) :].strip("/")
        emulator = self.emulator
        try:
            if (method, action) == ("GET", "health"):
                self._json(200, {"status": "ok", "generations": self.state.job_count()})
            elif (method, action) == ("GET", "stats"):
                self._json(200, emulator.stats().model_dump(mode="json"))
            elif (method, action) == ("GET", "faults"):
                self._json(200, self.state.fault_config().model_dump(mode="json"))
            elif (method, action) == ("POST", "faults"):
                faults = FaultConfig.model_validate_json(raw or b"{}")
                emulator.set_faults(faults)
                self._json(200, faults.model_dump(mode="json"))
            elif (method, action) == ("POST", "inject"):
                injection = Injection.model_validate_json(raw or b"{}")
                self.state.inject(injection)
                self._json(200, injection.model_dump(mode="json"))
            elif (method, action) == ("POST", "reset"):
                emulator.reset()
                self._json(200, {"status": "reset"})
            else:
                self._gateway_error(404, f"Cannot {method} {path}")
        except ValidationError as error:
            self._json(400, {"detail": json.loads(error.json(include_url=False))})


def _input_fetcher() -> httpx.Client:
    """The client that fetches submitted image and audio URLs, as the service would."""
    return httpx.Client(timeout=10.0, follow_redirects=True, verify=shared_tls_context())


class Emulator:
    """The AI/ML API's video generation endpoints, emulated on loopback for offline runs.

    Jobs move through `queued`, `waiting`, `active` and `generating` to
    `completed` (with a real H.264 + AAC MP4) on a clock sped up by
    `config.time_scale`; faults can be injected on demand or at random.

    Example:
        ```python
        with Emulator(EmulatorConfig(time_scale=0.05)) as emulator:
            emulator.inject("rate_limit", route="post")
            httpx.post(f"{emulator.url}/v2/video/generations", json=body,
                       headers={"Authorization": f"Bearer {emulator.api_key}"})
            print(emulator.stats().faults_injected)  # {"rate_limit/post": 1}
        ```
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self._state = EmulatorState(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._http = _input_fetcher()
        self._files_dir: Path | None = None
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"Emulator({where})"

    @property
    def url(self) -> str:
        """The root URL, e.g. `http://127.0.0.1:54321` (the API lives under `/v2`).

        Known once started; it stays readable after `stop()`.
        """
        if self.port == 0:
            raise RuntimeError("the emulator has not started: call start() or use `with`")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The first accepted API key."""
        return self.config.api_keys[0]

    def start(self) -> Emulator:
        """Bind the port and serve in a daemon thread; returns self."""
        with self._lifecycle:
            if self._server is not None:
                return self
            if self._http.is_closed:
                self._http = _input_fetcher()
            self._files_dir = Path(tempfile.mkdtemp(prefix="omnihuman-emulator-"))
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emulator-render")
            server = _Server((self.host, self.port), self)
            self.port = int(server.server_address[1])
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"emulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
            logger.info("AI/ML API emulator listening on %s", self.url)
            return self

    def stop(self) -> None:
        """Stop serving, cut open connections, drop pending renders and delete the videos."""
        with self._lifecycle:
            server, self._server = self._server, None
            if server is None:
                return
            server.shutdown()
            server.close_connections()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            executor, self._executor = self._executor, None
            if executor is not None:
                # Renders still running finish on their own; their results are discarded.
                executor.shutdown(wait=False, cancel_futures=True)
            self._http.close()
            if self._files_dir is not None:
                shutil.rmtree(self._files_dir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> EmulatorStats:
        """A snapshot of everything the emulator saw (keys only as fingerprints)."""
        return self._state.snapshot()

    def set_faults(self, faults: FaultConfig) -> None:
        """Fail a share of requests at random from now on (`FaultConfig(rate=0)` to stop)."""
        self._state.set_faults(faults)

    def inject(
        self, kind: str, *, route: str = "post", times: int = 1, status: int | None = None
    ) -> None:
        """Give the next `times` requests on `route` the fault `kind`.

        Injections queue up in order, ahead of random faults. `status` sets a
        `server_error`'s HTTP status (default: one of 500, 502, 503, 504).

        Example:
            ```python
            emulator.inject("server_error", route="get", times=2, status=503)
            ```
        """
        self._state.inject(Injection(kind=kind, route=route, times=times, status=status))

    def reset(self) -> None:
        """Forget every generation (deleting its video), the stats and all faults."""
        for path in self._state.reset():
            path.unlink(missing_ok=True)

    def complete_now(self, generation_id: str, *, timeout: float = 60.0) -> None:
        """Finish a generation now: its render is awaited, then it reports `completed`.

        Raises:
            KeyError: The generation is unknown.
        """
        future = self._state.complete_now(generation_id)
        if future is not None:
            with contextlib.suppress(Exception):
                future.result(timeout=timeout)

    # -- internals --------------------------------------------------------------------------

    def _accept(self, key: str, submission: Submission, *, fail: bool) -> Job | None:
        executor, files_dir = self._executor, self._files_dir
        if executor is None or files_dir is None:
            raise ConnectionError("the emulator is stopping")
        job = self._state.accept(
            key=key,
            input_key=submission.input_key,
            audio_seconds=submission.audio_info.duration,
            files_dir=files_dir,
            fail_message=GENERATION_ERROR_MESSAGE if fail else None,
        )
        if job is None:
            return None
        logger.info(
            "accepted %s (%s, %.2f s of audio, %.2f s to run)",
            job.id,
            key,
            job.audio_seconds,
            job.total_seconds,
        )
        if not fail:
            future = executor.submit(
                self._render, job.id, submission.image, submission.audio, job.file_path
            )
            self._state.attach_render(job.id, future)
        return job

    def _render(self, generation_id: str, image: bytes, audio: bytes, destination: Path) -> None:
        try:
            info = render_talking_video(
                image,
                audio,
                destination,
                fps=self.config.video_fps,
                max_side=self.config.video_max_side,
            )
        except Exception as error:
            if self._server is None:
                return  # stopped meanwhile: its folder is gone, nobody is waiting
            logger.exception("rendering %s failed", generation_id)
            message = f"Rendering failed: {error}"
            self._state.render_finished(generation_id, duration=None, error=message)
            return
        if not self._state.render_finished(generation_id, duration=info.duration, error=None):
            destination.unlink(missing_ok=True)


def serve(host: str, port: int, config: EmulatorConfig) -> None:
    """Run the emulator in the foreground until interrupted (Ctrl+C or SIGTERM).

    Prints `OmniHuman emulator listening on http://HOST:PORT` once it accepts connections.

    Example:
        ```python
        serve("127.0.0.1", 8787, EmulatorConfig(api_keys=["sk-local"], time_scale=0.1))
        ```
    """
    with _terminate_as_interrupt(), Emulator(config, host=host, port=port) as emulator:
        print(f"OmniHuman emulator listening on {emulator.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a terminated emulator still cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
