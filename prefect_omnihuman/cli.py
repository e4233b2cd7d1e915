"""The `omnihuman` command line: generate a video, run the emulator, run the demo."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from .errors import OmniHumanError

app = typer.Typer(
    help="Talking-avatar videos with ByteDance OmniHuman 1.5 on the AI/ML API, from Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("httpx", "httpcore", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(error: BaseException) -> typer.Exit:
    reason = " ".join(str(error).split()) or type(error).__name__
    console.print(f"[red]error[/red]: {type(error).__name__}: {reason}", soft_wrap=True)
    return typer.Exit(code=1)


@app.command()
def generate(
    image: Annotated[str, typer.Option(help="Portrait: local path, s3:// or http(s) URL.")],
    audio: Annotated[str, typer.Option(help="Voice track under 30 s: path or URL.")],
    out: Annotated[str, typer.Option(help="Where to store the MP4: path or fsspec URL.")],
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
        str | None, typer.Option(help="Name of a saved MediaStorage block (instead of --stage).")
    ] = None,
    force_new: Annotated[
        bool, typer.Option(help="Pay for a new generation even if these inputs were done.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the video.")] = 3600.0,
    verbose: Annotated[bool, typer.Option(help="Log debug details.")] = False,
) -> None:
    """Generate one talking video and print where it is stored.

    The API key comes from $AIMLAPI_API_KEY, or from --credentials-block.
    """
    _configure_logging(verbose)
    from .credentials import AimlApiCredentials
    from .flows import omnihuman_video, resolve_credentials, resolve_storage
    from .storage import MediaStorage

    try:
        if credentials_block:
            credentials = resolve_credentials(credentials_block)
            if base_url:
                credentials = credentials.model_copy(update={"base_url": base_url})
        else:
            credentials = AimlApiCredentials.from_env(base_url=base_url)
        storage = resolve_storage(storage_block)
        if stage:
            storage = MediaStorage(base_url=stage, public_base_url=stage_public_url)
        result = omnihuman_video(
            image=image,
            audio=audio,
            destination=out,
            credentials=credentials,
            storage=storage,
            force_new=force_new,
            timeout=timeout,
        )
    except (OmniHumanError, ValueError, OSError) as error:
        raise _fail(error) from None
    print(result.location)


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
) -> None:
    """Run the offline emulator of the AI/ML API until interrupted."""
    from .emulator import EmulatorConfig, serve

    _configure_logging(verbose=False)
    keys = api_key or [os.environ.get("AIMLAPI_API_KEY") or "emulator-key"]
    config = EmulatorConfig(
        api_keys=keys,
        time_scale=time_scale,
        max_concurrent_per_key=max_concurrent,
        result_ttl_seconds=result_ttl,
    )
    serve(host, port, config)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the inputs and the video.")] = Path(
        "demo-output"
    ),
    verbose: Annotated[bool, typer.Option(help="Log debug details.")] = False,
) -> None:
    """Generate one talking video offline: sample inputs, the emulator, the flow, a real MP4."""
    from .demo import run_demo
    from .media import probe_video

    _configure_logging(verbose)
    try:
        result = run_demo(out.resolve())
    except OmniHumanError as error:
        raise _fail(error) from None
    info = probe_video(result.location)
    console.print(
        f"[green]Video ready[/green]: {info.duration:.2f} s, {info.width}x{info.height}, "
        f"{info.video_codec} + {info.audio_codec}, generation {result.generation_id}"
    )
    print(result.location)


def main() -> None:
    """Entry point of the `omnihuman` script."""
    app(prog_name="omnihuman")


if __name__ == "__main__":
    main()
