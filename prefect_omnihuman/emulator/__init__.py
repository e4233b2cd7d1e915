"""An offline emulator of the AI/ML API's OmniHuman 1.5 endpoints, over real HTTP on loopback.

Same routes, JSON shapes, statuses, errors and limits as the service; it fetches
the inputs, renders a real MP4, and can inject faults (5xx, 429, dropped
connections, lost answers, failed generations) on demand or at random.

Example:
    ```python
    from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig

    with AssetHost("samples") as assets, Emulator(EmulatorConfig(time_scale=0.05)) as api:
        body = {
            "model": "bytedance/omnihuman/v1.5",
            "image_url": assets.url_for("portrait.png"),
            "audio_url": assets.url_for("voice.wav"),
        }
        httpx.post(f"{api.url}/v2/video/generations", json=body,
                   headers={"Authorization": f"Bearer {api.api_key}"})
    ```
"""

from prefect_omnihuman.emulator.assets import AssetHost
from prefect_omnihuman.emulator.config import FAULT_KINDS, ROUTES, EmulatorConfig, FaultConfig
from prefect_omnihuman.emulator.server import Emulator, serve
from prefect_omnihuman.emulator.state import EmulatorStats

__all__ = [
    "FAULT_KINDS",
    "ROUTES",
    "AssetHost",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "FaultConfig",
    "serve",
]
