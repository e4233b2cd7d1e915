"""A corpus of bad and odd inputs, each through the real flow (a few through the CLI).

Every bad input must end in a typed error from `errors.py` whose one-line message names
the file or URL at fault and the fix, and holds no secret. Nothing the product can check
itself may reach a POST; only the API can tell a wrong key, an empty balance or a wrong
base URL, and those must not be accepted. No destination keeps a partial file. Odd but
valid inputs (other sample rates, channel counts, names or extensions) must just work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from prefect_omnihuman import AimlApiCredentials, MediaStorage, omnihuman_video
from prefect_omnihuman.emulator import AssetHost, Emulator, EmulatorConfig
from prefect_omnihuman.errors import (
    AuthenticationError,
    InputError,
    InsufficientCreditsError,
    InvalidAudioError,
    InvalidImageError,
    NotFoundError,
    OmniHumanError,
    StagingRequiredError,
)
from prefect_omnihuman.media.prep import encode_wav
from prefect_omnihuman.media.probe import decode_audio, probe_audio, probe_video
from prefect_omnihuman.media.samples import write_sample_portrait, write_sample_voice

from ..conftest import FAST_POLL, S3, TEST_KEY, free_port

pytestmark = pytest.mark.usefixtures("prefect_api")

OMNIHUMAN = str(Path(sys.executable).with_name("omnihuman"))
WRONG_KEY = "sk-wrong-key-never-shown-5d81"


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    """One emulator for the module (cases reset it): a start per case would cost more
    than the cases themselves."""
    config = EmulatorConfig(api_keys=[TEST_KEY], time_scale=0.004, seed=7, retry_after_seconds=0.2)
    with Emulator(config) as server:
        yield server


@pytest.fixture(scope="module")
def staging_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, AssetHost]]:
    """A folder served over loopback HTTP, like a bucket behind a CDN; one per case below."""
    root = tmp_path_factory.mktemp("staging")
    with AssetHost(root) as host:
        yield root, host


@dataclass
class World:
    """What a case builds its inputs from, and the flow arguments of a good run."""

    tmp: Path
    samples: Path
    api: Emulator
    asset_host: AssetHost
    staging: Path
    storage: MediaStorage
    s3: S3 | None = None
    out: Path = field(init=False)
    #: Undone right after the flow ran (settings a case changes for its run only).
    during_run: ExitStack = field(default_factory=ExitStack)

    def __post_init__(self) -> None:
        self.out = self.tmp / "out"

    def credentials(self, key: str = TEST_KEY, base_url: str | None = None) -> AimlApiCredentials:
        return AimlApiCredentials(api_key=key, base_url=base_url or self.api.url)

    def arguments(self, **changes: Any) -> dict[str, Any]:
        """A good run's flow arguments, with `changes` applied."""
        good = {
            "image": str(self.samples / "portrait.png"),
            "audio": str(self.tmp / "in" / "voice.wav"),
            "destination": str(self.out / "video.mp4"),
            "credentials": self.credentials(),
            "storage": self.storage,
            "polling": FAST_POLL,
            "split_long_audio": False,
        }
        return {**good, **changes}

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return str(path)

    def needs_s3(self) -> S3:
        assert self.s3 is not None, "this case needs the s3 fixture"
        return self.s3


def voice_at(world: World, name: str, *, rate: int, channels: int, seconds: float) -> str:
    """A speech-like track at any rate and channel count (`write_sample_voice` does 1 or 2)."""
    sample = write_sample_voice(world.tmp / "work" / name, seconds=seconds)
    mono = decode_audio(sample, sample_rate=rate)
    pcm = np.stack([mono * (1.0 - 0.05 * c) for c in range(channels)])
    return world.file(name, encode_wav(pcm, rate))


