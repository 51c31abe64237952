"""A stream of requests to the front end from a few threads, with a progress bar on stderr.

Requests go straight to productpage's inbound sidecar (as from an ingress), never through an HTTP proxy.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["LoadResult", "ProgressBar", "run_load"]


@dataclass
class LoadResult:
    sent: int = 0                                                 # started
    done: int = 0                                                 # answered (or failed)
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)       # which reviews version answered
    degraded: int = 0                                             # pages served without reviews
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


class ProgressBar:
    """`[██████······] 120/200  41 req/s  3 degraded`; redrawn in place on a tty, a line per quarter otherwise."""

    def __init__(self, total: int | None, duration: float | None, stream: TextIO = sys.stderr) -> None:
        self.total, self.duration, self.stream = total, duration, stream
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.started = time.monotonic()
        self._last_quarter = -1
        self._last_draw = 0.0
        self._last_sent = -1

    def fraction(self, done: int) -> float:
        parts = []
        if self.total:
            parts.append(done / self.total)
        if self.duration:
            parts.append((time.monotonic() - self.started) / self.duration)
        return min(1.0, max(parts, default=0.0))

    def update(self, result: LoadResult, final: bool = False) -> None:
        now = time.monotonic()
        fraction = self.fraction(result.done)
        quarter = int(fraction * 4)
        if self.tty and not final and now - self._last_draw < 0.1:
            return
        if not self.tty and quarter == self._last_quarter and (not final or self._last_sent == result.done):
            return
        self._last_draw, self._last_quarter, self._last_sent = now, quarter, result.done
        width = 30
        filled = int(fraction * width)
        rate = result.done / max(now - self.started, 0.5)
        errors = sum(n for status, n in result.statuses.items() if status >= 500 or status == 0)
        goal = f"/{self.total}" if self.total else ""
        text = (f"[{'█' * filled}{'·' * (width - filled)}] {result.done}{goal} requests  {rate:5.1f} req/s  "
                f"{result.degraded} degraded  {errors} failed")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _one(url: str, opener: urllib.request.OpenerDirector, result: LoadResult, lock: threading.Lock) -> None:
    started = time.monotonic()
    version, degraded = "", False
    try:
        with opener.open(url, timeout=20) as response:
            status = response.status
            body = json.load(response)
        reviews = body.get("reviews", {})
        version = str(reviews.get("version", ""))
        degraded = "error" in reviews or "error" in reviews.get("ratings", {})
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError):
        status = 0
    elapsed = (time.monotonic() - started) * 1000
    with lock:
        result.done += 1
        result.statuses[status] += 1
        result.latencies_ms.append(elapsed)
        if version:
            result.versions[version] += 1
        result.degraded += degraded


def run_load(entry: str, *, requests: int | None, duration: float | None, concurrency: int = 4,
             progress: ProgressBar | None = None) -> LoadResult:
    """Send GET /productpage?id=N until `requests` were sent or `duration` seconds passed (whichever first)."""
    if not requests and not duration:
        raise ValueError("give a number of requests or a duration")
    result = LoadResult()
    lock = threading.Lock()
    stop_at = time.monotonic() + duration if duration else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                if (requests and result.sent >= requests) or (stop_at and time.monotonic() >= stop_at):
                    return
                result.sent += 1
                product = result.sent
            _one(f"{entry}/productpage?id={product}", opener, result, lock)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True, name=f"load-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            if progress:
                progress.update(result)
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(25)
        result.seconds = time.monotonic() - started
        if progress:
            progress.update(result, final=True)
    return result
