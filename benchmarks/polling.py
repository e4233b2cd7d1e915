"""Polling: how late each poller notices a finished job, and how many requests it spends.

    .venv/bin/python benchmarks/polling.py [--jobs 10] [--quick] [--verbose]

Emulated jobs run in real time (time_scale 1), 8 s + 2 s per second of audio, +-20% seeded
jitter, on voice tracks of 6-29 s spread evenly, so they last about 17-80 s. On jobs of the
same audio lengths, side by side and concurrently in one run:

- adaptive: `AsyncOmniHumanClient.wait` with the default `PollSchedule` and the audio's length
  (and `started_at`), the way the `poll_generation` task calls it;
- fixed 1 s: the same client's `get`, then one second of sleep, while the job is pending;
- seed 10 s: `tests/seed_example.py`, the API documentation's example (poll, sleep 10 s),
  unchanged, one copy of it per job, in a thread each.

Lag is the time from the moment the emulator marks the job completed (`completed_at`) to
the moment the poller has the `completed` answer in hand; polls are the GETs the emulator
counted for the job (`polls_by_generation`). Target for the adaptive poller: median lag
<= 1 s while sending <= 1/3 of the fixed 1 s poller's requests.

The default schedule expects exactly the emulator's duration formula, so two more emulators
run at the same time with jobs 1.5 times slower (3 s per audio second) and 2 times faster
(1 s per audio second) than the poller expects: how it fares when its estimate is wrong.
Each emulator runs in a process of its own; the whole default run takes about 2.5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from _support import EmulatorProcess, quantile, verdict

from prefect_omnihuman.api.client import AsyncOmniHumanClient
from prefect_omnihuman.api.models import Generation, Phase
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.emulator import EmulatorConfig
from prefect_omnihuman.emulator.state import EmulatorStats
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

ROOT = Path(__file__).resolve().parent.parent
SEED_SCRIPT = ROOT / "tests" / "seed_example.py"
KEY = "sk-benchmark-polling"
ADAPTIVE, FIXED, SEED = "adaptive", "fixed 1 s", "seed 10 s"
FIXED_INTERVAL = 1.0
LAG_TARGET = 1.0
POLLS_TARGET = 1 / 3
MIN_AUDIO, MAX_AUDIO = 6.0, 29.0  # the API takes under 30 s of audio


@dataclass(frozen=True)
class Scenario:
    """One emulator: its seconds of work per audio second, and the pollers run against it."""

    name: str
    seconds_per_audio_second: float
    pollers: tuple[str, ...]


SCENARIOS = (
    Scenario("on time", 2.0, (ADAPTIVE, FIXED, SEED)),
    Scenario("jobs 1.5x slower than expected", 3.0, (ADAPTIVE, FIXED)),
    Scenario("jobs 2x faster than expected", 1.0, (ADAPTIVE, FIXED)),
)


@dataclass(frozen=True)
class Seen:
    """One job as a poller saw it: submitted at, and the completed answer in hand at."""

    poller: str
    generation_id: str
    audio_seconds: float
    submitted_at: float
    seen_at: float


@dataclass(frozen=True)
class Job:
    """A `Seen` job with the emulator's side of it."""

    seen: Seen
    lag: float
    polls: int
    duration: float


def voice_name(seconds: float) -> str:
    return f"voice-{seconds:05.2f}.wav"


def audio_lengths(jobs: int, longest: float) -> list[float]:
    """`jobs` audio lengths spread evenly over MIN_AUDIO..longest."""
    if jobs == 1:
        return [longest]
    step = (longest - MIN_AUDIO) / (jobs - 1)
    return [round(MIN_AUDIO + step * n, 2) for n in range(jobs)]


# -- the pollers ---------------------------------------------------------------------------


async def adaptive(client: AsyncOmniHumanClient, generation: Generation, seen: Seen) -> Seen:
    await client.wait(generation, audio_seconds=seen.audio_seconds, started_at=seen.submitted_at)
    return Seen(ADAPTIVE, generation.id, seen.audio_seconds, seen.submitted_at, time.time())


async def fixed(client: AsyncOmniHumanClient, generation: Generation, seen: Seen) -> Seen:
    while (await client.get(generation.id)).phase is Phase.PENDING:
        await asyncio.sleep(FIXED_INTERVAL)
    return Seen(FIXED, generation.id, seen.audio_seconds, seen.submitted_at, time.time())


