"""`python -m prefect_omnihuman.emulator`: run the emulated AI/ML API in the foreground.

Example:
    python -m prefect_omnihuman.emulator --port 8787 --api-key sk-local --time-scale 0.1
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from prefect_omnihuman.emulator.config import EmulatorConfig
from prefect_omnihuman.emulator.server import serve


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m prefect_omnihuman.emulator",
        description="Offline emulator of the AI/ML API's OmniHuman 1.5 video endpoints.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on (0: any free)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accepted API key (repeatable; default: emulator-key)",
    )
    parser.add_argument(
        "--time-scale", type=float, default=defaults.time_scale, help="multiplies job durations"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=defaults.max_concurrent_per_key,
        help="unfinished generations per key before 429",
    )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=defaults.retry_after_seconds,
        help="seconds sent in Retry-After",
    )
    parser.add_argument(
        "--result-ttl",
        type=float,
        default=defaults.result_ttl_seconds,
        help="seconds a video URL stays valid after completion",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the duration jitter")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    config = EmulatorConfig(
        api_keys=args.api_keys or defaults.api_keys,
        time_scale=args.time_scale,
        max_concurrent_per_key=args.max_concurrent,
        retry_after_seconds=args.retry_after,
        result_ttl_seconds=args.result_ttl,
        seed=args.seed,
    )
    serve(args.host, args.port, config)


if __name__ == "__main__":
    main()
