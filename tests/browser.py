"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: open a page, wait until it has drawn
what a check looks for, take screenshots and collect what the page logged as errors. WebGL runs on SwiftShader
(no GPU here). Used by the browser tests and by benchmarks/view_figures.py."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--disable-dev-shm-usage", "--remote-debugging-port=0")


class Browser:
    """One headless Chromium with one page; `with Browser(profile) as b: b.open(url)`."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 800):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.monotonic() + 60
        while endpoint is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if "DevTools listening on ws://" in line:
                endpoint = line.split("ws://", 1)[1].split("/", 1)[0]
        if endpoint is None:
            raise RuntimeError("chromium did not start its DevTools endpoint in 60 s")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drained: never blocks on a full pipe
        pages = json.load(urllib.request.urlopen(f"http://{endpoint}/json/list", timeout=10))
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.ws = connect(url, max_size=None, open_timeout=30)
        self.next_id, self.errors, self.loaded = 0, [], False
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        self.loaded = self.loaded or method == "Page.loadEventFired"
        if method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(p["entry"]["text"] + " " + p["entry"].get("url", ""))

    def open(self, url: str, timeout: float = 60) -> None:
        """Navigate to `url` and wait for its load event."""
        self.loaded = False
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.loaded:
            self._event(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def screenshot(self, full_page: bool = False) -> np.ndarray:
        """(H, W, 3) uint8 of the window (or the whole page)."""
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def wait_for(self, check: Callable[[np.ndarray], bool], timeout: float = 90, every: float = 1.0) -> np.ndarray:
        """Screenshots until `check(pixels)` holds; the last one (AssertionError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            pixels = self.screenshot()
            if check(pixels):
                return pixels
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not draw what was awaited in {timeout:.0f} s")
            time.sleep(every)


def model_drawn(pixels: np.ndarray) -> bool:
    """Whether viser's 3D canvas shows the model: colour left of its control panel and below its notice, other
    than the frustums' green (the background is white)."""
    canvas = pixels[170:, : pixels.shape[1] - 360].astype(int)
    coloured = canvas.max(-1) - canvas.min(-1) > 40
    frustum_green = np.abs(canvas - (40, 160, 60)).max(-1) < 30
    return (coloured & ~frustum_green).mean() > 0.01


def save_png(pixels: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path
