"""How the Prefect layer paces status polls: learned timing and a fleet-wide request budget.

- `timing_history(storage)`: where every flow run records and learns job durations:
  `<storage>/ledger/timing.json` when the run has a storage (every worker sharing it learns
  from every other), else `PREFECT_HOME/omnihuman/timing.json`, so CLI runs and processes on
  one machine share it.
- `status_poll_limiter()`: a hook for the client that takes one slot of the Prefect global
  concurrency limit `omnihuman-status-polls` before each status request. The limit decays
  (`slot_decay_per_second`), so it is a rate: every row of every run on every worker
  together stays under it. Batches create it when missing (5 requests a second); single
  `omnihuman_video` runs use it when it exists and poll freely otherwise.

Create or change it by hand:

    prefect gcl create omnihuman-status-polls --limit 5 --slot-decay-per-second 5
    prefect gcl update omnihuman-status-polls --limit 10 --slot-decay-per-second 10
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_HOME

from prefect_omnihuman.storage.ledger import LEDGER_FOLDER
from prefect_omnihuman.storage.media_storage import MediaStorage
from prefect_omnihuman.storage.timing_history import TimingHistory

#: The global concurrency limit (with slot decay) every status poll takes a slot of.
STATUS_POLLS_LIMIT = "omnihuman-status-polls"
DEFAULT_STATUS_POLLS_PER_SECOND = 5.0


def default_timing_location() -> Path:
    """`PREFECT_HOME/omnihuman/timing.json`."""
    return Path(PREFECT_HOME.value()).expanduser() / "omnihuman" / "timing.json"


def timing_history(storage: MediaStorage | None = None) -> TimingHistory:
    """The timing history flow runs record to and learn from.

    With a storage, `<storage>/ledger/timing.json` beside the generation ledger, which every
    worker and container sharing the storage reads; without, `PREFECT_HOME/omnihuman/`.
    """
    if storage is None:
        return TimingHistory(default_timing_location())
    url = storage.url_for(f"{LEDGER_FOLDER}/timing.json")
    return TimingHistory(url, storage.options_for(url))


def ensure_status_poll_limit(
    name: str = STATUS_POLLS_LIMIT, per_second: float = DEFAULT_STATUS_POLLS_PER_SECOND
) -> float:
    """Create the rate limit `name` (`per_second` status requests) if it is missing.

    An existing limit is left as it is (other runs and workers share it); its rate is
    returned. Change it with `prefect gcl update NAME --limit N --slot-decay-per-second N`.
    """
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name,
                        limit=max(1, math.ceil(per_second)),
                        slot_decay_per_second=per_second,
                    )
                )
                return per_second
            except ObjectAlreadyExists:  # another run created it meanwhile
                existing = client.read_global_concurrency_limit_by_name(name)
    return float(existing.slot_decay_per_second or 0.0)


async def status_poll_limiter(
    name: str = STATUS_POLLS_LIMIT,
) -> Callable[[], Awaitable[None]] | None:
    """The client's `before_status_request` hook for the rate limit `name`, if it exists.

    None when the limit is missing or inactive (or has no decay, so is no rate): then
    polls are not held back, and no warning is logged on every poll.
    """
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    if not limit.active or not limit.slot_decay_per_second:
        return None

    async def take_a_slot() -> None:
        await rate_limit(name, occupy=1, strict=False)

    return take_a_slot
