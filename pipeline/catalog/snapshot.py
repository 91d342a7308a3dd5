"""One catalog generation, immutable, for readers.

A match, a listing or a status reads one `CatalogSnapshot`: its rows, their
embedding and LBP matrices and keypoints all come from the same commit,
whatever writers do meanwhile, so readers need no lock of their own.

Rows are slots (`pipeline.catalog.columns`): row `r` of `embeddings`,
`lbps` and `labels` is the entry of slot `r`, and `alive[r]` says whether it
belongs to this generation (a removed or renamed entry leaves a dead row).
Searches mask dead rows; `rows` lists the live ones in registration order.
The matrices are views of the record's columns, so taking a snapshot costs
O(1) plus a copy of `alive`; keypoints are read from the segments per row.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.catalog.columns import Columns, NameView, gather_keypoints
from pipeline.catalog.entries import CatalogEntry
from pipeline.features.local import LocalFeatures


def _frozen(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class SquareRoots:
    """Element-wise square roots of a read-only histogram matrix, computed for the rows asked.

    The Hellinger prefilter and its index (`pipeline.search.ann`) read
    `sqrt(lbps)`; kept as a second column it cost 104 B per entry in RAM
    (1M entries: 104 MB). Indexing, `shape` and a product with a vector
    behave as on the array of roots.
    """

    CHUNK = 65536  # rows per step of a product over every row (a bounded temporary)

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    @property
    def shape(self) -> tuple[int, ...]:
        return self._values.shape

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.sqrt(np.maximum(self._values[key], 0))

    def __matmul__(self, vector: np.ndarray) -> np.ndarray:
        """`sqrt(values) @ vector`, shape (N,), dtype float32, a chunk of rows at a time."""
        n = len(self._values)
        out = np.empty(n, np.float32)
        for start in range(0, n, self.CHUNK):
            out[start:start + self.CHUNK] = self[start:start + self.CHUNK] @ vector
        return out


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """The rows of one committed generation.

    Attributes
    ----------
    directory : Path
        The index directory it was read from.
    generation : int
        The manifest generation (0: nothing committed yet).
    model_id : str or None
        The model the index was built with (None while empty).
    catalog_id : str or None
        The catalog's identity (rows of two catalogs never compare).
    embeddings : ndarray, shape (S, D), dtype float32, read-only
        One row per slot, dead rows included.
    lbps : ndarray, shape (S, B), dtype float32, read-only
    lbps_sqrt : SquareRoots, shape (S, B), float32 rows when indexed
        Element-wise square roots of `lbps` (Hellinger prefilter of the LBP search), computed when read.
    labels : NameView, length S
        Indexed like a read-only object array of str (the names are stored as bytes, `columns.NameColumn`).
    alive : ndarray, shape (S,), dtype bool, read-only
    """

    directory: Path
    generation: int
    model_id: str | None
    catalog_id: str | None
    embeddings: np.ndarray
    lbps: np.ndarray
    lbps_sqrt: SquareRoots
    labels: NameView
    alive: np.ndarray
    _columns: Columns = field(repr=False)
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False)
    _derived_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, directory: Path, generation: int, model_id: str | None, catalog_id: str | None, columns: Columns) -> "CatalogSnapshot":
        """A snapshot of the first `columns.n` slots as they stand (call under the record's state lock)."""
        n = columns.n
        lbps = _frozen(columns.lbp[:n])
        return cls(Path(directory), generation, model_id, catalog_id, _frozen(columns.embedding[:n]), lbps,
                   SquareRoots(lbps), columns.label.head(n), _frozen(columns.alive[:n].copy()), columns)

    def __len__(self) -> int:
        return int(self.rows.size)

    @cached_property
    def rows(self) -> np.ndarray:
        """Live rows in registration order, shape (N,), dtype int64."""
        return np.flatnonzero(self.alive).astype(np.int64)

    @cached_property
    def entries(self) -> tuple[CatalogEntry, ...]:
        """The live entries, oldest first (built on first use: O(N))."""
        return tuple(self.entry(r) for r in self.rows.tolist())

    def entry(self, row: int) -> CatalogEntry:
        """The entry of `row` (its keypoints are read from disk when first asked for)."""
        c, r = self._columns, int(row)
        file, index = c.keypoint_file[r], int(c.keypoint_index[r])
        return CatalogEntry(
            sha256=c.sha256[r], path=c.path[r], label=c.label[r], embedding=self.embeddings[r], lbp=self.lbps[r],
            added_at=float(c.added_at[r]), model_id=c.model_id[r],
            stored_keypoints=(lambda: file.read(index)) if file is not None else None,
        )

    @cached_property
    def ids(self) -> tuple[str, ...]:
        """sha256 of each live row, oldest first."""
        return tuple(self._columns.sha256[self.rows].tolist())

    @cached_property
    def label_count(self) -> int:
        """Distinct labels among live rows."""
        return len(set(self.labels[self.rows].tolist()))

    @cached_property
    def paths(self) -> frozenset[str]:
        """Paths of the live entries."""
        return frozenset(self._columns.path[self.rows].tolist())

    def keypoints(self, rows: Sequence[int]) -> list[LocalFeatures | None]:
        """Keypoints of the given rows, read from the segments (None for an entry stored without them)."""
        c = self._columns
        out: list[LocalFeatures | None] = []
        for r in rows:
            file = c.keypoint_file[int(r)]
            out.append(file.read(int(c.keypoint_index[int(r)])) if file is not None else None)
        return out

    def keypoints_bulk(self, rows: np.ndarray, surfaces: bool = True) -> list[LocalFeatures | None]:
        """`keypoints(rows)` for many rows: one read per segment holding a large share of them (`surfaces` False:
        without the reliefs, `gather_keypoints`)."""
        return gather_keypoints(self._columns, np.asarray(rows, dtype=np.int64), surfaces)

    def derived(self, key: Any, build: Callable[["CatalogSnapshot"], Any]) -> Any:
        """`build(self)`, computed once per snapshot and `key` (thread-safe)."""
        with self._derived_lock:
            if key not in self._derived:
                self._derived[key] = build(self)
            return self._derived[key]

    # ------------------------------------------------------------- look-ups
    def get(self, sha256: str) -> CatalogEntry | None:
        row = self._columns.slot(sha256, self.alive)
        return self.entry(row) if row is not None else None

    @cached_property
    def _by_path(self) -> dict[str, int]:
        c = self._columns
        return {c.path[r]: r for r in self.rows.tolist()}

    def by_path(self, path: str | Path) -> CatalogEntry | None:
        row = self._by_path.get(str(path))
        return self.entry(row) if row is not None else None

    def by_id(self) -> dict[str, CatalogEntry]:
        """Entries keyed by their short id."""
        return {e.id: e for e in self.entries}

    def find(self, key: str) -> list[CatalogEntry]:
        """Entries whose sha256 starts with `key` (an id, >= 6 hex digits) or whose path is `key`."""
        key_path = os.path.abspath(key)
        prefix = key.lower() if len(key) >= 6 else None
        c = self._columns
        return [self.entry(r) for r in self.rows.tolist()
                if (prefix and c.sha256[r].startswith(prefix)) or c.path[r] in (key, key_path)]
