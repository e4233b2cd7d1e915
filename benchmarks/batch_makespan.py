"""Batch makespan: `omnihuman_batch` side by side with the ideal schedule and the docs' script.

    .venv/bin/python benchmarks/batch_makespan.py [--database sqlite] [--seed-jobs 8]

The same jobs (100 of 10-30 s of API time by default) are run, in one process, by:

- the batch: `omnihuman_batch` over a CSV manifest at concurrency 20, on a throwaway Prefect
  API (its global concurrency limit holds the slots) and the emulator, inputs staged in a
  folder that a loopback file server publishes;
- the ideal: no client, just the longest-processing-time-first schedule of the durations the
  emulator actually ran (accepted to completed) on the same number of slots;
- the seed: `tests/seed_example.py`, the API documentation's example (submit, poll every 10 s,
  one video at a time), unchanged, on a random subset of the jobs, extrapolated to all.

Durations are deterministic (jitter 0): 8 s + 2 s per second of audio, audio of 1-11 s. The
emulator and its file host run in a child process (`_support.EmulatorProcess`), so their
rendering does not share the batch's interpreter. `--time-scale` makes the emulator faster;
the seed's 10 s poll interval and the batch's polling schedule are then scaled by the same
factor, but Prefect's own per-row cost is not, so scaling down inflates the ratio to ideal.

The Prefect API is `prefect server start` on a throwaway PostgreSQL cluster (needs `initdb` and
`pg_ctl` on PATH; run as the `postgres` user when this runs as root), or with `--database
sqlite` Prefect's test harness on SQLite: at concurrency 20 SQLite answers many concurrent
writes with 503 "database busy", which the Prefect client retries after 2-30 s (counted below).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _offline import go_offline

if __name__ == "__main__":
    go_offline("makespan")  # before anything imports Prefect

import argparse
import contextlib
import heapq
import importlib.util
import io
import logging
import math
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
from _support import EmulatorProcess, verdict
from prefect.logging.handlers import APILogWorker
from pydantic import SecretStr

from prefect_omnihuman import AimlApiCredentials, BatchResult, MediaStorage
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.batch.batch_flow import RowOutcome, omnihuman_batch, watch_batch
from prefect_omnihuman.emulator import EmulatorConfig
from prefect_omnihuman.emulator.state import EmulatorStats
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

ROOT = Path(__file__).resolve().parent.parent
SEED_SCRIPT = ROOT / "tests" / "seed_example.py"
sys.path.insert(0, str(ROOT))  # the tests package: its throwaway PostgreSQL cluster

from tests.postgres import throwaway_postgres  # noqa: E402

KEY = "sk-benchmark-makespan"
SEED_POLL_SECONDS = 10.0  # the documentation example's `time.sleep(10)`
BASE_SECONDS = 8.0  # the emulator's defaults: a job takes 8 s + 2 s per second of audio
SECONDS_PER_AUDIO_SECOND = 2.0
TARGET_VS_IDEAL = 1.10  # issue 10 (issue 6 asked for 1.15)
TARGET_SPEEDUP = 15.0


def lpt_makespan(durations: Sequence[float], slots: int) -> float:
    """Longest processing time first on `slots` machines: each job to the least loaded slot."""
    loads = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)


def scaled_polling(scale: float) -> PollSchedule:
    """The default polling schedule with every time in it multiplied by `scale`."""
    return PollSchedule().scaled(scale)


def write_inputs(folder: Path, jobs: int, rng: random.Random) -> list[str]:
    """A portrait, `jobs` distinct voices of 1-11 s and a CSV manifest; the voices' paths."""
    folder.mkdir(parents=True)
    write_sample_portrait(folder / "portrait.png")
    (folder / "voices").mkdir()
    lengths: set[float] = set()
    while len(lengths) < jobs:  # distinct lengths: distinct inputs, so no row reuses another
        lengths.add(round(rng.uniform(1.0, 11.0), 2))
    voices = [f"voices/v{n:03d}.wav" for n in range(1, jobs + 1)]
    for voice, seconds in zip(voices, rng.sample(sorted(lengths), jobs), strict=True):
        write_sample_voice(folder / voice, seconds=seconds)
    rows = [f"portrait.png,{voice},out/{Path(voice).stem}.mp4" for voice in voices]
    (folder / "batch.csv").write_text("\n".join(["image,audio,out", *rows]) + "\n")
    return voices


