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
names, and get a `CatalogSnapshot`. A commit merges the newest segments as
`pipeline.catalog.tiers` decides (levels of segment sizes, bounded work).

Entries change only through `pipeline.catalog.writer.CatalogWriter`, which
checks them and builds on `commit` and `replace_all` here.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
from filelock import FileLock

from pipeline.catalog.columns import Columns, PackedNames, SlotBlock, gather_keypoints, sha256_digests
from pipeline.catalog.entries import CatalogEntry, NewEntry
from pipeline.catalog.keypoints import SegmentKeypoints, write_keypoints
from pipeline.catalog.snapshot import CatalogSnapshot
from pipeline.catalog.tiers import merge_count
from pipeline.features.local import LocalFeatures
from pipeline.fsutil import atomic_write_bytes, fsync_path

FORMAT = "teaprint-catalog/1"
MANIFEST = "MANIFEST.json"
BIG_SEGMENT = 65_536
"""Entries (plus tombstones) from which a segment is never merged by a commit's compaction."""
MERGE_FACTOR = 8
"""Segments of one size level merged together by a commit (`pipeline.catalog.tiers`)."""
_COMPACT_CHUNK = 256  # entries whose keypoints a compaction holds at once (~14 MB at 400 SIFT keypoints; 1,024 peaked +212 MB on 10k, 256 +129 MB, same time)


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
    """Which slots one segment file holds and which entries it removes (segments never change).

    Its entries' descriptors and names live in the columns only: kept here
    too, they doubled the record's memory (1M entries: 0.66 KB per entry of
    the 1.85 KB an open added, `bench/bench_open.py`).
    """

    name: str
    slots: np.ndarray
    removed: frozenset[str]

    def size(self) -> int:
        """Entries plus tombstones: what rewriting it costs."""
        return int(self.slots.size) + len(self.removed)


