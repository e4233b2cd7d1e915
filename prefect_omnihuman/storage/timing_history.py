"""The timing history in a JSON file anywhere fsspec reaches, shared by processes and workers.

`TimingHistory` is a `api.timing.TimingBook`: clients read recent samples of a model on a
service before polling and record one after each completed job. Point every worker at
the same URL (a bucket beside the generation ledger, say) and they all learn from each
other; the workflows default to `PREFECT_HOME/omnihuman/timing.json`.

The file stays small: at most `window` samples per model and service, and at most
`max_services` models-and-services (the least recently updated go first). Writes are a
read-merge-write, replacing the file whole (an atomic rename locally, a single PUT on
object stores): two processes writing at once may lose one sample, never the file.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from prefect_omnihuman.api.timing import DEFAULT_WINDOW, TimingSample

#: Models-and-services kept; beyond this the least recently updated are dropped.
DEFAULT_MAX_SERVICES = 20
FORMAT_VERSION = 1


class TimingHistory:
    """Recent job durations per model and service, in one JSON file at `url`.

    Args:
        url: An fsspec URL or local path of the JSON file (created on first record).
        storage_options: Options for the fsspec filesystem (credentials, endpoint_url).
        window: Samples kept per model and service.
        max_services: Models-and-services kept in the file.

    Example:
        ```python
        history = TimingHistory("s3://bucket/ledger/timing/timing.json", {"anon": False})
        with OmniHumanClient(api_key, timing=history) as client:
            client.wait(client.submit(image_url=..., audio_url=...), audio_seconds=8.0)
        ```
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        max_services: int = DEFAULT_MAX_SERVICES,
    ) -> None:
        self.url = os.fspath(url)
        self.window = window
        self.max_services = max_services
        self._fs, self._path = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TimingHistory({self.url!r})"

    def _read(self) -> dict[str, Any]:
        try:
            with self._fs.open(self._path, "rb") as handle:
                data = json.loads(handle.read())
        except FileNotFoundError:
            return {}
        except ValueError:  # a torn or foreign file: start again rather than fail polling
            return {}
        services = data.get("services") if isinstance(data, dict) else None
        return services if isinstance(services, dict) else {}

    def _write(self, services: dict[str, Any]) -> None:
        body = json.dumps({"version": FORMAT_VERSION, "services": services}, indent=1).encode()
        parent = self._path.rsplit("/", 1)[0] if "/" in self._path else ""
        if isinstance(self._fs, LocalFileSystem):
            if parent:
                self._fs.makedirs(parent, exist_ok=True)
            temporary = f"{self._path}.{uuid.uuid4().hex}.tmp"
            with self._fs.open(temporary, "wb") as handle:
                handle.write(body)
            os.replace(temporary, self._path)
        else:
            self._fs.pipe_file(self._path, body)

    @staticmethod
    def _key(model: str, service: str) -> str:
        return f"{model} @ {service}"

    def samples(self, model: str, service: str) -> list[TimingSample]:
        """Recent samples of `model` on `service`, oldest first."""
        entry = self._read().get(self._key(model, service), {})
        found = []
        for raw in entry.get("samples", []) if isinstance(entry, dict) else []:
            try:
                found.append(TimingSample.from_dict(raw))
            except (KeyError, TypeError, ValueError):
                continue
        return found[-self.window :]

    def record(self, sample: TimingSample) -> None:
        """Add one sample, keeping the file within its bounds."""
        with self._lock:
            services = self._read()
            key = self._key(sample.model, sample.service)
            entry = services.get(key)
            kept = entry.get("samples", []) if isinstance(entry, dict) else []
            kept = [*kept, sample.as_dict()][-self.window :]
            services[key] = {"updated_at": sample.finished_at, "samples": kept}
            if len(services) > self.max_services:
                newest = sorted(
                    services.items(),
                    key=lambda item: float(item[1].get("updated_at", 0.0)),
                    reverse=True,
                )
                services = dict(newest[: self.max_services])
            self._write(services)