async def run_client_pollers(
    remote: EmulatorProcess, scenario: Scenario, lengths: list[float]
) -> list[Seen]:
    """Submit a job per poller and audio length (shortest first), then poll them all at once."""
    kinds = {ADAPTIVE: adaptive, FIXED: fixed}
    watching = []
    async with AsyncOmniHumanClient(remote.api_key, base_url=remote.url) as client:
        for seconds in lengths:
            for name in scenario.pollers:
                if name not in kinds:
                    continue
                submitted_at = time.time()
                generation = await client.submit(
                    image_url=remote.asset("portrait.png"),
                    audio_url=remote.asset(voice_name(seconds)),
                )
                seen = Seen(name, generation.id, seconds, submitted_at, 0.0)
                watching.append(asyncio.create_task(kinds[name](client, generation, seen)))
        return list(await asyncio.gather(*watching))


def load_seed(remote: EmulatorProcess, audio_url: str) -> ModuleType:
    """A fresh copy of the unchanged docs example, set up for one job, printing nothing."""
    environ = {
        "SEED_API_KEY": remote.api_key,
        "SEED_BASE_URL": remote.url + "/v2",
        "SEED_IMAGE_URL": remote.asset("portrait.png"),
        "SEED_AUDIO_URL": audio_url,
    }
    spec = importlib.util.spec_from_file_location("seed_example", SEED_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)  # read once, when the script is loaded
    try:
        spec.loader.exec_module(module)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    # Its own environment (read again on every submission), so copies can run side by side.
    module.os = SimpleNamespace(environ=environ)  # type: ignore[attr-defined]
    module.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    return module


