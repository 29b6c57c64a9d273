"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only).

``--remote-debugging-pipe`` makes Chromium read protocol commands from fd 3 and
write replies/events to fd 4, NUL-separated JSON. No port (so no clash with
other processes on the machine), no websocket library, no chromedriver
version matching: the least fragile way to ask a real browser what it drew.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.timeout = timeout
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0
        self._profile = tempfile.mkdtemp(prefix="dm-chromium-")
        cmd_r, self._cmd_w = os.pipe()     # we write commands, chromium reads fd 3
        self._evt_r, evt_w = os.pipe()     # chromium writes fd 4, we read

        def child_fds():
            # close_fds=False: subprocess would close 3/4 after this hook; every other fd of ours is
            # close-on-exec anyway. Move both ends above 4 first so that placing one cannot overwrite the other.
            high_r, high_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [executable or chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self.session = None

    # -- protocol --------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        return self._wait(lambda m: m.get("method") == method, keep=False)

    def _wait(self, match, keep: bool = True) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if match(msg):
                    if "method" in msg and keep:
                        self.events.append(msg)
                    return msg
                if "method" in msg:
                    self.events.append(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._evt_r], [], [], left)
            if ready:
                chunk = os.read(self._evt_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk

    # -- page helpers ------------------------------------------------------------
    def open(self, path: Path, *, width: int = 1280, height: int = 900) -> None:
        """Attach to the blank tab, cut the network, load a local file and wait for its load event."""
        self._drain()
        self.events.clear()  # errors and requests are reported per page
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                       "downloadThroughput": -1, "uploadThroughput": -1})
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        self._drain()
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def remote_requests(self) -> list[str]:
        """URLs the page tried to fetch beyond itself (file:, data: and blob: are local)."""
        self._drain()
        urls = [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]
        return [u for u in urls if not u.startswith(("file:", "data:", "blob:"))]

    def screenshot(self, target: Path, *, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
            width = self.evaluate("Math.ceil(document.documentElement.scrollWidth)")
            params.update({"captureBeyondViewport": True,
                           "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}})
        data = self.send("Page.captureScreenshot", params)["data"]
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    def _drain(self) -> None:
        while select.select([self._evt_r], [], [], 0)[0]:
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                break
            self._buf += chunk
        while b"\0" in self._buf:
            raw, self._buf = self._buf.split(b"\0", 1)
            msg = json.loads(raw)
            if "method" in msg:
                self.events.append(msg)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", session=False)
                except (RuntimeError, TimeoutError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._cmd_w, self._evt_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
