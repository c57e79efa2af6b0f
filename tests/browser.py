"""Test helpers: serve a folder with ``python -m http.server`` and look at its pages in headless
Debian Chromium.

Chromium is driven over the Chrome DevTools Protocol with ``websocket-client`` (already installed
as a visdom dependency), so no driver binary and no extra package is needed. Everything stays on
loopback. Typical use::

    with serve_directory(run_dir) as base, Chromium() as browser:
        browser.open(base + "web/index.html")
        report = browser.images()        # every <img>: src, naturalWidth, naturalHeight
        browser.screenshot(artifact_path("index.png"))
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACT_DIR = os.path.join(REPO_ROOT, "test_artifacts")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """Chromium's path; without it, skip the test locally but fail it in CI (CI installs it)."""
    path = find_chromium()
    if path is None:
        reason = ("Debian's chromium is not installed (run .ci/install_system_deps.sh as root, or "
                  "apt-get install -y chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail("CI is set but " + reason)
        pytest.skip(reason)
    return path


def artifact_path(name: str) -> str:
    """A path under the repository's (git-ignored) test_artifacts/ folder."""
    os.makedirs(ARTIFACT_DIR, exist_ok=True)
    return os.path.join(ARTIFACT_DIR, name)


@contextlib.contextmanager
def serve_directory(path: str, timeout: float = 15.0) -> Iterator[str]:
    """Serve ``path`` with ``python -m http.server`` on a free loopback port; yields the base URL
    (ending in '/'). The server picks the port itself (port 0), so there is no race for it."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", path],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode() if ready else ""
        m = re.search(r"port (\d+)", line)
        if not m:
            raise RuntimeError(f"http.server did not start within {timeout} s: {line!r}")
        yield f"http://127.0.0.1:{m[1]}/"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


class Chromium:
    """One headless Chromium with one page, controlled over the DevTools websocket."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0):
        import websocket  # websocket-client

        chromium = require_chromium()
        self.timeout = timeout
        self._next_id = 0
        self._events: list[dict] = []
        self._tmp = tempfile.mkdtemp(prefix="chromium-")
        self._profile = os.path.join(self._tmp, "profile")  # new and empty: Chromium creates it
        self._log = open(os.path.join(self._tmp, "chromium.log"), "wb")
        self._proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            port = self._devtools_port()
            targets = json.load(_NO_PROXY.open(f"http://127.0.0.1:{port}/json/list",
                                               timeout=timeout))
            page = next(t for t in targets if t["type"] == "page")
            self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout,
                                                   suppress_origin=True)
            self.call("Page.enable")
            self.call("Network.enable")  # (needed for the next call)
            self.call("Network.setCacheDisabled", cacheDisabled=True)  # always the files on disk
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """Chromium writes the port it chose into DevToolsActivePort in its profile."""
        marker = os.path.join(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode}:\n"
                                   + self._log_tail())
            with contextlib.suppress(OSError):
                with open(marker) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {self.timeout} s:\n"
                           + self._log_tail())

    def _log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are
        kept for ``wait_event``)."""
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)
        raise TimeoutError(f"{method}: no answer within {self.timeout} s")

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == method:
                    return self._events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {self.timeout} s")
            msg = json.loads(self._ws.recv())
            if "method" in msg:
                self._events.append(msg)

    def open(self, url: str) -> int:
        """Load ``url`` and wait for its load event (images included); returns the HTTP status."""
        self._events.clear()
        nav = self.call("Page.navigate", url=url)
        if nav.get("errorText"):
            raise RuntimeError(f"{url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired")
        return int(self.evaluate(
            "performance.getEntriesByType('navigation')[0].responseStatus"))

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (promises are awaited)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def horizontal_overflow(self) -> int:
        """CSS pixels the page is wider than the window (0: no horizontal scroll bar)."""
        return int(self.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))

    def images(self) -> list[dict]:
        """Every <img> of the page once it has loaded or failed: src attribute, absolute URL,
        naturalWidth and naturalHeight (0 when the image did not load), and the width and height
        it is shown at."""
        return self.evaluate("""(async () => {
            const imgs = Array.from(document.images);
            await Promise.all(imgs.map(i => i.complete ? null : new Promise(done => {
                i.addEventListener('load', done); i.addEventListener('error', done); })));
            return imgs.map(i => ({src: i.getAttribute('src'), url: i.currentSrc || i.src,
                                   naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                                   width: i.width, height: i.height}));
        })()""")

    def links(self) -> list[str]:
        """The href attribute of every link, in page order."""
        return self.evaluate("Array.from(document.querySelectorAll('a[href]'), "
                             "a => a.getAttribute('href'))")

    def screenshot(self, path: str, max_height: int = 4000) -> str:
        """A PNG of the whole page (up to ``max_height`` CSS pixels tall)."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"],
                "height": min(size["height"], max_height), "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
