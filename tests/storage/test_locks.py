"""The lock files that make identical submissions wait for each other."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect_omnihuman.storage.locks import SharedFileLockManager


def test_a_second_holder_waits_until_the_first_releases(tmp_path: Path) -> None:
    locks = SharedFileLockManager(tmp_path)
    assert locks.acquire_lock("key", "first")
    assert locks.is_lock_holder("key", "first") and not locks.is_lock_holder("key", "second")
    assert not locks.acquire_lock("key", "second", acquire_timeout=0.2)

    acquired = threading.Event()

    def second() -> None:
        locks.acquire_lock("key", "second")
        acquired.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.3)
    assert not acquired.is_set()
    locks.release_lock("key", "first")
    waiter.join(timeout=5)
    assert acquired.is_set() and locks.is_lock_holder("key", "second")
    locks.release_lock("key", "second")
    assert not locks.is_locked("key") and not list(tmp_path.iterdir())


def test_many_threads_racing_for_one_key_hold_it_one_at_a_time(tmp_path: Path) -> None:
    locks = SharedFileLockManager(tmp_path)
    inside = 0
    most = 0
    guard = threading.Lock()

    def contend(name: str) -> None:
        nonlocal inside, most
        locks.acquire_lock("shared", name)
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.02)
        with guard:
            inside -= 1
        locks.release_lock("shared", name)

    threads = [threading.Thread(target=contend, args=(f"holder-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert most == 1


def test_a_lock_left_by_a_killed_process_or_past_its_time_is_taken_over(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from prefect_omnihuman.storage.locks import SharedFileLockManager\n"
        "SharedFileLockManager(Path(sys.argv[1])).acquire_lock('orphan', 'dead')\n"
        "os._exit(0)\n"  # dies holding the lock, as after SIGKILL
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    locks = SharedFileLockManager(tmp_path)
    assert not locks.is_locked("orphan")
    assert locks.acquire_lock("orphan", "alive", acquire_timeout=1)

    # Another host's lock cannot be checked for a live process: its expiry decides.
    (tmp_path / "remote.lock").write_text(
        json.dumps({"holder": "far", "host": "elsewhere", "pid": 1, "expires": time.time() + 60})
    )
    assert not locks.acquire_lock("remote", "alive", acquire_timeout=0.2)
    (tmp_path / "remote.lock").write_text(
        json.dumps({"holder": "far", "host": "elsewhere", "pid": 1, "expires": time.time() - 1})
    )
    assert locks.acquire_lock("remote", "alive", acquire_timeout=1)
