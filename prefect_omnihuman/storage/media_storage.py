"""Staging inputs where the API can fetch them, and delivering videos, through fsspec.

Any fsspec URL works: local paths, `s3://` (s3fs), `memory://`, or whatever
protocol the user installed. Staging is content-addressed, so the same bytes are
uploaded once; delivery is atomic, so a destination holds a whole video or nothing.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import socket
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlparse

import fsspec
import httpx
from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field

from prefect_omnihuman.api.models import MAX_INPUT_BYTES
from prefect_omnihuman.api.tls import shared_tls_context
from prefect_omnihuman.errors import InputError, OmniHumanError, StagingRequiredError, StorageError

DOCUMENTATION_URL = "https://filesystem-spec.readthedocs.io/en/latest/"
SIGNABLE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs"})

Source = str | os.PathLike[str] | bytes


class MediaStorage(Block):
    """Where input files are staged for the API and finished videos are delivered.

    `base_url` is any fsspec URL. The API fetches staged inputs over HTTP: objects
    in S3-like stores get presigned URLs; for other stores, set `public_base_url`
    to the HTTP address that serves `base_url`.

    Example:
        ```python
        from prefect_omnihuman import MediaStorage

        storage = MediaStorage.load("BLOCK_NAME")
        url = storage.url_for("videos/intro.mp4")
        ```
    """

    _block_type_name: ClassVar[str] = "OmniHuman Media Storage"
    _block_type_slug: ClassVar[str] = "omnihuman-media-storage"
    _documentation_url: ClassVar[Any] = DOCUMENTATION_URL

    base_url: str = Field(
        default=...,
        description="fsspec URL of the folder, e.g. s3://bucket/omnihuman or /data/media.",
    )
    storage_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="Options for the fsspec filesystem (credentials, endpoint_url); kept secret.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="HTTP URL that serves base_url, for stores that cannot presign URLs.",
    )
    presign_expiry_seconds: int = Field(
        default=3600,
        gt=0,
        description="How long presigned URLs of staged inputs stay valid, in seconds.",
    )

    def options(self) -> dict[str, Any]:
        """The fsspec storage options, secrets included (never log them)."""
        value = self.storage_options.get_secret_value()
        return dict(value) if isinstance(value, dict) else {}

    def url_for(self, relative: str) -> str:
        """The fsspec URL of `relative` under this storage's base URL."""
        return f"{self.base_url.rstrip('/')}/{relative.lstrip('/')}"

    def options_for(self, url: str) -> dict[str, Any]:
        """Storage options for `url`: this block's when the protocols match, else none."""
        return self.options() if protocol_of(url) == protocol_of(self.base_url) else {}


def protocol_of(url: str) -> str:
    """The fsspec protocol of a URL or path ("file" for local paths)."""
    if is_local(url):
        return "file"
    return url.split("://", 1)[0].lower()


