"""A throwaway PostgreSQL cluster on loopback, for a Prefect server that takes real load.

SQLite serialises writes: a `prefect server start` on it, with two workers and their flow
runs writing at once on 2 cores, answers `503 database busy` often enough that Prefect's
client backs off for 2, 4, 8, 16... seconds, so a row may stall for minutes. The README
tells users to run their server on PostgreSQL; tests that load a server do the same.

Needs Debian's PostgreSQL (`make test` installs it when missing, as root on Debian);
as root, the cluster runs as the `postgres` user, since PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Where Debian puts the server's programs when they are not on PATH.
DEBIAN_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def postgres_program(name: str) -> str | None:
    """The path of PostgreSQL's `initdb` or `pg_ctl`, or None if it is not installed."""
    return shutil.which(name) or next(
        (str(folder / name) for folder in reversed(DEBIAN_BIN) if (folder / name).exists()),
        None,
    )


def missing_reason() -> str | None:
    """Why a throwaway cluster cannot start here, or None if it can."""
    if not (postgres_program("initdb") and postgres_program("pg_ctl")):
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway cluster: Prefect's database URL for it and its data folder."""

    url: str
    data: Path

    @property
    def pid(self) -> int:
        """The postmaster's process id (for measuring its CPU)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextmanager
def throwaway_postgres(fsync: bool = False) -> Iterator[PostgresCluster]:
    """Start a cluster (trust auth, loopback only) in a new folder; stop it (fast shutdown)
    and delete the folder afterwards.

    `fsync` off by default: a throwaway cluster need not survive a power cut, and the
    tests' I/O drops; benchmarks keep it on, like a production server.
    """
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Directly in the temporary directory: the `postgres` user cannot enter pytest's folders.
    folder = Path(tempfile.mkdtemp(prefix="omnihuman-postgres-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    data = folder / "data"
    pg_ctl = [*as_postgres, str(postgres_program("pg_ctl")), "-D", str(data), "-w"]
    try:
        initdb = [*as_postgres, str(postgres_program("initdb")), "-D", str(data), "-A", "trust"]
        subprocess.run([*initdb, "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        if not fsync:
            options += " -c fsync=off"
        start = [*pg_ctl, "-o", options, "-l", str(folder / "postgres.log"), "start"]
        subprocess.run(start, check=True, capture_output=True)
        yield PostgresCluster(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", data)
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
