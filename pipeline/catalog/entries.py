"""Catalog entries: what one registered photo is, and its label.

`NewEntry` is a photo to register (its descriptors and where it came from);
`CatalogEntry` is one as stored, the same fields plus when and by which
model. A `CatalogEntry` is a `NewEntry`, so every writer operation takes
whole entries and a change of path or label is `dataclasses.replace`, which
keeps every descriptor (a hand-built copy once dropped the keypoints).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.features.local import LocalFeatures

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, eq=False)
class NewEntry:
    """One photo to register: its descriptors and where it came from.

    Attributes
    ----------
    sha256 : str
        64 lowercase hex digits of the file's bytes (the entry's identity).
    path : str
        Absolute path of the photo.
    label : str
    embedding : ndarray, shape (D,), dtype float32, unit norm
    lbp : ndarray, shape (B,), dtype float32
    local : LocalFeatures or None
        Keypoints for geometric verification (None when `local.enabled` is off).
    """

    sha256: str
    path: str
    label: str
    embedding: np.ndarray
    lbp: np.ndarray
    local: LocalFeatures | None = None

    @property
    def id(self) -> str:
        """Short stable id: the first 16 hex digits of the file's sha256."""
        return self.sha256[:16]


@dataclass(frozen=True, eq=False)
class CatalogEntry(NewEntry):
    """One registered photo as stored: a `NewEntry` plus when and by which model.

    Attributes
    ----------
    added_at : float
        Registration time, seconds since the epoch (kept across renames).
    model_id : str
        The encoder that computed `embedding`.
    stored_keypoints : callable or None
        Reads the entry's keypoints from its HDF5 segment: a stored entry holds
        no keypoints in RAM (issue 13), and `local` calls this on each access
        unless keypoints were given.
    """

    added_at: float = field(kw_only=True)
    model_id: str = field(kw_only=True)
    stored_keypoints: Callable[[], LocalFeatures | None] | None = field(default=None, kw_only=True, repr=False)

    # `local` is NewEntry's field, served here by a property: the dataclass
    # __init__ (and `dataclasses.replace`, which reads it) go through the
    # setter and getter, so a renamed copy carries the keypoints read once.
    @property  # type: ignore[override]
    def local(self) -> LocalFeatures | None:
        held = self.__dict__.get("_local")
        if held is None and self.stored_keypoints is not None:
            return self.stored_keypoints()
        return held

    @local.setter
    def local(self, value: LocalFeatures | None) -> None:
        self.__dict__["_local"] = value


class EntryError(ValueError):
    """An entry that must not be stored; the message says which and why."""


def check_entry(entry: NewEntry, require_local: bool) -> None:
    """Refuse an entry the matcher could not use.

    Raises
    ------
    EntryError
        A malformed sha256, an embedding or LBP histogram that is not a finite
        1-D vector, or no keypoints when `require_local` (verification is on
        and an entry without them would never be verified again).
    """
    name = entry.path or entry.sha256
    if not _SHA256.fullmatch(entry.sha256):
        raise EntryError(f"{name}: sha256 {entry.sha256!r} is not 64 lowercase hex digits")
    for what, vector in (("embedding", entry.embedding), ("lbp", entry.lbp)):
        if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
            raise EntryError(f"{name}: {what} must be a non-empty finite 1-D array")
    if require_local and entry.local is None:
        raise EntryError(f"{name}: no keypoints, but local.enabled needs them for verification")


def label_from_path(path: Path, catalog_root: Path | None = None) -> str:
    """Label of a catalog photo.

    `catalog/<label>/<file>` gives the subfolder's name; otherwise the file
    name's text before the first '-' (`a-000001.jpg` -> `a`), or the whole stem
    when it has no '-'. Labels are NFC-normalised so that the same name typed
    on two systems is one label.
    """
    path = Path(path)
    if catalog_root is not None:
        try:
            rel = path.resolve().relative_to(Path(catalog_root).resolve())
        except ValueError:
            rel = None
        if rel is not None and len(rel.parts) > 1:
            return unicodedata.normalize("NFC", rel.parts[0])
    stem = path.stem
    return unicodedata.normalize("NFC", stem.split("-", 1)[0] if "-" in stem else stem)
