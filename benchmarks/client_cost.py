"""Client cost: CPU per video beyond waiting, and memory while downloading a 1 GB result.

    .venv/bin/python benchmarks/client_cost.py [--videos 10] [--no-flow] [--gigabytes 1]

The emulator (and the file host it fetches inputs from) runs in a child process, so its
rendering CPU and memory are not counted here.

1. CPU per video, client only (target <= 0.3 s): `--videos` videos, one after the other,
   each through a new `OmniHumanClient` (as each task opens one): submit, wait (the default
   `PollSchedule`, audio length known), download to a file, and the download task's MP4
   check (PyAV). CPU is this process's user + system time, all threads. Jobs run 20 times
   faster than real time with the poll schedule scaled alike, so each video is polled as
   often as a real-time one would be. One warm-up video (imports, first PyAV use) is not
   counted.
2. Peak memory growth while downloading a 1 GB result (target <= 64 MB): a video of the
   emulator grown to 1 GiB by a `free` box at its end (a box every MP4 reader skips; PyAV
   is checked to still read it), served over loopback, downloaded by `client.download` and
   checked like the download task does. Growth is the peak RSS during download and check
   (VmHWM, reset just before) minus the RSS just before. The file is deleted afterwards.
3. CPU per video, the `omnihuman_video` flow (for information, no target): the same videos
   through the whole flow on a throwaway Prefect API server (its own process). Prefect's
   engine is in it: flow and task runs created and moved through their states over HTTP,
   results persisted, logs and events shipped. One warm-up run is not counted.
4. The generation ledger on loopback S3 (moto): storage requests and wall time per video
   (targets <= 6 and <= 0.2 s), beside the path without a ledger (see `_ledger_cost.py`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _offline import go_offline

if __name__ == "__main__":
    go_offline("cost")  # before anything imports Prefect

import argparse
import logging
import shutil
import statistics
import threading
import time
from dataclasses import dataclass

from _ledger_cost import REQUESTS_TARGET, SECONDS_TARGET, ledger_cost
from _support import EmulatorProcess, verdict
from pydantic import SecretStr

from prefect_omnihuman.api.client import OmniHumanClient
from prefect_omnihuman.api.models import Generation
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.emulator import EmulatorConfig
from prefect_omnihuman.media.probe import probe_video
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice
from prefect_omnihuman.workflows.generation_tasks import (
    _checked_video,  # the download task's own MP4 check
)

KEY = "sk-benchmark-cost"
TIME_SCALE = 0.01
AUDIO_SECONDS = 8.0
CPU_TARGET = 0.3
RSS_TARGET_MB = 64.0
GIB = 1024**3
MB = 1024**2


def scaled(schedule: PollSchedule, factor: float) -> PollSchedule:
    """`schedule` with every duration in it multiplied by `factor`."""
    times = ("min_interval", "max_interval", "base_seconds", "seconds_per_audio_second")
    update = {name: getattr(schedule, name) * factor for name in (*times, "overrun_max_interval")}
    return schedule.model_copy(update=update)


POLLING = scaled(PollSchedule(), TIME_SCALE)


def cpu() -> float:
    return time.process_time()


@dataclass
class Video:
    """The CPU seconds one video took, step by step, and what came out."""

    setup: float
    submit: float
    wait: float
    download: float
    check: float
    polls: int
    generation: Generation
    path: Path

    @property
    def total(self) -> float:
        return self.setup + self.submit + self.wait + self.download + self.check


def one_video(remote: EmulatorProcess, out: Path) -> Video:
    """Generate one video through the client, timing each step's CPU."""
    start = cpu()
    with OmniHumanClient(remote.api_key, base_url=remote.url, poll=POLLING) as client:
        opened = cpu()
        generation = client.submit(
            image_url=remote.asset("portrait.png"), audio_url=remote.asset("voice.wav")
        )
        submitted = cpu()
        done = client.wait(generation, audio_seconds=AUDIO_SECONDS)
        waited = cpu()
        client.download(done, out)
        downloaded = cpu()
        _checked_video(out, done.id)
        checked = cpu()
    polls = remote.stats().polls_by_generation.get(done.id, 0)
    return Video(
        setup=opened - start,
        submit=submitted - opened,
        wait=waited - submitted,
        download=downloaded - waited,
        check=checked - downloaded,
        polls=polls,
        generation=done,
        path=out,
    )


