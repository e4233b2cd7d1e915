"""Shared by the benchmarks: the emulator in a child process, quantiles, verdicts.

The emulator (and a loopback file host for its inputs) runs in a process of its own, so
its rendering CPU, its threads and its memory are not counted in the measuring process,
and its GIL does not delay the client's clock.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

import httpx

from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.emulator.state import EmulatorStats

STARTUP_TIMEOUT = 120.0


def _serve(config: EmulatorConfig, files: str, conn: Connection) -> None:
    """Child process: serve the emulator and `files` until the parent says stop or goes."""
    logging.basicConfig(level=logging.WARNING)
    with AssetHost(files) as assets, Emulator(config) as emulator:
        conn.send((emulator.url, assets.url))
        with contextlib.suppress(EOFError, OSError):
            conn.recv()


class EmulatorProcess:
    """An `Emulator` with `config` and an `AssetHost` of `files`, in a spawned child process.

    Example:
        ```python
        with EmulatorProcess(EmulatorConfig(api_keys=["k"]), folder) as remote:
            remote.url, remote.assets_url, remote.stats().polls_by_generation
        ```
    """

    def __init__(self, config: EmulatorConfig, files: Path) -> None:
        self.config = config
        self.files = files
        self.url = ""
        self.assets_url = ""
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(config, str(files), child), daemon=True
        )

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def pid(self) -> int | None:
        """The child process's id, once started."""
        return self._process.pid

    def asset(self, name: str) -> str:
        """The URL of a file of `files`, as the emulator fetches it."""
        return f"{self.assets_url}/{name}"

    def stats(self) -> EmulatorStats:
        """What the emulator saw, read over its loopback admin API."""
        answer = httpx.get(f"{self.url}/_emulator/stats", timeout=30.0)
        answer.raise_for_status()
        return EmulatorStats.model_validate(answer.json())

    def start(self) -> EmulatorProcess:
        """Start the child without waiting for it (to start several at once); returns self."""
        if self._process.pid is None:
            self._process.start()
        return self

    def __enter__(self) -> EmulatorProcess:
        self.start()
        if not self._conn.poll(STARTUP_TIMEOUT):
            self._process.kill()
            raise RuntimeError("the emulator process did not start")
        self.url, self.assets_url = self._conn.recv()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(timeout=15)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)


def quantile(values: list[float], q: float) -> float:
    """The `q` quantile (0-1) of `values`, interpolated between the two nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
