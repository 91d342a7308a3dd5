"""The embedded backend's approximate nearest-neighbour indexes over a catalog column.

Above `min_rows` rows the embedding shortlist stops scanning every row and
asks an inverted-file index (faiss `IndexIVFFlat`, inner product): the
rows are split into `lists` clusters by k-means once, and a query scans
the `probes` clusters nearest it. Measured against HNSW on the same
embeddings (`bench/bench_ann.py`, bench/README.md "Embedding ANN"): the
catalog's embeddings sit in tight clusters of near-duplicate views, where
HNSW's graph lost true neighbours at any `efSearch` that beats the scan,
and the IVF scan of a few clusters kept them; adding a row to an IVF
index is one centroid look-up (HNSW: ~2 ms per row). The LBP source's
Hellinger prefilter is the same search on `lbps_sqrt` (the inner product of
square-rooted histograms is their Bhattacharyya coefficient), in its own file.

Rows are catalog slots: the index's ids are the slots it took in, in order,
so slots [0, covered) are indexed and a slot is never reused. A removed or
renamed entry stays in the index and is masked at search time by the
snapshot's live rows (an `IDSelectorBitmap`); slots a snapshot has and the
index does not yet cover are scanned exactly. Results are always live rows
of the snapshot, scored exactly from its own embedding matrix.

Memory: an index opened from its file, or just saved, is memory-mapped
read-only (faiss `IO_FLAG_MMAP`): its vectors stay in the page cache, shared
with every process serving the same catalog and given back under memory
pressure, instead of a private copy per process (1M entries: 0.63 KB per
entry for both columns; bench/README.md). Rows added after it go to a small
in-memory index on the same clusters (`add_with_ids`, the slot as id); a
save merges the two (the mapped lists are copied, not re-clustered) and
maps the new file. Like the vote store's runs, a mapped file must be
replaced (renamed over), never rewritten in place while a process serves
the catalog: every writer here writes a new file and renames it in.

Persistence: the index is saved beside the HDF5 segments (`embeddings.ivf`,
`lbps_sqrt.ivf`, every `save_every` new rows:
faiss's own serialisation, then a JSON trailer naming the catalog, the
model, the slots covered and the parameters; written to a temporary name
and renamed in). A file that is missing, unreadable, for another catalog,
model or parameters, or whose rows disagree with the segments (a few rows
compared) is rebuilt from the snapshot: it is never a source
of truth.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.catalog import CatalogSnapshot
from pipeline.fsutil import fsync_path

FILE = "embeddings.ivf"
COLUMNS = ("embeddings", "lbps_sqrt")
"""Snapshot matrices an index can cover (each in `<column>.ivf`)."""
_MAGIC = b"TPIVF001"
_ADD_AT_ONCE = 16_384  # rows added per hold of the search lock: a query waits at most for one such add
_TRAIN_AT_MOST = 200_000  # k-means sample (faiss warns below 39 points per list)
_SPOT_CHECKS = 16  # rows compared with the segments when a saved index is opened


@dataclass(frozen=True)
class AnnSettings:
    """Parameters of the index (`search.ann` in the config).

    Attributes
    ----------
    min_rows : int
        Catalogs with fewer rows (slots) are scanned exactly; the index is
        built when a snapshot reaches this size.
    lists : int
        k-means clusters (inverted lists).
    probes : int
        Clusters scanned per query.
    save_every : int
        Save the index once it has taken in this many slots since it was last saved.
    """

    min_rows: int
    lists: int
    probes: int
    save_every: int


class AnnIndex:
    """The IVF index of one column of a catalog directory; follows snapshots, answers nearest-row searches (thread-safe).

    Parameters
    ----------
    directory : Path
        The catalog index directory (`<column>.ivf` lives there).
    settings : AnnSettings
    column : {"embeddings", "lbps_sqrt"}
        The snapshot matrix indexed (rows unit norm: similarity is the inner product).
    """

    def __init__(self, directory: Path, settings: AnnSettings, column: str = "embeddings") -> None:
        if column not in COLUMNS:
            raise ValueError(f"column must be one of {COLUMNS}, got {column!r}")
        self.directory = Path(directory)
        self.settings = settings
        self.column = column
        self.path = self.directory / f"{column}.ivf"
        self._lock = threading.Lock()  # between adds and searches (faiss's lists are not safe to read while growing)
        self._follow_lock = threading.Lock()  # one follower at a time
        self._index: Any = None  # the growable in-memory part: every row, or the rows past the mapped part
        self._mapped: Any = None  # the saved index, memory-mapped read-only: slots [0, _mapped_covered)
        self._mapped_covered = 0
        self._added: list[np.ndarray] = []  # the rows of `_index` while a mapped part exists (merged at the next save)
        self._catalog_id: str | None = None
        self._model_id: str | None = None
        self._covered = 0
        self._saved = 0
        self.opened_from_file = 0
        """Slots the saved index covered when it was last opened (0: built from the snapshot, or not built)."""

    @property
    def covered(self) -> int:
        """Slots [0, covered) are in the index (0 while there is no index)."""
        return self._covered

    def ready(self, snap: CatalogSnapshot) -> bool:
        """Whether searches of `snap` go through the index (else the caller scans exactly)."""
        return (self._index is not None or self._mapped is not None) and self._catalog_id == snap.catalog_id \
            and self._model_id == snap.model_id

    @property
    def mapped(self) -> int:
        """Slots [0, mapped) are searched in the memory-mapped saved index (0: none mapped)."""
        return self._mapped_covered if self._mapped is not None else 0

    # ----------------------------------------------------------------- follow
    def follow(self, snap: CatalogSnapshot, persist: bool = True) -> None:
        """Open, build or extend the index to cover every slot of `snap`, then save it when due (with `persist`;
        otherwise a due save waits for `persist()`).

        Below `min_rows` slots nothing is built. Extending takes the search
        lock only while one block of `_ADD_AT_ONCE` rows goes in (IVF adds
        are one centroid look-up per row: milliseconds per block).
        """
        n = int(snap.alive.size)
        if self.ready(snap) and n <= self._covered:
            return  # nothing new (the query lane's case)
        if n < self.settings.min_rows and not self.ready(snap):
            return
        with self._follow_lock:
            if not self.ready(snap):
                self._attach(snap)
            for start in range(self._covered, n, _ADD_AT_ONCE):
                stop = min(start + _ADD_AT_ONCE, n)
                block = np.ascontiguousarray(getattr(snap, self.column)[start:stop], dtype=np.float32)
                with self._lock:
                    if self._mapped is None:
                        self._index.add(block)  # ids 0, 1, ...: the slots
                    else:
                        self._index.add_with_ids(block, np.arange(start, stop, dtype=np.int64))
                        self._added.append(block)
                    self._covered = stop
            if persist:
                self._persist_locked()

    def persist(self) -> None:
        """Save the index when `save_every` rows were added since the last save."""
        with self._follow_lock:
            self._persist_locked()

    def _persist_locked(self) -> None:
        if self._index is not None and self._covered - self._saved >= self.settings.save_every:
            self.save()

    def save(self) -> None:
        """Write the index now, then map the file (a reader without write access keeps it in memory; the file is
        only a cache)."""
        if self._index is None and self._mapped is None:
            return
        covered = self._covered  # searches may run meanwhile: they only read; adds wait for the follow lock we are under
        whole = self._index if self._mapped is None else _merged(self._mapped, self._added)
        try:
            _save(self.path, whole, self._trailer(covered))
        except OSError:
            return
        self._saved = covered
        mapped = _map(self.path)
        if mapped is not None and mapped.ntotal == covered:
            with self._lock:
                self._mapped, self._mapped_covered = mapped, covered
                self._index, self._added = _empty_like(mapped), []

    def close(self) -> None:
        """Save an index that was never saved; leave a saved one's newer rows to the next opener.

        Those rows are fewer than `save_every` (`follow` saves at that
        count), and the next opener adds them from the segments in
        milliseconds, where saving them here would rewrite the whole file
        (760 MB for both columns at 1M entries) for a few rows.
        """
        with self._follow_lock:
            if self._index is not None and self._saved == 0 and self._covered > 0:
                self.save()

    def rebuild(self, snap: CatalogSnapshot) -> None:
        """Train and fill the index again from the snapshot, and save it (`teaprint reindex`)."""
        with self._follow_lock:
            (self.path).unlink(missing_ok=True)
            with self._lock:
                self._index, self._catalog_id, self._covered, self._saved = None, None, 0, 0
                self._mapped, self._mapped_covered, self._added = None, 0, []
        if snap.alive.size >= self.settings.min_rows:
            self.follow(snap)
            self.close()

    # ----------------------------------------------------------------- search
    def nearest(self, query: np.ndarray, snap: CatalogSnapshot, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` live rows of `snap` nearest `query` (approximately), most similar first, with their cosine similarity.

        Rows the index covers are searched in `probes` clusters; the
        snapshot's rows past them are scanned exactly.

        Returns
        -------
        rows : ndarray, shape (<= k,), dtype int64
        sims : ndarray, shape (<= k,), dtype float32
        """
        import faiss

        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        n = int(snap.alive.size)
        found: list[np.ndarray] = []
        with self._lock:
            parts, covered = [i for i in (self._mapped, self._index) if i is not None and i.ntotal], min(self._covered, n)
            if parts and covered > 0 and k > 0:
                bitmap = snap.derived(("ann-bitmap", covered), lambda s: np.packbits(s.alive[:covered], bitorder="little"))
                selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))  # size in bytes
                params = faiss.SearchParametersIVF(nprobe=self.settings.probes, sel=selector)
                for index in parts:  # ids are slots in both parts
                    _, ids = index.search(q, k, params=params)
                    found.append(ids[0][ids[0] >= 0])
        tail = np.arange(covered, n)
        tail = tail[snap.alive[tail]]
        if tail.size:
            found.append(tail)
        rows = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        rows = rows[snap.alive[rows]].astype(np.int64) if rows.size else rows.astype(np.int64)
        sims = (getattr(snap, self.column)[rows] @ q[0]).astype(np.float32) if rows.size else np.zeros(0, np.float32)
        order = np.lexsort((rows, -sims))[:k]  # exact scores, ties by row: as the exact scan orders them
        return rows[order], sims[order]

    # ---------------------------------------------------------------- internals
    def _trailer(self, covered: int) -> dict[str, Any]:
        s = self.settings
        return {"catalog_id": self._catalog_id, "model_id": self._model_id, "covered": covered,
                "lists": s.lists, "dim": int((self._mapped or self._index).d), "column": self.column}

    def _attach(self, snap: CatalogSnapshot) -> None:
        """Open the saved index when it belongs to this catalog and agrees with it; else train and start one."""
        mapped, covered = self._open(snap)
        self.opened_from_file = covered if mapped is not None else 0
        index = _empty_like(mapped) if mapped is not None else self._train(snap)
        with self._lock:
            self._index, self._mapped, self._mapped_covered, self._added = index, mapped, covered, []
            self._covered, self._saved = covered, covered
            self._catalog_id, self._model_id = snap.catalog_id, snap.model_id

    def _open(self, snap: CatalogSnapshot) -> tuple[Any, int]:
        """The saved index, memory-mapped, and the slots it covers; (None, 0) when it is not this catalog's."""
        path = self.path
        trailer = _read_trailer(path)
        if trailer is None:
            return None, 0
        expected = {"catalog_id": snap.catalog_id, "model_id": snap.model_id, "lists": self.settings.lists, "column": self.column,
                    "dim": int(getattr(snap, self.column).shape[1])}
        if any(trailer.get(key) != value for key, value in expected.items()):
            return None, 0
        covered = int(trailer.get("covered", -1))
        if not 0 < covered <= snap.alive.size:
            return None, 0
        index = _map(path)
        if index is None or index.ntotal != covered or not _agrees(index, getattr(snap, self.column), covered):
            return None, 0
        return index, covered

    def _train(self, snap: CatalogSnapshot) -> Any:
        import faiss

        vectors = getattr(snap, self.column)
        d = int(vectors.shape[1])
        rows = snap.rows
        rng = np.random.default_rng(0)  # the same catalog trains the same clusters
        sample = rows if rows.size <= _TRAIN_AT_MOST else np.sort(rng.choice(rows, _TRAIN_AT_MOST, replace=False))
        lists = max(1, min(self.settings.lists, sample.size))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        index.make_direct_map()  # 8 bytes a row: lets an opened index be checked against the segments row by row
        return index