def client_cpu(remote: EmulatorProcess, folder: Path, videos: int) -> tuple[bool, Video]:
    print(f"1. CPU per video, client only ({videos} videos + 1 warm-up, emulator in a child)")
    one_video(remote, folder / "warm-up.mp4")
    runs = [one_video(remote, folder / f"video-{n}.mp4") for n in range(videos)]
    steps = ("setup", "submit", "wait", "download", "check")
    for step in (*steps, "total"):
        values = [getattr(run, step) * 1000 for run in runs]
        print(
            f"   {step:<9} mean {statistics.mean(values):7.1f} ms   median "
            f"{statistics.median(values):7.1f} ms   max {max(values):7.1f} ms"
        )
    mean = statistics.mean(run.total for run in runs)
    size = runs[-1].path.stat().st_size
    print(
        f"   ({statistics.mean(run.polls for run in runs):.1f} polls per video; "
        f"{size / MB:.2f} MB video of {AUDIO_SECONDS:g} s; setup = a new client, as each task "
        "opens one)"
    )
    print(
        f"   CPU per video: {mean:.3f} s (target <= {CPU_TARGET:g} s)  "
        f"{verdict(mean <= CPU_TARGET)}"
    )
    return mean <= CPU_TARGET, runs[-1]


# -- memory ------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """The highest VmRSS seen every few milliseconds, in a thread: a second opinion on VmHWM."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kib("VmRSS"))
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib("VmRSS"))


def grow_with_free_box(source: Path, target: Path, total: int) -> None:
    """Copy the MP4 `source` to `target` with a `free` box at its end, `total` bytes in all.

    The box's body is a hole (a sparse file): it reads as zeros and costs no disk writes.
    """
    body = source.read_bytes()
    padding = total - len(body)
    if padding < 16:
        raise ValueError("the target size leaves no room for the free box")
    with open(target, "wb") as out:
        out.write(body)
        if padding < 2**32:
            out.write(padding.to_bytes(4, "big") + b"free")
        else:  # a 64-bit box size: size field 1, then the size after the type
            out.write((1).to_bytes(4, "big") + b"free" + padding.to_bytes(8, "big"))
        out.truncate(total)


def download_memory(remote: EmulatorProcess, folder: Path, sample: Video, gigabytes: float) -> bool:
    total = int(gigabytes * GIB)
    print(f"\n2. Peak memory while downloading a {total / GIB:g} GiB result")
    big = Path(remote.files) / "big.mp4"
    grow_with_free_box(sample.path, big, total)
    probe = probe_video(big)
    print(
        f"   the padded file probes as: {probe.duration:.2f} s, {probe.width}x{probe.height}, "
        f"{probe.video_codec} + {probe.audio_codec}"
    )
    video = sample.generation.video
    assert video is not None
    # The completed generation, its result now the big file.
    big_video = video.model_copy(update={"url": remote.asset("big.mp4")})
    generation = sample.generation.model_copy(update={"video": big_video})
    destination = folder / "downloaded-big.mp4"
    try:
        with OmniHumanClient(remote.api_key, base_url=remote.url) as client:
            before_max = status_kib("VmHWM")
            hwm = reset_peak_rss()
            baseline = status_kib("VmRSS")
            started = time.monotonic()
            with RssSampler() as sampler:
                size = client.download(generation, destination)
                info = _checked_video(destination, generation.id)
            seconds = time.monotonic() - started
            peak = status_kib("VmHWM") if hwm else sampler.peak
    finally:
        big.unlink(missing_ok=True)
        destination.unlink(missing_ok=True)
    growth = (peak - baseline) / 1024
    sampled = (sampler.peak - baseline) / 1024
    print(
        f"   downloaded {size / MB:,.0f} MiB in {seconds:.1f} s "
        f"({size / MB / seconds:,.0f} MiB/s); checked: {info.duration:.2f} s, "
        f"{info.video_codec} + {info.audio_codec}"
    )
    print(
        f"   RSS just before: {baseline / 1024:.1f} MiB; peak during download and check: "
        f"{peak / 1024:.1f} MiB ({'VmHWM, reset before' if hwm else 'sampled every 5 ms'}; "
        f"sampled every 5 ms: +{sampled:.1f} MiB; process peak so far "
        f"{max(before_max, peak) / 1024:.1f} MiB)"
    )
    print(
        f"   peak RSS growth: {growth:.1f} MiB (target <= {RSS_TARGET_MB:g} MB)  "
        f"{verdict(growth <= RSS_TARGET_MB)}"
    )
    return growth <= RSS_TARGET_MB


