"""The `omnihuman` command's Prefect API: the user's server, or a temporary one of its own.

Prefect starts a temporary server (SQLite in PREFECT_HOME) on first use when no
PREFECT_API_URL is set. The command starts the same server itself instead:

- early: `prefect_omnihuman/__init__` calls `start_server_early` before its imports, which
  take seconds, so the server boots meanwhile (nothing here imports Prefect);
- in a session of its own, so a signal sent to the command's process group (`timeout`, a
  terminal) reaches the command only: the command records the run as Crashed on a live
  server, then stops the server last;
- stopped without waiting for a graceful shutdown once the run's logs and events are in.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: Seconds the temporary server gets to stop by itself before it is killed.
STOP_GRACE_SECONDS = 1.0


class TemporaryPrefectServer:
    """Prefect's temporary server (SQLite in PREFECT_HOME), started by the CLI itself.

    Prefect would start the same server on first use; starting it here lets it boot
    while Prefect is imported and the inputs are checked, and puts it in its own session
    so a signal sent to the CLI's process group (`timeout`, a terminal) reaches the CLI
    only: the CLI then records the run as Crashed on a live server and stops it last.
    """

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.origin is not None
        env = {
            # This server only serves this command, and block types are registered when a
            # block is saved: skipping the start-up registration (and its check, which imports
            # every installed collection) saves about 1.2 s of its start.
            "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
            "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(Path(spec.origin).parent.parent),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            start_new_session=True,
        )  # fmt: skip
        # Stopped however the command ends, even before it reaches `prefect_api`.
        atexit.register(self.stop)
        self.ready = threading.Event()
        self.failure: str | None = None
        threading.Thread(target=self._watch_health, daemon=True).start()

    def _watch_health(self) -> None:
        import httpx

        from prefect_omnihuman.api.tls import shared_tls_context

        with httpx.Client(timeout=2.0, verify=shared_tls_context()) as client:
            while self.process.poll() is None:
                try:
                    if client.get(f"{self.api_url}/health").is_success:
                        self.ready.set()
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.failure = f"the temporary Prefect server exited with code {self.process.returncode}"
        self.ready.set()

    def wait_ready(self) -> None:
        """Block until the server answers; raise `ConnectionError` if it cannot start."""
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 90))
        if not self.ready.wait(timeout):
            self.failure = f"the temporary Prefect server did not start within {timeout:g} s"
        if self.failure:
            raise ConnectionError(
                f"{self.failure}; set PREFECT_API_URL to a running Prefect server, or raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
            )

    def stop(self) -> None:
        """Stop the server once this process's logs and events have reached it."""
        if self.process.poll() is not None:
            return
        if "prefect" in sys.modules:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=3)
            EventsWorker.drain_all(timeout=3)
        # Every state and log is committed by now, and SQLite survives a kill: a graceful
        # shutdown (stopping the server's services) only makes the command wait.
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


#: Commands that run flows, so need a Prefect API.
_RUNS_FLOWS = ("generate", "batch")
_early_server: TemporaryPrefectServer | None = None


def start_server_early() -> None:
    """When run as `omnihuman generate|batch`, start the temporary Prefect server now.

    Called by the package's `__init__` before its imports (Prefect's take seconds), so the
    server boots meanwhile. Without PREFECT_API_URL in the environment only; a server set
    in a Prefect profile is found after the imports, and this one is then stopped unused.
    """
    global _early_server
    argv = sys.argv
    if (
        _early_server is None
        and len(argv) > 1
        and Path(argv[0]).name == "omnihuman"
        and argv[1] in _RUNS_FLOWS
        and not {"--help", "-h"} & set(argv)
        and not os.environ.get("PREFECT_API_URL")
    ):
        # Until the command installs its own handler: exit (stopping the server) on SIGTERM.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _early_server = TemporaryPrefectServer()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


@contextmanager
def prefect_api() -> Iterator[TemporaryPrefectServer | None]:
    """A Prefect API for this command: the user's if configured, else a temporary server."""
    global _early_server
    from prefect.settings import PREFECT_API_URL, temporary_settings

    early, _early_server = _early_server, None
    if PREFECT_API_URL.value():
        if early:
            early.process.kill()
            early.process.wait()
        yield None
        return
    server = early or TemporaryPrefectServer()
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        server.stop()
