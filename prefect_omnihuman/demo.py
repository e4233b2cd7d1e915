"""The offline demo: sample inputs made here, the emulator, the flow, one real MP4 at the end."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from prefect_omnihuman.api.polling import PollSchedule
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice
from prefect_omnihuman.results import OmniHumanResult
from prefect_omnihuman.storage.media_storage import MediaStorage
from prefect_omnihuman.workflows.credentials import AimlApiCredentials
from prefect_omnihuman.workflows.video_flows import omnihuman_video

DEMO_KEY = "emulator-demo-key"


def write_demo_inputs(folder: Path) -> tuple[Path, Path]:
    """A generated portrait and an eight-second voice track with two pauses."""
    folder.mkdir(parents=True, exist_ok=True)
    portrait = write_sample_portrait(folder / "portrait.png")
    voice = write_sample_voice(folder / "voice.wav", seconds=8.0, pauses=(2.5, 5.5))
    return portrait, voice


def run_demo(out: Path, *, time_scale: float = 0.025) -> OmniHumanResult:
    """Generate one talking video through `omnihuman_video` against a local emulator.

    Local inputs are staged in `out/staging`, which a loopback file server publishes
    the way a bucket or CDN would, so the emulator fetches them over HTTP. The emulator
    runs the real service's minutes `time_scale` times as fast, and the poll schedule is
    scaled to match, so the video is noticed within a fraction of a second of completion.
    """
    portrait, voice = write_demo_inputs(out / "inputs")
    staging = out / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    config = EmulatorConfig(api_keys=[DEMO_KEY], time_scale=time_scale)
    with Emulator(config) as emulator, AssetHost(staging) as public:
        credentials = AimlApiCredentials(api_key=SecretStr(DEMO_KEY), base_url=emulator.url)
        storage = MediaStorage(base_url=str(staging), public_base_url=public.url)
        return omnihuman_video(
            image=str(portrait),
            audio=str(voice),
            destination=str(out / "omnihuman-demo.mp4"),
            credentials=credentials,
            storage=storage,
            polling=PollSchedule().scaled(time_scale),
        )
