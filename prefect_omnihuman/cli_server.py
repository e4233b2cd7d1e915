"""The `omnihuman` command's Prefect API: the user's server, or a temporary one of its own.

Prefect starts a temporary server (SQLite in PREFECT_HOME) on first use when no
PREFECT_API_URL is set. The command starts the same server itself instead:

- early: `prefect_omnihuman/__init__` calls `start_server_early` before its imports, which
  take seconds, so the server boots meanwhile (nothing here imports Prefect);
- in a session of its own, so a signal sent to the command's process group (`timeout`, a
  terminal) reaches the command only: the command records the run as Crashed on a live
  server, then stops the server last;
- kept for the next command in the same PREFECT_HOME (`kept_server`), or, with
  OMNIHUMAN_SERVER_KEEP_SECONDS=0, stopped without waiting for a graceful shutdown once the
  run's logs and events are in.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from prefect_omnihuman.kept_server import (
    APP_FACTORY,
    IDENTITY_VARIABLE,
    KEEP_SECONDS_VARIABLE,
    KeptServerFiles,
    KeptServerRecord,
    keep_seconds,
    server_identity,
)

if TYPE_CHECKING:
    from prefect.settings.legacy import Setting

#: Seconds the temporary server gets to stop by itself before it is killed.
STOP_GRACE_SECONDS = 1.0

#: The start of a warning that pydantic 2.12 gives as Prefect 3.4.7 (the oldest supported)
#: is imported (UnsupportedFieldAttributeWarning): nothing a user can act on, and it would come
#: before the one line a failed command ends with. The commands and their server ignore it.
PREFECT_IMPORT_WARNING = "The 'default' attribute with value 'UTC'"

_log = logging.getLogger("prefect_omnihuman.cli")
_TEMPORARY_SERVER = "the temporary Prefect server"
# The server needs none of the command's secrets (API keys, cloud credentials), but for
# its own settings (a database password).
_SECRET_NAME_PARTS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
_SERVER_SETTINGS = ("PREFECT_SERVER_", "PREFECT_API_DATABASE_")


def _is_secret(name: str) -> bool:
    upper = name.upper()
    return not upper.startswith(_SERVER_SETTINGS) and any(p in upper for p in _SECRET_NAME_PARTS)


class _HealthWatch:
    """A thread that waits for a Prefect API to answer `/health`, or for `exited` to give
    a reason it never will."""

    def __init__(
        self, api_url: str, exited: Callable[[], str | None], name: str = _TEMPORARY_SERVER
    ) -> None:
        self.api_url = api_url
        self.name = name
        self.ready = threading.Event()
        self.failure: str | None = None
        threading.Thread(target=self._watch, args=(exited,), daemon=True).start()

    def _watch(self, exited: Callable[[], str | None]) -> None:
        import httpx

        from prefect_omnihuman.api.tls import shared_tls_context

        with httpx.Client(timeout=2.0, verify=shared_tls_context()) as client:
            while (reason := exited()) is None:
                try:
                    if client.get(f"{self.api_url}/health").is_success:
                        self.ready.set()
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.failure = reason
        self.ready.set()

    def wait(self) -> None:
        """Block until the API answers; raise `ConnectionError` if it cannot start."""
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 90))
        if not self.ready.wait(timeout):
            self.failure = f"{self.name} did not answer within {timeout:g} s"
        if self.failure:
            raise ConnectionError(
                f"{self.failure}; set PREFECT_API_URL to a running Prefect server, or raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
            )


class TemporaryPrefectServer:
    """Prefect's temporary server (SQLite in PREFECT_HOME), started by the CLI itself.

    Prefect would start the same server on first use; starting it here lets it boot
    while Prefect is imported and the inputs are checked, and puts it in its own session
    so a signal sent to the CLI's process group (`timeout`, a terminal) reaches the CLI
    only: the CLI then records the run as Crashed on a live server and stops it last.
    With `kept` files it is the kept server instead (see `kept_server`): it stops itself
    when unused, and its output goes to their log.
    """

    def __init__(self, kept: KeptServerFiles | None = None, identity: str = "") -> None:
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
            # Nor does it serve automations (no one would define one on a server that ends
            # with the command): their services (triggers, actions) read the database every
            # few seconds, about 1.3 s of CPU at start and a tenth of what each flow costs it.
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            **{name: value for name, value in os.environ.items() if not _is_secret(name)},
            **({IDENTITY_VARIABLE: identity} if kept else {}),
            "PYTHONWARNINGS": ",".join(
                filter(None, (os.environ.get("PYTHONWARNINGS"), f"ignore:{PREFECT_IMPORT_WARNING}"))
            ),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        factory = APP_FACTORY if kept else "prefect.server.api.server:create_app"
        self.log = kept.log if kept else None
        output = self.log.open("ab") if self.log else None
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(Path(spec.origin).parent.parent),
                "--factory", factory,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL if kept else None,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )  # fmt: skip
        if output:
            output.close()
        if not kept:
            # Stopped however the command ends, even before it reaches `prefect_api`.
            atexit.register(self.stop)
        self.health = _HealthWatch(self.api_url, self._exit_reason)

    def _exit_reason(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        where = f" (its log: {self.log})" if self.log else ""
        return f"the temporary Prefect server exited with code {code}{where}"

    def wait_ready(self) -> None:
        """Block until the server answers; raise `ConnectionError` if it cannot start."""
        self.health.wait()

    def stop(self) -> None:
        """Stop the server once this process's logs and events have reached it."""
        if self.process.poll() is not None:
            return
        drain_prefect_senders()
        # Every state and log is committed by now, and SQLite survives a kill: a graceful
        # shutdown (stopping the server's services) only makes the command wait.
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def discard(self) -> None:
        """Stop the server unused (the command found another Prefect API)."""
        self.process.kill()
        self.process.wait()


