"""The `omnihuman` command line: generate, batch, status, download, ledger, emulator, demo."""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from prefect_omnihuman.cli_server import PREFECT_IMPORT_WARNING, drain_prefect_senders, prefect_api
from prefect_omnihuman.errors import OmniHumanError
from prefect_omnihuman.kept_server import keep_seconds

warnings.filterwarnings("ignore", message=re.escape(PREFECT_IMPORT_WARNING))

app = typer.Typer(
    help="Talking-avatar videos with ByteDance OmniHuman 1.5 on the AI/ML API, from Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


class _WithoutTracebacks(logging.Formatter):
    """Formats records as `inner` does, minus tracebacks: the CLI ends with a one-line reason."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
            )
        return self.inner.format(record)


def _configure_logging(verbose: bool, *, runs_flows: bool = False) -> None:
    if runs_flows:
        # Prefect sets its logging up when `prefect.main` (flows, tasks) is first imported:
        # importing it now, rather than with the flows, sets it up once instead of twice.
        import prefect.main  # noqa: F401
    from prefect.logging import configuration

    if not configuration.PROCESS_LOGGING_CONFIG:
        configuration.setup_logging()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(RichHandler(console=console, show_path=False))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("prefect_omnihuman").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for handler in root.handlers:
            handler.setFormatter(_WithoutTracebacks(handler.formatter))
    for noisy in ("httpx", "httpcore", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Terminated(BaseException):
    """SIGTERM outside a flow run (inside one, Prefect's own handler raises instead)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def _fail(error: BaseException) -> typer.Exit:
    # Prefect's event and log senders first: stopped with items queued, they warn on stderr,
    # and the reason must stay the command's last line.
    drain_prefect_senders()
    reason = " ".join(str(error).split()) or type(error).__name__
    console.print(f"[red]error[/red]: {type(error).__name__}: {reason}", soft_wrap=True)
    return typer.Exit(code=1)


def _check_server_keep_seconds() -> None:
    try:
        keep_seconds()
    except ValueError as error:
        raise _fail(error) from None


@app.command()
def generate(
    image: Annotated[str, typer.Option(help="Portrait: local path, s3:// or http(s) URL.")],
    out: Annotated[str, typer.Option(help="Where to store the MP4: path or fsspec URL.")],
    audio: Annotated[
        str | None,
        typer.Option(help="Voice track: path or URL; 30 s or more is split into parts."),
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="What to say, instead of --audio: spoken by text-to-speech.")
    ] = None,
    voice: Annotated[str | None, typer.Option(help="Text-to-speech voice (with --text).")] = None,
    tts_model: Annotated[
        str | None, typer.Option(help="Text-to-speech model (with --text).")
    ] = None,
    split: Annotated[
        bool,
        typer.Option(help="Split audio of 30 s or more into parts (--no-split: refuse it)."),
    ] = True,
    stage: Annotated[
        str | None,
        typer.Option(help="fsspec URL where local inputs are staged (e.g. s3://bucket/in)."),
    ] = None,
    stage_public_url: Annotated[
        str | None, typer.Option(help="HTTP URL that serves --stage, if it cannot presign.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="API root; defaults to $AIMLAPI_BASE_URL or the real API.")
    ] = None,
    credentials_block: Annotated[
        str | None, typer.Option(help="Name of a saved AimlApiCredentials block.")
    ] = None,
    storage_block: Annotated[
        str | None,
        typer.Option(
            help="Saved storage block (instead of --stage): a MediaStorage name, or "
            "s3-bucket/NAME, remote-file-system/NAME, local-file-system/NAME."
        ),
    ] = None,
    force_new: Annotated[
        bool, typer.Option(help="Pay for a new generation even if these inputs were done.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the video.")] = 3600.0,
    max_poll_interval: Annotated[
        float | None, typer.Option(help="Most seconds between status checks (default: adaptive).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Log debug details.")] = False,
) -> None:
    """Generate one talking video and print where it is stored.

    Give --audio, or --text to have it spoken first (text-to-speech, then preparation).
    The API key comes from $AIMLAPI_API_KEY, or from --credentials-block.
    """
    if (audio is None) == (text is None):
        raise _fail(ValueError("give either --audio or --text (one of them)"))
    _check_server_keep_seconds()
    with prefect_api() as server:
        _configure_logging(verbose, runs_flows=True)
        from prefect_omnihuman.api.client import check_reachable
        from prefect_omnihuman.api.models import DEFAULT_TTS_MODEL
        from prefect_omnihuman.workflows.block_loading import (
            credentials_from,
            polling_capped,
            storage_from,
        )
        from prefect_omnihuman.workflows.video_flows import (
            omnihuman_narrated_video,
            omnihuman_video,
        )

        try:
            polling = polling_capped(max_poll_interval)
            credentials = credentials_from(credentials_block, base_url=base_url)
            storage = storage_from(storage_block, url=stage, public_url=stage_public_url)
            check_reachable(credentials.base_url)  # a wrong address fails before Prefect is up
            if server:
                server.wait_ready()
            if text is not None:
                result = omnihuman_narrated_video(
                    text=text,
                    image=image,
                    destination=out,
                    credentials=credentials,
                    storage=storage,
                    voice=voice,
                    tts_model=tts_model or DEFAULT_TTS_MODEL,
                    force_new=force_new,
                    timeout=timeout,
                    polling=polling,
                )
            else:
                result = omnihuman_video(
                    image=image,
                    audio=audio or "",
                    destination=out,
                    credentials=credentials,
                    storage=storage,
                    force_new=force_new,
                    timeout=timeout,
                    polling=polling,
                    split_long_audio=split,
                )
        except (OmniHumanError, ValueError, OSError) as error:
            raise _fail(error) from None
        print(result.location, flush=True)


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    api_key: Annotated[
        list[str] | None, typer.Option("--api-key", help="Accepted API key (repeatable).")
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Multiplies every processing delay (0.1 = ten times faster).")
    ] = 1.0,
    max_concurrent: Annotated[
        int, typer.Option(help="Concurrent generations allowed per key before 429.")
    ] = 8,
    result_ttl: Annotated[float, typer.Option(help="Seconds a result URL stays valid.")] = 3600.0,
    status_word: Annotated[
        list[str] | None,
        typer.Option(
            "--status-word",
            help="STATUS=WORD: report WORD instead of a status, e.g. completed=succeeded "
            "(repeatable).",
        ),
    ] = None,
) -> None:
    """Run the offline emulator of the AI/ML API until interrupted."""
    from pydantic import ValidationError

    from prefect_omnihuman.emulator import EmulatorConfig, serve

    _configure_logging(verbose=False)
    keys = api_key or [os.environ.get("AIMLAPI_API_KEY") or "emulator-key"]
    words: dict[str, str] = {}
    for pair in status_word or []:
        status, sep, word = pair.partition("=")
        if not sep or not status.strip() or not word.strip():
            raise typer.BadParameter(f"{pair!r}: expected STATUS=WORD, e.g. completed=succeeded")
        words[status.strip()] = word.strip()
    try:
        config = EmulatorConfig(
            api_keys=keys,
            time_scale=time_scale,
            max_concurrent_per_key=max_concurrent,
            result_ttl_seconds=result_ttl,
            status_words=words,
        )
    except ValidationError as error:
        message = "; ".join(str(e["msg"]) for e in error.errors())
        raise typer.BadParameter(message, param_hint="--status-word") from None
    serve(host, port, config)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the inputs and the video.")] = Path(
        "demo-output"
    ),
    verbose: Annotated[bool, typer.Option(help="Log debug details.")] = False,
) -> None:
    """Generate one talking video offline: sample inputs, the emulator, the flow, a real MP4."""
    _check_server_keep_seconds()
    # The commands' own temporary server: Prefect's would have 20 s to start, and in a new
    # PREFECT_HOME its migrations and imports take longer on a small machine.
    with prefect_api() as server:
        _configure_logging(verbose, runs_flows=True)
        from prefect_omnihuman.demo import run_demo
        from prefect_omnihuman.media.probe import probe_video

        try:
            if server:
                server.wait_ready()
            result = run_demo(out.resolve())
        except (OmniHumanError, OSError) as error:
            raise _fail(error) from None
        info = probe_video(result.location)
        console.print(
            f"[green]Video ready[/green]: {info.duration:.2f} s, {info.width}x{info.height}, "
            f"{info.video_codec} + {info.audio_codec}, generation {result.generation_id}"
        )
        print(result.location, flush=True)


