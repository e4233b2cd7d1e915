"""What the emulator remembers: generations, their timeline, and statistics.

Everything lives behind one lock in `EmulatorState`. A generation's status is
not stored but computed from the clock, so it never depends on who polled when.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from prefect_omnihuman.api.models import DEFAULT_MODEL
from prefect_omnihuman.emulator.config import EmulatorConfig, FaultConfig, Injection
from prefect_omnihuman.emulator.faults import Fault, FaultPlan

#: Fractions of a job's duration at which its status moves on; `generating` lasts to the end.
PHASES: tuple[tuple[float, str], ...] = ((0.15, "queued"), (0.30, "waiting"), (0.45, "active"))


def key_fingerprint(api_key: str) -> str:
    """A short, stable, non-reversible label of an API key, safe for stats and logs."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:10]


@dataclass
class Job:
    """One accepted generation and its timeline (wall-clock seconds, `time.time()`)."""

    id: str
    key: str  # fingerprint, never the key
    input_key: str
    audio_seconds: float
    tokens_used: int
    accepted_at: float
    total_seconds: float
    file_token: str
    file_path: Path
    fail_message: str | None = None
    render_finished_at: float | None = None
    render_error: str | None = None
    video_duration: float | None = None
    future: Future[None] | None = field(default=None, repr=False)

    @property
    def scheduled_end(self) -> float:
        return self.accepted_at + self.total_seconds

    @property
    def finished_at(self) -> float | None:
        """When the job completes or errors; None while its render is still running."""
        if self.fail_message is not None:
            return self.scheduled_end
        if self.render_finished_at is None:
            return None
        return max(self.scheduled_end, self.render_finished_at)

    def is_finished(self, now: float) -> bool:
        end = self.finished_at
        return end is not None and now >= end

    def status(self, now: float) -> str:
        """The status word the API reports at `now`."""
        if self.is_finished(now):
            failed = self.fail_message is not None or self.render_error is not None
            return "error" if failed else "completed"
        progress = (now - self.accepted_at) / self.total_seconds if self.total_seconds else 1.0
        for until, word in PHASES:
            if progress < until:
                return word
        return "generating"

    def completed_at(self, now: float) -> float | None:
        """When the job became `completed`, if it has."""
        return self.finished_at if self.status(now) == "completed" else None

    def error_message(self) -> str:
        return self.fail_message or self.render_error or "unknown error"


class EmulatorStats(BaseModel):
    """A snapshot of what the emulator saw. API keys appear only as fingerprints.

    Example:
        ```python
        stats = emulator.stats()
        assert stats.accepted_posts == 1 and not stats.faults_injected
        ```
    """

    accepted_posts: int = 0
    rejected_posts: int = Field(0, description="POSTs answered with an error or faulted.")
    accepted_by_input: dict[str, int] = Field(
        default_factory=dict, description="sha256(image):sha256(audio) -> accepted POSTs."
    )
    polls_by_generation: dict[str, int] = Field(default_factory=dict)
    poll_times: list[float] = Field(
        default_factory=list, description="Wall-clock time of every status request answered."
    )
    peak_concurrency: int = Field(0, description="Most unfinished generations at once, all keys.")
    peak_concurrency_by_key: dict[str, int] = Field(
        default_factory=dict, description="Key fingerprint -> most unfinished generations at once."
    )
    fetched_urls: list[str] = Field(default_factory=list)
    faults_injected: dict[str, int] = Field(
        default_factory=dict, description='"kind/route" -> faults applied, e.g. "rate_limit/post".'
    )
    server_errors: dict[str, int] = Field(
        default_factory=dict,
        description='"route/status" -> `server_error` faults applied, e.g. "get/502".',
    )
    limited_posts: int = Field(
        0, description="POSTs answered 429 because the key was at `max_concurrent_per_key`."
    )
    downloads: int = Field(0, description="Video downloads started (GET, 200).")
    accepted_at: dict[str, float] = Field(
        default_factory=dict, description="Generation id -> wall-clock time it was accepted."
    )
    completed_at: dict[str, float] = Field(
        default_factory=dict, description="Generation id -> wall-clock time it completed."
    )
    noticed_at: dict[str, float] = Field(
        default_factory=dict,
        description="Generation id -> wall-clock time of the first status answer that said "
        "completed (minus `completed_at`: how late the client noticed).",
    )
    generations: dict[str, str] = Field(
        default_factory=dict, description="Generation id -> current status."
    )
    accepted_tts: int = Field(0, description="Text-to-speech POSTs answered with audio (paid).")
    rejected_tts: int = Field(0, description="Text-to-speech POSTs answered with an error.")
    accepted_tts_by_text: dict[str, int] = Field(
        default_factory=dict, description="sha256(text) -> accepted text-to-speech POSTs."
    )
    tts_downloads: int = Field(0, description="Speech files served from an audio URL.")


