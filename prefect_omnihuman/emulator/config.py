"""Settings of the emulator: how fast jobs run, what limits apply, and which faults to inject."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

FaultKind = Literal[
    "server_error",
    "rate_limit",
    "drop_connection",
    "lost_response",
    "generation_error",
    "out_of_credits",
]
#: "post" is the video submission, "tts" the text-to-speech POST, "download" any file GET.
Route = Literal["post", "get", "download", "tts"]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
ROUTES: tuple[str, ...] = get_args(Route)

#: Which routes each fault kind can hit; the others ignore it.
FAULT_ROUTES: dict[str, frozenset[str]] = {
    "server_error": frozenset(ROUTES),
    "rate_limit": frozenset(ROUTES),
    "drop_connection": frozenset(ROUTES),
    "lost_response": frozenset({"post", "tts"}),
    "generation_error": frozenset({"post"}),
    "out_of_credits": frozenset({"post", "tts"}),
}

#: The emulator's own words for a job's phases; `EmulatorConfig.status_words` may rename them.
STATUS_WORDS = ("queued", "waiting", "active", "generating", "completed", "error")

#: Statuses a `server_error` fault picks from when none is given.
SERVER_ERROR_STATUSES = (500, 502, 503, 504)


class EmulatorConfig(BaseModel):
    """How the emulated AI/ML API behaves.

    The emulator reads this object live, so a test may change a field of a
    running emulator's `config` (for example `result_ttl_seconds`).

    A job takes `base_seconds + seconds_per_audio_second * audio`, +-`jitter`, after
    waiting for one of `capacity` places: with the defaults, 1.5-4 minutes like the real
    service. `time_scale` multiplies all of it; `retry_after_seconds` and
    `result_ttl_seconds` are used as given, unscaled.

    Example:
        ```python
        config = EmulatorConfig(api_keys=["sk-test"], time_scale=0.02, seed=7)
        with Emulator(config) as emulator:
            ...
        ```
    """

    api_keys: list[str] = Field(
        default_factory=lambda: ["emulator-key"],
        description="Bearer keys the emulator accepts; the first is `Emulator.api_key`.",
        min_length=1,
        repr=False,  # keeps keys out of reprs and logs of the config
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every job's duration (and queueing); 0.01 is 100x faster.",
    )
    base_seconds: float = Field(
        60.0, ge=0, description="Fixed part of a job's duration, like the real service's minutes."
    )
    seconds_per_audio_second: float = Field(
        6.0, ge=0, description="Job duration added per second of audio."
    )
    jitter: float = Field(
        0.05, ge=0, lt=1, description="Random spread of job durations, as a fraction (seeded)."
    )
    capacity: int = Field(
        16,
        ge=1,
        description="Jobs the service works on at once, all keys together; later ones queue "
        "until one of them ends.",
    )
    max_concurrent_per_key: int = Field(
        8, ge=1, description="Unfinished generations a key may have before POST answers 429."
    )
    retry_after_seconds: float = Field(
        1.0, ge=0, description="The `Retry-After` sent with every 429 (not time-scaled)."
    )
    result_ttl_seconds: float = Field(
        3600.0, ge=0, description="Seconds a video URL works after completion (not time-scaled)."
    )
    seed: int | None = Field(None, description="Seed of the job-duration jitter.")
    tokens_per_audio_second: int = Field(
        630_000, ge=0, description="Tokens reported as used per second of audio."
    )
    download_bytes_per_second: float | None = Field(
        None,
        gt=0,
        description="Caps the speed of video downloads (None: as fast as loopback allows); "
        "slow links let a test stop a client in the middle of one.",
    )
    video_fps: int = Field(
        25, ge=1, le=60, description="Frame rate of the rendered videos; fewer render faster."
    )
    video_max_side: int = Field(
        512,
        ge=64,
        description="Longest side of the rendered videos in pixels (the portrait is scaled "
        "down to it); benchmarks that render hundreds of videos on the machine they measure "
        "set a small one, so the rendering does not take the CPU from what they measure.",
    )
    status_words: dict[str, str] = Field(
        default_factory=dict,
        description="The word reported for each of a job's statuses, e.g. "
        '`{"completed": "succeeded"}` as other models on the endpoint answer; '
        f"keys among {', '.join(STATUS_WORDS)}. Unnamed ones keep their own word.",
    )

    @field_validator("status_words")
    @classmethod
    def _known_status_words(cls, words: dict[str, str]) -> dict[str, str]:
        for status in words:
            if status not in STATUS_WORDS:
                raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUS_WORDS)}")
        return words

    def status_word(self, status: str) -> str:
        """The word the emulator reports for `status`."""
        return self.status_words.get(status, status)


class FaultConfig(BaseModel):
    """Random faults: each request on one of `routes` fails with probability `rate`.

    The kind is drawn among `kinds` that can hit that route (see `FAULT_ROUTES`).
    The defaults are the transient kinds a robust client should ride out.

    Example:
        ```python
        emulator.set_faults(FaultConfig(rate=0.3, kinds=["server_error"], routes=["get"], seed=1))
        ```
    """

    rate: float = Field(0.0, ge=0, le=1, description="Probability that a request is faulted.")
    kinds: list[str] = Field(
        default_factory=lambda: ["server_error", "rate_limit", "drop_connection"],
        description=f"Fault kinds to draw from: {', '.join(FAULT_KINDS)}.",
    )
    routes: list[str] = Field(
        default_factory=lambda: list(ROUTES), description="Routes that may be faulted."
    )
    seed: int | None = Field(None, description="Seed of the fault RNG.")
    route_kinds: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per-route override of `kinds`, e.g. only unambiguous faults on POST.",
    )
    route_statuses: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Per-route statuses a `server_error` draws from (default 500/502/503/504).",
    )

    @field_validator("route_kinds")
    @classmethod
    def _known_route_kinds(cls, route_kinds: dict[str, list[str]]) -> dict[str, list[str]]:
        for route, kinds in route_kinds.items():
            check_route(route)
            for kind in kinds:
                check_kind(kind)
        return route_kinds

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        for kind in kinds:
            check_kind(kind)
        return kinds

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, routes: list[str]) -> list[str]:
        for route in routes:
            check_route(route)
        return routes


class Injection(BaseModel):
    """A deterministic fault: the next `times` requests on `route` get `kind`."""

    kind: str
    route: str = "post"
    times: int = Field(1, ge=1)
    status: int | None = Field(None, ge=100, le=599)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return check_kind(kind)

    @field_validator("route")
    @classmethod
    def _known_route(cls, route: str) -> str:
        return check_route(route)

    @model_validator(mode="after")
    def _kind_fits_route(self) -> Injection:
        if self.route not in FAULT_ROUTES[self.kind]:
            allowed = ", ".join(sorted(FAULT_ROUTES[self.kind]))
            raise ValueError(
                f"fault {self.kind!r} applies to route(s) {allowed}, not {self.route!r}"
            )
        return self


def check_kind(kind: str) -> str:
    """Return `kind` if it is a known fault kind, else raise ValueError."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    return kind


def check_route(route: str) -> str:
    """Return `route` if it is a known route, else raise ValueError."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")
    return route
