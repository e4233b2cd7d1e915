"""The batch flow: a manifest of rows in, one stored video per good row out.

Each row runs the reusable flow (`omnihuman_video`, or `omnihuman_narrated_video`
for text rows) as a subflow named `row-N`. A row holds one of the run's `concurrency`
slots and one slot of a Prefect global concurrency limit (`omnihuman-generations` by
default) only while its generation is on the API (see `workflows/generation_slots.py`),
so every flow run on every worker that uses the same limit shares one ceiling of
generations in flight, and the rows' own work (validation, staging, speech, delivery,
Prefect's bookkeeping) overlaps the generations: the row pool has more threads than slots.
Rows start longest first (`row_order.py`).

The subflows run in plain threads (with the flow's context copied), not inside
tasks: a task's transaction would adopt the subflow's task transactions, so a
submission's record would be written only when the whole row succeeds; a row that
failed or crashed after paying would then pay again on the re-run.

Re-running a manifest pays for nothing twice: the tasks' records (in Prefect's result
storage) make delivered rows return at once and in-flight ones resume polling, and
identical rows wait for each other's submission (see `storage/locks.py`). With several
workers, that storage (and the lock folder) must be shared: see the README.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from functools import cache
from typing import Any, Literal, cast
from uuid import UUID

from prefect import Flow, flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger
from prefect.results import ResultStore, get_result_store
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field, computed_field
from pydantic.json_schema import SkipJsonSchema

from prefect_omnihuman.api.client import DEFAULT_WAIT_TIMEOUT
from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.api.pricing import (
    CREDITS_PER_USD,
    credits_to_usd,
    format_cost,
    format_reused_cost,
)
from prefect_omnihuman.batch.budget import (
    CREDITS_PER_AUDIO_SECOND,
    BudgetEstimate,
    check_budget,
    cost_of_row,
    estimate_budget,
)
from prefect_omnihuman.batch.manifest import Manifest, ManifestRow, RowProblem, read_manifest
from prefect_omnihuman.batch.row_order import longest_first
from prefect_omnihuman.errors import InputError, ManifestError, OmniHumanError
from prefect_omnihuman.results import OmniHumanResult
from prefect_omnihuman.storage.media_storage import MediaStorage
from prefect_omnihuman.workflows.block_loading import resolve_credentials, resolve_storage
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.generation_slots import GenerationGate, gated_by
from prefect_omnihuman.workflows.generation_tasks import submission_cache_key, submit_generation
from prefect_omnihuman.workflows.interruption import stops_waits_on_interrupt
from prefect_omnihuman.workflows.poll_pacing import STATUS_POLLS_LIMIT, ensure_status_poll_limit
from prefect_omnihuman.workflows.video_artifacts import batch_gallery, video_link
from prefect_omnihuman.workflows.video_flows import omnihuman_narrated_video, omnihuman_video

#: Rows a run prepares (or delivers) beyond the ones holding a slot, so slots never idle.
ROW_THREADS_AHEAD = 8

#: The global concurrency limit every batch shares unless told otherwise.
GENERATIONS_LIMIT = "omnihuman-generations"
DEFAULT_CONCURRENCY = 4

RowStatus = Literal["delivered", "reused", "failed"]


class RowOutcome(BaseModel):
    """What became of one manifest row.

    Example:
        ```python
        for row in result.rows:
            print(row.row, row.status, row.location or f"{row.error_type}: {row.error}")
        ```
    """

    row: int
    status: RowStatus = Field(
        description="delivered (newly paid), reused (no new charge) or failed."
    )
    out: str | None = None
    location: str | None = Field(default=None, description="Where the video is stored.")
    generation_id: str | None = None
    duration: float | None = None
    credits_used: float | None = None
    cost_usd: float | None = Field(
        default=None,
        description="`credits_used` in US dollars; for a reused row, paid by an earlier run.",
    )
    error_type: str | None = None
    error: str | None = None

    def cost(self, credits_per_usd: float = CREDITS_PER_USD) -> str:
        """What the row cost this run, readable: a reused row cost nothing now."""
        if self.status == "reused":
            return format_reused_cost(self.credits_used, credits_per_usd)
        if self.status == "failed":
            return ""
        return format_cost(self.credits_used, credits_per_usd)

    @classmethod
    def of_result(cls, row: ManifestRow, result: OmniHumanResult) -> RowOutcome:
        """A row whose video is stored."""
        return cls(
            row=row.row,
            status="reused" if result.reused else "delivered",
            out=row.out,
            location=result.location,
            generation_id=result.generation_id,
            duration=round(result.duration, 3),
            credits_used=result.credits_used,
            cost_usd=result.cost_usd,
        )

    @classmethod
    def of_problem(cls, problem: RowProblem, out: str | None = None) -> RowOutcome:
        """A row that failed."""
        return cls(
            row=problem.row,
            status="failed",
            out=out,
            error_type=problem.error_type,
            error=problem.message,
        )


class BatchResult(BaseModel):
    """What `omnihuman_batch` returns: one outcome per manifest row, in row order.

    Example:
        ```python
        state = omnihuman_batch("s3://media/monday.csv", credentials="aimlapi", return_state=True)
        result = state.result(raise_on_failure=False)
        for row in result.failures:
            print(row.row, row.error_type, row.error)
        ```
    """

    manifest: str
    rows: list[RowOutcome] = Field(default_factory=list)
    estimate: BudgetEstimate | None = None
    limit_name: str = GENERATIONS_LIMIT
    concurrency: int = Field(DEFAULT_CONCURRENCY, description="Generations at once (this run).")
    credits_per_usd: float = Field(CREDITS_PER_USD, description="The rate for dollar figures.")

    @property
    def failures(self) -> list[RowOutcome]:
        """The rows that failed."""
        return [row for row in self.rows if row.status == "failed"]

    @property
    def credits_spent(self) -> float:
        """Credits of the generations this run paid for (reused ones cost nothing)."""
        return sum(row.credits_used or 0.0 for row in self.rows if row.status == "delivered")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def usd_spent(self) -> float:
        """`credits_spent` in US dollars (reused rows cost nothing)."""
        return credits_to_usd(self.credits_spent, self.credits_per_usd) or 0.0

    def spend(self) -> str:
        """What this run paid, readable, and what reused rows' generations cost earlier."""
        earlier = sum(row.credits_used or 0.0 for row in self.rows if row.status == "reused")
        if not earlier:
            return format_cost(self.credits_spent, self.credits_per_usd)
        return format_reused_cost(earlier, self.credits_per_usd, now=self.credits_spent)

    def summary(self) -> str:
        """One line: how many rows went which way."""
        counts = {status: 0 for status in ("delivered", "reused", "failed")}
        for row in self.rows:
            counts[row.status] += 1
        return (
            f"{len(self.rows)} row(s): {counts['delivered']} delivered, "
            f"{counts['reused']} reused (no charge), {counts['failed']} failed"
        )