@dataclass
class _State:
    generation: int = 0
    model_id: str | None = None
    features: dict | None = None
    catalog_id: str | None = None
    next_slot: int = 0
    segments: list[str] = field(default_factory=list)
    columns: Columns = field(default_factory=Columns)


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
        Merge the newest small segments when a commit leaves more than this under `big_segment`
        (see `pipeline.catalog.tiers.merge_count`).
    big_segment : int
        Segments with at least this many entries (plus tombstones) are never merged by a commit,
        and no commit's merge writes more than this.
    features : dict or None
        The settings that shaped the descriptors (`pipeline.prepare.feature_settings`),
        recorded in the manifest beside the model id. Opening a non-empty index
        recorded with other ones raises `FeatureMismatchError`; None accepts any.
    """

    def __init__(self, directory: Path, model_id: str | None = None, max_segments: int = 16, features: dict | None = None,
                 big_segment: int = BIG_SEGMENT) -> None:
        self.directory = Path(directory)
        self.big_segment = big_segment
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
            return self._current()

    def _check_model(self, index_model: str | None, index_features: dict | None) -> None:
        if self.model_id and index_model and index_model != self.model_id and len(self):
            raise ModelMismatchError(index_model, self.model_id, self.directory)
        if self.features is not None and not features_agree(index_features, self.features) and len(self):
            raise FeatureMismatchError(index_features, self.features, self.directory)

    def __len__(self) -> int:
        return self._state.columns.live

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
        with self._state_lock:
            return list(self._current().entries)

    def get(self, sha256: str) -> CatalogEntry | None:
        with self._state_lock:
            return self._current().get(sha256)

    def labels(self) -> list[str]:
        with self._state_lock:
            snap = self._current()
            return snap.labels[snap.rows].tolist()

    def _current(self) -> CatalogSnapshot:
        state = self._state
        if self._snapshot is None or self._snapshot.generation != state.generation:
            self._snapshot = CatalogSnapshot.of(self.directory, state.generation, state.model_id, state.catalog_id, state.columns)
        return self._snapshot

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
            if adds and len(self) and self._state.model_id not in (None, model_id):
                raise ModelMismatchError(str(self._state.model_id), str(model_id), self.directory)
            features = self.features if self.features is not None else self._state.features
            columns = self._state.columns
            removes = list(dict.fromkeys(removes))
            removed = tuple(s for s, slot in zip(removes, columns.live_slots(removes).tolist()) if slot >= 0)
            registered = {e.sha256 for e, slot in zip(adds, columns.live_slots([e.sha256 for e in adds]).tolist()) if slot >= 0}
            fresh: dict[str, NewEntry] = {}
            duplicates = []
            for entry in adds:
                if (entry.sha256 in registered and entry.sha256 not in removed) or entry.sha256 in fresh:
                    duplicates.append(entry.sha256)
                else:
                    fresh[entry.sha256] = entry
            if not fresh and not removed:
                return CommitResult(duplicates=tuple(duplicates), generation=self._state.generation)
            stored = before_write(list(fresh.values())) if before_write and fresh else list(fresh.values())
            state = self._state
            generation = state.generation + 1
            name = f"seg-{generation:08d}.h5"
            slots = np.arange(state.next_slot, state.next_slot + len(stored), dtype=np.int64)
            _write_segment(self.directory / name, stored, [[e.local for e in stored]], slots, removed, str(model_id or state.model_id))
            segments = [*state.segments, name]
            self._write_manifest(generation, model_id or state.model_id, segments, features, state.next_slot + len(stored))
            self.refresh()
            for _ in range(len(segments)):  # a merge may complete a run of the next level
                if not self._compact_locked():
                    break
            return CommitResult(tuple(e.sha256 for e in stored), tuple(duplicates), removed, self._state.generation)

    def compact(self) -> None:
        """Merge segments (readers are never blocked); see `_compact_locked`."""
        with self._write_lock, FileLock(str(self.directory / ".lock")):
            self.refresh()
            self._compact_locked(everything=True)

    def replace_all(self, entries: Sequence[NewEntry], model_id: str, features: dict | None = None) -> None:
        """Swap the whole index for `entries` built with `model_id` and `features` in one step (re-embedding).

        The new entries get new slots (slots are never reused), so any index
        keyed by slot sees the old ones die and the new ones arrive.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._write_lock, FileLock(str(self.directory / ".lock")), self._state_lock:
            self.refresh_unchecked()
            state = self._state
            generation = state.generation + 1
            name = f"seg-{generation:08d}.h5"
            slots = np.arange(state.next_slot, state.next_slot + len(entries), dtype=np.int64)
            _write_segment(self.directory / name, list(entries), [[e.local for e in entries]], slots, (), model_id)
            old = state.segments
            self._write_manifest(generation, model_id, [name], features, state.next_slot + len(entries))
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

    def _compact_locked(self, everything: bool = False) -> bool:
        """Merge the newest segments into one, keeping every entry's slot; True when it merged.

        Which ones: `pipeline.catalog.tiers.merge_count` (segments of
        `big_segment` entries or more are never merged again: at 1M entries a
        full merge would read and write every keypoint (~44 GB) and
        need that much free disk again while both copies exist).
        `everything` merges all segments (`compact()`).
        """
        state = self._state
        names = state.segments
        segs = [self._cache[n] for n in names]
        n = len(segs) if everything else merge_count([s.size() for s in segs], self.big_segment, MERGE_FACTOR, self.max_segments)
        if n < 2:
            return False
        k = len(segs) - n
        cols = state.columns
        owned = np.concatenate([s.slots for s in segs[k:]]) if segs[k:] else np.zeros(0, np.int64)
        keep = np.sort(owned[cols.alive[owned]]) if owned.size else owned
        gone = _carried_tombstones(cols, segs[:k])
        # Read and written in chunks of entries (bounded RAM whatever the merge's size).
        keypoints = (gather_keypoints(cols, keep[i:i + _COMPACT_CHUNK]) for i in range(0, keep.size, _COMPACT_CHUNK))
        snap = self._current()
        entries = [snap.entry(r) for r in keep.tolist()]
        generation = state.generation + 1
        name = f"seg-{generation:08d}.h5"
        _write_segment(self.directory / name, entries, keypoints, keep, gone, str(state.model_id))
        self._write_manifest(generation, state.model_id, [*names[:k], name], state.features, state.next_slot)
        self.refresh()
        self._remove_files(names[k:])
        return True

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

    def _write_manifest(self, generation: int, model_id: str | None, segments: list[str], features: dict | None,
                        next_slot: int) -> None:
        data = {"format": FORMAT, "generation": generation, "model_id": model_id, "features": features, "segments": segments,
                "catalog_id": self._state.catalog_id or uuid.uuid4().hex, "next_slot": int(next_slot)}
        atomic_write_bytes(self.directory / MANIFEST, json.dumps(data, indent=1).encode())
        self._cleanup_orphans(set(segments))

    def _cleanup_orphans(self, live: set[str]) -> None:
        # Segments left by a writer killed before its manifest swap hold nothing
        # committed; they are removed only under the writer lock.
        for p in self.directory.glob("seg-*.h5*"):
            if p.name not in live and p.name not in self._state.segments:
                p.unlink(missing_ok=True)

    def _load(self, manifest: dict) -> _State:
        """The state `manifest` describes, applied to the loaded columns where it extends them.

        Commits append segments and a compaction replaces the newest ones by
        one that keeps their live entries' slots, so when the manifest keeps a
        prefix of the loaded segments only the rest is read (O(new entries));
        slots of replaced segments missing from their replacement die. A
        manifest sharing nothing with what is loaded (another catalog, a
        re-embedding, a full compaction) is read whole into new columns.
        """
        names = list(manifest["segments"])
        state = self._state
        shared = 0
        while shared < min(len(names), len(state.segments)) and names[shared] == state.segments[shared]:
            shared += 1
        same_catalog = manifest.get("catalog_id") == state.catalog_id and manifest.get("model_id") == state.model_id
        own = shared == 0 or not same_catalog
        if own:
            columns, dropped, todo = Columns(), [], names
            columns.expect(int(manifest.get("next_slot", 0)))
        else:
            columns, dropped, todo = state.columns, state.segments[shared:], names[shared:]
        # reading may raise (a compaction removed a segment; the load is retried). New columns take each segment as
        # it is read (a failure leaves them unused; a 1M open held every segment's block at once, a 0.77 GB peak);
        # the live columns take nothing before every new segment is read.
        fresh: list[_Segment] = []
        pending: list[tuple[_Segment, SlotBlock]] = []
        next_legacy = columns.n
        for n in todo:
            seg, block = _read_segment(self.directory / n, next_legacy)
            next_legacy = max(next_legacy, int(seg.slots.max()) + 1 if seg.slots.size else next_legacy)
            fresh.append(seg)
            if own:
                columns.add(block, settle=False)  # renames and tombstones: settled once, below
            else:
                pending.append((seg, block))
        if own:
            columns.settle([s.slots.astype(np.int64) for s in fresh], [_removed_digests(s) for s in fresh])
        for seg in fresh:
            self._cache[seg.name] = seg
        old_slots = [self._cache[n].slots for n in dropped if n in self._cache]
        for seg, block in pending:
            _apply(columns, seg, block)
        if old_slots:
            still = np.concatenate([s.slots for s in fresh]) if fresh else np.zeros(0, np.int64)
            lost = np.setdiff1d(np.concatenate(old_slots), still)
            still_live = lost[columns.live_slots(columns.digest[lost]) == lost]  # one look-up for all of them
            columns.remove([columns.sha256[s] for s in still_live.tolist()])
        live = set(names)
        for name in list(self._cache):
            if name not in live:
                del self._cache[name]
        next_slot = int(manifest.get("next_slot", columns.n))
        return _State(manifest["generation"], manifest.get("model_id"), manifest.get("features"), manifest.get("catalog_id"),
                      max(next_slot, columns.n), names, columns)


