"""Durable file writes: the few filesystem moves that crash safety rests on."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` so that a reader sees the old file or the whole new one.

    Temp file in the same folder, fsync, rename, fsync the folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def is_inside(path: Path, folder: Path) -> bool:
    """True when `path` lies under `folder` (lexically; resolve both first where links matter)."""
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True
