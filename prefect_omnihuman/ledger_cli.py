"""`omnihuman ledger`: what was paid for, read from the storage's ledger (no Prefect server)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prefect_omnihuman.errors import InputError, OmniHumanError

ledger_app = typer.Typer(
    help="Paid generations recorded in your storage's ledger (--stage or --storage-block).",
    no_args_is_help=False,
    invoke_without_command=True,
)
console = Console()
errors = Console(stderr=True)

Stage = Annotated[
    str | None, typer.Option(help="fsspec URL of the storage (as given to generate --stage).")
]
StorageBlock = Annotated[
    str | None, typer.Option(help="Name of a saved MediaStorage block (instead of --stage).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _ledger(stage: str | None, storage_block: str | None):  # type: ignore[no-untyped-def]
    from prefect_omnihuman.storage.ledger import GenerationLedger
    from prefect_omnihuman.workflows.block_loading import storage_from

    storage = storage_from(storage_block, url=stage)
    if storage is None:
        raise InputError(
            "no storage to read the ledger from",
            fix="pass --stage s3://bucket/prefix (as given to generate) or --storage-block NAME",
        )
    return GenerationLedger(storage)


def _fail(error: BaseException) -> typer.Exit:
    reason = " ".join(str(error).split()) or type(error).__name__
    errors.print(f"[red]error[/red]: {type(error).__name__}: {reason}", soft_wrap=True)
    return typer.Exit(code=1)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@ledger_app.callback()
def ledger_list(
    ctx: typer.Context,
    stage: Stage = None,
    storage_block: StorageBlock = None,
    as_json: AsJson = False,
) -> None:
    """List paid generations, newest first (`show` and `spend` below)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        records = _ledger(stage, storage_block).records()
    except OmniHumanError as error:
        raise _fail(error) from None
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in records], indent=1))
        return
    table = Table("submitted (UTC)", "generation", "status", "model", "seconds", "credits", "dup?")
    for r in records:
        table.add_row(
            _when(r.submitted_at),
            r.generation_id or "(no answer)",
            r.status,
            r.model,
            f"{r.audio_seconds:.2f}" if r.audio_seconds is not None else "-",
            f"{r.credits:,.0f}" if r.credits is not None else "-",
            "suspected" if r.suspected_duplicate else "",
        )
    console.print(table)


@ledger_app.command("show")
def ledger_show(
    key: Annotated[str, typer.Argument(help="A fingerprint (or its start) or a generation id.")],
    stage: Stage = None,
    storage_block: StorageBlock = None,
    as_json: AsJson = False,
) -> None:
    """Show one record: by fingerprint or generation id."""
    try:
        ledger = _ledger(stage, storage_block)
        record = ledger.find(key)
    except OmniHumanError as error:
        raise _fail(error) from None
    if record is None:
        raise _fail(LookupError(f"no ledger record for {key!r} in {ledger.root}"))
    if as_json:
        print(record.model_dump_json(indent=1))
        return
    for name, value in record.model_dump(exclude={"deliveries"}).items():
        print(f"{name}: {value}")
    for delivery in record.deliveries:
        when = _when(delivery.delivered_at)
        print(f"delivered: {delivery.location} ({delivery.duration:.2f} s, {when})")


@ledger_app.command("spend")
def ledger_spend(
    stage: Stage = None, storage_block: StorageBlock = None, as_json: AsJson = False
) -> None:
    """Sum generations, seconds, credits and suspected duplicates by day and by model."""
    from prefect_omnihuman.api.pricing import format_cost
    from prefect_omnihuman.storage.spend import spend_by_day_and_model

    try:
        lines = spend_by_day_and_model(_ledger(stage, storage_block).records())
    except OmniHumanError as error:
        raise _fail(error) from None
    if as_json:
        print(json.dumps([line.model_dump() for line in lines], indent=1))
        return
    table = Table("day (UTC)", "model", "generations", "seconds", "cost", "suspected duplicates")
    for line in lines:
        table.add_row(
            line.day,
            line.model,
            str(line.generations),
            f"{line.audio_seconds:.2f}",
            format_cost(line.credits),
            str(line.suspected_duplicates),
        )
    console.print(table)