def _carried_tombstones(columns: Columns, older: Sequence[_Segment]) -> tuple[str, ...]:
    """The ids a merged segment must remove: those dead in the `older` segments it follows and live in none of them.

    The merged segments' own tombstones are not copied, so their removals of
    older entries are written again. An id dead in an older segment but
    live in a later older one was renamed there (a rename is a new slot):
    that later copy kills the dead one on load, and a tombstone after it
    would kill the live copy instead (a renamed entry lost at the next
    compaction that did not merge its segment, until 2026-12-07).
    """
    if not older:
        return ()
    slots = np.concatenate([s.slots for s in older])
    dead = np.unique(slots[~columns.alive[slots]])
    if not dead.size:
        return ()
    live_at = columns.live_slots(columns.digest[dead])
    live_older = np.isin(live_at, slots)
    return tuple(sorted({columns.sha256[int(slot)] for slot in dead[~live_older].tolist()}))


def _apply(columns: Columns, segment: _Segment, block: SlotBlock) -> None:
    """One segment's tombstones, then its entries, into `columns`."""
    columns.remove(sorted(segment.removed))
    columns.add(block)


def _write_segment(path: Path, entries: Sequence[NewEntry], keypoints: Iterable[Sequence[LocalFeatures | None]], slots: np.ndarray,
                   removed: Sequence[str], model_id: str) -> None:
    """One immutable segment file, written to a temporary name, fsynced, renamed in.

    A stored entry (`CatalogEntry`, e.g. renamed or compacted) keeps its
    `added_at`; a new one gets the current time. `keypoints` are given in
    consecutive chunks (`pipeline.catalog.keypoints.write_keypoints`): the
    i-th keypoints overall and `slots[i]` belong to `entries[i]`.
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
        _write_names(g, "path", [os.fsencode(e.path) for e in entries])
        _write_names(g, "label", [os.fsencode(e.label) for e in entries])
        emb = np.stack([e.embedding for e in entries]).astype(np.float32) if n else np.zeros((0, 0), np.float32)
        lbp = np.stack([e.lbp for e in entries]).astype(np.float32) if n else np.zeros((0, 0), np.float32)
        g.create_dataset("embedding", data=emb)
        g.create_dataset("lbp", data=lbp)
        g.create_dataset("added_at", data=added_at)
        g.create_dataset("slot", data=np.asarray(slots, dtype=np.int64).reshape(n))
        _write_names(g, "model_id", [(e.model_id if isinstance(e, CatalogEntry) else model_id).encode() for e in entries])
        f.create_dataset("removed", data=np.array(list(removed), dtype="S64").reshape(len(removed)))
        write_keypoints(f, keypoints)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def _write_names(group: h5py.Group, key: str, values: Sequence[bytes]) -> None:
    """Store names (filesystem bytes) as one NUL-separated byte string, dataset `<key>_bytes` (uint8).

    One contiguous array reads and decodes in two calls; h5py's variable-length
    strings cost a read and a decode per name (1M entries: 2.4 s of a 3.5 s
    open for paths, labels and model ids; bench/bench_open.py). No file name,
    label or model id holds a NUL byte (POSIX names cannot).
    """
    if any(b"\0" in v for v in values):
        raise CatalogError(f"a {key} holds a NUL byte")
    group.create_dataset(f"{key}_bytes", data=np.frombuffer(b"\0".join(values), dtype=np.uint8))


def _read_strings(group: h5py.Group, key: str, count: int) -> list[str]:
    """Names stored by `_write_names` as a list of str (the model ids, which `_shared` then makes one object)."""
    if f"{key}_bytes" not in group or count == 0:
        return _read_names(group, key, count).tolist()
    # NUL is one byte in every filesystem encoding Python uses and never part of a multi-byte sequence,
    # so decoding the whole string then splitting it gives each name as decoding it alone would.
    names = group[f"{key}_bytes"][()].tobytes().decode(sys.getfilesystemencoding(), "surrogateescape").split("\0")
    if len(names) != count:
        raise CatalogError(f"{group.file.filename}: {len(names)} {key}s stored for {count} entries")
    return names


def _read_names(group: h5py.Group, key: str, count: int) -> PackedNames:
    """Names stored by `_write_names` (or, in segments written before it, as variable-length strings)."""
    if f"{key}_bytes" not in group:  # the layout before 2026-12-06
        encoding = sys.getfilesystemencoding()
        return PackedNames.of([v.decode(encoding, "surrogateescape") if isinstance(v, bytes) else v for v in group[key][()].tolist()])
    names = PackedNames.separated(group[f"{key}_bytes"][()]) if count else PackedNames.of([])
    if len(names) != count:
        raise CatalogError(f"{group.file.filename}: {len(names)} {key}s stored for {count} entries")
    return names


def _removed_digests(segment: _Segment) -> np.ndarray:
    """The digests of the ids `segment` removes, shape (R, 32), uint8 (an id that is no sha256 matches nothing)."""
    digests, valid = sha256_digests(sorted(segment.removed))
    return digests[valid]


def _digests(ids: np.ndarray, path: Path) -> np.ndarray:
    """A segment's sha256 ids (an `S64` dataset) as 32-byte digests."""
    digests, valid = sha256_digests(np.asarray(ids, dtype="S64"))
    if not valid.all():
        raise CatalogError(f"{path}: {int((~valid).sum())} sha256 ids are not 64 lowercase hex digits")
    return digests


