"""Where the `omnihuman` command's kept Prefect server is found, and who is using it.

The temporary Prefect server a command starts (when no PREFECT_API_URL is set) is kept
running for `OMNIHUMAN_SERVER_KEEP_SECONDS` (default 300) after the last command that used
it, so the next command in the same PREFECT_HOME uses it instead of spending seconds
starting its own. Three files in `PREFECT_HOME/omnihuman` coordinate the commands and the
server, all on one machine (file locks; POSIX only):

- `kept-server.json`: the server's pid and port, and its identity (what it was started with);
- `kept-server.lock`: held while a command finds or starts the server, and while the server
  decides whether to stop, so a command never picks a server that is stopping;
- `kept-server-<identity>.users`: every command using that server holds a shared lock on it
  and touches it when done; the server stops once it can lock it alone and it was last
  touched `keep` seconds ago (its output goes to `kept-server-<identity>.log`).

Nothing here imports Prefect: the command calls it before its imports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO

#: Seconds the temporary server is kept after the last command that used it; 0: not kept.
KEEP_SECONDS_VARIABLE = "OMNIHUMAN_SERVER_KEEP_SECONDS"
DEFAULT_KEEP_SECONDS = 300.0
#: The kept server's app: Prefect's, plus the thread that stops it when unused.
APP_FACTORY = "prefect_omnihuman.kept_server_app:create_app"
#: Tells the kept server its identity, so it uses that identity's users file.
IDENTITY_VARIABLE = "OMNIHUMAN_KEPT_SERVER_IDENTITY"

# Settings the server does not read: commands that differ only in these share a server.
_CLIENT_SETTINGS = (
    "PREFECT_API_KEY",
    "PREFECT_API_URL",
    "PREFECT_CLIENT_",
    "PREFECT_DEPLOYMENTS_",
    "PREFECT_FLOWS_",
    "PREFECT_LOCAL_STORAGE_PATH",
    "PREFECT_LOGGING_",
    "PREFECT_RESULTS_",
    "PREFECT_RUNNER_",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    "PREFECT_TASKS_",
    "PREFECT_TASK_",
    "PREFECT_WORKER_",
)

# Prefect reads settings from these files in the working directory too.
_SETTINGS_FILES = ("prefect.toml", ".env", "pyproject.toml")


def keep_seconds() -> float:
    """`OMNIHUMAN_SERVER_KEEP_SECONDS` as seconds (default 300); `ValueError` naming the fix."""
    raw = os.environ.get(KEEP_SECONDS_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_KEEP_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{KEEP_SECONDS_VARIABLE}={raw!r} is not a number of seconds: set it to the "
            f"seconds the temporary Prefect server is kept for the next command (default "
            f"{DEFAULT_KEEP_SECONDS:g}), or 0 to stop it with the command"
        )
    return seconds


class KeptServerFiles:
    """The kept server's files in one Prefect home: the record and the lock, and the users
    file and log of servers of one identity (any, when only the record is read)."""

    def __init__(self, home: Path, identity: str = "") -> None:
        self.folder = home / "omnihuman"
        self.record = self.folder / "kept-server.json"
        self.lock = self.folder / "kept-server.lock"
        self.users = self.folder / f"kept-server-{identity}.users"
        self.log = self.folder / f"kept-server-{identity}.log"

    @classmethod
    def of_this_process(cls, identity: str) -> KeptServerFiles:
        """The files in this process's PREFECT_HOME (Prefect's default: ~/.prefect)."""
        return cls(_prefect_home(), identity)

    @contextmanager
    def locked(self, create: bool = True) -> Iterator[None]:
        """Hold the lock under which the server is found, started, or stops (`create`: make
        the folder if it is missing; else `FileNotFoundError`)."""
        import fcntl  # POSIX only, as the kept server is

        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def open_users(self) -> IO[str]:
        """A handle on the users file, for one command's (or the server's) lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.users.open("a")

    @staticmethod
    def use(users: IO[str]) -> None:
        """Take a command's shared lock on the users file (closing `users` lets it go)."""
        import fcntl

        fcntl.flock(users, fcntl.LOCK_SH)


@dataclass(frozen=True)
class KeptServerRecord:
    """The kept server, as `kept-server.json` names it."""

    pid: int
    port: int
    identity: str

    @classmethod
    def read(cls, files: KeptServerFiles) -> KeptServerRecord | None:
        """The record, or None when there is none or it is not one (a new server replaces it)."""
        try:
            fields = json.loads(files.record.read_text())
            return cls(int(fields["pid"]), int(fields["port"]), str(fields["identity"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, files: KeptServerFiles) -> None:
        """Replace the record at once (a reader sees the old one or this one)."""
        partial = files.record.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(files.record)

    def is_running(self) -> bool:
        """Whether the recorded server is still there (starting, serving, or stopping): its
        pid lives and, where /proc shows it, runs the kept server's app on the recorded port
        (after a reboot or in a new container the pid may belong to anything)."""
        if not process_is_running(self.pid):
            return False
        try:
            arguments = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return not Path("/proc/self").exists()
        return APP_FACTORY.encode() in arguments and str(self.port).encode() in arguments


def _prefect_home() -> Path:
    """PREFECT_HOME as Prefect reads it from the environment (default ~/.prefect), without
    importing Prefect."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def process_is_running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: an exited server not yet reaped (no init to do it) is a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def server_identity() -> str:
    """What the server was started with: this Python, Prefect and this package, the server's
    settings in the environment, and the files Prefect reads settings from (the profiles, and
    `prefect.toml`, `.env` and `pyproject.toml` in the working directory).

    A command whose identity differs starts a server of its own (which then replaces the
    record), as a kept server would otherwise serve it with other code or another database.
    """
    settings = {
        name: value
        for name, value in os.environ.items()
        if name.upper().startswith("PREFECT_") and not name.upper().startswith(_CLIENT_SETTINGS)
    }
    profiles = os.environ.get("PREFECT_PROFILES_PATH") or str(_prefect_home() / "profiles.toml")
    files = {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (Path(profiles), *(Path.cwd() / n for n in _SETTINGS_FILES))
        if path.is_file()
    }
    described = json.dumps(
        {
            "python": sys.executable,
            "prefect": version("prefect"),
            "prefect-omnihuman": version("prefect-omnihuman"),
            "settings": settings,
            "files": files,
        },
        sort_keys=True,
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]
