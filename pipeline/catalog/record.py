"""The catalog's record: registered photos' descriptors in HDF5, crash-safe.

Layout of the index directory::

    MANIFEST.json        which segments are live, the model id, the generation
    seg-00000001.h5      immutable HDF5 segments: entries added and removed
    seg-00000002.h5      by one commit each
    .lock                serialises writers (daemon, CLI, server)

Why segments and not one growing HDF5 file: HDF5 has no journal, so a writer
killed while it updates a file in place can leave it unopenable. Here every
file is written once to a temporary name, fsynced and renamed into place; the
manifest is replaced the same way last. A kill at any instant therefore leaves
the previous manifest or the new one, each naming only complete segments, so
the index always opens and holds every commit made before the kill. Readers
never lock the files: they read the manifest, then the immutable segments it
names, and get a `CatalogSnapshot`. Segments are merged into one when there
are more than `max_segments`.

Entries change only through `pipeline.catalog.writer.CatalogWriter`, which
checks them and builds on `commit` and `replace_all` here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
from filelock import FileLock

from pipeline.catalog.entries import CatalogEntry, NewEntry
from pipeline.catalog.snapshot import CatalogSnapshot
from pipeline.features.local import LocalFeatures
from pipeline.fsutil import atomic_write_bytes, fsync_path

FORMAT = "teaprint-catalog/1"
MANIFEST = "MANIFEST.json"
_STR = h5py.string_dtype("utf-8")


class CatalogError(RuntimeError):
    """The index cannot be used as asked; the message says why."""


class ModelMismatchError(CatalogError):
    """The index was built with another encoder than the one loaded."""

    def __init__(self, index_model: str, current_model: str, directory: Path) -> None:
        super().__init__(
            f"index {directory} was built with model {index_model}, but model {current_model} is loaded; "
            f"run `teaprint reembed` to re-embed the catalog with the loaded model"
        )
        self.index_model = index_model
        self.current_model = current_model


class FeatureMismatchError(CatalogError):
    """The index's descriptors were computed with other feature settings (locator, canonical size, LBP, keypoints)."""

    def __init__(self, index_features: dict | None, current_features: dict, directory: Path) -> None:
        differ = sorted(k for k in set(current_features) | set(index_features or {})
                        if (index_features or {}).get(k) != current_features.get(k))
        was = "not recorded (built before they were)" if index_features is None else f"{ {k: index_features.get(k) for k in differ} }"
        super().__init__(
            f"index {directory} was built with other feature settings ({', '.join(differ) or 'all'}): {was}, now "
            f"{ {k: current_features.get(k) for k in differ} }; run `teaprint reembed` to recompute the catalog's descriptors"
        )
        self.index_features = index_features
        self.current_features = current_features


def features_agree(index_features: dict | None, current: dict) -> bool:
    """Whether descriptors recorded with `index_features` compare with ones made with `current`.

    An index written before the manifest recorded feature settings
    (`index_features` None) described the whole photo: it agrees with the
    current settings while the locator is off (`current["locate"]` None), so
    such catalogs keep working unchanged until the locator is switched on.
    """
    if index_features is None:
        return current.get("locate") is None
    return index_features == current


@dataclass(frozen=True)
class CommitResult:
    added: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    generation: int = 0


@dataclass(frozen=True)
class _Segment:
    """Arrays of one segment file, loaded once (segments never change)."""

    sha256: np.ndarray
    path: list[str]
    label: list[str]
    embedding: np.ndarray
    lbp: np.ndarray
    added_at: np.ndarray
    model_id: list[str]
    removed: frozenset[str]
    local: list[LocalFeatures | None]


@dataclass
class _State:
    generation: int = 0
    model_id: str | None = None
    features: dict | None = None
    segments: list[str] = field(default_factory=list)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)


