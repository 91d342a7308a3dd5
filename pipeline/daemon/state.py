"""The single-daemon lock and the status file that `teaprint status` reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipeline.config import Config
from pipeline.results import write_json_atomic


class AlreadyRunning(RuntimeError):
    """Another daemon holds the lock on this root."""


def state_dir(root: Path, config: Config) -> Path:
    return Path(root).resolve() / config.paths.state


def acquire_lock(root: Path, config: Config) -> FileLock:
    """Take the daemon lock on `root`, or raise `AlreadyRunning` naming the holder.

    The lock is an fcntl lock, so the kernel releases it when a daemon dies,
    even by SIGKILL: no stale lock to clean up by hand.
    """
    folder = state_dir(root, config)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / "daemon.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = _read_pid(folder)
        raise AlreadyRunning(f"another teaprint daemon (pid {pid}) is already running on {Path(root).resolve()}") from None
    (folder / "daemon.pid").write_text(str(os.getpid()))
    return lock


def _read_pid(folder: Path) -> str:
    try:
        return (folder / "daemon.pid").read_text().strip()
    except OSError:
        return "unknown"


def write_status(root: Path, config: Config, status: dict[str, Any]) -> None:
    write_json_atomic(state_dir(root, config) / "status.json", json.dumps(status, indent=1))


def daemon_status(root: Path, config: Config) -> dict[str, Any]:
    """Whether a daemon runs on `root`, pending files, and its last error."""
    from pipeline.daemon.watcher import scan
    from pipeline.intake import is_candidate

    root = Path(root).resolve()
    folder = state_dir(root, config)
    running = False
    if (folder / "daemon.lock").exists():
        probe = FileLock(str(folder / "daemon.lock"))
        try:
            probe.acquire(timeout=0)
            probe.release()
        except Timeout:
            running = True
    try:
        saved = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        saved = {}
    patterns = config.daemon.watch.ignore_patterns
    wanted = lambda p: is_candidate(p, config.intake)  # noqa: E731
    catalog_dir = root / config.paths.inbox_catalog
    indexed = _indexed_paths(root, config)
    pending_catalog = sum(1 for p in scan(catalog_dir, True, wanted, patterns) if str(p.absolute()) not in indexed)
    pending_query = sum(1 for _ in scan(root / config.paths.inbox_query, False, wanted, patterns))
    return {
        "running": running,
        "pid": _read_pid(folder) if running else None,
        "pending": {"catalog": pending_catalog, "query": pending_query},
        "last_error": saved.get("last_error"),
        "ignored": saved.get("ignored"),
        "processed": saved.get("processed"),
        "started_at": saved.get("started_at") if running else None,
    }


def _indexed_paths(root: Path, config: Config) -> set[str]:
    from pipeline.catalog import CatalogIndex

    return {e.path for e in CatalogIndex(root / config.paths.index).entries()}