#: Called as rows finish (outcome None once at the start): (outcome, done, total).
ProgressListener = Callable[[RowOutcome | None, int, int], None]
_listeners: list[ProgressListener] = []


@contextmanager
def watch_batch(listener: ProgressListener) -> Iterator[None]:
    """Call `listener` as rows of batches in this process finish (for progress displays).

    Example:
        ```python
        with watch_batch(lambda outcome, done, total: print(f"{done}/{total}")):
            omnihuman_batch("batch.csv", credentials=credentials)
        ```
    """
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _notify(outcome: RowOutcome | None, done: int, total: int) -> None:
    for listener in list(_listeners):
        try:
            listener(outcome, done, total)
        except Exception:  # a display must never break the batch
            logging.getLogger(__name__).debug("progress listener failed", exc_info=True)


def ensure_generation_limit(name: str, limit: int) -> int:
    """Create the global concurrency limit `name` with `limit` slots if it is missing.

    An existing limit is left as it is (other runs and workers rely on it); its size
    is returned. Change it with `prefect gcl update NAME --limit N`.
    """
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
                return limit
            except ObjectAlreadyExists:  # another run created it meanwhile
                existing = client.read_global_concurrency_limit_by_name(name)
    if not existing.active:
        raise ManifestError(
            f"the concurrency limit {name!r} is inactive, so no row could start",
            fix=f"run `prefect gcl enable {name}`",
        )
    return int(existing.limit)


