"""A tiny static file host on loopback: the "CDN" the emulator fetches inputs from offline."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

logger = logging.getLogger("prefect_omnihuman.emulator.assets")


class _AssetHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "omnihuman-assets"
    # Headers and body go out as separate writes; Nagle would hold the body ~40 ms.
    disable_nagle_algorithm = True

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "File not found")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _AssetServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class AssetHost:
    """Serve a directory over HTTP (GET and HEAD, with Content-Length; 404 when missing).

    Example:
        ```python
        with AssetHost("samples") as assets:
            image_url = assets.url_for("portrait.png")  # http://127.0.0.1:PORT/portrait.png
        ```
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.directory = Path(directory).resolve()
        self.host = host
        self.port = port
        self._server: _AssetServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AssetHost({str(self.directory)!r})"

    @property
    def url(self) -> str:
        """The root URL, e.g. `http://127.0.0.1:54321`."""
        if self._server is None:
            raise RuntimeError("the asset host is not running: call start() or use `with`")
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str | os.PathLike[str]) -> str:
        """The URL of a file given relative to the directory (or as an absolute path in it)."""
        target = Path(path)
        if target.is_absolute():
            target = target.resolve().relative_to(self.directory)
        return f"{self.url}/{quote(target.as_posix())}"

    def start(self) -> AssetHost:
        """Bind the port and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        directory = str(self.directory)

        def handler(*args: Any, **kwargs: Any) -> _AssetHandler:
            return _AssetHandler(*args, directory=directory, **kwargs)

        server = _AssetServer((self.host, self.port), handler)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"assets-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=5)

    def __enter__(self) -> AssetHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