def start_seed_threads(
    remote: EmulatorProcess, lengths: list[float], into: list[Seen]
) -> list[threading.Thread]:
    """Run one copy of the docs example per audio length, each in a thread of its own."""

    def run(module: ModuleType, seconds: float) -> None:
        submitted_at = time.time()
        answer: dict[str, Any] | None = module.main()
        if answer is not None:
            into.append(Seen(SEED, answer["id"], seconds, submitted_at, time.time()))

    threads = []
    for seconds in lengths:
        module = load_seed(remote, remote.asset(voice_name(seconds)))
        thread = threading.Thread(target=run, args=(module, seconds), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


# -- measuring and reporting -----------------------------------------------------------------


def joined(seen: list[Seen], stats: EmulatorStats) -> list[Job]:
    jobs = []
    for one in seen:
        completed_at = stats.completed_at[one.generation_id]
        jobs.append(
            Job(
                seen=one,
                lag=one.seen_at - completed_at,
                polls=stats.polls_by_generation.get(one.generation_id, 0),
                duration=completed_at - one.submitted_at,
            )
        )
    return jobs


def report(scenario: Scenario, jobs: list[Job], verbose: bool) -> list[str]:
    """The scenario's table; returns the adaptive poller's missed targets, described."""
    by_poller = {
        name: [job for job in jobs if job.seen.poller == name] for name in scenario.pollers
    }
    durations = [job.duration for job in jobs]
    expected = PollSchedule()
    emulated = EmulatorConfig()
    # A job later than its formula allows was held back by the emulator's render, not the clock.
    held = sum(
        job.duration
        > (emulated.base_seconds + scenario.seconds_per_audio_second * job.seen.audio_seconds)
        * (1 + emulated.jitter)
        + 0.5
        for job in jobs
    )
    print(
        f"\n{scenario.name}: the emulator runs {emulated.base_seconds:g} s + "
        f"{scenario.seconds_per_audio_second:g} s per audio second (+-{emulated.jitter:.0%}); "
        f"the poller expects {expected.base_seconds:g} s + "
        f"{expected.seconds_per_audio_second:g} s. Jobs of {min(durations):.0f}-"
        f"{max(durations):.0f} s{f'; {held} held back by rendering' if held else ''}."
    )
    print(
        f"  {'poller':<10} {'jobs':>4} {'median lag':>10} {'p90 lag':>8} {'max lag':>8} "
        f"{'polls/job':>9} {'vs 1 s':>7}   {'lag <= 1 s':<10}  polls <= 1/3 of 1 s"
    )
    baseline = statistics.mean(job.polls for job in by_poller[FIXED])
    missed = []
    for name, mine in by_poller.items():
        lags = [job.lag for job in mine]
        polls = statistics.mean(job.polls for job in mine)
        median = statistics.median(lags)
        ratio = polls / baseline
        print(
            f"  {name:<10} {len(mine):>4} {median:>8.2f} s {quantile(lags, 0.9):>6.2f} s "
            f"{max(lags):>6.2f} s {polls:>9.1f} {ratio:>7.2f}   "
            f"{verdict(median <= LAG_TARGET):<10}  {verdict(ratio <= POLLS_TARGET)}"
        )
        if name == ADAPTIVE and median > LAG_TARGET:
            missed.append(f"{scenario.name}: median lag {median:.2f} s (target {LAG_TARGET:g} s)")
        if name == ADAPTIVE and ratio > POLLS_TARGET:
            missed.append(
                f"{scenario.name}: {ratio:.2f} of the 1 s poller's requests (target 0.33)"
            )
    if verbose:
        print(f"    {'poller':<10} {'audio':>6} {'job':>6} {'lag':>6} {'polls':>5}")
        for job in sorted(jobs, key=lambda job: (job.seen.poller, job.seen.audio_seconds)):
            print(
                f"    {job.seen.poller:<10} {job.seen.audio_seconds:>5.1f}s {job.duration:>5.1f}s "
                f"{job.lag:>5.2f}s {job.polls:>5}"
            )
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs per poller and scenario")
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 4 jobs each, audio of 6-12 s"
    )
    parser.add_argument("--verbose", action="store_true", help="print every job")
    args = parser.parse_args()
    jobs, longest = (4, 12.0) if args.quick else (max(1, args.jobs), MAX_AUDIO)
    lengths = audio_lengths(jobs, longest)
    logging.basicConfig(level=logging.WARNING)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="omnihuman-polling-") as folder:
        files = Path(folder)
        # A small portrait keeps the emulator's renders cheap: they must not hold jobs back.
        write_sample_portrait(files / "portrait.png", size=128)
        for seconds in lengths:
            write_sample_voice(files / voice_name(seconds), seconds=seconds)
        remotes = [
            EmulatorProcess(
                EmulatorConfig(
                    api_keys=[KEY],
                    time_scale=1.0,
                    seconds_per_audio_second=scenario.seconds_per_audio_second,
                    max_concurrent_per_key=10 * jobs * len(scenario.pollers),
                    seed=7,
                ),
                files,
            ).start()
            for scenario in SCENARIOS
        ]
        with contextlib.ExitStack() as stack:
            for remote in remotes:
                stack.enter_context(remote)
            seed_seen: list[list[Seen]] = [[] for _ in SCENARIOS]
            threads = [
                thread
                for scenario, remote, into in zip(SCENARIOS, remotes, seed_seen, strict=True)
                if SEED in scenario.pollers
                for thread in start_seed_threads(remote, lengths, into)
            ]

            async def everything() -> list[list[Seen]]:
                runs = (
                    run_client_pollers(remote, scenario, lengths)
                    for scenario, remote in zip(SCENARIOS, remotes, strict=True)
                )
                return list(await asyncio.gather(*runs))

            client_seen = asyncio.run(everything())
            for thread in threads:
                thread.join()
            results = []
            for scenario, remote, seen, seeds in zip(
                SCENARIOS, remotes, client_seen, seed_seen, strict=True
            ):
                results.append((scenario, joined(seen + seeds, remote.stats())))

    elapsed = time.monotonic() - started
    print(
        f"Polling benchmark: {jobs} jobs per poller and scenario, audio of {lengths[0]:g}-"
        f"{lengths[-1]:g} s, real time, all pollers side by side in one run ({elapsed:.0f} s)."
    )
    print(
        "Lag: from the emulator's completed_at to the poller holding the answer. "
        "vs 1 s: polls per job over the fixed 1 s poller's, same scenario."
    )
    missed = []
    for scenario, measured in results:
        missed += report(scenario, measured, args.verbose)
    print("\nTargets (adaptive poller): median lag <= 1 s with <= 1/3 of the 1 s poller's polls.")
    if missed:
        print("Missed: " + "; ".join(missed))
    else:
        print("All targets met.")


if __name__ == "__main__":
    main()
