"""Headless Chromium driven over the DevTools protocol: did a page's picture really render?

Chromium's `--screenshot` mode cannot tell a broken image from a loaded one; this opens
the page with `--remote-debugging-port=0`, and polls `document.images` until one whose
`src` contains a given text has loaded (`complete` and `naturalWidth > 0`).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
]

_IMAGES = """JSON.stringify([...document.images].map(i => ({
  src: i.currentSrc.slice(0, 80), complete: i.complete, width: i.naturalWidth,
  height: i.naturalHeight})))"""


def chromium() -> str | None:
    """The Chromium binary (Debian package `chromium`; Google Chrome will do), or None."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((found for name in names if (found := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What the page showed: every image, and those that matched and loaded."""

    url: str
    images: list[dict[str, Any]] = field(default_factory=list)
    rendered: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def check_image_renders(
    url: str,
    src_contains: str,
    *,
    height: int | None = None,
    timeout: float = 45.0,
    screenshot: Path | None = None,
) -> PageCheck:
    """Open `url` and wait until an image whose src contains `src_contains` (and, if given,
    whose natural height is `height`) has loaded."""
    return asyncio.run(_check(url, src_contains, height, timeout, screenshot))


async def _check(
    url: str, want: str, height: int | None, timeout: float, screenshot: Path | None
) -> PageCheck:
    binary = chromium()
    assert binary, "chromium is not installed (apt-get install -y chromium)"
    profile = Path(tempfile.mkdtemp(prefix="omnihuman-chromium-"))
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its debugging port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=2**26) as ws:
            ids = itertools.count(1)

            async def call(method: str, **params: Any) -> dict[str, Any]:
                mid = next(ids)
                await ws.send(json.dumps({"id": mid, "method": method, "params": params}))
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("id") == mid:
                        result: dict[str, Any] = message.get("result", message)
                        return result

            check = PageCheck(url=url)
            started = time.monotonic()
            await call("Page.navigate", url=url)
            while time.monotonic() - started < timeout:
                await asyncio.sleep(0.5)
                answer = await call("Runtime.evaluate", expression=_IMAGES, returnByValue=True)
                check.images = json.loads(answer.get("result", {}).get("value") or "[]")
                check.rendered = [
                    i
                    for i in check.images
                    if i["complete"]
                    and i["width"] > 0
                    and want in i["src"]
                    and height in (None, i["height"])
                ]
                if check.rendered:
                    break
            check.seconds = round(time.monotonic() - started, 1)
            if screenshot is not None:
                await asyncio.sleep(1.0)  # let the layout settle around the picture
                shot = await call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return check
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
