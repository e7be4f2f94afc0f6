"""Headless Chromium for tests, driven over the Chrome DevTools Protocol (CDP).

Debian's `chromium` package, started with flags that work offline and as root; a small CDP
client on `websockets` (a Prefect dependency). No browser download, no selenium/playwright.

    with Browser.launch(tmp_path / "shots") as page:
        page.open("http://127.0.0.1:4200/runs")
        page.wait_for_text("Flow runs")
        page.type_into("input[type=password]", "admin:secret", submit=True)
        page.screenshot("runs")
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",  # as root Chromium refuses its own sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home on a closed network
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # any free port; Chromium writes it to DevToolsActivePort
    "--window-size=1440,1000",
]


def chromium() -> str | None:
    """Path of a Chromium executable on PATH (Debian: `chromium`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class BrowserError(AssertionError):
    """The page did not do what the test expected (carries the page's text for the report)."""


class Page:
    """One tab: open a URL, wait for text, read the visible text, click, type, screenshot."""

    def __init__(self, ws: ClientConnection, session: str, shots: Path) -> None:
        self._ws, self._session, self.shots = ws, session, shots
        self._ids = itertools.count(1)

    # -- protocol -----------------------------------------------------------------------------

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        """Send one CDP command to this tab and return its result (events meanwhile dropped)."""
        call = next(self._ids)
        self._ws.send(
            json.dumps({"id": call, "method": method, "params": params, "sessionId": self._session})
        )
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") != call:
                continue  # an event, or an answer on the browser's own session
            if "error" in message:
                raise BrowserError(f"{method}: {message['error'].get('message')}")
            return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page (promises awaited) and return its JSON value."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    # -- what a test does ---------------------------------------------------------------------

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate to `url` and wait until its document has loaded."""
        self.send("Page.navigate", url=url)
        self._until(
            lambda: self.evaluate("document.readyState") == "complete", timeout, f"load {url}"
        )

    @property
    def url(self) -> str:
        """The page's current URL (single-page apps change it without a navigation)."""
        return self.evaluate("location.href")

    def text(self) -> str:
        """The page's visible text, as a user reads it (document.body.innerText)."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *texts: str, timeout: float = 30.0, shot: bool = True) -> str:
        """Wait until every one of `texts` is visible; return the page's text then. On a
        timeout, a screenshot (unless `shot` is False) and the page's text go in the error."""
        seen = ""

        def shown() -> bool:
            nonlocal seen
            seen = self.text()
            return all(t in seen for t in texts)

        self._until(shown, timeout, f"text {texts!r}", shot=shot)
        return seen

    def click_until(self, text: str, *shown: str, timeout: float = 60.0, every: float = 5.0) -> str:
        """Click the button, link or tab whose text is `text` until every one of `shown` is
        visible, and return the page's text then. A busy single-page app may not act on a click
        that lands while it still renders (a tab that exists but does not switch yet); clicking
        again is harmless, so this clicks again every `every` seconds up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            self.click(text=text, timeout=max(deadline - time.monotonic(), 1.0))
            last = time.monotonic() + every >= deadline
            try:
                return self.wait_for_text(
                    *shown, timeout=max(min(every, deadline - time.monotonic()), 0.5), shot=last
                )
            except BrowserError:
                if last:
                    raise

    def click(
        self, selector: str | None = None, *, text: str | None = None, timeout: float = 30.0
    ) -> None:
        """Click the element matching a CSS `selector`, or the button, link or tab (else the
        innermost element) whose text is `text`, with a real mouse event at its centre; waits
        up to `timeout` for it to be shown."""
        if (selector is None) == (text is None):
            raise ValueError("click needs a selector or a text, not both")
        finder = _FIND_BY_SELECTOR if selector is not None else _FIND_BY_TEXT
        script = f"({finder})({json.dumps(selector or text)})"
        box: dict = {}

        def shown() -> bool:
            box.update(self.evaluate(script) or {})
            return bool(box)

        self._until(shown, timeout, f"something to click: {selector or text!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def type_into(self, selector: str, value: str, *, submit: bool = False) -> None:
        """Click into the field matching `selector`, type `value` as keyboard input does
        (frameworks see input events), and press Enter if `submit`."""
        self.click(selector)
        self.send("Input.insertText", text=value)
        if submit:
            enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
            self.send("Input.dispatchKeyEvent", type="keyDown", text="\r", **enter)
            self.send("Input.dispatchKeyEvent", type="keyUp", **enter)

    def links(self) -> list[dict[str, str]]:
        """Every link on the page: its visible text and its href."""
        return self.evaluate(
            "[...document.querySelectorAll('a')].map(a => ({text: a.innerText.trim(),"
            " href: a.getAttribute('href') || ''}))"
        )

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the viewport as <shots>/<name>.png and return its path."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    # -- inside -------------------------------------------------------------------------------

    def _until(self, condition, timeout: float, what: str, shot: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                seen = (
                    f" (see {self.screenshot(f'timeout-{int(time.time() * 1000)}')})"
                    if shot
                    else ""
                )
                raise BrowserError(
                    f"gave up waiting for {what} after {timeout:.0f} s on {self.url}{seen}; "
                    f"the page says:\n{self.text()[-2000:]}"
                )
            time.sleep(0.25)


# Element centres in viewport coordinates, scrolled into view first; null when not visible.
_CENTRE = """
    el.scrollIntoView({block: 'center', inline: 'center'});
    const r = el.getBoundingClientRect();
    return {x: r.left + r.width / 2, y: r.top + r.height / 2};
"""
_VISIBLE = "(el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; })"
_FIND_BY_SELECTOR = f"""(selector => {{
    const el = [...document.querySelectorAll(selector)].find({_VISIBLE});
    if (!el) return null;
    {_CENTRE}
}})"""
# Buttons and links first, then any element whose own text nodes say it (innermost wins).
_FIND_BY_TEXT = f"""(wanted => {{
    const own = el => [...el.childNodes].filter(n => n.nodeType === 3)
        .map(n => n.textContent).join('').trim();
    const all = [...document.querySelectorAll('*')].filter({_VISIBLE});
    const el = all.find(e => (e.matches('button, a, [role=button], [role=tab], [role=menuitem]'))
                              && e.innerText.trim() === wanted)
        || all.find(e => own(e) === wanted);
    if (!el) return null;
    {_CENTRE}
}})"""


class Browser:
    """A headless Chromium process with one CDP connection; `launch` yields its first tab."""

    @classmethod
    @contextmanager
    def launch(cls, shots: Path, timeout: float = 30.0) -> Iterator[Page]:
        """Start Chromium in a throwaway profile and yield a blank tab saving screenshots into
        `shots`; the browser and its profile are gone afterwards."""
        executable = chromium()
        if executable is None:
            raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")
        profile = Path(tempfile.mkdtemp(prefix="devswarm-chromium-"))
        log = (profile.parent / f"{profile.name}.log").open("wb")
        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helpers (zygote, renderers) go with its group
        )
        try:
            ws = connect(_browser_endpoint(profile, proc, timeout), max_size=64 << 20)
            with ws:
                yield cls._first_tab(ws, shots)
        finally:
            _stop_group(proc)
            log.close()
            Path(log.name).unlink(missing_ok=True)
            shutil.rmtree(profile, ignore_errors=True)

    @staticmethod
    def _first_tab(ws: ClientConnection, shots: Path) -> Page:
        target = _browser_call(ws, "Target.createTarget", url="about:blank")["targetId"]
        session = _browser_call(ws, "Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        return Page(ws, session, shots)


def _browser_call(ws: ClientConnection, method: str, **params: Any) -> dict:
    ws.send(json.dumps({"id": 0, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") == 0 and "sessionId" not in message:
            if "error" in message:
                raise BrowserError(f"{method}: {message['error'].get('message')}")
            return message["result"]


def _browser_endpoint(profile: Path, proc: subprocess.Popen, timeout: float) -> str:
    """The browser's websocket URL, from the DevToolsActivePort file Chromium writes."""
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited ({proc.returncode}) before it listened")
        lines = active.read_text().split() if active.exists() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM Chromium's process group, then SIGKILL whatever of it is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