def _shared(values: list[str]) -> list[str]:
    """`values` with equal strings as one object (a segment's entries nearly always share one model id)."""
    if values and values.count(values[0]) == len(values):
        return [values[0]] * len(values)
    return values


def _read_segment(path: Path, first_legacy_slot: int) -> tuple[_Segment, SlotBlock]:
    """A segment's slots and tombstones, and its entries for the columns (keypoints stay in the file, which is kept open for them).

    Segments written before slots were recorded number their entries from
    `first_legacy_slot` (the slot count of the segments before them).
    """
    f = h5py.File(path, "r")
    try:
        g = f["entries"]
        n = len(g["sha256"])
        slots = g["slot"][()].astype(np.int64) if "slot" in g else np.arange(first_legacy_slot, first_legacy_slot + n, dtype=np.int64)
        keypoints = SegmentKeypoints.open(path, f)
        block = SlotBlock(
            slots=slots,
            sha256=_digests(g["sha256"][()], path),
            paths=_read_names(g, "path", n),
            labels=_read_names(g, "label", n),
            model_ids=_shared(_read_strings(g, "model_id", n)),
            embeddings=g["embedding"][()],
            lbps=g["lbp"][()],
            added_at=g["added_at"][()],
            keypoints=keypoints,
        )
        removed = frozenset(s.decode() for s in f["removed"][()])
    except BaseException:
        f.close()
        raise
    if keypoints is None:
        f.close()
    return _Segment(path.name, slots, removed), block
