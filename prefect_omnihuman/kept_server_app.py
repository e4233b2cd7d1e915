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

from prefect_omnihuman.kept_server import KeptServerFiles, KeptServerRecord, keep_seconds

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app() -> FastAPI:
    """Prefect's server app, and the thread that stops this server when it is unused."""
    from prefect.server.api.server import create_app as prefect_server_app

    files = KeptServerFiles.of_this_process()
    threading.Thread(target=_stop_when_unused, args=(files, keep_seconds()), daemon=True).start()
    return prefect_server_app()


def _stop_when_unused(files: KeptServerFiles, keep: float) -> None:
    with files.open_users() as users:
        while True:
            time.sleep(1.0)
            with files.locked():
                if not _unused_for(files, users, keep):
                    continue
                record = KeptServerRecord.read(files)
                if record and record.pid == os.getpid():
                    files.record.unlink(missing_ok=True)
                # Unlisted now: no command can take it, and the next one need not wait.
                fcntl.flock(users, fcntl.LOCK_UN)
            os.kill(os.getpid(), signal.SIGINT)
            return


def _unused_for(files: KeptServerFiles, users: IO[str], keep: float) -> bool:
    """No command holds the users file, and the last one let go `keep` seconds ago (or the
    home has gone). Keeps the exclusive lock when True, so no command takes the server."""
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
