"""A Prefect database already at the latest migration, built once per test session.

A new SQLite database costs Prefect's server about 10 s of CPU to migrate on a 2-core VM;
a copy of one already migrated opens in about 1 s. Each SQLite Prefect server the tests
start in a new home gets a copy: the migrations that run are Prefect's own, once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_MIGRATE = (
    "import asyncio\n"
    "from prefect.server.database import provide_database_interface\n"
    "asyncio.run(provide_database_interface().create_db())\n"
)


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder all of this session's test workers see (pytest-xdist's common base)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def migrated_database(folder: Path) -> Path:
    """The migrated database in `folder`, built by whichever worker gets there first."""
    database = folder / "prefect-migrated.db"
    with (folder / "prefect-migrated.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            with tempfile.TemporaryDirectory(dir=folder) as home:
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                env.update({"PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
                subprocess.run([sys.executable, "-c", _MIGRATE], env=env, check=True)
                os.replace(Path(home) / "prefect.db", database)
    return database


def seed_home(home: Path, database: Path) -> None:
    """Give the Prefect home `home` a copy of the migrated database (its default SQLite file)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "prefect.db"
    if not target.exists():
        shutil.copyfile(database, target)
