"""The kept temporary Prefect server's app: Prefect's own, stopped once no command uses it.

uvicorn's `--factory` target for the server `omnihuman generate|batch` starts and keeps
(see `kept_server`): a thread checks every second whether any command holds the users
file, and when none has for the keep time, removes the server's record and stops it as
Ctrl-C would.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from typing import IO, TYPE_CHECKING

from prefect_omnihuman.kept_server import (
    IDENTITY_VARIABLE,
    KeptServerFiles,
    KeptServerRecord,
    keep_seconds,
)

if TYPE_CHECKING:
    from fastapi import FastAPI


#: Seconds the server gets to shut down gracefully once it decided to stop.
SHUTDOWN_GRACE_SECONDS = 15.0


def create_app() -> FastAPI:
    """Prefect's server app, and the thread that stops this server when it is unused."""
    from prefect.server.api.server import create_app as prefect_server_app

    files = KeptServerFiles.of_this_process(os.environ[IDENTITY_VARIABLE])
    threading.Thread(target=_stop_when_unused, args=(files, keep_seconds()), daemon=True).start()
    return prefect_server_app()


def _stop_when_unused(files: KeptServerFiles, keep: float) -> None:
    """Return once the server is unlisted and unused; stop it however this ends."""
    try:
        with files.open_users() as users:
            while True:
                time.sleep(1.0)
                with files.locked(create=False):
                    if not _locked_if_unused(files, users, keep):
                        continue
                    record = KeptServerRecord.read(files)
                    if record and record.pid == os.getpid():
                        files.record.unlink(missing_ok=True)
                    # Unlisted now: no command can take it, and the next one need not wait.
                    fcntl.flock(users, fcntl.LOCK_UN)
                return
    finally:  # also when the home has gone, or anything above failed
        os.kill(os.getpid(), signal.SIGINT)
        # uvicorn's graceful shutdown may hang on a client: the server is unlisted by now.
        deadline = threading.Timer(SHUTDOWN_GRACE_SECONDS, os._exit, args=(0,))
        deadline.daemon = True  # a shutdown that ends in time does not wait for it
        deadline.start()


def _locked_if_unused(files: KeptServerFiles, users: IO[str], keep: float) -> bool:
    """Lock the users file alone if no command holds it and the last one let go `keep`
    seconds ago (or the home has gone); True when it did, so no command takes the server."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    try:
        idle = time.time() - files.users.stat().st_mtime
    except OSError:
        return True
    if idle >= keep:
        return True
    fcntl.flock(users, fcntl.LOCK_UN)
    return False
