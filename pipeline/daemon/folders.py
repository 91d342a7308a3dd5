"""The daemon's folders, and the one way a file is moved aside with its reason.

Both lanes move refused files into `inbox/failed/` with a `<name>.error.json`
beside them; `FailedFolder` serialises that, so a query and a catalog photo
of the same name failing at the same instant can never pick the same name or
pair a photo with the other's reason.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.daemon.journal import error_name, move_aside, unique_path
from pipeline.results import dumps, write_json_atomic


@dataclass(frozen=True)
class DropFolders:
    """Absolute paths of the drop folders under one root."""

    catalog: Path
    query: Path
    outbox: Path
    processed: Path
    failed: Path

    @classmethod
    def of(cls, root: Path, config: Config) -> "DropFolders":
        """The folders of `root` (made when missing)."""
        root = Path(root).resolve()
        p = config.paths
        folders = cls(root / p.inbox_catalog, root / p.inbox_query, root / p.outbox, root / p.processed, root / p.failed)
        for folder in (folders.catalog, folders.query, folders.outbox, folders.processed, folders.failed):
            folder.mkdir(parents=True, exist_ok=True)
        return folders


class FailedFolder:
    """`inbox/failed/`: refused files and their reasons; `lock` is held around choosing a name and moving."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()

    def destination(self, path: Path) -> tuple[Path, Path]:
        """A free name for `path` here, and its reason file's name; call with `lock` held."""
        destination = unique_path(self.directory, path.stem, path.suffix, companion=".error.json")
        return destination, self.directory / error_name(destination.name)

    def move_with_reason(self, path: Path, reason: dict[str, Any]) -> Path | None:
        """Move `path` here and write `reason` (with the time) beside it; None when `path` is gone."""
        with self.lock:
            if not os.path.lexists(path):
                return None
            destination = move_aside(path, self.destination(path)[0])
            write_json_atomic(self.directory / error_name(destination.name), dumps({**reason, "at": now()}, indent=1))
        return destination


def now() -> str:
    """The current UTC time as the daemon writes it (ISO 8601, ms)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
