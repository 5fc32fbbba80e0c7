"""Open a page in headless Chromium and report what a person would see go wrong: console errors, uncaught
exceptions, failed loads, and which charts actually rendered.

It speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (Chromium reads commands from file
descriptor 3 and writes replies and events to descriptor 4, each message a JSON object ended by a NUL byte),
so it needs nothing but a Chromium binary: no driver, no Python package, no network. Listening starts before
the page is navigated to, so errors thrown while the page loads are caught too.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the page looks like once loaded: read in the page itself, returned as JSON.
_PROBE = """(() => {
  const imgs = Array.from(document.images).map(i => ({kind: "img", id: i.closest("[id]") ? i.closest("[id]").id : "",
    alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, complete: i.complete}));
  const svgs = Array.from(document.querySelectorAll("svg")).map(s => { const r = s.getBoundingClientRect();
    return {kind: "svg", id: s.closest("[id]") ? s.closest("[id]").id : "", alt: s.getAttribute("aria-label") || "",
      width: Math.round(r.width), height: Math.round(r.height), complete: true}; });
  return JSON.stringify({ready: document.body ? (document.body.dataset.ready || "") : "",
    title: document.title, charts: imgs.concat(svgs),
    sections: Array.from(document.querySelectorAll("section[id]")).map(s => s.id)});
})()"""


@dataclass
class PageCheck:
    """What loading a page showed: every error logged, the ready mark, and each img/svg with its size."""

    errors: list[str] = field(default_factory=list)
    ready: str = ""
    title: str = ""
    charts: list[dict[str, Any]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    @property
    def broken_charts(self) -> list[dict[str, Any]]:
        return [c for c in self.charts if not (c["complete"] and c["width"] > 0 and c["height"] > 0)]


def find_chromium() -> str | None:
    """$GRADWISE_CHROMIUM, else the first Chromium or Chrome on PATH (Debian's package: /usr/bin/chromium)."""
    env = os.environ.get("GRADWISE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Pipe:
    """One Chromium process and the DevTools protocol over its pipe."""

    def __init__(self, executable: str, timeout: float):
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="gradwise-chromium-", ignore_cleanup_errors=True)
        cmd_read, self._cmd_write = os.pipe()  # we write commands, Chromium reads fd 3
        self._resp_read, resp_write = os.pipe()  # Chromium writes fd 4, we read

        def to_3_and_4() -> None:  # runs in the child before exec; via fds >= 10 so neither dup2 clobbers the other
            high_read, high_write = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 10), fcntl.fcntl(resp_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)  # dup2 leaves the copy inheritable: exec keeps it
            os.dup2(high_write, 4)

        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=to_3_and_4)
        os.close(cmd_read)
        os.close(resp_write)
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._resp_read, "rb", buffering=0) as fh:
            while chunk := fh.read(1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for m in messages:
                    try:
                        self._messages.put(json.loads(m))
                    except json.JSONDecodeError:
                        continue
        self._messages.put(None)  # Chromium closed the pipe

    def _pump(self, deadline: float) -> bool:
        """Take one message off the pipe (events are kept in order); False when Chromium is gone."""
        try:
            msg = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return True
        if msg is None:
            return False
        if "id" in msg:
            self._replies[msg["id"]] = msg
        else:
            self.events.append(msg)
        return True

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while msg_id not in self._replies:
            if time.monotonic() > deadline or not self._pump(deadline):
                raise RuntimeError(f"chromium gave no answer to {method} within {self.timeout:.0f}s")
        reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply.get("result", {})

    def wait_for(self, method: str, session: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        seen = len([e for e in self.events if e.get("method") == method and e.get("sessionId") == session])
        while time.monotonic() < deadline:
            if len([e for e in self.events if e.get("method") == method and e.get("sessionId") == session]) > seen:
                return True
            if not self._pump(deadline):
                return False
        return False

    def drain(self, seconds: float) -> None:
        """Keep collecting events for a moment (late console messages, image decodes)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._pump(deadline):
            pass

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                os.write(self._cmd_write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd_write)
            self._profile.cleanup()


def errors_from_events(events: list[dict[str, Any]]) -> list[str]:
    """Every problem a developer console would show in red: uncaught exceptions, console.error/assert calls,
    and browser log entries at level error (failed loads, blocked requests, security policy violations)."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text", "exception")
            out.append(f"uncaught: {text} (line {d.get('lineNumber', 0) + 1})")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}".strip())
    return out


def check_page(path: str | Path, executable: str | None = None, timeout: float = 60.0,
               settle_seconds: float = 0.5) -> PageCheck:
    """Load ``path`` in headless Chromium and return the errors it logged and the charts it rendered.

    Raises RuntimeError when no Chromium is found or it does not answer."""
    exe = executable or find_chromium()
    if exe is None:
        raise RuntimeError("no chromium found (install Debian's 'chromium' package or set GRADWISE_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    browser = _Pipe(exe, timeout)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.send(f"{domain}.enable", session=session)
        nav = browser.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            return PageCheck(errors=[f"navigation: {nav['errorText']}"])
        if not browser.wait_for("Page.loadEventFired", session, timeout):
            return PageCheck(errors=errors_from_events(browser.events) + [f"page did not load within {timeout:.0f}s"])
        browser.drain(settle_seconds)
        probe = browser.send("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=session)
        browser.drain(0.1)
        state = json.loads(probe.get("result", {}).get("value") or "{}")
        return PageCheck(errors=errors_from_events(browser.events), ready=state.get("ready", ""),
                         title=state.get("title", ""), charts=state.get("charts", []),
                         sections=state.get("sections", []))
    finally:
        browser.close()
