"""Batch scale: how `omnihuman_batch`'s cost per row grows from 100 rows to 1,000.

    .venv/bin/python benchmarks/batch_scale.py [--rows 100,1000] [--concurrency 100]
                                               [--time-scale 0.75]

Each size runs, in a child process of its own (so CPU, peak RSS and request counts are that
size's alone), `omnihuman_batch` over a CSV manifest of that many rows (one portrait, distinct
voices of 1-11 s) at `--concurrency`, against:

- the emulator (`_support.EmulatorProcess`, a process of its own) at the real service's pace,
  its defaults: 60 s + 6 s per second of audio, jitter 5 %, multiplied by `--time-scale`;
  its capacity and per-key limit are the concurrency, so no job queues on its side. The
  batch's polling schedule is scaled by the same factor;
- a fresh `prefect server start` on a throwaway PostgreSQL cluster (`initdb`/`pg_ctl` on
  PATH; run as the `postgres` user when this runs as root), one per size. The fleet's
  status-poll rate limit `omnihuman-status-polls` is created before the batch at 5 requests
  a second on the scaled clock (5 / time scale a second), the rate a batch would create.

Figures per size, all over the `omnihuman_batch` call (and the flush of its last logs):

- makespan, call to return, against the ideal: the durations the emulator ran (accepted to
  completed), longest first onto `--concurrency` slots;
- CPU seconds per row: the flow process (`getrusage`), the Prefect server and PostgreSQL
  (their process trees, with reaped children, from /proc; measured until they go quiet after
  the batch) and, for information, the emulator (which renders every video);
- requests per row: to the AI/ML API from the emulator's counts (POSTs, status polls, video
  downloads), and to the Prefect API from the flow process, counted by instrumentation this
  benchmark adds: a wrapper of `httpx.Client.send` / `httpx.AsyncClient.send` (each HTTP
  request, retries included) and of `EventsClient.emit` (events sent over its websocket);
- peak RSS of the flow process (`ru_maxrss`: the process's whole life, inputs included);
- duplicate POSTs: generations accepted beyond the first for the same inputs.

The machine is shared (2 cores here): the report also says how busy it was during each run.
On 2 cores the default run takes about 31 minutes and is CPU-bound: rows need about 2.3 CPU
seconds each (flow process, server, PostgreSQL and the emulator's rendering together).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _offline import go_offline

if __name__ == "__main__":
    go_offline("scale")  # before anything imports Prefect

import argparse
import contextlib
import json
import random
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
from _support import EmulatorProcess
from batch_makespan import (
    KEY,
    api_durations,
    emulator_config,
    lpt_makespan,
    postgres_prefect_api,
    quiet_console,
    scaled_polling,
    write_inputs,
)
from prefect.events.clients import EventsClient
from prefect.events.schemas.events import Event
from prefect.logging.handlers import APILogWorker
from pydantic import SecretStr

from prefect_omnihuman import AimlApiCredentials, BatchResult, MediaStorage
from prefect_omnihuman.batch.batch_flow import RowOutcome, omnihuman_batch, watch_batch
from prefect_omnihuman.workflows.poll_pacing import (
    DEFAULT_STATUS_POLLS_PER_SECOND,
    ensure_status_poll_limit,
)

TARGET_VS_IDEAL = 1.25
TARGET_CPU_GROWTH = 1.2
TARGET_PEAK_RSS = 1.5e9  # bytes (1.5 GB)
REAL_PACE = {"base_seconds": 60.0, "seconds_per_audio_second": 6.0, "jitter": 0.05}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# Measuring -----------------------------------------------------------------------------------


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of `root` and its live descendants, and of the children they reaped."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3, the state
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(value) for value in fields[11:15])  # utime .. cstime
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent not idle since boot (everyone's)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class RequestCounter:
    """HTTP requests this process sends, by destination, and the Prefect events it emits."""

    def __init__(self, prefect_url: str, api_url: str, assets_url: str) -> None:
        self.destinations = {
            httpx.URL(url).port: name
            for url, name in ((prefect_url, "prefect"), (api_url, "api"), (assets_url, "assets"))
        }
        self.requests: Counter[str] = Counter()
        self.prefect_endpoints: Counter[str] = Counter()
        self.events = 0
        self._lock = threading.Lock()

    def count(self, request: httpx.Request) -> None:
        where = self.destinations.get(request.url.port, "other")
        with self._lock:
            self.requests[where] += 1
            if where == "prefect":
                path = _ID.sub("{id}", request.url.path.removeprefix("/api"))
                self.prefect_endpoints[f"{request.method} {path}"] += 1

    def count_event(self) -> None:
        with self._lock:
            self.events += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Count while inside: wraps the send methods of httpx's clients and Prefect's emit."""
        sync_send, async_send, emit = httpx.Client.send, httpx.AsyncClient.send, EventsClient.emit

        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            self.count(request)
            return sync_send(client, request, **kwargs)

        async def asend(
            client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
        ) -> httpx.Response:
            self.count(request)
            return await async_send(client, request, **kwargs)

        async def counted_emit(events: EventsClient, event: Event) -> None:
            self.count_event()
            await emit(events, event)

        wrappers = [
            (httpx.Client, "send", send),
            (httpx.AsyncClient, "send", asend),
            (EventsClient, "emit", counted_emit),
        ]
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in wrappers]
        for owner, name, wrapper in wrappers:
            setattr(owner, name, wrapper)
        try:
            yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


