"""The watchdog observer over both drop folders, feeding readiness and removals.

Which names count as photos is `pipeline.photos`' rule; the handler applies
it to events and `photo_files` to scans.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from pipeline.daemon.events import DaemonEvent, DirectorySeen, FileRemoved, FileRenamed, Folder
from pipeline.config import Config
from pipeline.daemon.readiness import ReadinessTracker
from pipeline.fsutil import is_inside
from pipeline.photos import is_photo


def make_observer(mode: str, poll_interval_s: float) -> BaseObserver:
    """One observer API over inotify and polling (for shares without inotify)."""
    if mode == "polling":
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=poll_interval_s)
    if mode == "inotify":
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver()
    from watchdog.observers import Observer

    return Observer()


class DropFolderHandler(FileSystemEventHandler):
    """Routes raw events of one drop folder to the tracker and the daemon.

    Readiness goes to `tracker`; deletions and renames in the catalog folder
    go straight to `notify` (they need no waiting).
    """

    def __init__(
        self,
        folder: Path,
        kind: Folder,
        tracker: ReadinessTracker,
        notify: Callable[[DaemonEvent], None],
        config: Config,
    ) -> None:
        self.folder = folder
        self.kind = kind
        self.tracker = tracker
        self.notify = notify
        self.config = config

    def _wanted(self, path: Path) -> bool:
        return is_inside(path, self.folder) and is_photo(path, self.folder, self.config)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            # A folder named like a photo in the (flat) query folder is reported, once, by the daemon.
            if self.kind == "query" and event.event_type in ("created", "moved"):
                dest = Path(os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path))
                if dest.parent == self.folder and self._wanted(dest):
                    self.notify(DirectorySeen(dest))
            return
        src = Path(os.fsdecode(event.src_path))
        kind = event.event_type
        if kind == "moved":
            self._moved(src, Path(os.fsdecode(event.dest_path)))
        elif kind == "deleted":
            self.tracker.forget(src)
            if self.kind == "catalog" and self._wanted(src):
                self.notify(FileRemoved(src))
        elif kind in ("created", "modified", "closed") and self._wanted(src):
            self.tracker.observe(kind, src, self.kind)

    def _moved(self, src: Path, dest: Path) -> None:
        self.tracker.forget(src)
        src_in, dest_in = self._wanted(src), self._wanted(dest)
        if self.kind == "catalog" and src_in and dest_in:
            self.notify(FileRenamed(src, dest))
        elif self.kind == "catalog" and src_in:
            self.notify(FileRemoved(src))
        elif dest_in:
            self.tracker.observe("moved_in", dest, self.kind)
