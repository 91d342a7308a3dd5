"""Events the daemon acts on: small immutable values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Folder = Literal["catalog", "query"]
Reason = Literal["closed", "moved_in", "created", "stable", "scan"]


@dataclass(frozen=True)
class FileReady:
    """A complete file is waiting in a drop folder."""

    path: Path
    folder: Folder
    reason: Reason
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileRemoved:
    """A catalog photo was deleted or moved out of the catalog folder."""

    path: Path


@dataclass(frozen=True)
class FileRenamed:
    """A catalog photo was renamed or moved within the catalog folder."""

    src: Path
    dest: Path


@dataclass(frozen=True)
class DirectorySeen:
    """A directory with a photo's name appeared in the query folder (it is not searched into)."""

    path: Path


DaemonEvent = FileReady | FileRemoved | FileRenamed | DirectorySeen