class CatalogIndex:
    """The record: registered photos, their labels and descriptors, on disk.

    Safe to share between threads: reading state is guarded by a short lock
    that is never held while a commit writes and fsyncs its segment.

    Parameters
    ----------
    directory : Path
        The index directory; created on the first commit.
    model_id : str or None
        The loaded encoder's id. Opening an index built with another model
        raises `ModelMismatchError`; None accepts any (for `status`, `reembed`).
    max_segments : int
        Merge all segments into one when a commit leaves more than this.
    features : dict or None
        The settings that shaped the descriptors (`pipeline.prepare.feature_settings`),
        recorded in the manifest beside the model id. Opening a non-empty index
        recorded with other ones raises `FeatureMismatchError`; None accepts any.
    """

    def __init__(self, directory: Path, model_id: str | None = None, max_segments: int = 16, features: dict | None = None) -> None:
        self.directory = Path(directory)
        self.model_id = model_id
        self.features = features
        self.max_segments = max_segments
        self._cache: dict[str, _Segment] = {}
        self._state = _State()
        self._snapshot: CatalogSnapshot | None = None
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self.refresh()

    # ----------------------------------------------------------------- reading
    def refresh(self) -> bool:
        """Reload if another writer committed since; True when it changed."""
        with self._state_lock:
            for attempt in range(5):
                try:
                    manifest = self._read_manifest()
                    if manifest["generation"] == self._state.generation and self._state.segments == manifest["segments"]:
                        self._check_model(manifest.get("model_id"), manifest.get("features"))
                        return False
                    self._state = self._load(manifest)
                    self._check_model(self._state.model_id, self._state.features)
                    return True
                except FileNotFoundError:
                    # A compaction removed a segment between our manifest read and the
                    # segment read; the new manifest names its replacement.
                    time.sleep(0.01 * (attempt + 1))
        raise CatalogError(f"index {self.directory} kept changing while being read")

    def snapshot(self) -> CatalogSnapshot:
        """The latest committed generation, as one immutable snapshot (refreshed first)."""
        with self._state_lock:
            self.refresh()
            state = self._state
            if self._snapshot is None or self._snapshot.generation != state.generation:
                self._snapshot = CatalogSnapshot.of(self.directory, state.generation, state.model_id, list(state.entries.values()))
            return self._snapshot

    def _check_model(self, index_model: str | None, index_features: dict | None) -> None:
        if self.model_id and index_model and index_model != self.model_id and self._state.entries:
            raise ModelMismatchError(index_model, self.model_id, self.directory)
        if self.features is not None and not features_agree(index_features, self.features) and self._state.entries:
            raise FeatureMismatchError(index_features, self.features, self.directory)

    def __len__(self) -> int:
        return len(self._state.entries)

    @property
    def generation(self) -> int:
        return self._state.generation

    @property
    def index_model_id(self) -> str | None:
        return self._state.model_id

    @property
    def index_features(self) -> dict | None:
        """The feature settings the index's descriptors were computed with (None: not recorded)."""
        return self._state.features

    def entries(self) -> list[CatalogEntry]:
        """All entries as last refreshed, oldest first."""
        return list(self._state.entries.values())

    def get(self, sha256: str) -> CatalogEntry | None:
        return self._state.entries.get(sha256)

    def labels(self) -> list[str]:
        return [e.label for e in self._state.entries.values()]

    def size_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    # ----------------------------------------------------------------- writing
    def commit(
        self,
        adds: Sequence[NewEntry] = (),
        removes: Iterable[str] = (),
        model_id: str | None = None,
        before_write: Callable[[list[NewEntry]], list[NewEntry]] | None = None,
    ) -> CommitResult:
        """Add and remove entries in one durable step.

        Removals apply before additions, so removing and re-adding one sha256
        (a renamed file) updates its path; an added `CatalogEntry` keeps its
        `added_at`. Adding bytes already registered is a no-op reported in
        `duplicates`. `before_write` receives the entries that will really be
        added, under the writer lock, and returns them as they must be stored
        (e.g. with the path a file was just placed at).
        """
        model_id = model_id or self.model_id
        if adds and not model_id:
            raise CatalogError("cannot add entries without a model id")
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._write_lock, FileLock(str(self.directory / ".lock")):
            self.refresh()
            if adds and self._state.entries and self._state.model_id not in (None, model_id):
                raise ModelMismatchError(str(self._state.model_id), str(model_id), self.directory)
            features = self.features if self.features is not None else self._state.features
            current = self._state.entries
            removed = tuple(dict.fromkeys(s for s in removes if s in current))
            fresh: dict[str, NewEntry] = {}
            duplicates = []
            for entry in adds:
                if (entry.sha256 in current and entry.sha256 not in removed) or entry.sha256 in fresh:
                    duplicates.append(entry.sha256)
                else:
                    fresh[entry.sha256] = entry
            if not fresh and not removed:
                return CommitResult(duplicates=tuple(duplicates), generation=self._state.generation)
            stored = before_write(list(fresh.values())) if before_write and fresh else list(fresh.values())
            generation = self._state.generation + 1
            name = f"seg-{generation:08d}.h5"
            _write_segment(self.directory / name, stored, removed, str(model_id or self._state.model_id))
            segments = [*self._state.segments, name]
            self._write_manifest(generation, model_id or self._state.model_id, segments, features)
            self.refresh()
            if len(segments) > self.max_segments:
                self._compact_locked()
            return CommitResult(tuple(e.sha256 for e in stored), tuple(duplicates), removed, self._state.generation)

    def compact(self) -> None:
        """Merge all segments into one (readers are never blocked)."""
        with self._write_lock, FileLock(str(self.directory / ".lock")):
            self.refresh()
            self._compact_locked()

    def replace_all(self, entries: Sequence[NewEntry], model_id: str, features: dict | None = None) -> None:
        """Swap the whole index for `entries` built with `model_id` and `features` in one step (re-embedding)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._write_lock, FileLock(str(self.directory / ".lock")), self._state_lock:
            self.refresh_unchecked()
            generation = self._state.generation + 1
            name = f"seg-{generation:08d}.h5"
            _write_segment(self.directory / name, list(entries), (), model_id)
            old = self._state.segments
            self._write_manifest(generation, model_id, [name], features)
            self.model_id = model_id
            self.features = features
            self.refresh()
            self._remove_files(old)

    def refresh_unchecked(self) -> None:
        """Load the index whatever model and feature settings built it."""
        with self._state_lock:
            saved, self.model_id, saved_features, self.features = self.model_id, None, self.features, None
            try:
                self.refresh()
            finally:
                self.model_id, self.features = saved, saved_features

    def _compact_locked(self) -> None:
        state = self._state
        if len(state.segments) <= 1:
            return
        generation = state.generation + 1
        name = f"seg-{generation:08d}.h5"
        _write_segment(self.directory / name, list(state.entries.values()), (), str(state.model_id))
        self._write_manifest(generation, state.model_id, [name], state.features)
        self.refresh()
        self._remove_files(state.segments)

    def _remove_files(self, names: Iterable[str]) -> None:
        for old in names:
            with self._state_lock:
                self._cache.pop(old, None)
            try:
                (self.directory / old).unlink()
            except FileNotFoundError:
                pass

    def _read_manifest(self) -> dict:
        path = self.directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "generation": 0, "model_id": None, "segments": []}
        except ValueError as exc:  # only possible if someone edited it by hand
            raise CatalogError(f"{path}: corrupt manifest: {exc}") from None
        if data.get("format") != FORMAT:
            raise CatalogError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
        return data

    def _write_manifest(self, generation: int, model_id: str | None, segments: list[str], features: dict | None) -> None:
        data = {"format": FORMAT, "generation": generation, "model_id": model_id, "features": features, "segments": segments}
        atomic_write_bytes(self.directory / MANIFEST, json.dumps(data, indent=1).encode())
        self._cleanup_orphans(set(segments))

    def _cleanup_orphans(self, live: set[str]) -> None:
        # Segments left by a writer killed before its manifest swap hold nothing
        # committed; they are removed only under the writer lock.
        for p in self.directory.glob("seg-*.h5*"):
            if p.name not in live and p.name not in self._state.segments:
                p.unlink(missing_ok=True)

    def _load(self, manifest: dict) -> _State:
        names = list(manifest["segments"])
        known = self._state.segments
        if known and names[: len(known)] == known:
            # Commits only append segments: apply the new ones to what is loaded
            # (a full rebuild cost ~0.7 s per commit at 100k entries).
            entries, todo = dict(self._state.entries), names[len(known) :]
        else:
            entries, todo = {}, names
        for name in todo:
            seg = self._cache.get(name)
            if seg is None:
                seg = _read_segment(self.directory / name)
                self._cache[name] = seg
            for sha in seg.removed:
                entries.pop(sha, None)
            for i, sha in enumerate(seg.sha256):
                entries[sha] = CatalogEntry(
                    sha256=sha, path=seg.path[i], label=seg.label[i], embedding=seg.embedding[i], lbp=seg.lbp[i],
                    local=seg.local[i], added_at=float(seg.added_at[i]), model_id=seg.model_id[i],
                )
        live = set(manifest["segments"])
        for name in list(self._cache):
            if name not in live:
                del self._cache[name]
        return _State(manifest["generation"], manifest.get("model_id"), manifest.get("features"), list(manifest["segments"]), entries)


def _write_segment(path: Path, entries: Sequence[NewEntry], removed: Sequence[str], model_id: str) -> None:
    """One immutable segment file, written to a temporary name, fsynced, renamed in.

    A stored entry (`CatalogEntry`, e.g. renamed or compacted) keeps its
    `added_at`; a new one gets the current time.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = len(entries)
    now = time.time()
    added_at = np.array([e.added_at if isinstance(e, CatalogEntry) else now for e in entries], dtype=np.float64)
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["model_id"] = model_id
        g = f.create_group("entries")
        g.create_dataset("sha256", data=np.array([e.sha256 for e in entries], dtype="S64").reshape(n))
        # Names are stored as their filesystem bytes: a name that is not UTF-8
        # (lone surrogates after os.fsdecode) is kept exactly, and valid UTF-8
        # reads back the same as before.
        g.create_dataset("path", data=[os.fsencode(e.path) for e in entries], dtype=_STR, shape=(n,))
        g.create_dataset("label", data=[os.fsencode(e.label) for e in entries], dtype=_STR, shape=(n,))
        emb = np.stack([e.embedding for e in entries]).astype(np.float32) if n else np.zeros((0, 0), np.float32)
        lbp = np.stack([e.lbp for e in entries]).astype(np.float32) if n else np.zeros((0, 0), np.float32)
        g.create_dataset("embedding", data=emb)
        g.create_dataset("lbp", data=lbp)
        g.create_dataset("added_at", data=added_at)
        g.create_dataset("model_id", data=[model_id] * n, dtype=_STR, shape=(n,))
        f.create_dataset("removed", data=np.array(list(removed), dtype="S64").reshape(len(removed)))
        _write_local(f, entries)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def _name(value: bytes | str) -> str:
    """A stored path or label back as `os.fsdecode` would give it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _read_segment(path: Path) -> _Segment:
    with h5py.File(path, "r") as f:
        g = f["entries"]
        return _Segment(
            sha256=np.array([s.decode() for s in g["sha256"][()]], dtype=object),
            path=[_name(s) for s in g["path"][()]],
            label=[_name(s) for s in g["label"][()]],
            embedding=g["embedding"][()],
            lbp=g["lbp"][()],
            added_at=g["added_at"][()],
            model_id=[s.decode() if isinstance(s, bytes) else s for s in g["model_id"][()]],
            removed=frozenset(s.decode() for s in f["removed"][()]),
            local=_read_local(f, len(g["sha256"])),
        )


def _write_local(f: h5py.File, entries: Sequence[NewEntry]) -> None:
    """Keypoints of all entries, concatenated, with offsets (HDF5 has no ragged arrays).

    An entry without local features stores side -1; one with zero keypoints, side >= 0.
    """
    feats = [e.local for e in entries]
    present = [x for x in feats if x is not None]
    if not present:
        return
    width = present[0].descriptors.shape[1]
    counts = [len(x) if x is not None else 0 for x in feats]
    g = f.create_group("local")
    g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    g.create_dataset("side", data=np.array([x.side if x is not None else -1 for x in feats], dtype=np.int32))
    g.create_dataset("points", data=np.concatenate([x.points for x in present]).astype(np.float32).reshape(-1, 2))
    g.create_dataset("descriptors", data=np.concatenate([x.descriptors for x in present]).astype(np.uint8).reshape(-1, width))


def _read_local(f: h5py.File, n: int) -> list[LocalFeatures | None]:
    if "local" not in f:
        return [None] * n
    g = f["local"]
    offsets, sides = g["offsets"][()], g["side"][()]
    points, descriptors = g["points"][()], g["descriptors"][()]
    return [
        LocalFeatures(points[offsets[i] : offsets[i + 1]], descriptors[offsets[i] : offsets[i + 1]], int(sides[i])) if sides[i] >= 0 else None
        for i in range(n)
    ]