class EmulatorState:
    """Generations and counters, guarded by one lock. Thread-safe."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._faults = FaultPlan()
        self._jobs: dict[str, Job] = {}
        self._by_token: dict[str, Job] = {}
        self._stats = EmulatorStats()

    # Faults -------------------------------------------------------------------

    def draw_fault(self, route: str) -> Fault | None:
        """The fault for this request, counted in the stats, or None."""
        with self._lock:
            fault = self._faults.draw(route)
            if fault is not None:
                label = f"{fault.kind}/{fault.route}"
                counts = self._stats.faults_injected
                counts[label] = counts.get(label, 0) + 1
                if fault.kind == "server_error":
                    label = f"{fault.route}/{fault.status}"
                    counts = self._stats.server_errors
                    counts[label] = counts.get(label, 0) + 1
            return fault

    def set_faults(self, faults: FaultConfig) -> None:
        with self._lock:
            self._faults.configure(faults)

    def fault_config(self) -> FaultConfig:
        with self._lock:
            return self._faults.config.model_copy(deep=True)

    def inject(self, injection: Injection) -> None:
        with self._lock:
            self._faults.inject(injection)

    # Submissions --------------------------------------------------------------

    def record_fetch(self, url: str) -> None:
        with self._lock:
            self._stats.fetched_urls.append(url)

    def record_rejected_post(self) -> None:
        with self._lock:
            self._stats.rejected_posts += 1

    def record_tts(self, text_key: str | None) -> None:
        """Count a text-to-speech POST: accepted under `text_key`, or rejected when None."""
        with self._lock:
            stats = self._stats
            if text_key is None:
                stats.rejected_tts += 1
                return
            stats.accepted_tts += 1
            stats.accepted_tts_by_text[text_key] = stats.accepted_tts_by_text.get(text_key, 0) + 1

    def record_tts_download(self) -> None:
        with self._lock:
            self._stats.tts_downloads += 1

    def accept(
        self,
        *,
        key: str,
        input_key: str,
        audio_seconds: float,
        files_dir: Path,
        fail_message: str | None = None,
    ) -> Job | None:
        """Create a generation, or return None if `key` is at its concurrency cap."""
        config = self.config
        with self._lock:
            now = time.time()
            running = [job for job in self._jobs.values() if not job.is_finished(now)]
            mine = sum(1 for job in running if job.key == key)
            if mine >= config.max_concurrent_per_key:
                self._stats.rejected_posts += 1
                self._stats.limited_posts += 1
                return None
            spread = self._rng.uniform(-config.jitter, config.jitter)
            work = (config.base_seconds + config.seconds_per_audio_second * audio_seconds) * (
                1 + spread
            )
            # Queued: the job starts when enough of the running ones have ended.
            ends = sorted(job.scheduled_end for job in running)
            waiting = len(ends) - config.capacity
            start = max(now, ends[waiting]) if waiting >= 0 else now
            token = uuid.uuid4().hex
            job = Job(
                id=f"{uuid.uuid4()}:{DEFAULT_MODEL}",
                key=key,
                input_key=input_key,
                audio_seconds=audio_seconds,
                tokens_used=round(config.tokens_per_audio_second * audio_seconds),
                accepted_at=now,
                total_seconds=max(0.0, start - now + work * config.time_scale),
                file_token=token,
                file_path=files_dir / f"{token}.mp4",
                fail_message=fail_message,
            )
            self._jobs[job.id] = job
            self._by_token[token] = job
            stats = self._stats
            stats.accepted_posts += 1
            stats.accepted_by_input[input_key] = stats.accepted_by_input.get(input_key, 0) + 1
            stats.peak_concurrency = max(stats.peak_concurrency, len(running) + 1)
            peaks = stats.peak_concurrency_by_key
            peaks[key] = max(peaks.get(key, 0), mine + 1)
            return job

    def attach_render(self, generation_id: str, future: Future[None]) -> None:
        with self._lock:
            job = self._jobs.get(generation_id)
            if job is not None:
                job.future = future

    def render_finished(
        self, generation_id: str, *, duration: float | None, error: str | None
    ) -> bool:
        """Record the end of a render; False if the generation was forgotten meanwhile."""
        with self._lock:
            job = self._jobs.get(generation_id)
            if job is None:
                return False
            job.render_finished_at = time.time()
            job.render_error = error
            job.video_duration = duration
            return True

    # Polls and downloads --------------------------------------------------------

    def poll(self, generation_id: str, key: str, files_url: str) -> dict[str, Any] | None:
        """The GET answer for a generation of `key` (counted as a poll), or None if unknown."""
        with self._lock:
            job = self._jobs.get(generation_id)
            if job is None or job.key != key:
                return None
            polls = self._stats.polls_by_generation
            polls[job.id] = polls.get(job.id, 0) + 1
            now = time.time()
            self._stats.poll_times.append(now)
            answer = self._view(job, now, files_url)
            if answer["video"] is not None:
                self._stats.noticed_at.setdefault(job.id, now)
            return answer

    def _view(self, job: Job, now: float, files_url: str) -> dict[str, Any]:
        status = job.status(now)
        body: dict[str, Any] = {
            "id": job.id,
            "status": self.config.status_word(status),
            "video": None,
            "duration": None,
            "error": None,
            "meta": {"usage": {"tokens_used": job.tokens_used}},
        }
        if status == "completed":
            duration = round(job.video_duration or job.audio_seconds, 3)
            body["video"] = {"url": f"{files_url}/{job.file_token}.mp4", "duration": duration}
            body["duration"] = duration
        elif status == "error":
            body["error"] = {"name": "GenerationError", "message": job.error_message()}
        return body

    def video_file(self, token: str) -> tuple[str, Path | None]:
        """`("ok", path)`, `("expired", None)` or `("missing", None)` for a video token.

        An expired video is deleted: like the real temporary links, it is gone for good.
        """
        with self._lock:
            job = self._by_token.get(token)
            now = time.time()
            done = job.completed_at(now) if job is not None else None
            if job is None or done is None:
                return "missing", None
            if now >= done + self.config.result_ttl_seconds:
                job.file_path.unlink(missing_ok=True)
                return "expired", None
            if not job.file_path.is_file():
                return "missing", None
            return "ok", job.file_path

    def record_download(self) -> None:
        with self._lock:
            self._stats.downloads += 1

    # Control ------------------------------------------------------------------

    def complete_now(self, generation_id: str) -> Future[None] | None:
        """Move the job's scheduled end to now; returns its render to wait for."""
        with self._lock:
            job = self._jobs.get(generation_id)
            if job is None:
                raise KeyError(f"unknown generation {generation_id!r}")
            now = time.time()
            job.total_seconds = max(0.0, min(job.total_seconds, now - job.accepted_at))
            return job.future

    def snapshot(self) -> EmulatorStats:
        with self._lock:
            now = time.time()
            stats = self._stats.model_copy(deep=True)
            for job in self._jobs.values():
                stats.generations[job.id] = job.status(now)
                stats.accepted_at[job.id] = job.accepted_at
                done = job.completed_at(now)
                if done is not None:
                    stats.completed_at[job.id] = done
            return stats

    def reset(self) -> list[Path]:
        """Forget everything; returns the video files to delete."""
        with self._lock:
            files = [job.file_path for job in self._jobs.values()]
            self._jobs.clear()
            self._by_token.clear()
            self._stats = EmulatorStats()
            self._faults.clear()
            self._rng = random.Random(self.config.seed)
            return files

    def job_count(self) -> int:
        with self._lock:
            return len(self._jobs)
