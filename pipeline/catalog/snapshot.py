"""One catalog generation, immutable, for readers.

A match, a listing or a status reads one `CatalogSnapshot`: its entries,
their embedding and LBP matrices and keypoints all come from the same
commit, whatever writers do meanwhile, so readers need no lock of their own.
Anything the matcher derives from a whole generation (the keypoint vote
index) is built once per snapshot through `derived`.

This is the seam for search backends: a matcher needs `ids`, `labels`,
`embeddings`, `lbps` and `keypoints(rows)`; a backend may later answer the
searches itself and read keypoints on demand from the HDF5 record.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.catalog.entries import CatalogEntry
from pipeline.features.local import LocalFeatures


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """The entries of one committed generation and their descriptor matrices.

    Attributes
    ----------
    directory : Path
        The index directory it was read from.
    generation : int
        The manifest generation (0: nothing committed yet).
    model_id : str or None
        The model the index was built with (None while empty).
    entries : tuple of CatalogEntry
        Oldest first; row `i` of the matrices is `entries[i]`.
    embeddings : ndarray, shape (N, D), dtype float32, read-only
    lbps : ndarray, shape (N, B), dtype float32, read-only
    """

    directory: Path
    generation: int
    model_id: str | None
    entries: tuple[CatalogEntry, ...]
    embeddings: np.ndarray
    lbps: np.ndarray
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False)
    _derived_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, directory: Path, generation: int, model_id: str | None, entries: Sequence[CatalogEntry]) -> "CatalogSnapshot":
        """A snapshot of `entries`, with their matrices stacked (read-only)."""
        if entries:
            embeddings = np.stack([e.embedding for e in entries]).astype(np.float32, copy=False)
            lbps = np.stack([e.lbp for e in entries]).astype(np.float32, copy=False)
        else:
            embeddings = lbps = np.zeros((0, 0), np.float32)
        embeddings.flags.writeable = False
        lbps.flags.writeable = False
        return cls(Path(directory), generation, model_id, tuple(entries), embeddings, lbps)

    def __len__(self) -> int:
        return len(self.entries)

    @cached_property
    def ids(self) -> tuple[str, ...]:
        """sha256 of each row."""
        return tuple(e.sha256 for e in self.entries)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Label of each row."""
        return tuple(e.label for e in self.entries)

    def keypoints(self, rows: Sequence[int]) -> list[LocalFeatures | None]:
        """Keypoints of the given rows (None for an entry stored without them)."""
        return [self.entries[int(r)].local for r in rows]

    def derived(self, key: Any, build: Callable[["CatalogSnapshot"], Any]) -> Any:
        """`build(self)`, computed once per snapshot and `key` (thread-safe)."""
        with self._derived_lock:
            if key not in self._derived:
                self._derived[key] = build(self)
            return self._derived[key]

    # ------------------------------------------------------------- look-ups
    @cached_property
    def _by_sha(self) -> dict[str, CatalogEntry]:
        return {e.sha256: e for e in self.entries}

    @cached_property
    def _by_path(self) -> dict[str, CatalogEntry]:
        return {e.path: e for e in self.entries}

    def get(self, sha256: str) -> CatalogEntry | None:
        return self._by_sha.get(sha256)

    def by_path(self, path: str | Path) -> CatalogEntry | None:
        return self._by_path.get(str(path))

    def by_id(self) -> dict[str, CatalogEntry]:
        """Entries keyed by their short id."""
        return {e.id: e for e in self.entries}

    def find(self, key: str) -> list[CatalogEntry]:
        """Entries whose sha256 starts with `key` (an id, >= 6 hex digits) or whose path is `key`."""
        key_path = os.path.abspath(key)
        prefix = key.lower() if len(key) >= 6 else None
        return [e for e in self.entries if (prefix and e.sha256.startswith(prefix)) or e.path in (key, key_path)]
