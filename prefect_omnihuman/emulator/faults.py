"""Which request fails, and how: injected faults first, then random ones.

`FaultPlan` is not thread-safe on its own; `EmulatorState` calls it under its lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from prefect_omnihuman.emulator.config import (
    FAULT_ROUTES,
    SERVER_ERROR_STATUSES,
    FaultConfig,
    Injection,
)


@dataclass(frozen=True)
class Fault:
    """One fault to apply to one request.

    Attributes:
        kind: One of `config.FAULT_KINDS`.
        route: `post`, `get` or `download`.
        status: The HTTP status of a `server_error` (always set for that kind).
    """

    kind: str
    route: str
    status: int | None = None


@dataclass
class _Pending:
    injection: Injection
    remaining: int


class FaultPlan:
    """Deterministic injections (consumed in order) and a seeded random fault rate."""

    def __init__(self) -> None:
        self.config = FaultConfig()
        self._rng = random.Random()
        self._pending: list[_Pending] = []

    def configure(self, config: FaultConfig) -> None:
        """Replace the random faults (injections already queued stay)."""
        self.config = config
        self._rng = random.Random(config.seed)

    def inject(self, injection: Injection) -> None:
        """Queue `injection` behind those already waiting for the same route."""
        self._pending.append(_Pending(injection, injection.times))

    def clear(self) -> None:
        """Forget random faults and queued injections."""
        self.configure(FaultConfig())
        self._pending.clear()

    def draw(self, route: str) -> Fault | None:
        """The fault for the next request on `route`, or None if it should succeed."""
        for pending in self._pending:
            if pending.injection.route == route:
                pending.remaining -= 1
                if pending.remaining <= 0:
                    self._pending.remove(pending)
                return self._fault(pending.injection.kind, route, pending.injection.status)
        config = self.config
        if config.rate <= 0 or route not in config.routes:
            return None
        candidates = config.route_kinds.get(route, config.kinds)
        kinds = [kind for kind in candidates if route in FAULT_ROUTES[kind]]
        if not kinds or self._rng.random() >= config.rate:
            return None
        return self._fault(self._rng.choice(kinds), route, None)

    def _fault(self, kind: str, route: str, status: int | None) -> Fault:
        if kind == "server_error" and status is None:
            statuses = self.config.route_statuses.get(route) or SERVER_ERROR_STATUSES
            status = self._rng.choice(statuses)
        return Fault(kind, route, status)