def _quiet_console_logs() -> None:
    """Keep run logs off the terminal (they still reach Prefect): the display shows progress."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, RichHandler):
            handler.setLevel(logging.CRITICAL)


@app.command()
def batch(
    manifest: Annotated[str, typer.Argument(help="CSV or JSONL manifest: path or fsspec URL.")],
    concurrency: Annotated[
        int, typer.Option(help="Generations at once (creates the limit if missing).")
    ] = 4,
    budget_seconds: Annotated[
        float | None, typer.Option(help="Refuse to start above this many seconds of audio.")
    ] = None,
    budget_credits: Annotated[
        float | None, typer.Option(help="Refuse to start above this many credits.")
    ] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(
            help="Refuse to start above this many US dollars (default rate 2,000,000 credits = $1)."
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="API root; defaults to $AIMLAPI_BASE_URL or the real API.")
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="fsspec URL where local inputs are staged.")
    ] = None,
    stage_public_url: Annotated[
        str | None, typer.Option(help="HTTP URL that serves --stage, if it cannot presign.")
    ] = None,
    credentials_block: Annotated[
        str | None, typer.Option(help="Name of a saved AimlApiCredentials block.")
    ] = None,
    storage_block: Annotated[
        str | None,
        typer.Option(
            help="Saved storage block (instead of --stage): a MediaStorage name, or "
            "s3-bucket/NAME, remote-file-system/NAME, local-file-system/NAME."
        ),
    ] = None,
    limit_name: Annotated[
        str, typer.Option(help="Prefect global concurrency limit shared by all batches.")
    ] = "omnihuman-generations",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each video.")] = 3600.0,
    max_poll_interval: Annotated[
        float | None, typer.Option(help="Most seconds between status checks (default: adaptive).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show the runs' logs too.")] = False,
) -> None:
    """Make one video per manifest row; print each stored video, one per line.

    Every good row is finished; exits 1 with each failed row's reason if any failed.
    Re-running the same manifest pays for nothing twice.
    """
    _check_server_keep_seconds()
    with prefect_api() as server:
        _configure_logging(verbose, runs_flows=True)
        if not verbose:
            _quiet_console_logs()
        from prefect_omnihuman.api.client import check_reachable
        from prefect_omnihuman.batch.batch_flow import BatchResult, omnihuman_batch, watch_batch
        from prefect_omnihuman.batch.progress_view import BatchProgress, outcome_table
        from prefect_omnihuman.workflows.block_loading import (
            credentials_from,
            polling_capped,
            storage_from,
        )

        try:
            credentials = credentials_from(credentials_block, base_url=base_url)
            storage = storage_from(storage_block, url=stage, public_url=stage_public_url)
            check_reachable(credentials.base_url)  # a wrong address fails before Prefect is up
            if server:
                server.wait_ready()
            with BatchProgress(console) as display, watch_batch(display.update):
                state = omnihuman_batch(
                    manifest,
                    credentials=credentials,
                    storage=storage,
                    concurrency=concurrency,
                    budget_seconds=budget_seconds,
                    budget_credits=budget_credits,
                    budget_usd=budget_usd,
                    limit_name=limit_name,
                    timeout=timeout,
                    polling=polling_capped(max_poll_interval),
                    return_state=True,
                )
            outcome = state.result(raise_on_failure=False)
        except (OmniHumanError, ValueError, OSError) as error:
            raise _fail(error) from None
    if not isinstance(outcome, BatchResult):
        raise _fail(outcome if isinstance(outcome, BaseException) else RuntimeError(state.message))
    drain_prefect_senders()  # as in _fail: the rows' reasons stay the command's last lines
    console.print(outcome_table(outcome))
    for row in outcome.rows:
        if row.location:
            print(row.location)
    if outcome.failures:
        for row in outcome.failures:
            console.print(f"[red]row {row.row}[/red] {row.error_type}: {row.error}", soft_wrap=True)
        raise typer.Exit(code=1)


@app.command()
def status(
    generation_id: Annotated[str, typer.Argument(help="The generation id (with its :model).")],
    base_url: Annotated[
        str | None, typer.Option(help="API root; defaults to $AIMLAPI_BASE_URL or the real API.")
    ] = None,
    credentials_block: Annotated[
        str | None, typer.Option(help="Name of a saved AimlApiCredentials block.")
    ] = None,
) -> None:
    """Print what the API says about a generation: status, video link, duration, cost."""
    from prefect_omnihuman.api.pricing import format_cost
    from prefect_omnihuman.workflows.block_loading import credentials_from

    try:
        credentials = credentials_from(credentials_block, base_url=base_url)
        with credentials.get_client() as client:
            generation = client.get(generation_id)
    except OmniHumanError as error:
        raise _fail(error) from None
    fields = {
        "id": generation.id,
        "status": generation.status,
        "phase": generation.phase.value,
        "video_url": generation.video_url,
        "duration": generation.video_duration,
        "credits_used": generation.credits_used,
        "cost": None
        if generation.credits_used is None
        else format_cost(generation.credits_used, credentials.credits_per_usd),
        "error": generation.error.message if generation.error else None,
    }
    for name, value in fields.items():
        if value is not None:
            print(f"{name}: {value}")


@app.command()
def download(
    generation_id: Annotated[str, typer.Argument(help="The generation id (with its :model).")],
    out: Annotated[str, typer.Option(help="Where to store the MP4: path or fsspec URL.")],
    base_url: Annotated[
        str | None, typer.Option(help="API root; defaults to $AIMLAPI_BASE_URL or the real API.")
    ] = None,
    credentials_block: Annotated[
        str | None, typer.Option(help="Name of a saved AimlApiCredentials block.")
    ] = None,
    storage_block: Annotated[
        str | None,
        typer.Option(help="Storage block (name or s3-bucket/NAME, ...) whose options reach --out."),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Log debug details.")] = False,
) -> None:
    """Store the video of a finished generation (recovery by id; no new charge)."""
    _configure_logging(verbose)
    from prefect_omnihuman.api.models import Phase
    from prefect_omnihuman.errors import GenerationFailedError
    from prefect_omnihuman.results import SubmittedGeneration
    from prefect_omnihuman.storage.media_storage import is_local, local_path
    from prefect_omnihuman.workflows.block_loading import credentials_from, resolve_storage
    from prefect_omnihuman.workflows.generation_tasks import download_video

    try:
        credentials = credentials_from(credentials_block, base_url=base_url)
        with credentials.get_client() as client:
            generation = client.get(generation_id)
        if generation.phase is Phase.ERROR:
            message = generation.error.message if generation.error else "no message"
            raise GenerationFailedError(generation.id, message)
        if generation.phase is Phase.PENDING:
            raise _fail(
                ValueError(f"generation {generation.id} is still {generation.status}; try later")
            )
        destination = str(local_path(out)) if is_local(out) else out
        done = SubmittedGeneration(generation=generation, fingerprint="", submitted_at=time.time())
        # The download task checks the MP4 and publishes it atomically; always fetch anew.
        delivered = download_video.with_options(refresh_cache=True)(
            done, destination, credentials, resolve_storage(storage_block)
        )
    except (OmniHumanError, OSError) as error:
        raise _fail(error) from None
    print(delivered.location)


def _add_ledger_commands() -> None:
    from prefect_omnihuman.ledger_cli import ledger_app

    app.add_typer(ledger_app, name="ledger")


_add_ledger_commands()


def main() -> None:
    """Entry point of the `omnihuman` script.

    SIGTERM (`docker stop`, Kubernetes, `timeout`, systemd) stops a command as Ctrl-C
    does: a flow run in progress is recorded as Crashed, its waits end, nothing
    half-written is published, and running the same command again resumes it.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        try:
            app(prog_name="omnihuman")
        finally:
            # The interpreter's exit would collect every object Prefect and pydantic made,
            # about 0.6 s of each command: frozen objects are left to the process's end.
            gc.freeze()
    except _Terminated:
        console.print(
            "[red]stopped[/red] by SIGTERM; run the same command again to resume "
            "(a generation already paid for is not paid again)",
            soft_wrap=True,
        )
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