#: The emulator's rendering (`--video-fps`, `--video-max-side`), set once by `main`.
RENDER: dict[str, int] = {}


def emulator_config(scale: float, concurrency: int) -> EmulatorConfig:
    return EmulatorConfig(
        **RENDER,
        api_keys=[KEY],
        time_scale=scale,
        base_seconds=BASE_SECONDS,
        seconds_per_audio_second=SECONDS_PER_AUDIO_SECOND,
        jitter=0.0,
        max_concurrent_per_key=concurrency,
        capacity=max(16, concurrency),
        retry_after_seconds=scale,
    )


def api_durations(stats: EmulatorStats) -> list[float]:
    """Accepted to completed, in seconds, of each completed generation, in order of acceptance."""
    return [
        stats.completed_at[generation] - accepted
        for generation, accepted in stats.accepted_at.items()
        if generation in stats.completed_at
    ]


# Prefect API --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def sqlite_prefect_api() -> Iterator[str]:
    """Prefect's test harness: a throwaway server on a temporary SQLite database."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@contextlib.contextmanager
def postgres_prefect_api(pids: dict[str, int] | None = None) -> Iterator[str]:
    """`prefect server start` on a throwaway PostgreSQL cluster, both on loopback.

    `pids`, if given, receives the process ids of the server ("prefect") and of
    PostgreSQL's postmaster ("postgres"), for measuring their CPU.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_port = free_port()
    with throwaway_postgres(fsync=True) as database:
        if pids is not None:
            pids["postgres"] = database.pid
        command = [str(Path(sys.executable).parent / "prefect"), "server", "start"]
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(api_port)],
            env={**os.environ, "PREFECT_API_DATABASE_CONNECTION_URL": database.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if pids is not None:
                pids["prefect"] = server.pid
            url = f"http://127.0.0.1:{api_port}/api"
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).is_success:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the Prefect server on PostgreSQL did not start")
                time.sleep(0.5)
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


class RetryCounter(logging.Handler):
    """Counts the Prefect client's retries of API answers such as 503 (SQLite busy)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retryable status code" in record.getMessage():
            self.retries += 1


# The three contestants ----------------------------------------------------------------------


@dataclass
class BatchRun:
    seconds: float
    started: float
    result: BatchResult
    stats: EmulatorStats
    prefect_retries: int
    finished_at: dict[str, float] = field(default_factory=dict)  # generation id -> row done


def set_status_poll_budget(per_second: float) -> None:
    """The fleet's status-poll budget: created as a batch creates it, or (0) inactive."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from prefect_omnihuman.workflows.poll_pacing import STATUS_POLLS_LIMIT, ensure_status_poll_limit

    if per_second > 0:
        ensure_status_poll_limit(per_second=per_second)
        return
    inactive = GlobalConcurrencyLimitCreate(
        name=STATUS_POLLS_LIMIT, limit=1, slot_decay_per_second=1.0, active=False
    )
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(inactive)


def run_batch(
    inputs: Path, work: Path, scale: float, concurrency: int, polls_per_second: float | None
) -> BatchRun:
    staging = work / "staging"
    staging.mkdir()
    finished_at: dict[str, float] = {}

    def note(outcome: RowOutcome | None, done: int, total: int) -> None:
        if outcome is not None and outcome.generation_id:
            finished_at[outcome.generation_id] = time.time()

    counter = RetryCounter()
    client_log = logging.getLogger("prefect.client")
    client_log.setLevel(logging.DEBUG)
    client_log.addHandler(counter)
    with EmulatorProcess(emulator_config(scale, concurrency), staging) as api, watch_batch(note):
        credentials = AimlApiCredentials(api_key=SecretStr(KEY), base_url=api.url)
        storage = MediaStorage(base_url=str(staging), public_base_url=api.assets_url)
        if polls_per_second is not None:
            set_status_poll_budget(polls_per_second)
        started = time.time()
        clock = time.perf_counter()
        state = omnihuman_batch(
            str(inputs / "batch.csv"),
            credentials=credentials,
            storage=storage,
            concurrency=concurrency,
            limit_name="omnihuman-benchmark",
            polling=scaled_polling(scale),
            return_state=True,
        )
        seconds = time.perf_counter() - clock
        stats = api.stats()
    APILogWorker.drain_all(timeout=30)  # the rows' last logs, before the API goes away
    client_log.removeHandler(counter)
    result = state.result(raise_on_failure=False)
    assert isinstance(result, BatchResult), result
    return BatchRun(seconds, started, result, stats, counter.retries, finished_at)


