"""The files a daemon keeps under a root's state folder, and what anyone may read of them.

``<paths.state>/daemon.lock`` (one daemon per root), ``daemon.pid``,
``status.json`` (the daemon's last status, written by `Engine.status`) and
``metrics.prom`` (its Prometheus metrics, node_exporter's textfile format).
The daemon takes the lock and writes the status; `daemon_state` reads them
for `teaprint status` and the server's `/status` without importing the daemon.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Collection

from filelock import FileLock, Timeout

from pipeline.config import Config
from pipeline.photos import photo_files
from pipeline.fsutil import atomic_write_bytes
from pipeline.results import dumps, write_json_atomic


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


def metrics_path(root: Path, config: Config) -> Path:
    """The daemon's metrics file (Prometheus text), which the server merges into `GET /metrics`."""
    return state_dir(root, config) / "metrics.prom"


def write_status(root: Path, config: Config, status: dict[str, Any], metrics: str | None = None) -> None:
    """Store the daemon's status document (`Engine.status` with its live `daemon` section) and its metrics text."""
    folder = state_dir(root, config)
    folder.mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        atomic_write_bytes(metrics_path(root, config), metrics.encode("utf-8"))
    write_json_atomic(folder / "status.json", dumps(status, indent=1))


def daemon_state(root: Path, config: Config, indexed: Collection[str]) -> dict[str, Any]:
    """Whether a daemon runs on `root`, the photos waiting in its folders, and what it last reported.

    Parameters
    ----------
    indexed : collection of str
        Paths already in the catalog (a catalog photo among them is not pending).
    """
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
        saved = json.loads((folder / "status.json").read_text()).get("daemon") or {}
    except (OSError, ValueError, AttributeError):
        saved = {}
    catalog = photo_files(root / config.paths.inbox_catalog, config, recursive=True)
    pending_catalog = sum(1 for p in catalog if str(p.absolute()) not in indexed)
    pending_query = sum(1 for _ in photo_files(root / config.paths.inbox_query, config, recursive=False))
    return {
        "running": running,
        "pid": _read_pid(folder) if running else None,
        "pending": {"catalog": pending_catalog, "query": pending_query},
        "last_error": saved.get("last_error"),
        "ignored": saved.get("ignored"),
        "processed": saved.get("processed"),
        "started_at": saved.get("started_at") if running else None,
    }
