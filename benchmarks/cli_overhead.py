"""The `omnihuman generate` command's own overhead: its wall time minus the generation's.

Runs the real command against the emulator (in a child process, jobs of about a second)
a few times with a warm Prefect home (one warm-up run first, not counted), each on a new
voice track so every run pays for one generation. The generation's own time is what the
emulator saw (accepted to completed); the rest is the CLI: imports, the temporary Prefect
server's start and stop, flow and task bookkeeping, staging, download, and polling latency
(at most 0.2 s: the emulator's jobs are short).

    python benchmarks/cli_overhead.py [--runs 3] [--api-url http://127.0.0.1:4200/api]

With `--api-url`, the command reuses that running server instead of starting its own.
Target: a median overhead of 5 s or less.
"""

from __future__ import annotations

from _offline import go_offline

go_offline("cli-overhead")

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _support import EmulatorProcess, verdict  # noqa: E402

from prefect_omnihuman.emulator import EmulatorConfig  # noqa: E402
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
    env = {**os.environ, "AIMLAPI_API_KEY": KEY}
    if args.api_url:
        env["PREFECT_API_URL"] = args.api_url
    config = EmulatorConfig(api_keys=[KEY], time_scale=0.05, seed=5)
    with EmulatorProcess(config, folder) as remote:
        one_run(remote, folder, 0, env)  # warm-up: the Prefect home's database is created
        results = [one_run(remote, folder, n, env) for n in range(1, args.runs + 1)]

    mode = f"server at {args.api_url}" if args.api_url else "temporary Prefect server"
    print(f"omnihuman generate overhead ({mode}, warm PREFECT_HOME, {args.runs} runs)")
    for n, (wall, generation) in enumerate(results, 1):
        print(f"  run {n}: wall {wall:6.2f} s, generation {generation:5.2f} s, "
              f"overhead {wall - generation:6.2f} s")  # fmt: skip
    overhead = statistics.median(wall - generation for wall, generation in results)
    print(f"median overhead: {overhead:.2f} s (target <= {TARGET_SECONDS:g} s): "
          f"{verdict(overhead <= TARGET_SECONDS)}")  # fmt: skip


if __name__ == "__main__":
    main()
