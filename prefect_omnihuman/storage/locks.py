"""Lock files that serialize identical submissions across threads, processes and workers.

`submit_generation` runs its cache check and its POST under a lock on the cache
key (Prefect's SERIALIZABLE isolation), so two rows with the same inputs running
at the same moment pay once: the second waits, then finds the first's record.

Prefect ships a `FileSystemLockManager`, but its locks never expire by default
(a worker killed while holding one would block every later run) and a waiter can
read a lock file before its holder has written it. This one creates each lock
file whole (written aside, then hard-linked into place), and treats a lock as
stale when it has expired or when its holder's process on this host has died.

The folder must be shared by every process that may submit the same inputs: by
default it is `locks/` beside Prefect's local result storage
(`PREFECT_LOCAL_STORAGE_PATH`), which is where the submission records live too.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from prefect.locking.protocol import LockManager

from prefect_omnihuman.storage.media_storage import process_alive

#: Overrides the lock folder (a shared disk when result storage is a remote block).
LOCK_PATH_ENV = "OMNIHUMAN_LOCK_PATH"
#: A lock older than this is stale even if its holder seems alive (another host).
DEFAULT_HOLD_SECONDS = 900.0
_POLL_SECONDS = 0.05


def default_lock_folder() -> Path:
    """`$OMNIHUMAN_LOCK_PATH`, else `locks/` in Prefect's local result storage folder."""
    configured = os.environ.get(LOCK_PATH_ENV)
    if configured:
        return Path(configured).expanduser()
    from prefect.settings import get_current_settings

    return Path(get_current_settings().results.local_storage_path).expanduser() / "locks"


class SharedFileLockManager(LockManager):
    """A Prefect lock manager on lock files in a (shared) folder.

    Args:
        folder: Where lock files go; `default_lock_folder()` (resolved at each call,
            so it follows the settings of the process using it) when None.
        hold_seconds: How long a lock stays valid when the caller gives no
            `hold_timeout`; after that it counts as abandoned.

    Example:
        ```python
        from prefect.cache_policies import INPUTS
        from prefect.transactions import IsolationLevel

        policy = INPUTS.configure(
            isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=SharedFileLockManager()
        )
        ```
    """

    def __init__(
        self, folder: Path | None = None, *, hold_seconds: float = DEFAULT_HOLD_SECONDS
    ) -> None:
        self.folder = folder
        self.hold_seconds = hold_seconds

    def __repr__(self) -> str:
        return f"SharedFileLockManager({self.folder or 'default folder'})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SharedFileLockManager)
            and self.folder == other.folder
            and self.hold_seconds == other.hold_seconds
        )

    def __hash__(self) -> int:
        return hash((self.folder, self.hold_seconds))

    def _path(self, key: str) -> Path:
        folder = self.folder or default_lock_folder()
        return folder / f"{key.replace('/', '_')}.lock"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"holder": None, "expires": 0.0}  # unreadable: treat as abandoned
        return info

    def _is_stale(self, info: dict[str, Any]) -> bool:
        if float(info.get("expires") or 0.0) < time.time():
            return True
        same_host = info.get("host") == socket.gethostname()
        return same_host and isinstance(info.get("pid"), int) and not process_alive(info["pid"])

    def _current(self, key: str) -> dict[str, Any] | None:
        """The live lock on `key`, removing a stale one; None when unlocked."""
        path = self._path(key)
        try:
            before = path.stat()
        except FileNotFoundError:
            return None
        info = self._read(path)
        if info is None:
            return None
        if not self._is_stale(info):
            return info
        # Remove only the file judged stale, not one created since by someone else.
        with suppress(FileNotFoundError):
            if path.stat().st_ino == before.st_ino:
                path.unlink()
        return None

    def _try_create(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + (hold_timeout or self.hold_seconds),
        }
        handle, draft = tempfile.mkstemp(prefix=".lock-", dir=path.parent)
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(info, file)
            # A hard link appears whole and fails if the lock exists: atomic on POSIX and NFS.
            os.link(draft, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)

    def _attempt(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        current = self._current(key)
        if current is not None:
            return current.get("holder") == holder
        return self._try_create(key, holder, hold_timeout)

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Take the lock on `key`, waiting up to `acquire_timeout` (None: forever)."""
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._attempt(key, holder, hold_timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """`acquire_lock` without blocking the event loop while waiting."""
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._attempt(key, holder, hold_timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        """Release the lock if `holder` still holds it (a lost lock is not an error here)."""
        path = self._path(key)
        info = self._read(path)
        if info is not None and info.get("holder") == holder:
            path.unlink(missing_ok=True)

    def is_locked(self, key: str) -> bool:
        """Whether a live lock exists on `key`."""
        return self._current(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """Whether `holder` holds the live lock on `key`."""
        current = self._current(key)
        return current is not None and current.get("holder") == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until `key` is unlocked; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """`wait_for_lock` without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True