class KeptPrefectServer:
    """This command's use of the kept temporary server (see `kept_server`): its API, from
    `wait_ready` until `stop`, which lets the server go on for the next command."""

    def __init__(
        self,
        record: KeptServerRecord,
        users: IO[str],
        files: KeptServerFiles,
        started: TemporaryPrefectServer | None,
        keep: float,
    ) -> None:
        self.api_url = f"http://127.0.0.1:{record.port}/api"
        self.pid = record.pid
        self.started_here = started is not None
        self._record = record
        self._started = started
        self._users = users
        self._files = files
        self._keep = keep
        self.health = (
            started.health
            if started
            else _HealthWatch(
                self.api_url,
                self._gone,
                f"the kept temporary Prefect server (pid {self.pid}, its log {files.log}; "
                f"{KEEP_SECONDS_VARIABLE}=0 makes each command start its own)",
            )
        )

    def _gone(self) -> str | None:
        if self._record.is_running():
            return None
        return f"the kept temporary Prefect server (pid {self.pid}) has stopped"

    def wait_ready(self) -> None:
        """Block until the server answers; raise `ConnectionError` if it cannot."""
        self.health.wait()
        how = "started by this command" if self.started_here else "started by another command"
        _log.info(
            "Prefect API: temporary server at %s, %s; it stops %g s after the last command "
            "that uses it (%s=0: with the command)",
            self.api_url, how, self._keep, KEEP_SECONDS_VARIABLE,
        )  # fmt: skip

    def stop(self) -> None:
        """Let go of the server once this process's logs and events have reached it."""
        if self._users.closed:
            return
        drain_prefect_senders()
        self._files.users.touch()  # the keep time counts from now
        self._users.close()  # and the shared lock goes with it

    def discard(self) -> None:
        """Let go of the server unused (the command found another Prefect API); one this
        command started is unlisted and stopped, as no command asked for it."""
        self._users.close()
        if self._started:
            with self._files.locked():
                if KeptServerRecord.read(self._files) == self._record:
                    self._files.record.unlink(missing_ok=True)
            self._started.discard()


PrefectServer = TemporaryPrefectServer | KeptPrefectServer


def drain_prefect_senders() -> None:
    """Wait (a few seconds at most) for this process's logs and events to reach the API."""
    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=3)
        EventsWorker.drain_all(timeout=3)


def start_temporary_server() -> PrefectServer:
    """The temporary server: the kept one (found or started) where it is kept, else one
    of this command's own. `ValueError` when OMNIHUMAN_SERVER_KEEP_SECONDS is not seconds."""
    keep = keep_seconds()
    if keep <= 0 or os.name != "posix":
        return TemporaryPrefectServer()
    identity = server_identity()
    files = KeptServerFiles.of_this_process(identity)
    users = files.open_users()
    try:
        with files.locked():
            record = KeptServerRecord.read(files)
            started = None
            if record is None or record.identity != identity or not record.is_running():
                started = TemporaryPrefectServer(kept=files, identity=identity)
                record = KeptServerRecord(started.process.pid, started.port, identity)
                record.write(files)
            files.use(users)
    except BaseException:
        users.close()
        raise
    return KeptPrefectServer(record, users, files, started, keep)


#: Commands that run flows, so need a Prefect API.
_RUNS_FLOWS = ("generate", "batch", "demo")
_early_server: PrefectServer | None = None


def start_server_early() -> None:
    """When run as `omnihuman generate|batch|demo`, start the temporary Prefect server now.

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
        with suppress(ValueError):  # the command names the bad setting
            _early_server = start_temporary_server()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def heartbeats_off_by_default() -> dict[Setting, None]:
    """Settings defaults (for `temporary_settings(set_defaults=...)`) under which flow runs
    send no heartbeats unless the environment or a profile asks for them.

    Prefect 3.9 sends one every 180 s by default (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`);
    older releases have no such setting and send none unless asked.
    """
    try:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    except ImportError:
        return {}
    return {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}


@contextmanager
def prefect_api() -> Iterator[PrefectServer | None]:
    """A Prefect API for this command: the user's if configured, else a temporary server."""
    global _early_server
    from prefect.settings import PREFECT_API_URL, temporary_settings

    early, _early_server = _early_server, None
    if PREFECT_API_URL.value():
        if early:
            early.discard()
        yield None
        return
    server = early or start_temporary_server()
    try:
        # No flow run heartbeats unless asked for: they serve automations (zombie flow
        # runs), which this server runs without, and each flow run's end waits up to 1 s
        # for the heartbeat thread's sleep.
        with temporary_settings(
            {PREFECT_API_URL: server.api_url}, set_defaults=heartbeats_off_by_default()
        ):
            yield server
    finally:
        server.stop()
