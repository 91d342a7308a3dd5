"""When is a dropped file complete? One "ready" per file, whatever the noise.

A file is ready when any of these happens:

- it is closed after writing (inotify's close_write);
- it is renamed or moved into the folder (moved_to); a move from an unwatched
  folder arrives as a bare "created" with no writes after it, so a created
  file that sees no modification for `settle_s` is ready too;
- its size and mtime hold still for `stable_s`, which covers writers that keep
  the file open and filesystems with no close events (polling, network shares).

Names matching the ignore patterns (`*.part`, dotfiles...) are never ready
until renamed. A file already reported with the same size, mtime and inode is
not reported again, so duplicate events give exactly one processing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.daemon.events import FileReady, Folder, Reason
from pipeline.photos import ignored

Identity = tuple[int, int, int]  # (size, mtime_ns, inode)


@dataclass
class _Pending:
    folder: Folder
    identity: Identity | None
    since: float
    created_only: bool


def identity_of(path: Path) -> Identity | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class ReadinessTracker:
    """Thread-safe: watchdog threads call `observe`, the daemon calls `poll`.

    Parameters
    ----------
    emit : callable
        Receives each `FileReady`.
    ignore_patterns : tuple of str
    stable_s : float
        Seconds of unchanged size and mtime after which a file is ready.
    settle_s : float
        Seconds a "created" file must see no writes to count as moved in.
    clock : callable
        Monotonic seconds (injectable so the rules can be tested exactly).
    """

    def __init__(
        self,
        emit: Callable[[FileReady], None],
        ignore_patterns: tuple[str, ...],
        stable_s: float = 1.0,
        settle_s: float = 0.3,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self._emit = emit
        self._patterns = ignore_patterns
        self._stable_s = stable_s
        self._settle_s = min(settle_s, stable_s)
        self._clock = clock or time.monotonic
        self._pending: dict[Path, _Pending] = {}
        self._reported: dict[Path, Identity] = {}
        self._lock = threading.Lock()

    def observe(self, kind: str, path: Path, folder: Folder) -> None:
        """Feed one raw event: created, modified, closed, moved_in or scan."""
        if ignored(path.name, self._patterns):
            return
        now = self._clock()
        with self._lock:
            if kind == "closed":
                self._ready(path, folder, "closed")
            elif kind == "moved_in":
                self._ready(path, folder, "moved_in")
            elif kind == "created":
                self._pending[path] = _Pending(folder, identity_of(path), now, created_only=True)
            elif kind in ("modified", "scan"):
                current = self._pending.get(path)
                ident = identity_of(path)
                if kind == "scan" and (ident is None or self._reported.get(path) == ident):
                    return
                if kind == "scan" and current is None and self._settled_on_disk(path):
                    self._ready(path, folder, "scan")
                    return
                if current is None or current.identity != ident:
                    self._pending[path] = _Pending(folder, ident, now, created_only=False)

    def forget(self, path: Path) -> None:
        """The file is gone (deleted, moved out, or moved away by us)."""
        with self._lock:
            self._pending.pop(path, None)
            self._reported.pop(path, None)

    def poll(self) -> None:
        """Emit files whose quiet period has passed; call a few times a second."""
        now = self._clock()
        with self._lock:
            for path, pend in list(self._pending.items()):
                ident = identity_of(path)
                if ident is None:
                    del self._pending[path]
                    continue
                if ident != pend.identity:
                    self._pending[path] = _Pending(pend.folder, ident, now, created_only=False)
                    continue
                wait = self._settle_s if pend.created_only else self._stable_s
                if now - pend.since >= wait:
                    self._ready(path, pend.folder, "created" if pend.created_only else "stable")

    def _settled_on_disk(self, path: Path) -> bool:
        # Found by a scan and untouched for `stable_s` of wall time: a file left
        # from before a restart needs no further wait.
        import time

        try:
            return time.time() - os.stat(path).st_mtime >= self._stable_s
        except OSError:
            return False

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _ready(self, path: Path, folder: Folder, reason: Reason) -> None:
        self._pending.pop(path, None)
        ident = identity_of(path)
        if ident is None or self._reported.get(path) == ident:
            return
        self._reported[path] = ident
        self._emit(FileReady(path, folder, reason, ident[0], ident[1]))
