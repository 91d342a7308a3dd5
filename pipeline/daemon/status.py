"""What the daemon reports: counts kept by both lanes, and the status file.

The status file is `Engine.status` with the daemon's live section; front-end
extensions add their own sections with `StatusWriter.add_section` (a name
and a function returning JSON-ready data, called at each write).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog

from pipeline.config import Config
from pipeline.daemon.folders import now
from pipeline.engine import Engine
from pipeline.state import write_status

log = structlog.get_logger("teaprint.daemon")

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


Section = Callable[[], Any]


class StatusWriter:
    """Writes `.teaprint/status.json`: `Engine.status`, the `daemon` section, and added sections.

    Parameters
    ----------
    daemon : callable
        Returns the daemon's live section (without `pid`, `running`, times).
    """

    def __init__(self, root: Path, config: Config, engine: Engine, daemon: Section) -> None:
        self.root = root
        self.config = config
        self.engine = engine
        self.daemon = daemon
        self.sections: dict[str, Section] = {}
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def add_section(self, name: str, section: Section) -> None:
        """Add a top-level section `name` to every status written from now on (e.g. metrics)."""
        if name in ("daemon", "root", "entries", "labels", "index", "model", "model_matches_index"):
            raise ValueError(f"status section {name!r} is taken")
        self.sections[name] = section

    def write(self, running: bool = True) -> None:
        live = {"pid": os.getpid(), "running": running, "started_at": self.started_at, "updated_at": now(), **self.daemon()}
        extra = {}
        for name, section in self.sections.items():
            try:
                extra[name] = section()
            except Exception as exc:  # noqa: BLE001 - a section must never cost the status file
                log.warning("status_section_failed", section=name, error=f"{type(exc).__name__}: {exc}")
        write_status(self.root, self.config, self.engine.status(daemon=live, **extra))
