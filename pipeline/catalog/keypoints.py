"""Keypoints stay in the HDF5 segments and are read per candidate.

At 400 SIFT keypoints an entry's keypoints weigh ~55 KB against ~0.8 KB for
its embedding and LBP histogram, so a catalog that held them in RAM stopped at
about 30k entries on a 24 GB machine (issue 13). A segment's keypoints are
stored as two chunked, compressed datasets with per-entry offsets; a reader
keeps the segment file open (segments are immutable, and an open file stays
readable after a compaction unlinks it) and reads only the rows of the few
candidates it verifies.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from pipeline.features.local import LocalFeatures

CHUNK_ROWS = 512
"""Keypoint rows per HDF5 chunk (64 KB of SIFT descriptors): one entry spans one or two chunks."""


def write_keypoints(f: h5py.File, feats: Sequence[LocalFeatures | None]) -> None:
    """Store the keypoints of a segment's entries (in entry order) in group `local` of `f`.

    HDF5 has no ragged arrays: all entries' keypoints are concatenated, with
    `offsets` (N+1,) int64 into them. An entry without local features stores
    side -1; one with zero keypoints, side >= 0. Nothing is written when no
    entry has keypoints.
    """
    present = [x for x in feats if x is not None]
    if not present:
        return
    width = present[0].descriptors.shape[1]
    counts = [len(x) if x is not None else 0 for x in feats]
    total = int(sum(counts))
    g = f.create_group("local")
    g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    g.create_dataset("side", data=np.array([x.side if x is not None else -1 for x in feats], dtype=np.int32))
    points = np.concatenate([x.points for x in present]).astype(np.float32).reshape(-1, 2)
    descriptors = np.concatenate([x.descriptors for x in present]).astype(np.uint8).reshape(-1, width)
    for name, data in (("points", points), ("descriptors", descriptors)):
        if total == 0:  # HDF5 cannot chunk an empty dataset (every entry has zero keypoints: 1-pixel photos)
            g.create_dataset(name, data=data)
        else:
            g.create_dataset(name, data=data, chunks=(min(CHUNK_ROWS, total), data.shape[1]), compression="gzip", compression_opts=1)


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
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, file: h5py.File) -> "SegmentKeypoints | None":
        """The segment's keypoints, or None when it stores none (local features were off)."""
        return cls(path, file) if "local" in file else None

    def __len__(self) -> int:
        return int(self._sides.size)

    def read(self, index: int) -> LocalFeatures | None:
        """Keypoints of the segment's entry `index` (None: stored without them)."""
        side = int(self._sides[index])
        if side < 0:
            return None
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        with self._lock:  # h5py serialises anyway; the lock keeps one dataset read whole
            points = self._points[start:stop]
            descriptors = self._descriptors[start:stop]
        return LocalFeatures(points, descriptors, side)

    def read_all(self) -> list[LocalFeatures | None]:
        """Keypoints of every entry of the segment, in one read per dataset."""
        return self.read_span(0, len(self))

    def read_span(self, start: int, stop: int) -> list[LocalFeatures | None]:
        """Keypoints of entries [start, stop), in one read per dataset (compaction, index builds)."""
        o = self._offsets
        lo, hi = int(o[start]), int(o[stop])
        with self._lock:
            points, descriptors = self._points[lo:hi], self._descriptors[lo:hi]
        return [LocalFeatures(points[o[i] - lo:o[i + 1] - lo], descriptors[o[i] - lo:o[i + 1] - lo], int(self._sides[i]))
                if self._sides[i] >= 0 else None for i in range(start, stop)]
