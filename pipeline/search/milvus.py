"""The embedding shortlist's search on Milvus, for catalogs beyond one machine.

The catalog's embeddings are mirrored into a Milvus collection, one row per
catalog slot (`slot` primary key, `embedding` vector, inner product), and a
query's nearest rows are searched there. The HDF5 segments stay the record
(paths, labels, sha256, keypoints): the collection is derived from them,
like the vote store, and `teaprint reindex --backend milvus` rebuilds it. A
second collection, `<collection>_meta`, records which catalog it mirrors and
how many slots it has taken in, so a restarted process adds only the rest.

Consistency with a snapshot: the collection may hold rows the snapshot does
not (added since, or removed but not yet deleted), so a search is filtered
to the snapshot's slot range, asks for a margin beyond `k`, and keeps only
the snapshot's live rows; similarities are recomputed from the snapshot's
own embeddings so that both backends score a row identically.

The same code runs against milvus-lite (a local `.db` file: tests, one
machine) and a Milvus standalone or cluster server (`http://host:19530`).
The vector index is the config's (`IndexSpec`: exact FLAT, IVF_FLAT or
HNSW); a collection opened with another index has it rebuilt by Milvus
from the rows it holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.catalog import CatalogSnapshot
from pipeline.config import MilvusConfig

_BATCH = 5000
_MARGIN = 16


@dataclass(frozen=True)
class IndexSpec:
    """The collection's vector index (`search.milvus` settings): its kind and the parameters it reads."""

    kind: str  # FLAT, IVF_FLAT or HNSW
    lists: int  # IVF_FLAT nlist
    probes: int  # IVF_FLAT nprobe
    hnsw_m: int  # HNSW M
    hnsw_ef: int  # HNSW efConstruction, and ef at search

    @classmethod
    def of(cls, config: MilvusConfig) -> "IndexSpec":
        return cls(config.index, config.lists, config.probes, config.hnsw_m, config.hnsw_ef)

    def build_params(self) -> dict[str, int]:
        """What Milvus builds the index with."""
        if self.kind == "IVF_FLAT":
            return {"nlist": self.lists}
        if self.kind == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef}
        return {}

    def search_params(self, limit: int) -> dict[str, Any]:
        """What a search of `limit` rows asks of the index (HNSW's ef may not be below the rows asked for)."""
        if self.kind == "IVF_FLAT":
            return {"params": {"nprobe": min(self.probes, self.lists)}}
        if self.kind == "HNSW":
            return {"params": {"ef": max(self.hnsw_ef, limit)}}
        return {}

    def matches(self, described: dict[str, Any]) -> bool:
        """Whether Milvus's description of an existing index is this one (the parameters it reports, as strings)."""
        if str(described.get("index_type", "")).upper() != self.kind:
            return False
        return all(str(described[key]) == str(value) for key, value in self.build_params().items() if key in described)


def _slot_of(hit: dict) -> int:
    """A search hit's primary key (pymilvus names it after the field; older clients say `id`)."""
    return int(hit["slot"] if "slot" in hit else hit.get("id", hit.get("entity", {}).get("slot")))


def resolve_uri(config: MilvusConfig, index_dir: Path) -> str:
    """The URI to connect to: a server URL as given, or a milvus-lite file (relative paths under the index folder)."""
    uri = config.uri or "milvus.db"
    if "://" in uri:
        return uri
    path = Path(uri)
    return str(path if path.is_absolute() else Path(index_dir) / path)