def _map(path: Path) -> Any:
    """The index saved at `path`, memory-mapped read-only (None if unreadable)."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        return None


def _empty_like(mapped: Any) -> Any:
    """An empty in-memory IVF index on `mapped`'s clusters, for the rows added after it (ids given)."""
    import faiss

    quantizer = faiss.clone_index(mapped.quantizer)
    index = faiss.IndexIVFFlat(quantizer, mapped.d, mapped.nlist, faiss.METRIC_INNER_PRODUCT)
    quantizer.this.disown()
    index.own_fields = True  # the index frees its quantizer
    return index


def _merged(mapped: Any, added: list[np.ndarray]) -> Any:
    """One in-memory index holding the mapped index's rows, then `added` (the next slots in order).

    The mapped lists are copied as they are (no second clustering: adding 1M
    rows again would search 1,024 centroids for each); the direct map lets
    the saved file be spot-checked at the next open.
    """
    whole = _empty_like(mapped)
    source, target = mapped.invlists, whole.invlists
    for cluster in range(mapped.nlist):
        size = source.list_size(cluster)
        if size:
            target.add_entries(cluster, size, source.get_ids(cluster), source.get_codes(cluster))
    whole.ntotal = mapped.ntotal
    whole.make_direct_map()
    for block in added:
        whole.add(block)  # ids continue from ntotal: the slots
    return whole


def _agrees(index: Any, vectors: np.ndarray, covered: int) -> bool:
    """Whether a few rows spread over the saved index hold the snapshot's vectors (else it is stale)."""
    picks = np.unique(np.linspace(0, covered - 1, _SPOT_CHECKS).astype(np.int64))
    try:
        stored = np.stack([index.reconstruct(int(r)) for r in picks])
    except RuntimeError:  # no direct map: not an index this module wrote
        return False
    return bool(np.array_equal(stored, np.asarray(vectors[picks], np.float32)))


def _save(path: Path, index: Any, trailer: dict[str, Any]) -> None:
    import faiss

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    raw = json.dumps(trailer).encode()
    with open(tmp, "ab") as f:  # faiss reads what it wrote and ignores what follows
        f.write(raw + len(raw).to_bytes(8, "little") + _MAGIC)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def _read_trailer(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < 16:
                return None
            f.seek(size - 16)
            tail = f.read(16)
            if tail[8:] != _MAGIC:
                return None
            length = int.from_bytes(tail[:8], "little")
            if length > size - 16:
                return None
            f.seek(size - 16 - length)
            trailer = json.loads(f.read(length))
        return trailer if isinstance(trailer, dict) else None
    except (OSError, ValueError):
        return None
