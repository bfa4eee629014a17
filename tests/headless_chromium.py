"""A page as a person sees it: opened in headless Chromium (Debian's `chromium`, installed by `make install`)
and driven over the Chrome DevTools Protocol, the protocol Chromium's own `--remote-debugging-port` serves.

`render` loads a file, waits for its load event, collects every console error and uncaught exception,
the images that did not decode, the DOM after the page's scripts ran, and a full-page screenshot.
Run as `python -m tests.headless_chromium REPORT.html SCREENSHOT.png` to take the README's screenshot.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket  # websocket-client

WIDTH = 1280  # a laptop screen, in CSS pixels


@dataclass
class RenderedPage:
    dom: str
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    height: int = 0
    values: dict = field(default_factory=dict)  # what each expression of `render(..., evaluate=)` gave


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _DevTools:
    def __init__(self, url: str):
        self.socket = websocket.create_connection(url, timeout=60)
        self.next_id, self.events = 0, []

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {seconds} s")
            self.events.append(json.loads(self.socket.recv()))


def _errors(events) -> list[str]:
    errors = []
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif e.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description", details["text"]))
        elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
    return errors


def render(page: Path, screenshot: Path, script: str | None = None, evaluate: dict[str, str] | None = None) -> RenderedPage:
    """Open `page`, optionally run `script` in it (e.g. a click), evaluate each JavaScript expression of
    `evaluate`, and return what rendered; the full page is written to `screenshot` as PNG."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH: `make install` installs Debian's chromium package")
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    # --no-sandbox: Chromium's sandbox refuses to start as root, as CI runs; the page is our own file.
    process = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
         "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {process.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        tools = _DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=800, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=page.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        if script:
            tools.call("Runtime.evaluate", expression=script, awaitPromise=True)

        def value_of(expression: str):
            return tools.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

        broken = value_of("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
        dom = value_of("document.documentElement.outerHTML")
        values = {name: value_of(expression) for name, expression in (evaluate or {}).items()}
        height = tools.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1})
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return RenderedPage(dom, _errors(tools.events), broken, int(height), values)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    rendered = render(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {WIDTH} x {rendered.height} px; console errors: {rendered.console_errors or 'none'}")