# -- the flow ----------------------------------------------------------------------------------


def quiet_console() -> None:
    """Keep run logs off the terminal; they still go to the Prefect API (and are paid for)."""
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler or "Console" in type(handler).__name__:
                handler.setLevel(logging.CRITICAL)


def flow_cpu(remote: EmulatorProcess, folder: Path, videos: int) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from prefect_omnihuman import AimlApiCredentials, omnihuman_video

    print(f"\n3. CPU per video, the omnihuman_video flow ({videos} runs + 1 warm-up; information)")
    credentials = AimlApiCredentials(api_key=SecretStr(remote.api_key), base_url=remote.url)

    def run(n: int) -> float:
        start = cpu()
        omnihuman_video(
            image=remote.asset("portrait.png"),
            audio=remote.asset("voice.wav"),
            destination=str(folder / f"flow-{n}.mp4"),
            credentials=credentials,
            polling=POLLING,
            force_new=True,
        )
        return cpu() - start

    with prefect_test_harness(server_startup_timeout=180):
        quiet_console()
        run(-1)
        quiet_console()
        started = cpu()
        each = [run(n) for n in range(videos)]
        total = cpu() - started
    print(
        f"   CPU per flow run: mean {statistics.mean(each):.3f} s, median "
        f"{statistics.median(each):.3f} s, max {max(each):.3f} s "
        f"(all threads of this process, the Prefect server excluded; {total:.2f} s in all)"
    )
    print(
        "   This is the client's work plus Prefect's engine: input validation, a flow run and "
        "its task runs with their states, cached results and logs sent to the API."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=10, help="videos measured (default 10)")
    parser.add_argument("--no-flow", action="store_true", help="skip the Prefect flow's figure")
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the big result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("prefect_omnihuman").setLevel(logging.WARNING)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="omnihuman-cost-") as work:
        folder = Path(work)
        served = folder / "served"
        served.mkdir()
        write_sample_portrait(served / "portrait.png")
        write_sample_voice(served / "voice.wav", seconds=AUDIO_SECONDS)
        config = EmulatorConfig(api_keys=[KEY], time_scale=TIME_SCALE, seed=7)
        with EmulatorProcess(config, served) as remote:
            print(f"Client cost benchmark (emulator at {TIME_SCALE:g}x real time in a child)\n")
            cpu_ok, sample = client_cpu(remote, folder, args.videos)
            memory_ok = download_memory(remote, folder, sample, args.gigabytes)
            if not args.no_flow:
                flow_cpu(remote, folder, args.videos)
    ledger_ok = ledger_cost(args.videos)
    shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)
    print(
        f"\nTargets: client CPU per video <= {CPU_TARGET:g} s {verdict(cpu_ok)}; peak RSS growth "
        f"downloading 1 GB <= {RSS_TARGET_MB:g} MB {verdict(memory_ok)}; ledger <= "
        f"{REQUESTS_TARGET} storage requests and {SECONDS_TARGET:g} s per video "
        f"{verdict(ledger_ok)} "
        f"({time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