# -- the corpus of bad inputs --------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad input: how to build the flow's arguments, the error, and words it must contain.

    `by_api`: only the API can tell, so a POST is made (none is accepted); `refused` is
    how many POSTs the emulator saw and refused (a wrong base URL misses its route).
    """

    build: Callable[[World], dict[str, Any]]
    error: type[OmniHumanError]
    words: tuple[str, ...]
    by_api: bool = False
    refused: int = 0
    s3: bool = False


def truncated_png(w: World) -> dict[str, Any]:
    data = (w.samples / "portrait.png").read_bytes()
    return w.arguments(image=w.file("truncated.png", data[: len(data) // 2]))


def text_named_mp3(w: World) -> dict[str, Any]:
    return w.arguments(audio=w.file("notes.mp3", "Speaker notes, not a recording.\n" * 40))


def zero_byte_audio(w: World) -> dict[str, Any]:
    return w.arguments(audio=w.file("empty.wav", b""))


def silent_audio(w: World) -> dict[str, Any]:
    return w.arguments(audio=w.file("silent.wav", encode_wav(np.zeros(48000, np.float32), 24000)))


def huge_image(w: World) -> dict[str, Any]:
    # 1-bit pixels: a 9000x9000 picture costs 10 MB of memory and a few kB of PNG.
    path = w.tmp / "in" / "huge.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (9000, 9000), 1).save(path)
    return w.arguments(image=str(path))


def tiny_image(w: World) -> dict[str, Any]:
    path = w.tmp / "in" / "thumb.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (230, 190, 160)).save(path)
    return w.arguments(image=str(path))


def wav_named_png(w: World) -> dict[str, Any]:
    return w.arguments(image=w.file("face.png", (w.samples / "voice.wav").read_bytes()))


def png_named_wav(w: World) -> dict[str, Any]:
    return w.arguments(audio=w.file("voice.wav", (w.samples / "portrait.png").read_bytes()))


def missing_file(w: World) -> dict[str, Any]:
    return w.arguments(audio=str(w.tmp / "in" / "nowhere.wav"))


def folder_for_a_file(w: World) -> dict[str, Any]:
    folder = w.tmp / "in" / "takes"
    folder.mkdir(parents=True)
    return w.arguments(audio=str(folder))


def unreadable_file(w: World) -> dict[str, Any]:
    path = Path(w.file("locked.wav", (w.samples / "voice.wav").read_bytes()))
    path.chmod(0)
    return w.arguments(audio=str(path))


def unreachable_url(w: World) -> dict[str, Any]:
    return w.arguments(image=f"http://127.0.0.1:{free_port()}/faces/ada.png")


def url_404(w: World) -> dict[str, Any]:
    return w.arguments(audio=w.asset_host.url_for("missing-take.wav"))


def s3_wrong_credentials(w: World) -> dict[str, Any]:
    s3 = w.needs_s3()
    s3.fs().put_file(str(w.samples / "portrait.png"), f"{s3.bucket}/raw/portrait.png")
    # moto takes any credentials unless asked to check them (against its IAM: the
    # wrong ones are unknown there), and that check is global: on for this run only.
    reset = f"{s3.endpoint}/moto-api/reset-auth"
    httpx.post(reset, content=b"0").raise_for_status()
    w.during_run.callback(lambda: httpx.post(reset, content=b"inf").raise_for_status())
    options = {**s3.options, "secret": "not-the-secret-3b7e"}
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/bad-creds", storage_options=options)
    return w.arguments(image=f"s3://{s3.bucket}/raw/portrait.png", storage=storage)


def s3_missing_bucket(w: World) -> dict[str, Any]:
    s3 = w.needs_s3()
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/stage", storage_options=s3.options)
    return w.arguments(audio="s3://no-such-bucket-77/voice.wav", storage=storage)


def destination_in_missing_bucket(w: World) -> dict[str, Any]:
    s3 = w.needs_s3()
    storage = MediaStorage(base_url=f"s3://{s3.bucket}/stage", storage_options=s3.options)
    return w.arguments(destination="s3://no-such-bucket-78/video.mp4", storage=storage)


def destination_under_a_file(w: World) -> dict[str, Any]:
    blocker = w.file("report.txt", "not a folder")
    return w.arguments(destination=f"{blocker}/video.mp4")


def local_audio_without_staging(w: World) -> dict[str, Any]:
    return w.arguments(storage=None)


def wrong_api_key(w: World) -> dict[str, Any]:
    return w.arguments(credentials=w.credentials(key=WRONG_KEY))


def out_of_credits(w: World) -> dict[str, Any]:
    w.api.inject("out_of_credits", route="post")
    return w.arguments()


def wrong_base_url(w: World) -> dict[str, Any]:
    # The API docs' own example sets base_url = ".../v2"; ours is the root.
    return w.arguments(credentials=w.credentials(base_url=f"{w.api.url}/v2"))


CORPUS: dict[str, Bad] = {
    "truncated-png": Bad(truncated_png, InvalidImageError, ("truncated.png", "truncated", "Fix:")),
    "text-file-named-mp3": Bad(
        text_named_mp3, InvalidAudioError, ("notes.mp3", "not an audio file", "WAV, MP3")
    ),
    "zero-byte-audio": Bad(zero_byte_audio, InvalidAudioError, ("empty.wav", "0 bytes", "Fix:")),
    # The API takes it, but there is no voice to sync: a paid video of a silent face.
    "silent-audio": Bad(silent_audio, InvalidAudioError, ("silent.wav", "silence", "Fix:")),
    # 31 s is split into parts by default (tests/media/test_narration.py); refused when asked
    # not to.
    "31s-audio-unsplit": Bad(
        lambda w: w.arguments(audio=str(w.samples / "long.wav")),
        InvalidAudioError,
        ("long.wav", "31.00 s", "under 30 s", "Trim it or split"),
    ),
    "huge-image": Bad(huge_image, InvalidImageError, ("huge.png", "9000x9000", "Scale it down")),
    "image-too-small-for-a-face": Bad(
        tiny_image, InvalidImageError, ("thumb.png", "40x40", "at least 64 px")
    ),
    "wav-named-png": Bad(wav_named_png, InvalidImageError, ("face.png", "not an image", "Fix:")),
    "png-named-wav": Bad(png_named_wav, InvalidAudioError, ("voice.wav", "no audio", "Fix:")),
    "missing-file": Bad(
        missing_file, InputError, ("nowhere.wav", "no such file", "check the path")
    ),
    "folder-for-a-file": Bad(folder_for_a_file, InputError, ("takes", "folder", "Fix:")),
    "permissions-000": Bad(unreadable_file, InputError, ("locked.wav", "access denied", "permis")),
    "unreachable-url": Bad(
        unreachable_url, InputError, ("/faces/ada.png", "could not download", "reach it")
    ),
    "url-404": Bad(url_404, InputError, ("missing-take.wav", "HTTP 404", "Fix:")),
    "s3-wrong-credentials": Bad(
        s3_wrong_credentials,
        InputError,
        ("raw/portrait.png", "access denied", "storage credentials"),
        s3=True,
    ),
    "s3-missing-bucket": Bad(
        s3_missing_bucket, InputError, ("no-such-bucket-77", "create the bucket"), s3=True
    ),
    "destination-in-missing-bucket": Bad(
        destination_in_missing_bucket, InputError, ("no-such-bucket-78", "bucket"), s3=True
    ),
    "destination-under-a-file": Bad(
        destination_under_a_file, InputError, ("report.txt", "cannot write", "Fix:")
    ),
    "local-audio-without-staging": Bad(
        local_audio_without_staging, StagingRequiredError, ("voice.wav", "storage=MediaStorage")
    ),
    "wrong-api-key": Bad(
        wrong_api_key, AuthenticationError, ("401", "API key", "Fix:"), by_api=True, refused=1
    ),
    "out-of-credits-403": Bad(
        out_of_credits, InsufficientCreditsError, ("403", "top up", "Fix:"), by_api=True, refused=1
    ),
    "wrong-base-url": Bad(
        wrong_base_url, NotFoundError, ("/v2", "base_url", "API's root"), by_api=True
    ),
}


_LENGTHS = count(1)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    api: Emulator,
    samples: Path,
    asset_host: AssetHost,
    staging_root: tuple[Path, AssetHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    api.reset()
    # A voice of its own (by its length), so no case finds another's generation in the cache.
    write_sample_voice(tmp_path / "in" / "voice.wav", seconds=1.0 + next(_LENGTHS) / 100)
    root, host = staging_root
    staging = root / request.node.name.replace("[", "-").rstrip("]")
    staging.mkdir()
    # Spool files of non-local destinations go to the temp folder: watch a private one.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    storage = MediaStorage(base_url=str(staging), public_base_url=f"{host.url}/{staging.name}")
    world = World(tmp_path, samples, api, asset_host, staging, storage)
    with world.during_run:
        yield world


def assert_readable(error: BaseException, words: tuple[str, ...], secrets: tuple[str, ...]) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    for secret in secrets:
        assert secret not in message
    return message


@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
def test_a_bad_input_is_a_readable_typed_error_before_any_paid_post(
    case: str, world: World, request: pytest.FixtureRequest
) -> None:
    bad = CORPUS[case]
    if case == "permissions-000" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    if bad.s3:
        world.s3 = request.getfixturevalue("s3")
    arguments = bad.build(world)
    with world.during_run, pytest.raises(bad.error) as caught:
        omnihuman_video(**arguments)
    assert type(caught.value) is bad.error, repr(caught.value)
    secrets = (TEST_KEY, WRONG_KEY, S3.secret, "not-the-secret-3b7e")
    assert_readable(caught.value, bad.words, secrets)

    stats = world.api.stats()
    assert stats.accepted_posts == 0
    assert stats.rejected_posts == bad.refused
    assert files_under(world.out) == []
    assert files_under(world.tmp / "tmp") == []
    if not bad.by_api:
        assert files_under(world.staging) == []  # nothing uploaded before it was checked
    if bad.s3:
        s3 = world.needs_s3()
        # Nothing staged or delivered under the storage prefixes the s3 cases use.
        keys = s3.fs().find(s3.bucket)
        assert not [key for key in keys if key.split("/")[1] in ("stage", "bad-creds")]


# -- odd inputs that are fine --------------------------------------------------------------------


def jpeg_named_png(w: World) -> dict[str, Any]:
    # Decided: accepted. Pillow (and the API) read images by content, not by extension.
    jpeg = write_sample_portrait(w.tmp / "work" / "portrait.jpg", size=320)
    return w.arguments(
        image=w.file("portrait.png", jpeg.read_bytes()),
        audio=str(write_sample_voice(w.tmp / "in" / "v.wav", seconds=1.1)),
    )


def non_ascii_paths(w: World) -> dict[str, Any]:
    folder = w.tmp / "in" / "Zoë Ωmega 日本"
    return w.arguments(
        image=str(write_sample_portrait(folder / "portrait-é.png", size=256)),
        audio=str(write_sample_voice(folder / "voix-ü.wav", seconds=1.2)),
        destination=str(w.out / "vidéo-日本.mp4"),
    )


def paths_with_spaces(w: World) -> dict[str, Any]:
    folder = w.tmp / "in" / "my  takes" / " final "
    return w.arguments(
        image=str(write_sample_portrait(folder / "head shot.png", size=256)),
        audio=str(write_sample_voice(folder / "take 3 (good).mp3", seconds=1.3)),
        destination=str(w.out / "welcome video v2 .mp4"),
    )


def audio_8khz_mono(w: World) -> dict[str, Any]:
    # Decided: passed on as it is. Telephone quality still carries the words to sync.
    return w.arguments(audio=voice_at(w, "phone.wav", rate=8000, channels=1, seconds=1.4))


def audio_96khz_8ch(w: World) -> dict[str, Any]:
    # Decided: passed on as it is: any audio that decodes is accepted by the API (which
    # downmixes); a 30 s track of this kind is 46 MB, under the 64 MB input limit.
    return w.arguments(audio=voice_at(w, "studio.wav", rate=96000, channels=8, seconds=1.5))


ODD_BUT_VALID: dict[str, Callable[[World], dict[str, Any]]] = {
    "jpeg-named-png-accepted-by-content": jpeg_named_png,
    "non-ascii-paths": non_ascii_paths,
    "paths-with-spaces": paths_with_spaces,
    "8khz-mono-audio": audio_8khz_mono,
    "96khz-8-channel-audio": audio_96khz_8ch,
}


@pytest.mark.parametrize("case", list(ODD_BUT_VALID), ids=list(ODD_BUT_VALID))
def test_an_odd_but_valid_input_makes_its_video(case: str, world: World) -> None:
    arguments = ODD_BUT_VALID[case](world)
    result = omnihuman_video(**arguments)
    assert result.location == arguments["destination"]
    video = probe_video(result.location)
    voice = probe_audio(arguments["audio"])
    assert video.audio_codec == "aac"
    assert abs(video.duration - voice.duration) <= 1 / 25 + 0.05
    assert world.api.stats().accepted_posts == 1
    assert files_under(world.out) == [Path(result.location)]  # no spool file left beside it


# -- through the command line ----------------------------------------------------------------


def omnihuman(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OMNIHUMAN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli_env(world: World, prefect_api: str, key: str = TEST_KEY) -> dict[str, str]:
    return {
        **os.environ,
        "AIMLAPI_API_KEY": key,
        "AIMLAPI_BASE_URL": world.api.url,
        "PREFECT_API_URL": prefect_api,
    }


#: Corpus cases run as `omnihuman generate`: the error's name, and the key in the environment.
CLI_CASES = {
    "text-file-named-mp3": ("InvalidAudioError", TEST_KEY),
    "wrong-api-key": ("AuthenticationError", WRONG_KEY),
}


def test_generate_ends_with_one_readable_line_and_exit_1(world: World, prefect_api: str) -> None:
    commands = {}
    for case, (_, key) in CLI_CASES.items():
        arguments = CORPUS[case].build(world)
        # At once: most of a command's time is starting Python and Prefect.
        commands[case] = omnihuman(
            "generate", "--image", arguments["image"], "--audio", arguments["audio"],
            "--out", arguments["destination"], "--stage", str(world.staging),
            "--stage-public-url", str(world.storage.public_base_url), "--no-split",
            env=cli_env(world, prefect_api, key),
        )  # fmt: skip
    for case, command in commands.items():
        error, key = CLI_CASES[case]
        stdout, stderr = command.communicate(timeout=180)
        assert command.returncode == 1, stderr[-2000:]
        assert "Traceback" not in stderr and stdout == ""
        assert key not in stdout + stderr
        reason = stderr.strip().splitlines()[-1]
        assert reason.startswith(f"error: {error}: "), reason
        assert_readable(ValueError(reason), CORPUS[case].words, (TEST_KEY, WRONG_KEY))
    assert world.api.stats().accepted_posts == 0
    assert files_under(world.out) == []


def test_batch_finishes_the_good_rows_and_reports_each_bad_one(
    world: World, prefect_api: str
) -> None:
    folder = world.tmp / "batch"
    write_sample_portrait(folder / "ada.png", size=256)
    write_sample_voice(folder / "hello.wav", seconds=1.6)
    write_sample_voice(folder / "hi there.wav", seconds=1.7)
    (folder / "notes.mp3").write_text("not audio\n" * 50)
    (folder / "manifest.csv").write_text(
        "image,audio,text,out\n"
        "ada.png,hello.wav,,out/1.mp4\n"  # good
        ",hello.wav,,out/2.mp4\n"  # no image
        "ada.png,hello.wav,Hi!,out/3.mp4\n"  # audio and text
        "ada.png,hi there.wav,,out/1.mp4\n"  # row 1's destination
        "ada.png,hello.wav,,out/5.mp4,extra\n"  # a cell too many
        "ada.png,notes.mp3,,out/6.mp4\n"  # not audio
        "gone.png,hello.wav,,out/7.mp4\n"  # no such file
        "ada.png,hi there.wav,,out/8.mp4\n"  # good
    )
    command = omnihuman(
        "batch", str(folder / "manifest.csv"), "--concurrency", "2", "--max-poll-interval", "0.3",
        "--stage", str(world.staging), "--stage-public-url", str(world.storage.public_base_url),
        env=cli_env(world, prefect_api),
    )  # fmt: skip
    stdout, stderr = command.communicate(timeout=180)
    assert command.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stdout.splitlines() == [
        str(folder / "out" / "1.mp4"),
        str(folder / "out" / "8.mp4"),
    ]
    reasons = {
        int(line.split()[1]): line for line in stderr.splitlines() if line.startswith("row ")
    }
    expected = {
        2: ("ManifestError", "no image", "Fix:"),
        3: ("ManifestError", "exactly one of audio and text", "Fix:"),
        4: ("ManifestError", "row 1's destination", "Fix:"),
        5: ("ManifestError", "more cells than header columns", "Fix:"),
        6: ("InvalidAudioError", "notes.mp3", "Fix:"),
        7: ("InputError", "gone.png", "no such file"),
    }
    assert sorted(reasons) == sorted(expected)
    for row, words in expected.items():
        assert_readable(ValueError(reasons[row]), words, (TEST_KEY,))
    assert world.api.stats().accepted_posts == 2
    assert sorted(p.name for p in files_under(folder / "out")) == ["1.mp4", "8.mp4"]
