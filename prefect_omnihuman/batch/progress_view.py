"""The command line's view of a batch: a live progress bar, then a table of the rows."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prefect_omnihuman.batch.batch_flow import BatchResult, RowOutcome

_STYLES = {"delivered": "green", "reused": "cyan", "failed": "red"}


class BatchProgress:
    """A progress bar fed by `watch_batch`: rows done of total, and how they went.

    Example:
        ```python
        with BatchProgress(console) as display, watch_batch(display.update):
            omnihuman_batch("batch.csv", credentials=credentials)
        ```
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.counts = {status: 0 for status in _STYLES}
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("rows", total=None, counts="")

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, outcome: RowOutcome | None, done: int, total: int) -> None:
        """Record one finished row (or, with None, the batch's start)."""
        if outcome is not None:
            self.counts[outcome.status] += 1
        counts = "  ".join(
            f"[{style}]{self.counts[status]} {status}[/{style}]"
            for status, style in _STYLES.items()
        )
        self._progress.update(self._task, total=total, completed=done, counts=counts)


def outcome_table(result: BatchResult) -> Table:
    """The rows of a finished batch as a rich table."""
    table = Table(
        title=f"{result.manifest}: {result.summary()}",
        title_justify="left",
        caption=f"Cost: {result.spend()}",
        caption_justify="left",
    )
    for column in ("row", "status", "location", "duration", "cost", "generation"):
        table.add_column(column, overflow="fold")
    for row in result.rows:
        style = _STYLES[row.status]
        # Failed rows' reasons are printed in full after the table.
        detail = row.error_type if row.error_type else (row.generation_id or "")
        table.add_row(
            str(row.row),
            f"[{style}]{row.status}[/{style}]",
            row.location or row.out or "",
            "" if row.duration is None else f"{row.duration:.2f} s",
            row.cost(result.credits_per_usd),
            detail,
        )
    return table