class MilvusEmbeddings:
    """A catalog's embeddings in a Milvus collection; follows snapshots, answers nearest-row searches (thread-safe).

    Parameters
    ----------
    uri : str
        Milvus server URL, or a milvus-lite `.db` file path.
    collection : str
    index : IndexSpec
        The vector index the collection is built, or rebuilt, with.
    token : str
        Credentials ("" = none).
    """

    def __init__(self, uri: str, collection: str, index: IndexSpec, token: str = "") -> None:
        from pymilvus import MilvusClient  # imported here: only this backend needs it

        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri, token=token) if token else MilvusClient(uri)
        self.collection = collection
        self.meta = f"{collection}_meta"
        self.index = index
        self._lock = threading.Lock()
        self._catalog_id: str | None = None
        self._covered = 0
        self._generation = -1
        self._alive_seen = np.zeros(0, bool)

    def close(self) -> None:
        """Release the connection (a milvus-lite file is locked by the one process that has it open)."""
        self.client.close()

    @property
    def covered(self) -> int:
        """Slots [0, covered) have been taken in."""
        return self._covered

    def ready(self, snap: CatalogSnapshot) -> bool:
        """Searches always go to the collection (`follow` has filled it)."""
        return True

    # ----------------------------------------------------------------- follow
    def persist(self) -> None:
        """Nothing to save here: the collection is Milvus's to persist (the same interface as the local indexes)."""

    def follow(self, snap: CatalogSnapshot, persist: bool = True) -> None:
        """Insert the snapshot's slots not yet in the collection and delete those that died since the last call.

        `persist` is the local indexes' (a save they may defer); Milvus persists the collection itself.
        """
        if self._catalog_id == snap.catalog_id and snap.generation <= self._generation:
            return  # nothing new (the query lane's case): no wait behind a follower inserting another batch
        with self._lock:
            if self._catalog_id != snap.catalog_id:
                self._attach(snap)
            n = snap.alive.size
            if n < self._covered or snap.generation <= self._generation:
                return  # an older snapshot than one already followed
            seen = self._alive_seen
            died = np.flatnonzero(seen & ~snap.alive[: seen.size])
            self._delete(died)
            new = np.arange(self._covered, n)
            self._insert(new[snap.alive[new]], snap)
            self._covered = n
            self._alive_seen = snap.alive.copy()
            self._generation = snap.generation
            self._write_meta()

    def rebuild(self, snap: CatalogSnapshot) -> None:
        """Drop the collection and fill it again from the snapshot (`teaprint reindex --backend milvus`)."""
        with self._lock:
            for name in (self.collection, self.meta):
                if self.client.has_collection(name):
                    self.client.drop_collection(name)
            self._catalog_id, self._generation = None, -1
        self.follow(snap)

    # ----------------------------------------------------------------- search
    def nearest(self, query: np.ndarray, snap: CatalogSnapshot, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` live rows of `snap` nearest `query`, most similar first, with their cosine similarity.

        Returns
        -------
        rows : ndarray, shape (<= k,), dtype int64
        sims : ndarray, shape (<= k,), dtype float32
        """
        n = snap.alive.size
        if k <= 0 or n == 0 or not self.client.has_collection(self.collection):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        limit = min(k + _MARGIN + int(n - np.count_nonzero(snap.alive)), 16_384)
        hits = self.client.search(self.collection, [np.asarray(query, np.float32).tolist()], limit=limit,
                                  filter=f"slot < {n}", output_fields=["slot"], search_params=self.index.search_params(limit))[0]
        rows = np.array([_slot_of(h) for h in hits], np.int64)
        rows = rows[snap.alive[rows]] if rows.size else rows
        sims = (snap.embeddings[rows] @ query).astype(np.float32) if rows.size else np.zeros(0, np.float32)
        order = np.lexsort((rows, -sims))[:k]  # exact scores, ties by row: as the embedded scan orders them
        return rows[order], sims[order]

    # ---------------------------------------------------------------- internals
    def _attach(self, snap: CatalogSnapshot) -> None:
        """Take the collection over when it mirrors this catalog (deleting rows dead since), else start it afresh."""
        self._generation = -1
        meta = self._read_meta()
        dim = int(snap.embeddings.shape[1]) if snap.embeddings.ndim == 2 else 0
        if meta is not None and meta["catalog_id"] == (snap.catalog_id or "") and meta["dim"] == dim \
                and meta["covered"] <= snap.alive.size and self.client.has_collection(self.collection):
            self._index_as_configured()
            self.client.load_collection(self.collection)
            self._catalog_id, self._covered = snap.catalog_id, int(meta["covered"])
            self._alive_seen = np.ones(self._covered, bool)  # whatever died before now is deleted by `follow`
            return
        for name in (self.collection, self.meta):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._create(dim)
        self._catalog_id, self._covered, self._alive_seen = snap.catalog_id, 0, np.zeros(0, bool)
        self._write_meta(dim)

    def _create(self, dim: int) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("slot", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=max(dim, 1))
        self.client.create_collection(self.collection, schema=schema, index_params=self._index_params(), consistency_level="Strong")
        meta = self.client.create_schema(auto_id=False)
        meta.add_field("key", DataType.INT64, is_primary=True)
        meta.add_field("catalog_id", DataType.VARCHAR, max_length=64)
        meta.add_field("covered", DataType.INT64)
        meta.add_field("dim", DataType.INT64)
        meta.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field in every collection
        mi = self.client.prepare_index_params()
        mi.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(self.meta, schema=meta, index_params=mi, consistency_level="Strong")

    def _index_params(self) -> Any:
        params = self.client.prepare_index_params()
        params.add_index("embedding", index_type=self.index.kind, metric_type="IP", params=self.index.build_params())
        return params

    def _index_as_configured(self) -> None:
        """Rebuild the collection's vector index when it is not the configured one (Milvus rebuilds it from the stored rows)."""
        names = self.client.list_indexes(self.collection, field_name="embedding")
        if names and self.index.matches(self.client.describe_index(self.collection, names[0])):
            return
        self.client.release_collection(self.collection)
        for name in names:
            self.client.drop_index(self.collection, name)
        self.client.create_index(self.collection, self._index_params())

    def _read_meta(self) -> dict | None:
        if not self.client.has_collection(self.meta):
            return None
        self.client.load_collection(self.meta)  # a collection another process created is not loaded in this one
        rows = self.client.query(self.meta, filter="key == 0", output_fields=["catalog_id", "covered", "dim"])
        return rows[0] if rows else None

    def _write_meta(self, dim: int | None = None) -> None:
        if dim is None:
            meta = self._read_meta()
            dim = int(meta["dim"]) if meta else 0
        self.client.upsert(self.meta, [{"key": 0, "catalog_id": self._catalog_id or "", "covered": int(self._covered), "dim": dim,
                                        "unused": [0.0, 0.0]}])

    def _insert(self, slots: np.ndarray, snap: CatalogSnapshot) -> None:
        for start in range(0, slots.size, _BATCH):
            part = slots[start:start + _BATCH]
            vectors = snap.embeddings[part]
            self.client.upsert(self.collection, [{"slot": int(s), "embedding": v.tolist()} for s, v in zip(part.tolist(), vectors)])

    def _delete(self, slots: np.ndarray) -> None:
        for start in range(0, slots.size, _BATCH):
            self.client.delete(self.collection, ids=[int(s) for s in slots[start:start + _BATCH]])
