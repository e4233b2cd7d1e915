"""The `omnihuman generate` command's own overhead: its wall time minus the generation's.

Runs the real command against the emulator (in a child process, jobs of about a second),
each run on a new voice track so every run pays for one generation. The generation's own
time is what the emulator saw (accepted to completed); the rest is the CLI: imports, the
Prefect server's start and stop, flow and task bookkeeping, staging, download, and
polling latency (at most 0.2 s: the emulator's jobs are short).

Without `--api-url`, two Prefect homes side by side, their runs taking turns: one where the
temporary server is kept for the next command (the default), one where each command stops
its own (`OMNIHUMAN_SERVER_KEEP_SECONDS=0`). Each home gets one warm-up run first, not
counted (its database is created; in the kept home that run starts the server the others
use, and its time is printed apart).

    python benchmarks/cli_overhead.py [--runs 3] [--api-url http://127.0.0.1:4200/api]

With `--api-url`, every command uses that running server instead.
Target: a median overhead of 5 s or less.
"""

from __future__ import annotations

from _offline import go_offline

go_offline("cli-overhead")

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _support import EmulatorProcess, verdict  # noqa: E402

from prefect_omnihuman.emulator import EmulatorConfig  # noqa: E402
from prefect_omnihuman.kept_server import (  # noqa: E402
    KEEP_SECONDS_VARIABLE,
    KeptServerFiles,
    KeptServerRecord,
)
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice  # noqa: E402

TARGET_SECONDS = 5.0
KEY = "bench-key"
OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))


def one_run(
    remote: EmulatorProcess, folder: Path, n: int, env: dict[str, str]
) -> tuple[float, float]:
    """(wall seconds, generation seconds) of one `omnihuman generate`."""
    voice = write_sample_voice(folder / f"voice-{n}.wav", seconds=2.0 + n / 10)
    before = set(remote.stats().accepted_at)
    started = time.perf_counter()
    done = subprocess.run(
        [
            OMNIHUMAN, "generate",
            "--image", remote.asset("portrait.png"), "--audio", remote.asset(voice.name),
            "--out", str(folder / "out" / f"{n}.mp4"), "--base-url", remote.url,
            # The adaptive poller expects real-speed jobs; polling lag is not the CLI's.
            "--max-poll-interval", "0.2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"omnihuman generate failed:\n{done.stderr[-3000:]}")
    stats = remote.stats()
    (generation,) = set(stats.accepted_at) - before
    return wall, stats.completed_at[generation] - stats.accepted_at[generation]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs (after one warm-up)")
    parser.add_argument("--api-url", default=None, help="reuse this running Prefect server")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="omnihuman-cli-overhead-"))
    write_sample_portrait(folder / "portrait.png")
    base = {**os.environ, "AIMLAPI_API_KEY": KEY}
    if args.api_url:
        modes = {f"server at {args.api_url}": {**base, "PREFECT_API_URL": args.api_url}}
    else:
        base.pop("PREFECT_API_URL", None)
        modes = {
            "temporary server kept for the next command (default)": {
                **base, "PREFECT_HOME": str(folder / "kept-home"),
                KEEP_SECONDS_VARIABLE: "120",
            },
            f"temporary server stopped with each command ({KEEP_SECONDS_VARIABLE}=0)": {
                **base, "PREFECT_HOME": str(folder / "own-home"), KEEP_SECONDS_VARIABLE: "0",
            },
        }  # fmt: skip
    config = EmulatorConfig(api_keys=[KEY], time_scale=0.05, seed=5)
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    try:
        with EmulatorProcess(config, folder) as remote:
            n = 0
            for _ in range(args.runs + 1):  # the first round warms each home up
                for mode, env in modes.items():
                    n += 1
                    runs[mode].append(one_run(remote, folder, n, env))
    finally:
        for env in modes.values():
            if "PREFECT_HOME" in env:
                stop_kept_server(Path(env["PREFECT_HOME"]))

    print(f"omnihuman generate overhead ({args.runs} runs per mode after a warm-up, taking turns)")
    for mode, results in runs.items():
        (warm_wall, warm_generation), measured = results[0], results[1:]
        print(f"{mode}:")
        print(f"  warm-up: wall {warm_wall:6.2f} s, overhead {warm_wall - warm_generation:6.2f} s")
        for n, (wall, generation) in enumerate(measured, 1):
            print(f"  run {n}: wall {wall:6.2f} s, generation {generation:5.2f} s, "
                  f"overhead {wall - generation:6.2f} s")  # fmt: skip
        overhead = statistics.median(wall - generation for wall, generation in measured)
        print(f"  median overhead: {overhead:.2f} s (target <= {TARGET_SECONDS:g} s): "
              f"{verdict(overhead <= TARGET_SECONDS)}")  # fmt: skip


def stop_kept_server(home: Path) -> None:
    """Stop the server a home's commands kept, if it is still running."""
    record = KeptServerRecord.read(KeptServerFiles(home))
    if record and record.is_running():
        os.kill(record.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