#: The manifest row this thread is making: its subflow run is named after it.
_current_row: contextvars.ContextVar[int] = contextvars.ContextVar("omnihuman_row")


def _row_run_name() -> str:
    return f"row-{_current_row.get()}"


# Each `with_options` rebuilds a flow's parameter schema (about 50 ms of CPU): the rows'
# flows are built once, and name their runs from `_current_row`.
@cache
def _row_video_flow() -> Flow[..., OmniHumanResult]:
    return omnihuman_video.with_options(flow_run_name=_row_run_name)


@cache
def _row_narrated_flow() -> Flow[..., OmniHumanResult]:
    return omnihuman_narrated_video.with_options(flow_run_name=_row_run_name)


def generate_row(
    row: ManifestRow,
    credentials: AimlApiCredentials,
    storage: MediaStorage | None,
    gate: GenerationGate,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    polling: PollSchedule | None = None,
) -> OmniHumanResult:
    """One row's video; its generation waits for a slot of `gate` (this run's and the
    global limit's) and holds it from the POST to completion.

    Call it inside a flow run (the row's pipeline becomes a subflow `row-N`).
    """
    # What both kinds of row pass to their flow; a text row is spoken first.
    arguments: dict[str, Any] = {
        "image": row.image,
        "destination": row.out,
        "credentials": credentials,
        "storage": storage,
        "model": row.model,
        "model_params": row.model_params,
        "timeout": timeout,
        "polling": polling,
    }
    token = _current_row.set(row.row)
    try:
        with gated_by(gate):
            if row.narrated:
                if row.tts_model:
                    arguments["tts_model"] = row.tts_model
                made: OmniHumanResult = _row_narrated_flow()(
                    text=cast(str, row.text), voice=row.voice, **arguments
                )
            else:
                made = _row_video_flow()(audio=cast(str, row.audio), **arguments)
            return made
    finally:
        _current_row.reset(token)


def _price_rows(
    manifest: Manifest,
    credentials: AimlApiCredentials,
    storage: MediaStorage | None,
    threads: int,
    credits_per_audio_second: float,
) -> tuple[BudgetEstimate, list[RowProblem]]:
    """Decode every row's inputs and estimate the new spend; rows that fail to decode
    become problems instead."""
    store = cast(ResultStore, get_result_store().update_for_task(submit_generation))

    def is_paid(fingerprint: str) -> bool:
        return store.exists(submission_cache_key(cast(Any, None), {"fingerprint": fingerprint}))

    def price(row: ManifestRow) -> Any:
        try:
            return cost_of_row(row, storage, service=credentials.base_url, is_paid=is_paid)
        except OmniHumanError as error:
            return RowProblem.of(row.row, error)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        priced = list(pool.map(price, manifest.rows))
    problems = [item for item in priced if isinstance(item, RowProblem)]
    costs = [item for item in priced if not isinstance(item, RowProblem)]
    estimate = estimate_budget(
        costs,
        credits_per_audio_second=credits_per_audio_second,
        credits_per_usd=credentials.credits_per_usd,
    )
    return estimate, problems


def _table(result: BatchResult) -> list[dict[str, Any]]:
    return [
        {
            "row": row.row,
            "status": row.status,
            "location": row.location or row.out or "",
            "duration": "" if row.duration is None else f"{row.duration:.2f} s",
            "cost": row.cost(result.credits_per_usd),
            "generation": row.generation_id or "",
            "error": "" if row.error is None else f"{row.error_type}: {row.error}",
        }
        for row in result.rows
    ]


