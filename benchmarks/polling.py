"""Polling: how late the learned poller notices a finished job, and how many requests it spends.

    .venv/bin/python benchmarks/polling.py [--jobs 8] [--time-scale 0.2] [--quick] [--verbose]

Six emulated services run jobs at 0.25x, 0.5x, 1x, 2x, 4x and 10x the poller's built-in guess
(60 s + 6 s per audio second: the real service's minutes), +-5% seeded jitter, on voice
tracks of 6-14 s. Each runs in a process of its own, all side by side in one run, with time
scaled so that every service's jobs last about as long on the wall: `--time-scale` (default
0.2) divided by the factor, 0.8 for the 0.25x service down to 0.02 for the 10x one (jobs of
20-30 wall seconds, long enough that the emulator's own rendering never holds one back).
Every figure is in service seconds (wall seconds divided by the scale), and the poller is the
default `PollSchedule` scaled the same way.

Against each service, one `AsyncOmniHumanClient` with a fresh `TimingHistory` (a JSON file)
waits the way the `poll_generation` task does (the submission's answer, the audio's length):

- jobs 1-3 one after the other: learning (job 1 knows only the guess, job 3 two samples);
- jobs 4 and later all at once: learned (from the first three).

Lag is the time from the moment the emulator marks the job completed (`completed_at`) to
the moment it answers a status request with `completed` (`noticed_at`). The time that answer
then takes to reach the poller is a loopback round trip (milliseconds), which time scaling
would inflate 5-50 times, so it is printed apart ("+ wire") and not counted. Polls are the
GETs the emulator counted for the job. A fixed 1 s poller's requests are computed, not run
(at the 10x service's scale it would send 50 requests a wall second per job): one at
submission and one a second until completion, `ceil(duration) + 1`.

Targets: learned, median lag <= 1 s with <= 1/5 of the 1 s poller's requests; learning,
median lag <= 3 s with <= 1/3 of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _support import EmulatorProcess, quantile, verdict

from prefect_omnihuman.api.client import AsyncOmniHumanClient
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.emulator import EmulatorConfig
from prefect_omnihuman.emulator.state import EmulatorStats
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice
from prefect_omnihuman.storage.timing_history import TimingHistory

KEY = "sk-benchmark-polling"
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 10.0)
LEARNING_JOBS = 3
MIN_AUDIO, MAX_AUDIO = 6.0, 14.0
TARGETS = {"learning": (3.0, 1 / 3), "learned": (1.0, 1 / 5)}
GUESS = PollSchedule()


@dataclass(frozen=True)
class Seen:
    """One job as the poller saw it."""

    generation_id: str
    audio_seconds: float
    seen_at: float
    learning: bool


@dataclass(frozen=True)
class Job:
    """A `Seen` job with the emulator's side of it, in service seconds."""

    seen: Seen
    lag: float
    wire: float
    polls: int
    duration: float

    @property
    def fixed_polls(self) -> int:
        return math.ceil(self.duration) + 1


def voice_name(seconds: float) -> str:
    return f"voice-{seconds:05.2f}.wav"


def audio_lengths(jobs: int) -> list[float]:
    """`jobs` audio lengths spread evenly over MIN_AUDIO..MAX_AUDIO, in a seeded order."""
    step = (MAX_AUDIO - MIN_AUDIO) / max(1, jobs - 1)
    lengths = [round(MIN_AUDIO + step * n, 2) for n in range(jobs)]
    random.Random(7).shuffle(lengths)
    return lengths


async def run_service(
    remote: EmulatorProcess, lengths: list[float], scale: float, history: Path
) -> list[Seen]:
    """Jobs 1-3 one by one, then the rest at once, waited for with learned timing."""
    poll = GUESS.scaled(scale)
    async with AsyncOmniHumanClient(
        remote.api_key, base_url=remote.url, poll=poll, timing=TimingHistory(history)
    ) as client:

        async def one(seconds: float, learning: bool) -> Seen:
            generation = await client.submit(
                image_url=remote.asset("portrait.png"), audio_url=remote.asset(voice_name(seconds))
            )
            await client.wait(generation, audio_seconds=seconds)
            return Seen(generation.id, seconds, time.time(), learning)

        seen = [await one(seconds, True) for seconds in lengths[:LEARNING_JOBS]]
        seen += await asyncio.gather(*(one(s, False) for s in lengths[LEARNING_JOBS:]))
        return seen


def joined(seen: list[Seen], stats: EmulatorStats, scale: float) -> list[Job]:
    return [
        Job(
            seen=one,
            lag=(stats.noticed_at[one.generation_id] - stats.completed_at[one.generation_id])
            / scale,
            wire=(one.seen_at - stats.noticed_at[one.generation_id]) / scale,
            polls=stats.polls_by_generation.get(one.generation_id, 0),
            duration=(stats.completed_at[one.generation_id] - stats.accepted_at[one.generation_id])
            / scale,
        )
        for one in seen
    ]


