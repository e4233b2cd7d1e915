"""Spool files: a killed delivery's temporary file is swept by the next delivery there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from prefect_omnihuman.storage.media_storage import spool_file_for, sweep_abandoned_spools


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_writers_spool_is_swept_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "out" / "video.mp4"
    target.parent.mkdir()
    host = socket.gethostname()
    abandoned = target.parent / f".video.mp4.{host}-{dead_pid()}.abc123.part"
    in_progress = target.parent / f".video.mp4.{host}-{os.getpid()}.def456.part"
    other_video = target.parent / f".other.mp4.{host}-{dead_pid()}.ghi789.part"
    for spool in (abandoned, in_progress, other_video):
        spool.write_bytes(b"partial")

    spool = spool_file_for(str(target))

    assert not abandoned.exists()
    assert in_progress.exists() and other_video.exists()
    assert spool.parent == target.parent and spool.name.startswith(f".video.mp4.{host}-")
    assert sweep_abandoned_spools(target) == []  # the new spool belongs to a live process