@flow(name="omnihuman-batch", persist_result=True, result_serializer="json")
def omnihuman_batch(
    manifest: str,
    credentials: AimlApiCredentials | str | None = None,
    storage: MediaStorage | SkipJsonSchema[Block] | str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    budget_seconds: float | None = None,
    budget_credits: float | None = None,
    budget_usd: float | None = None,
    limit_name: str = GENERATIONS_LIMIT,
    credits_per_audio_second: float = CREDITS_PER_AUDIO_SECOND,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    polling: PollSchedule | None = None,
) -> BatchResult:
    """Make one talking video per manifest row, a bounded number at a time.

    Bad rows are reported and skipped; the others all run. The run ends `Completed`
    when every row has its video, else `Failed` with the reasons in its message;
    either way its result is the `BatchResult` (`return_state=True`, then
    `state.result(raise_on_failure=False)`), and it leaves a table artifact and a
    progress artifact.

    Args:
        manifest: CSV or JSONL at a local path or fsspec URL (see `manifest.py`).
        credentials: An `AimlApiCredentials` block or a saved block's name.
        storage: A `MediaStorage` block (or its name), or another storage block that
            `omnihuman_video` accepts (`S3Bucket`, `s3-bucket/NAME`, ...): staging, default
            destinations, and the storage options for `s3://` manifests, inputs and outputs.
        concurrency: Rows generating at once in this run; also the size given to the
            global concurrency limit `limit_name` if it does not exist yet (an
            existing limit keeps its size and caps all runs together).
        budget_seconds: Refuse to start if the new audio would exceed this many seconds.
        budget_credits: Refuse to start if the new generations would exceed these credits.
        budget_usd: Refuse to start if they would cost more than these US dollars (at
            the credentials' `credits_per_usd`, 2,000,000 credits to $1 by default).
        limit_name: The Prefect global concurrency limit the rows share.
        credits_per_audio_second: The price used by the budget estimate.
        timeout: Seconds to wait for each generation.
        polling: How often to check on generations (the default adapts to each job).

    Raises:
        ManifestError: The manifest itself is unreadable (no row ran).
        BudgetExceededError: The batch would exceed a budget (nothing was submitted).

    Example:
        ```python
        from prefect_omnihuman import omnihuman_batch

        result = omnihuman_batch(
            "s3://media/batches/monday.csv", credentials="aimlapi", storage="omnihuman-media",
            concurrency=4, budget_seconds=600,
        )
        print(result.summary())
        ```
    """
    logger = get_run_logger()
    creds = resolve_credentials(credentials)
    store = resolve_storage(storage)
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, not {concurrency}", fix="pass 4, say")
    parsed = read_manifest(manifest, options=store.options_for(manifest) if store else None)
    logger.info(
        "Manifest %s: %d row(s), %d unusable", parsed.source, parsed.size, len(parsed.problems)
    )
    problems = list(parsed.problems)
    runnable = list(parsed.rows)
    estimate = None
    if any(budget is not None for budget in (budget_seconds, budget_credits, budget_usd)):
        estimate, bad = _price_rows(parsed, creds, store, concurrency, credits_per_audio_second)
        logger.info("Budget estimate: %s", estimate.describe())
        check_budget(
            estimate, max_seconds=budget_seconds, max_credits=budget_credits, max_usd=budget_usd
        )
        problems += bad
        bad_rows = {problem.row for problem in bad}
        runnable = [row for row in runnable if row.row not in bad_rows]

    runnable = longest_first(runnable)
    slots = ensure_generation_limit(limit_name, concurrency)
    polls_per_second = ensure_status_poll_limit()
    logger.info(
        "Status polls of all runs share %r: %g request(s) a second",
        STATUS_POLLS_LIMIT,
        polls_per_second,
    )
    logger.info(
        "Running %d row(s), %d at a time in this run; limit %r has %d slot(s) for all runs",
        len(runnable),
        concurrency,
        limit_name,
        slots,
    )
    outs = {row.row: row.out for row in parsed.rows}
    outcomes = [RowOutcome.of_problem(problem, outs.get(problem.row)) for problem in problems]
    for outcome in outcomes:
        logger.warning("Row %d skipped: %s: %s", outcome.row, outcome.error_type, outcome.error)
    total = parsed.size
    progress = cast(
        UUID,
        create_progress_artifact(
            progress=100.0 * len(outcomes) / total,
            key="omnihuman-batch-progress",
            description=f"Rows finished of {parsed.source}",
        ),
    )
    _notify(None, len(outcomes), total)

    thumbnails: dict[int, str | None] = {}
    gate = GenerationGate(limit_name, threading.BoundedSemaphore(concurrency))
    threads = concurrency + min(concurrency, ROW_THREADS_AHEAD)
    with (
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="omnihuman-row") as pool,
        stops_waits_on_interrupt(),
        _unstarted_rows_dropped_on_interrupt(pool),
    ):
        futures: dict[Future[OmniHumanResult], ManifestRow] = {
            # Each thread gets its own copy of this flow run's context (Prefect's own
            # thread pool task runner does the same).
            pool.submit(
                contextvars.copy_context().run,
                generate_row,
                row,
                creds,
                store,
                gate,
                timeout,
                polling,
            ): row
            for row in runnable
        }
        for future in as_completed(futures):
            row = futures[future]
            try:
                made = future.result()
                thumbnails[row.row] = made.thumbnail
                outcome = RowOutcome.of_result(row, made)
                logger.info("Row %d %s: %s", row.row, outcome.status, outcome.location)
            except Exception as error:  # one row's failure, whatever it is, is its own
                outcome = RowOutcome.of_problem(RowProblem.of(row.row, error), row.out)
                logger.error("Row %d failed: %s: %s", row.row, outcome.error_type, outcome.error)
            outcomes.append(outcome)
            update_progress_artifact(progress, progress=100.0 * len(outcomes) / total)
            _notify(outcome, len(outcomes), total)

    result = BatchResult(
        manifest=parsed.source,
        rows=sorted(outcomes, key=lambda outcome: outcome.row),
        estimate=estimate,
        limit_name=limit_name,
        concurrency=min(concurrency, slots),
        credits_per_usd=creds.credits_per_usd,
    )
    create_table_artifact(
        table=_table(result),
        key="omnihuman-batch",
        description=f"OmniHuman batch {parsed.source}: {result.summary()}; cost: {result.spend()}",
    )
    create_markdown_artifact(
        markdown=batch_gallery(
            [
                (
                    row.row,
                    row.status,
                    row.location,
                    thumbnails.get(row.row),
                    video_link(row.location, store) if row.location else None,
                )
                for row in result.rows
            ]
        ),
        key="omnihuman-batch-videos",
        description=f"The videos of OmniHuman batch {parsed.source}",
    )
    logger.info("Batch done: %s; cost: %s", result.summary(), result.spend())
    return cast(BatchResult, _final_state(result))


@contextmanager
def _unstarted_rows_dropped_on_interrupt(pool: ThreadPoolExecutor) -> Iterator[None]:
    """On SIGTERM or Ctrl-C, rows not yet started never start (the pool would run them)."""
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception):
            pool.shutdown(wait=False, cancel_futures=True)
        raise


def _final_state(result: BatchResult) -> State[BatchResult]:
    """Completed when every row has its video, Failed (with the reasons) otherwise.

    Prefect makes a returned state the run's final state, with `result` as its data.
    """
    if not result.failures:
        return Completed(message=result.summary(), data=result)
    reasons = "; ".join(
        f"row {row.row}: {row.error_type}: {row.error}" for row in result.failures[:5]
    )
    more = f"; and {len(result.failures) - 5} more" if len(result.failures) > 5 else ""
    return Failed(message=f"{result.summary()}. {reasons}{more}", data=result)
