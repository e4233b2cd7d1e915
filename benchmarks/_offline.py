"""Offline settings and a Prefect home of the benchmark's own; import before Prefect.

Nothing here imports Prefect, so a script can call `go_offline` first thing.
"""

from __future__ import annotations

import os
import tempfile


def go_offline(name: str) -> None:
    """Point `PREFECT_HOME` at a new temporary folder and turn telemetry and the UI off."""
    os.environ.update(
        {
            "PREFECT_HOME": tempfile.mkdtemp(prefix=f"omnihuman-{name}-prefect-"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_API_KEY", None)
