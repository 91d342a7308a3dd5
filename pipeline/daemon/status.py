"""What the daemon reports: counts kept by both lanes, and its state files.

The status file is `Engine.status` with the daemon's live section, written
with the metrics file by `Engine.publish_status`.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pipeline.daemon.folders import now
from pipeline.engine import Engine

COUNTS = ("indexed", "duplicates", "answered", "failed", "removed")


class Tally:
    """Counts of what the daemon did, and its last error; both lanes write it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTS, 0)
        self._last_error: dict[str, Any] | None = None

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def error(self, path: Path, code: str, reason: str) -> None:
        with self._lock:
            self._last_error = {"file": str(path), "code": code, "reason": reason, "at": now()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def last_error(self) -> dict[str, Any] | None:
        with self._lock:
            return self._last_error


class StatusWriter:
    """Writes the daemon's state files (`Engine.publish_status`: status and metrics) with its live section.

    Parameters
    ----------
    daemon : callable
        Returns the daemon's live section (without `pid`, `running`, times).
    """

    def __init__(self, engine: Engine, daemon: Callable[[], dict[str, Any]]) -> None:
        self.engine = engine
        self.daemon = daemon
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def write(self, running: bool = True) -> None:
        self.engine.publish_status(daemon={"pid": os.getpid(), "running": running, "started_at": self.started_at,
                                           "updated_at": now(), **self.daemon()})