def report(factor: float, jobs: list[Job], verbose: bool) -> list[str]:
    """One scenario's two lines; returns the missed targets, described."""
    missed = []
    durations = [job.duration for job in jobs]
    print(
        f"\n{factor:g}x the guess: jobs of {min(durations):.0f}-{max(durations):.0f} s "
        f"(the guess: {GUESS.expected_seconds(MIN_AUDIO):.0f}-"
        f"{GUESS.expected_seconds(MAX_AUDIO):.0f} s)"
    )
    for phase in ("learning", "learned"):
        mine = [job for job in jobs if job.seen.learning == (phase == "learning")]
        lags = [job.lag for job in mine]
        median = statistics.median(lags)
        polls = sum(job.polls for job in mine)
        ratio = polls / sum(job.fixed_polls for job in mine)
        lag_target, polls_target = TARGETS[phase]
        print(
            f"  {phase:<8} {len(mine):>2} jobs  median lag {median:5.2f} s (p90 "
            f"{quantile(lags, 0.9):5.2f} s)  {polls / len(mine):6.1f} polls/job  "
            f"{ratio:5.3f} of 1 s  (+ wire {statistics.median(job.wire for job in mine):4.2f} s)  "
            f"lag <= {lag_target:g} s {verdict(median <= lag_target):<4}  "
            f"polls <= 1/{round(1 / polls_target)} {verdict(ratio <= polls_target)}"
        )
        if median > lag_target:
            missed.append(f"{factor:g}x {phase}: median lag {median:.2f} s (target {lag_target:g})")
        if ratio > polls_target:
            missed.append(
                f"{factor:g}x {phase}: {ratio:.3f} of the 1 s poller's requests "
                f"(target {polls_target:.3f})"
            )
    if verbose:
        for number, job in enumerate(jobs, 1):
            print(
                f"    job {number:>2} audio {job.seen.audio_seconds:5.2f} s  took "
                f"{job.duration:7.1f} s  lag {job.lag:6.2f} s  polls {job.polls:>3} "
                f"(1 s poller: {job.fixed_polls})"
            )
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per service (3 learn)")
    parser.add_argument(
        "--time-scale", type=float, default=0.2, help="emulator speed-up at 1x (divided by factor)"
    )
    parser.add_argument("--quick", action="store_true", help="0.25x-2x only, 6 jobs each")
    parser.add_argument("--verbose", action="store_true", help="print every job")
    args = parser.parse_args()
    factors = FACTORS[:4] if args.quick else FACTORS
    jobs = 6 if args.quick else max(LEARNING_JOBS + 1, args.jobs)
    scales = [args.time_scale / factor for factor in factors]
    lengths = audio_lengths(jobs)
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
                    time_scale=scale,
                    base_seconds=GUESS.base_seconds * factor,
                    seconds_per_audio_second=GUESS.seconds_per_audio_second * factor,
                    max_concurrent_per_key=jobs,
                    capacity=jobs,
                    seed=7,
                ),
                files,
            ).start()
            for factor, scale in zip(factors, scales, strict=True)
        ]
        with contextlib.ExitStack() as stack:
            for remote in remotes:
                stack.enter_context(remote)

            async def everything() -> list[list[Seen]]:
                return list(
                    await asyncio.gather(
                        *(
                            run_service(remote, lengths, scale, files / f"timing-{n}.json")
                            for n, (remote, scale) in enumerate(zip(remotes, scales, strict=True))
                        )
                    )
                )

            seen = asyncio.run(everything())
            results = [
                (factor, joined(mine, remote.stats(), scale))
                for factor, scale, remote, mine in zip(factors, scales, remotes, seen, strict=True)
            ]

    elapsed = time.monotonic() - started
    print(
        f"Polling benchmark: {jobs} jobs per service ({LEARNING_JOBS} learning one by one, "
        f"then {jobs - LEARNING_JOBS} learned at once), audio of {MIN_AUDIO:g}-{MAX_AUDIO:g} s, "
        f"time scaled by {args.time_scale:g}/factor (figures in service seconds), all services "
        f"side by side in one run ({elapsed:.0f} s wall)."
    )
    print(
        "Lag: from the emulator's completed_at to its first `completed` answer (+ wire: that "
        "answer's way to the poller, scaled like everything else). "
        "of 1 s: polls over a fixed 1 s poller's (computed: ceil(duration) + 1)."
    )
    missed = []
    for factor, measured in results:
        missed += report(factor, measured, args.verbose)
    print(
        "\nTargets: learned, median lag <= 1 s with <= 1/5 of the 1 s poller's requests; "
        "learning, median lag <= 3 s with <= 1/3."
    )
    print("Missed: " + "; ".join(missed) if missed else "All targets met.")


if __name__ == "__main__":
    main()
