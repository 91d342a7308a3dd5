"""Keypoints stay in the HDF5 segments and are read per candidate.

At 400 SIFT keypoints an entry's keypoints weigh ~55 KB against ~0.8 KB for
its embedding and LBP histogram, so a catalog that held them in RAM stopped at
about 30k entries on a 24 GB machine (issue 13). A segment's keypoints are
stored as two chunked datasets (not compressed: see `KEYPOINT_COMPRESSION`) with per-entry offsets; a reader
keeps the segment file open (segments are immutable, and an open file stays
readable after a compaction unlinks it) and reads only the rows of the few
candidates it verifies.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from pipeline.features.local import LocalFeatures

CHUNK_ROWS = 512
"""Keypoint rows per HDF5 chunk (64 KB of SIFT descriptors): one entry spans one or two chunks."""
KEYPOINT_COMPRESSION: str | None = None
"""HDF5 filter of new segments' keypoints. gzip (level 1) kept 79 % of the bytes and cost 0.56 ms per entry read
against 0.026 ms stored plain (a 10k segment, /work/exp/kpread.py): at 10k entries a query read ~17 candidates'
keypoints, 14 ms. Plain: 10k-distractor query p50 161 -> 142 ms, a full merge of 10k entries 11.6 -> 3.6 s,
disk +27 % (44 KB per entry at 400 keypoints). Segments written with gzip are still read."""
SURFACE_COMPRESSION: str | None = "gzip"
"""HDF5 filter of the stored reliefs (one chunk per patch): int8 relief quantised to 1/32 of a local standard deviation."""


def write_keypoints(f: h5py.File, chunks: Iterable[Sequence[LocalFeatures | None]]) -> None:
    """Store the keypoints of a segment's entries (in entry order, given in chunks) in group `local` of `f`.

    HDF5 has no ragged arrays: all entries' keypoints are concatenated, with
    `offsets` (N+1,) int64 into them. An entry without local features stores
    side -1; one with zero keypoints, side >= 0. Nothing is written when no
    entry has keypoints. Each chunk is appended as it comes, so a compaction
    of 65k entries holds one chunk's keypoints at a time (it held all of
    them: 1.4 GB more at 10k entries, issue 14). Entries with a relief
    (`LocalFeatures.surface`, photos with no cake found) store it in
    `surface` (M, S, S) int8, with `surface_of` (N,) int32 its row per entry
    (-1: none); a segment without any stores neither.
    """
    counts: list[int] = []
    sides: list[int] = []
    surface_of: list[int] = []
    g = None
    total = stored = 0
    for feats in chunks:
        present = [x for x in feats if x is not None]
        counts += [len(x) if x is not None else 0 for x in feats]
        sides += [x.side if x is not None else -1 for x in feats]
        reliefs = [x.surface for x in feats if x is not None and x.surface is not None]
        for x in feats:
            has = x is not None and x.surface is not None
            surface_of.append(stored if has else -1)
            stored += has
        if not present:
            continue
        if g is None:
            width = int(present[0].descriptors.shape[1])
            g = f.create_group("local")
            for name, cols, dtype in (("points", 2, np.float32), ("descriptors", width, np.uint8)):
                g.create_dataset(name, shape=(0, cols), maxshape=(None, cols), dtype=dtype, chunks=(CHUNK_ROWS, cols),
                                 compression=KEYPOINT_COMPRESSION)
        points = np.concatenate([x.points for x in present]).astype(np.float32).reshape(-1, 2)
        descriptors = np.concatenate([x.descriptors for x in present]).astype(np.uint8).reshape(len(points), width)
        for name, data in (("points", points), ("descriptors", descriptors)):
            g[name].resize(total + len(data), axis=0)
            g[name][total:] = data
        total += len(points)
        if reliefs:
            _append_surfaces(g, np.stack(reliefs).astype(np.int8))
    if g is None:
        return
    g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    g.create_dataset("side", data=np.array(sides, dtype=np.int32))
    if "surface" in g:
        g.create_dataset("surface_of", data=np.array(surface_of, dtype=np.int32))


def _append_surfaces(g: h5py.Group, reliefs: np.ndarray) -> None:
    """Append (M, S, S) int8 reliefs to `g`'s `surface` dataset, created on the first."""
    if "surface" not in g:
        side = reliefs.shape[1:]
        g.create_dataset("surface", shape=(0, *side), maxshape=(None, *side), dtype=np.int8, chunks=(1, *side),
                         compression=SURFACE_COMPRESSION)
    data = g["surface"]
    start = data.shape[0]
    data.resize(start + len(reliefs), axis=0)
    data[start:] = reliefs


class SegmentKeypoints:
    """The keypoints of one segment's entries, read from its open file on demand.

    Parameters
    ----------
    path : Path
        The segment file (for messages).
    file : h5py.File
        The segment, open for reading; kept open for the object's life.
    """

    def __init__(self, path: Path, file: h5py.File) -> None:
        g = file["local"]
        self.path = Path(path)
        self._file = file
        self._offsets: np.ndarray = g["offsets"][()]
        self._sides: np.ndarray = g["side"][()]
        self._points = g["points"]
        self._descriptors = g["descriptors"]
        self._surface_of: np.ndarray | None = g["surface_of"][()] if "surface_of" in g else None
        self._surfaces = g["surface"] if "surface" in g else None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, file: h5py.File) -> "SegmentKeypoints | None":
        """The segment's keypoints, or None when it stores none (local features were off)."""
        return cls(path, file) if "local" in file else None

    def __len__(self) -> int:
        return int(self._sides.size)

    def read(self, index: int, surfaces: bool = True) -> LocalFeatures | None:
        """Keypoints of the segment's entry `index` (None: stored without them), with its relief unless `surfaces` is False."""
        side = int(self._sides[index])
        if side < 0:
            return None
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        with self._lock:  # h5py serialises anyway; the lock keeps one dataset read whole
            points = self._points[start:stop]
            descriptors = self._descriptors[start:stop]
            surface = self._surfaces_of(index, index + 1).get(index) if surfaces else None
        return LocalFeatures(points, descriptors, side, surface)

    def read_all(self) -> list[LocalFeatures | None]:
        """Keypoints of every entry of the segment, in one read per dataset."""
        return self.read_span(0, len(self))

    def read_span(self, start: int, stop: int, surfaces: bool = True) -> list[LocalFeatures | None]:
        """Keypoints of entries [start, stop), in one read per dataset (compaction, index builds); their reliefs
        unless `surfaces` is False."""
        o = self._offsets
        lo, hi = int(o[start]), int(o[stop])
        with self._lock:
            points, descriptors = self._points[lo:hi], self._descriptors[lo:hi]
            reliefs = self._surfaces_of(start, stop) if surfaces else {}
        return [LocalFeatures(points[o[i] - lo:o[i + 1] - lo], descriptors[o[i] - lo:o[i + 1] - lo], int(self._sides[i]),
                              reliefs.get(i)) if self._sides[i] >= 0 else None for i in range(start, stop)]

    def _surfaces_of(self, start: int, stop: int) -> dict[int, np.ndarray]:
        """The reliefs of entries [start, stop) that have one, by entry index, in one read; under the lock."""
        if self._surface_of is None or self._surfaces is None:
            return {}
        rows = self._surface_of[start:stop]
        have = np.flatnonzero(rows >= 0)
        if not have.size:
            return {}
        lo, hi = int(rows[have].min()), int(rows[have].max()) + 1
        block = self._surfaces[lo:hi]
        return {start + int(i): block[int(rows[i]) - lo] for i in have}