def settle(pids: list[int], most: float = 90.0) -> float:
    """Wait until `pids`' trees use under 5 % of a core (their backlog done); seconds waited."""
    started = time.monotonic()
    last = sum(tree_cpu_seconds(pid) for pid in pids)
    while time.monotonic() - started < most:
        time.sleep(2.0)
        now = sum(tree_cpu_seconds(pid) for pid in pids)
        if now - last < 0.1:
            break
        last = now
    return time.monotonic() - started


# One size, in its own process -------------------------------------------------------------------


def run_size(rows: int, concurrency: int, scale: float, seed: int) -> dict[str, Any]:
    """Run the batch over `rows` rows and measure it; the figures as JSON-ready values."""
    work = Path(tempfile.mkdtemp(prefix="omnihuman-scale-"))
    try:
        inputs = work / "inputs"
        write_inputs(inputs, rows, random.Random(seed))
        staging = work / "staging"
        staging.mkdir()
        pids: dict[str, int] = {}
        config = emulator_config(scale, concurrency).model_copy(update={**REAL_PACE, "seed": seed})
        with postgres_prefect_api(pids) as url, EmulatorProcess(config, staging) as api:
            quiet_console()
            polls_per_second = ensure_status_poll_limit(
                per_second=DEFAULT_STATUS_POLLS_PER_SECOND / scale
            )
            assert api.pid is not None
            trees = {"prefect": pids["prefect"], "postgres": pids["postgres"], "emulator": api.pid}
            settle([pids["prefect"], pids["postgres"]], most=20.0)
            idle_before = {name: tree_cpu_seconds(pid) for name, pid in trees.items()}
            time.sleep(10.0)
            idle = {name: tree_cpu_seconds(pid) - idle_before[name] for name, pid in trees.items()}
            counter = RequestCounter(url, api.url, api.assets_url)
            credentials = AimlApiCredentials(api_key=SecretStr(KEY), base_url=api.url)
            storage = MediaStorage(base_url=str(staging), public_base_url=api.assets_url)
            rss_before = peak_rss_bytes()
            before = {name: tree_cpu_seconds(pid) for name, pid in trees.items()}
            own_before, machine_before = own_cpu_seconds(), machine_busy_seconds()
            print(f"  [{rows} rows] inputs written, servers up; batch starting", flush=True)

            def progress(outcome: RowOutcome | None, done: int, total: int) -> None:
                if outcome is not None and done % max(1, total // 10) == 0:
                    print(
                        f"  {done}/{total} rows at {time.perf_counter() - clock:.0f} s", flush=True
                    )

            with counter.installed(), watch_batch(progress):
                clock = time.perf_counter()
                state = omnihuman_batch(
                    str(inputs / "batch.csv"),
                    credentials=credentials,
                    storage=storage,
                    concurrency=concurrency,
                    polling=scaled_polling(scale),
                    return_state=True,
                )
                makespan = time.perf_counter() - clock
                machine = machine_busy_seconds() - machine_before
                APILogWorker.drain_all(timeout=60)  # the rows' last logs
            own = own_cpu_seconds() - own_before
            waited = settle([pids["prefect"], pids["postgres"]])
            cpu = {name: tree_cpu_seconds(pid) - before[name] for name, pid in trees.items()}
            stats = api.stats()
        APILogWorker.drain_all(timeout=30)
        result = state.result(raise_on_failure=False)
        assert isinstance(result, BatchResult), result
        durations = api_durations(stats)
        failures = result.failures
        return {
            "rows": rows,
            "concurrency": concurrency,
            "time_scale": scale,
            "polls_per_second": polls_per_second,
            "makespan": makespan,
            "ideal": lpt_makespan(durations, concurrency) if durations else float("nan"),
            "durations": [min(durations, default=0.0), max(durations, default=0.0)],
            "failed": len(failures),
            "first_failure": f"{failures[0].error_type}: {failures[0].error}" if failures else "",
            "flow_cpu": own,
            "flow_cpu_whole": own_cpu_seconds(),
            "cpu": cpu,
            "idle_cpu_per_second": {name: seconds / 10.0 for name, seconds in idle.items()},
            "settle_seconds": waited,
            "machine_busy": machine,
            "peak_rss": peak_rss_bytes(),
            "rss_before": rss_before,
            "api": {
                "posts": stats.accepted_posts,
                "rejected": stats.rejected_posts,
                "polls": sum(stats.polls_by_generation.values()),
                "downloads": stats.downloads,
            },
            "duplicates": sum(n - 1 for n in stats.accepted_by_input.values() if n > 1),
            "peak_generations": stats.peak_concurrency,
            "requests": dict(counter.requests),
            "events": counter.events,
            "prefect_endpoints": counter.prefect_endpoints.most_common(8),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Report --------------------------------------------------------------------------------------


def check(value: float, limit: float) -> str:
    """PASS, or MISS and by how much (for a limit of 0, the excess itself)."""
    if value <= limit:
        return "PASS"
    if not limit:
        return f"MISS by {value:g}"
    return f"MISS by {100 * (value / limit - 1):.1f} %"


def report(runs: list[dict[str, Any]]) -> str:
    first, last = runs[0], runs[-1]
    scale = first["time_scale"]
    width = 30
    heads = "".join(f"{str(run['rows']) + ' rows':>26}" for run in runs)
    growth_head = f"{last['rows']}/{first['rows']} per row"
    lines = [
        f"omnihuman_batch at concurrency {first['concurrency']}, each size in its own process",
        f"TIME SCALED: the emulator runs jobs at {scale:g} x the real service's pace (60 s + 6 s "
        f"per audio second, jitter 5 %; here {first['durations'][0]:.0f}-"
        f"{first['durations'][1]:.0f} s a job); polling scaled alike; status polls limited to "
        f"{first['polls_per_second']:g} a second (5 a second, scaled), created before the batch",
        "Prefect API: `prefect server start` on PostgreSQL, a fresh one per size",
        "",
        f"{'':{width}}{heads}   {growth_head:>20}   target",
    ]

    def row(label: str, cells: list[str], growth: str = "", target: str = "") -> None:
        body = "".join(f"{cell:>26}" for cell in cells)
        lines.append(f"{label:{width}}{body}   {growth:>20}   {target}".rstrip())

    def per_row(run: dict[str, Any], value: float) -> float:
        return value / float(run["rows"])

    ratios = [run["makespan"] / run["ideal"] for run in runs]
    row("makespan, s", [f"{run['makespan']:.1f}" for run in runs])
    row("ideal (LPT on the slots), s", [f"{run['ideal']:.1f}" for run in runs])
    row(
        "makespan / ideal",
        [f"{r:.3f} {check(r, TARGET_VS_IDEAL)}" for r in ratios],
        target=f"<= {TARGET_VS_IDEAL} x ideal",
    )
    figures = {
        "flow process": [run["flow_cpu"] for run in runs],
        "Prefect server": [run["cpu"]["prefect"] for run in runs],
        "PostgreSQL": [run["cpu"]["postgres"] for run in runs],
        "emulator (information)": [run["cpu"]["emulator"] for run in runs],
    }
    lines.append("CPU seconds per row")
    for name, values in figures.items():
        each = [per_row(run, value) for run, value in zip(runs, values, strict=True)]
        growth = each[-1] / each[0]
        targeted = name in ("flow process", "Prefect server")
        row(
            f"  {name}",
            [f"{value:.3f}" for value in each],
            f"{growth:.2f} x {check(growth, TARGET_CPU_GROWTH)}" if targeted else f"{growth:.2f} x",
            f"<= {TARGET_CPU_GROWTH} x" if targeted else "",
        )
    lines.append("requests per row")
    api = [run["api"] for run in runs]
    row(
        "  AI/ML API (emulator's count)",
        [f"{per_row(run, sum(a.values())):.2f}" for run, a in zip(runs, api, strict=True)],
        f"{(sum(api[-1].values()) / last['rows']) / (sum(api[0].values()) / first['rows']):.2f} x",
    )
    for key, label in (("posts", "POSTs"), ("polls", "status polls"), ("downloads", "downloads")):
        row(
            f"    {label}",
            [f"{per_row(run, a[key]):.2f}" for run, a in zip(runs, api, strict=True)],
        )
    row("    rejected POSTs", [str(a["rejected"]) for a in api])
    prefect = [per_row(run, run["requests"].get("prefect", 0)) for run in runs]
    events = [per_row(run, run["events"]) for run in runs]
    row(
        "  Prefect API, HTTP",
        [f"{value:.2f}" for value in prefect],
        f"{prefect[-1] / prefect[0]:.2f} x",
    )
    row(
        "  Prefect API, events",
        [f"{value:.2f}" for value in events],
        f"{events[-1] / events[0]:.2f} x",
    )
    row(
        "flow peak RSS, MB",
        [f"{run['peak_rss'] / 1e6:.0f} {check(run['peak_rss'], TARGET_PEAK_RSS)}" for run in runs],
        target=f"<= {TARGET_PEAK_RSS / 1e9:g} GB",
    )
    row("  before the batch, MB", [f"{run['rss_before'] / 1e6:.0f}" for run in runs])
    row(
        "duplicate POSTs",
        [f"{run['duplicates']} {check(run['duplicates'], 0)}" for run in runs],
        target="0",
    )
    row("rows failed", [str(run["failed"]) for run in runs])
    row("peak generations at once", [str(run["peak_generations"]) for run in runs])
    row(
        "machine busy, cores (all users)",
        [f"{run['machine_busy'] / run['makespan']:.2f} of {os.cpu_count()}" for run in runs],
    )
    ours = [run["flow_cpu"] + sum(run["cpu"].values()) for run in runs]
    row(
        "  of which this benchmark",
        [f"{value / run['makespan']:.2f}" for value, run in zip(ours, runs, strict=True)],
    )
    row(
        "idle server CPU, % of a core",
        [f"{100 * run['idle_cpu_per_second']['prefect']:.1f}" for run in runs],
    )
    for run in runs:
        if run["first_failure"]:
            lines.append(f"{run['rows']} rows, first failure: {run['first_failure']}")
    lines.append(f"Prefect API requests per row by endpoint, {last['rows']} rows:")
    for endpoint, count in last["prefect_endpoints"]:
        lines.append(f"  {count / last['rows']:6.2f}  {endpoint}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", default="100,1000", help="sizes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=6, help="seed of the inputs and the jitter")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one size, into this file
    args = parser.parse_args()
    try:
        if args.child:
            figures = run_size(int(args.rows), args.concurrency, args.time_scale, args.seed)
            args.child.write_text(json.dumps(figures))
            return
        sizes = [int(size) for size in args.rows.split(",")]
        runs = []
        with tempfile.TemporaryDirectory(prefix="omnihuman-scale-") as folder:
            for size in sizes:
                out = Path(folder) / f"{size}.json"
                print(
                    f"{size} rows at concurrency {args.concurrency}, time scale "
                    f"{args.time_scale:g}...",
                    flush=True,
                )
                command = [sys.executable, __file__, "--child", str(out), "--rows", str(size)]
                command += ["--concurrency", str(args.concurrency)]
                command += ["--time-scale", str(args.time_scale), "--seed", str(args.seed)]
                subprocess.run(command, check=True)
                runs.append(json.loads(out.read_text()))
                print(f"  makespan {runs[-1]['makespan']:.1f} s", flush=True)
        print(report(runs))
    finally:
        shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