def load_seed_script(scale: float) -> ModuleType:
    """tests/seed_example.py as a module, unchanged but for its clock's `sleep`, scaled."""
    spec = importlib.util.spec_from_file_location("seed_example", SEED_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clock = SimpleNamespace(time=time.time, sleep=lambda seconds: time.sleep(seconds * scale))
    setattr(module, "time", clock)  # noqa: B010 (the module's own name for its clock)
    return module


def run_seed(inputs: Path, voices: Sequence[str], scale: float) -> tuple[list[float], list[float]]:
    """The documentation example once per voice, one after the other: (seconds, API durations)."""
    seconds = []
    with EmulatorProcess(emulator_config(scale, 1), inputs) as api:
        os.environ.update(
            {
                "SEED_API_KEY": KEY,
                "SEED_BASE_URL": f"{api.url}/v2",
                "SEED_IMAGE_URL": api.asset("portrait.png"),
            }
        )
        seed = load_seed_script(scale)
        for voice in voices:
            os.environ["SEED_AUDIO_URL"] = api.asset(voice)
            clock = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                answer: Any = seed.main()
            seconds.append(time.perf_counter() - clock)
            if not answer or answer.get("status") != "completed":
                raise SystemExit(f"the seed script did not complete {voice}: {answer}")
        stats = api.stats()
    return seconds, api_durations(stats)


def poll_rounded(duration: float, interval: float) -> float:
    """When a poller that asks at 0, interval, 2 x interval, ... first sees a job done."""
    return math.ceil(duration / interval) * interval


# Report ---------------------------------------------------------------------------------------


def report(
    args: argparse.Namespace, batch: BatchRun, seed: list[float], seed_api: list[float]
) -> None:
    scale, slots, jobs = args.time_scale, args.concurrency, args.jobs
    durations = api_durations(batch.stats)
    ideal = lpt_makespan(durations, slots)
    ratio = batch.seconds / ideal
    poll = SEED_POLL_SECONDS * scale
    # The seed's time per job is its poll-rounded duration plus a small overhead (POST, GETs):
    # exact for every job from the durations, the overhead measured on the subset.
    overhead = statistics.fmean(
        s - poll_rounded(d, poll) for s, d in zip(seed, seed_api, strict=True)
    )
    if len(seed) >= jobs:
        seed_total = sum(seed)
        how = f"measured on all {jobs} jobs"
    else:
        seed_total = sum(poll_rounded(d, poll) + overhead for d in durations)
        how = (
            f"measured on {len(seed)} of {jobs} jobs (random subset, seed {args.seed}: "
            f"{sum(seed):.1f} s), extrapolated: each job's duration rounded up to the poll "
            f"interval, plus the subset's mean overhead of {overhead:.2f} s a job"
        )
    speedup = seed_total / batch.seconds
    unscaled = [d / scale for d in durations]
    failed = batch.result.failures
    lines = [
        f"jobs                 {jobs} ({min(unscaled):.1f}-{max(unscaled):.1f} s of API time "
        f"each at time scale 1; {sum(durations):.0f} s in all at this scale)",
        f"concurrency          {slots}",
        f"time scale           {scale:g} (the emulator's jobs run at {scale:g} x their duration;"
        f" all figures below are at this scale)",
        f"prefect API          {args.database}",
        f"ideal (LPT bound)    {ideal:.1f} s  (longest job first onto {slots} slots, using the "
        "durations the emulator ran)",
        f"batch makespan       {batch.seconds:.1f} s  (omnihuman_batch call to return; "
        f"{len(failed)} row(s) failed)",
        f"ratio to ideal       {ratio:.3f}",
        f"seed script          {seed_total:.0f} s  ({how}; its 10 s poll interval scaled to "
        f"{poll:g} s; it downloads nothing)",
        f"speed-up vs seed     {speedup:.1f}x",
        f"target makespan      <= {TARGET_VS_IDEAL} x ideal: {verdict(ratio <= TARGET_VS_IDEAL)}",
        f"target speed-up      >= {TARGET_SPEEDUP:g}x: {verdict(speedup >= TARGET_SPEEDUP)}",
    ]
    stats = batch.stats
    lines.append(
        f"emulator peak        {stats.peak_concurrency} generations at once (limit per key "
        f"{slots}); {stats.accepted_posts} POSTs accepted, {stats.rejected_posts} rejected"
    )
    first_post = min(stats.accepted_at.values())
    last_done = max(stats.completed_at.values())
    after = [
        batch.finished_at[g] - done
        for g, done in stats.completed_at.items()
        if g in batch.finished_at
    ]
    lags = [
        stats.noticed_at[g] - done
        for g, done in stats.completed_at.items()
        if g in stats.noticed_at
    ]
    polls = list(stats.polls_by_generation.values())
    held = slots * batch.seconds / jobs
    api_mean, after_mean = statistics.fmean(durations), statistics.fmean(after)
    lines += [
        "where the batch's time goes",
        f"  start-up             {first_post - batch.started:.1f} s (call to first POST accepted)",
        f"  tail                 {batch.started + batch.seconds - last_done:.1f} s (last "
        "completion to return)",
        f"  slot time per row    {held:.1f} s (concurrency x makespan / jobs), of which API "
        f"{api_mean:.1f} s, completion to row done "
        f"{after_mean:.1f} s (max {max(after):.1f}: poll lag, download, probe, "
        f"deliver, subflow end), the rest {held - api_mean - after_mean:.1f} s "
        "(slot, subflow start, validate, stage, submit; idle slots at the tail)",
        f"  poll lag             median {statistics.median(lags):.1f} s, max {max(lags):.1f} s "
        "(completion to the first status answer that said so)"
        + f"; status polls per job: median {statistics.median(polls):.0f}",
        f"  prefect API retries  {batch.prefect_retries} (answers such as 503 'database busy' "
        "retried by the Prefect client after 2-30 s)",
    ]
    if failed:
        lines.append(f"  failed rows          {failed[0].error_type}: {failed[0].error}")
    print("\n".join(lines))


def quiet_console() -> None:
    """Keep run logs off the terminal (they still reach the Prefect API, as usual)."""
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.CRITICAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed-jobs", type=int, default=8, help="jobs the seed runs (0: all)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the inputs and the subset")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--polls-per-second",
        type=float,
        default=None,
        help="the fleet's status-poll budget (default: the batch's own, 5/s; 0: none)",
    )
    parser.add_argument(
        "--video-fps", type=int, default=25, help="frame rate of the emulator's videos"
    )
    parser.add_argument(
        "--video-max-side",
        type=int,
        default=512,
        help="size of the emulator's videos: its rendering shares the machine with the batch",
    )
    args = parser.parse_args()
    RENDER.update(video_fps=args.video_fps, video_max_side=args.video_max_side)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="omnihuman-makespan-"))
    try:
        inputs = work / "inputs"
        voices = write_inputs(inputs, args.jobs, rng)
        subset = sorted(rng.sample(voices, min(args.seed_jobs or args.jobs, args.jobs)))
        print(
            f"{args.jobs} jobs at concurrency {args.concurrency}, time scale "
            f"{args.time_scale:g}, Prefect API on {args.database}, the emulator rendering "
            f"{args.video_max_side} px at {args.video_fps} fps...",
            flush=True,
        )
        api = postgres_prefect_api() if args.database == "postgres" else sqlite_prefect_api()
        with api:
            quiet_console()
            batch = run_batch(
                inputs, work, args.time_scale, args.concurrency, args.polls_per_second
            )
        print(
            f"batch: {batch.seconds:.1f} s; the seed script on {len(subset)} job(s) "
            f"({', '.join(Path(v).stem for v in subset)})...",
            flush=True,
        )
        seed, seed_api = run_seed(inputs, subset, args.time_scale)
        report(args, batch, seed, seed_api)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