def is_http(source: object) -> bool:
    """Whether the source is an http(s) URL, which the API fetches as it is."""
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def is_local(source: object) -> bool:
    """Whether the source names a file on this machine."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str):
        return False
    return source.startswith("file://") or "://" not in source


def local_path(url: str | os.PathLike[str]) -> Path:
    """The absolute local path of a plain path or `file://` URL."""
    return Path(os.fspath(url).removeprefix("file://")).expanduser().resolve()


def storage_failure(error: BaseException, location: str) -> OmniHumanError:
    """A typed error for a failed storage call: permanent problems as `InputError` with
    the fix, anything else as a (retried) `StorageError`."""
    name = type(error).__name__
    text = str(error)
    if "location-constraint" in text or "NoSuchBucket" in text or "bucket does not exist" in text:
        # s3fs reports a missing bucket on upload as an attempt to create it, refused.
        return InputError(
            "the bucket does not exist",
            source=location,
            fix="create the bucket, or correct the storage URL (--stage / base_url)",
        )
    if isinstance(error, FileNotFoundError):
        return InputError(
            "no such file, folder or bucket",
            source=location,
            fix="check the path or URL, and that the bucket exists",
        )
    if isinstance(error, PermissionError):
        return InputError(
            "access denied",
            source=location,
            fix="check the file permissions or the storage credentials (storage_options, "
            "or AWS_* environment variables for s3://)",
        )
    if "Credential" in name:
        return InputError(
            f"no storage credentials ({name})",
            source=location,
            fix="set MediaStorage.storage_options, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "(and AWS_ENDPOINT_URL for S3-compatible stores) in the environment",
        )
    if "connect" in name.lower() or "connect" in text.lower():
        return StorageError(
            f"storage unreachable ({name}: {text}). Fix: check the storage's endpoint "
            "(storage_options client_kwargs.endpoint_url, or AWS_ENDPOINT_URL) and the network",
            location=location,
        )
    return StorageError(f"storage call failed ({name}: {error})", location=location)


def display_name(source: Source) -> str:
    """How to name a source in messages: its path or URL without query (signatures)."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    text = os.fspath(source)
    return text.split("?", 1)[0] if "://" in text else text


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the path within it for a URL or local path."""
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    return fs, path


def read_source(source: Source, *, options: dict[str, Any] | None = None) -> bytes:
    """The bytes of a local file, an fsspec URL or an http(s) URL, as an `InputError` if not."""
    if isinstance(source, bytes):
        return source
    name = display_name(source)
    text = os.fspath(source)
    try:
        if is_http(text):
            return _download_input(text, name)
        fs, path = filesystem(text, options)
        size = fs.size(path)
        if size is not None and size > MAX_INPUT_BYTES:
            raise InputError(
                f"the file is {size / 1e6:.0f} MB, more than this integration accepts "
                f"({MAX_INPUT_BYTES / 1e6:.0f} MB)",
                source=name,
                fix="compress or shorten it first",
            )
        data: bytes = fs.cat_file(path)
        return data
    except OmniHumanError:
        raise
    except IsADirectoryError:
        raise InputError("is a folder, not a file", source=name, fix="name the file") from None
    except ValueError as exc:
        raise InputError(
            f"could not read it ({exc})", source=name, fix="check the path or URL"
        ) from None
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, name) from None


def _download_input(url: str, name: str) -> bytes:
    try:
        with httpx.stream(
            "GET", url, timeout=30.0, follow_redirects=True, verify=shared_tls_context()
        ) as response:
            if not response.is_success:
                raise InputError(
                    f"the server answered HTTP {response.status_code}",
                    source=name,
                    fix="check that the URL is public and still valid",
                )
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > MAX_INPUT_BYTES:
                    raise InputError(
                        "the file is larger than this integration accepts",
                        source=name,
                        fix="compress or shorten it first",
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise InputError(
            f"could not download it ({type(exc).__name__})",
            source=name,
            fix="check the URL and that this machine can reach it",
        ) from None


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of some bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def suffix_of(source: Source, default: str = "") -> str:
    """The file extension of a source (lower case, with the dot), or `default`."""
    if isinstance(source, bytes):
        return default
    path = urlparse(os.fspath(source)).path if "://" in os.fspath(source) else os.fspath(source)
    suffix = Path(path).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else default


@dataclass(frozen=True)
class StagedObject:
    """An input placed where the API can fetch it.

    Attributes:
        location: Where it is stored (fsspec URL).
        url: The URL to give the API (presigned or public).
        uploaded: False when the same bytes were already there.
    """

    location: str
    url: str
    uploaded: bool


def fetchable_url(url: str, storage: MediaStorage | None, *, expiry: int | None = None) -> str:
    """An http(s) URL from which the API can read the object at fsspec `url`."""
    if is_http(url):
        return url
    base = storage.base_url.rstrip("/") + "/" if storage else ""
    if storage and storage.public_base_url and url.startswith(base):
        relative = url[len(base) :]
        return f"{storage.public_base_url.rstrip('/')}/{quote(relative)}"
    protocol = protocol_of(url)
    if protocol in SIGNABLE_PROTOCOLS:
        options = storage.options_for(url) if storage else {}
        seconds = expiry or (storage.presign_expiry_seconds if storage else 3600)
        try:
            fs, path = filesystem(url, options)
            signed: str = fs.sign(path, expiration=seconds)
        except Exception as exc:  # an I/O boundary: every failure becomes a typed error
            raise storage_failure(exc, display_name(url)) from None
        return signed
    raise StagingRequiredError(
        f"the API cannot fetch {protocol}:// objects",
        source=display_name(url),
        fix="stage inputs in S3 (MediaStorage with an s3:// base_url) or set the storage "
        "block's public_base_url to the HTTP address that serves it",
    )


def stage_bytes(data: bytes, storage: MediaStorage, *, suffix: str) -> StagedObject:
    """Upload bytes under a content-addressed key (once), and return a fetchable URL."""
    digest = sha256_hex(data)
    location = storage.url_for(f"inputs/{digest[:2]}/{digest}{suffix}")
    uploaded = False
    try:
        fs, path = filesystem(location, storage.options_for(location))
        if not (fs.exists(path) and fs.size(path) == len(data)):
            with suppress(FileExistsError, NotImplementedError):
                fs.makedirs(fs._parent(path), exist_ok=True)
            if is_local(location):
                # Identical rows of a batch stage the same bytes at once: never expose a
                # half-written file to the API (object stores publish puts whole anyway).
                draft = spool_file_for(location)
                draft.write_bytes(data)
                os.replace(draft, local_path(location))
            else:
                fs.pipe_file(path, data)
            uploaded = True
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, location) from None
    return StagedObject(location=location, url=fetchable_url(location, storage), uploaded=uploaded)


def deliver_file(local_file: Path, destination: str, options: dict[str, Any] | None = None) -> None:
    """Move a finished local file to `destination` so it appears whole or not at all."""
    try:
        if is_local(destination):
            target = local_path(destination)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_file, target)
            return
        fs, path = filesystem(destination, options)
        with suppress(FileExistsError, NotImplementedError):
            fs.makedirs(fs._parent(path), exist_ok=True)
        # Object stores publish an upload only when it completes, so a put is atomic there.
        fs.put_file(str(local_file), path)
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, destination) from None
    local_file.unlink(missing_ok=True)


def spool_file_for(destination: str) -> Path:
    """A temporary file to download into before delivery: beside a local destination
    (so the final rename is atomic), in the temp folder otherwise."""
    if is_local(destination):
        target = local_path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = target.parent
        sweep_abandoned_spools(target)
        prefix = f".{target.name}.{_spool_owner()}."
    else:
        folder = Path(tempfile.gettempdir())
        prefix = "omnihuman-"
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=folder)
    os.close(handle)
    return Path(name)


def _spool_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def sweep_abandoned_spools(target: Path) -> list[Path]:
    """Delete the spool files a killed process of this host left beside `target`.

    A spool's name carries its writer's host and pid; one whose process is gone
    can never be finished, so the next delivery to the same place removes it.
    Returns what was removed.
    """
    owner_prefix = f".{target.name}.{socket.gethostname()}-"
    removed: list[Path] = []
    for spool in target.parent.glob(f"{glob.escape(owner_prefix)}*.part"):
        pid = spool.name[len(owner_prefix) :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            spool.unlink(missing_ok=True)
            removed.append(spool)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def stamp_of(destination: str, options: dict[str, Any] | None = None) -> str | None:
    """An identity of the file now at `destination` (changes when it is rewritten), or None."""
    try:
        fs, path = filesystem(destination, options)
        if not fs.exists(path):
            return None
        return str(fs.ukey(path))
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, destination) from None


def check_destination(destination: str, options: dict[str, Any] | None = None) -> None:
    """Fail before anything is paid for when the destination cannot be written to."""
    if is_local(destination):
        folder = local_path(destination).parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise InputError(
                f"cannot write into {existing or folder}",
                source=destination,
                fix="choose a destination in a writable folder",
            )
        return
    try:
        fs, path = filesystem(destination, options)
        root = path.split("/", 1)[0]
        if protocol_of(destination) in SIGNABLE_PROTOCOLS and not fs.exists(root):
            raise FileNotFoundError(root)
    except OmniHumanError:
        raise
    except Exception as exc:  # an I/O boundary: every failure becomes a typed error
        raise storage_failure(exc, destination) from None


def exists(destination: str, options: dict[str, Any] | None = None) -> bool:
    """Whether a file is present at a local path or fsspec URL."""
    fs, path = filesystem(destination, options)
    return bool(fs.exists(path))


def size_of(destination: str, options: dict[str, Any] | None = None) -> int:
    """The size in bytes of the file at a local path or fsspec URL."""
    fs, path = filesystem(destination, options)
    return int(fs.size(path))


def image_data_uri(data: bytes, suffix: str) -> str:
    """An image as a base64 data URI, which the API accepts in place of an image URL."""
    mime = {".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}.get(
        suffix, "image/jpeg"
    )
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def stage_asset(source: Source, storage: MediaStorage | None, *, kind: str) -> StagedObject:
    """Make one input fetchable by the API.

    - http(s) URLs pass through unchanged;
    - objects in S3-like stores get a presigned GET URL;
    - local files, bytes and other fsspec URLs are uploaded to `storage` under a
      content-addressed key (the same bytes once);
    - with no storage, an image goes inline as a base64 data URI; audio cannot,
      so that is a `StagingRequiredError` saying how to configure staging.
    """
    if isinstance(source, str) and is_http(source):
        return StagedObject(location=display_name(source), url=source, uploaded=False)
    if (
        isinstance(source, str)
        and not is_local(source)
        and protocol_of(source) in SIGNABLE_PROTOCOLS
    ):
        return StagedObject(location=source, url=fetchable_url(source, storage), uploaded=False)
    suffix = suffix_of(source, ".png" if kind == "image" else ".wav")
    if storage is None:
        if kind == "image":
            data = read_source(source)
            return StagedObject(location="inline", url=image_data_uri(data, suffix), uploaded=False)
        raise StagingRequiredError(
            "the API fetches audio from a URL, and this file is only on this machine",
            source=display_name(source),
            fix="pass storage=MediaStorage(base_url='s3://bucket/prefix', ...) (or --stage "
            "s3://bucket/prefix on the command line), or give the audio as an http(s) URL",
        )
    options = (
        {}
        if isinstance(source, bytes) or is_local(str(source))
        else storage.options_for(str(source))
    )
    return stage_bytes(read_source(source, options=options), storage, suffix=suffix)
