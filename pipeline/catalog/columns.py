"""The loaded catalog as columns indexed by slot, grown in place.

Every entry ever committed gets a slot: an integer assigned in commit order
and never reused (a rename is a new slot; compaction keeps slots). Columns
hold, per slot, what a search needs in RAM (embedding, LBP histogram, label,
liveness) and where its keypoints lie on disk. They only grow: a commit
writes new slots past the end and clears removed slots' `alive` flag, so a
new generation costs O(its own entries), not O(catalog) (at 100k entries a
full rebuild per commit cost ~0.7 s; issue 13). Readers never see the
columns directly: `CatalogSnapshot` takes views of the first `n` slots and a
copy of `alive`, and rows below `n` never change once written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pipeline.catalog.keypoints import SegmentKeypoints
from pipeline.features.local import LocalFeatures


HEADROOM = 4
"""Columns sized for a whole catalog at open leave 1/HEADROOM of its slots free for the next registrations."""

SPAN = 4096
"""Most entries whose keypoints `gather_keypoints` reads in one span (~220 MB at 400 SIFT keypoints each)."""


@dataclass(frozen=True)
class PackedNames:
    """Names as one byte string: name `i` is `data[starts[i]:starts[i] + lengths[i]]` (filesystem bytes).

    Attributes
    ----------
    data : ndarray, shape (M,), dtype uint8
    starts, lengths : ndarray, shape (K,), dtype int64
    """

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, names: Sequence[str]) -> "PackedNames":
        encoded = [os.fsencode(n) for n in names]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        return cls(np.frombuffer(b"".join(encoded), np.uint8), np.cumsum(lengths) - lengths, lengths)

    @classmethod
    def separated(cls, data: np.ndarray, separator: int = 0) -> "PackedNames":
        """Names stored back to back with `separator` between them (`data` is kept, separators included)."""
        ends = np.concatenate([np.flatnonzero(data == separator), [data.size]]).astype(np.int64)
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        return cls(data, starts, ends - starts)

    def __len__(self) -> int:
        return int(self.starts.size)

    def tolist(self) -> list[str]:
        raw = self.data.tobytes()
        return [os.fsdecode(raw[s:s + n]) for s, n in zip(self.starts.tolist(), self.lengths.tolist())]


class NameColumn:
    """Names by slot, as their bytes in one growing buffer; read back as str (`os.fsdecode`).

    A str object per entry costs ~50 B of header beside its characters (1M
    entries: paths 112 B and labels 68 B per entry); here a name costs its
    bytes, a separator and 12 B. Like the numeric columns, rows below a
    snapshot's count never change and growth copies into new arrays, so
    readers need no lock.
    """

    def __init__(self) -> None:
        self._data = np.zeros(0, np.uint8)
        self._used = 0
        self._start = np.zeros(0, np.int64)
        self._length = np.zeros(0, np.int32)

    def reserve(self, capacity: int, n: int) -> None:
        """Per-slot room for `capacity` slots, keeping the first `n`."""
        start, length = np.zeros(capacity, np.int64), np.zeros(capacity, np.int32)
        start[:n], length[:n] = self._start[:n], self._length[:n]
        self._start, self._length = start, length

    def write(self, slots: np.ndarray, names: PackedNames) -> None:
        """Store `names[i]` at `slots[i]` (their bytes appended to the buffer)."""
        need = self._used + names.data.size
        if need > self._data.size:
            data = np.zeros(max(need, 2 * self._data.size, 1 << 16), np.uint8)
            data[:self._used] = self._data[:self._used]
            self._data = data
        self._data[self._used:need] = names.data
        self._start[slots] = self._used + names.starts
        self._length[slots] = names.lengths
        self._used = need

    def __getitem__(self, rows: Any) -> Any:
        """The name of slot `rows` (an int), or an object array of the names of `rows` (an index array)."""
        if isinstance(rows, (int, np.integer)):
            s = int(self._start[rows])
            return os.fsdecode(self._data[s:s + int(self._length[rows])].tobytes())
        start, length = self._start[rows], self._length[rows]
        out = np.empty(start.size, object)
        if start.size < 4096:  # a few rows: decode each from the buffer (no copy of it)
            out[:] = [os.fsdecode(self._data[s:s + n].tobytes()) for s, n in zip(start.tolist(), length.tolist())]
        else:
            raw = self._data[:self._used].tobytes()
            out[:] = [os.fsdecode(raw[s:s + n]) for s, n in zip(start.tolist(), length.tolist())]
        return out

    def head(self, n: int) -> "NameView":
        """The first `n` slots' names as they stand (a snapshot's labels)."""
        return NameView(self, n)


class NameView:
    """Read-only names of a column's first `n` slots, indexed like an object array of them."""

    def __init__(self, column: NameColumn, n: int) -> None:
        self._column, self._n = column, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, rows: Any) -> Any:
        if isinstance(rows, (int, np.integer)):
            if not -self._n <= rows < self._n:
                raise IndexError(rows)
            return self._column[int(rows) % self._n]
        return self._column[np.arange(self._n)[rows]]

    def tolist(self) -> list[str]:
        return list(self[np.arange(self._n)])


_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def sha256_digests(ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32-byte digests of sha256 ids (64 lowercase hex digits, as str or an `S64` array).

    Returns
    -------
    digests : ndarray, shape (K, 32), dtype uint8
    valid : ndarray, shape (K,), dtype bool
        False where an id is not 64 lowercase hex digits (its digest row is meaningless).
    """
    if isinstance(ids, np.ndarray) and ids.dtype == np.dtype("S64"):
        raw = np.ascontiguousarray(ids).view(np.uint8).reshape(-1, 64)
    else:
        encoded = [i.encode("ascii", "replace") if isinstance(i, str) else bytes(i) for i in ids]
        raw = np.frombuffer(b"".join(e.ljust(64, b"\0")[:64] for e in encoded), np.uint8).reshape(-1, 64)
        if any(len(e) != 64 for e in encoded):
            raw = raw.copy()
            raw[[len(e) != 64 for e in encoded], 0] = 0  # never a digit: marks the id invalid
    nibbles = _NIBBLE[raw]
    valid = (nibbles != 255).all(axis=1)
    return (nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15), valid


def _keys(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as one uint64: what the look-up sorts on."""
    return np.ascontiguousarray(digests[:, :8]).view(np.uint64).ravel()


class HexView:
    """sha256 ids of a digest column, indexed like an object array of their hex strings."""

    def __init__(self, digests: np.ndarray) -> None:
        self._digests = digests

    def __getitem__(self, rows: Any) -> Any:
        if isinstance(rows, (int, np.integer)):
            return self._digests[rows].tobytes().hex()
        picked = self._digests[rows]
        out = np.empty(len(picked), object)
        out[:] = [d.tobytes().hex() for d in picked]
        return out


@dataclass(frozen=True)
class SlotBlock:
    """Entries of one segment, to be written into the columns.

    Attributes
    ----------
    slots : ndarray, shape (K,), dtype int64
    sha256 : ndarray, shape (K, 32), dtype uint8
        The entries' sha256 digests (`sha256_digests`).
    model_ids : sequence of str, length K
    paths, labels : PackedNames, length K
    embeddings : ndarray, shape (K, D), dtype float32
    lbps : ndarray, shape (K, B), dtype float32
    added_at : ndarray, shape (K,), dtype float64
    keypoints : SegmentKeypoints or None
        Where row `i` of this block finds its keypoints (entry `i` of the segment).
    """

    slots: np.ndarray
    sha256: np.ndarray
    paths: PackedNames
    labels: PackedNames
    model_ids: Sequence[str]
    embeddings: np.ndarray
    lbps: np.ndarray
    added_at: np.ndarray
    keypoints: SegmentKeypoints | None


class Columns:
    """Per-slot arrays of the loaded catalog; mutated only under the record's state lock.

    sha256 ids are held as 32-byte digests and found through a sorted array
    of their first 8 bytes (`_sorted`: keys, slots, how many slots it covers;
    newer slots are scanned): a str and a dict entry per id cost ~180 B per
    entry (1M entries: 180 MB), this costs 48 B.
    """

    LOOKUP_TAIL = 65536
    """Slots past the sorted look-up before they are merged into it."""

    def __init__(self) -> None:
        self.n = 0
        self._capacity = 0
        self._expected = 0
        self.embedding = np.zeros((0, 0), np.float32)
        self.lbp = np.zeros((0, 0), np.float32)
        self.added_at = np.zeros(0, np.float64)
        self.alive = np.zeros(0, bool)
        self.digest = np.zeros((0, 32), np.uint8)
        self.path = NameColumn()
        self.label = NameColumn()
        self.model_id = np.zeros(0, object)
        self.keypoint_file = np.zeros(0, object)
        self.keypoint_index = np.zeros(0, np.int64)
        # Replaced whole (never mutated), so a reader gets one consistent triple without a lock.
        self._sorted: tuple[np.ndarray, np.ndarray, int] = (np.zeros(0, np.uint64), np.zeros(0, np.int64), 0)

    @property
    def live(self) -> int:
        return int(np.count_nonzero(self.alive[:self.n]))

    @property
    def sha256(self) -> HexView:
        """The sha256 id of each slot as a hex str (`sha256[slot]`)."""
        return HexView(self.digest)

    def slot(self, sha256: str, alive: np.ndarray | None = None) -> int | None:
        """The live slot of `sha256` (live per `alive`, a snapshot's, else now), or None."""
        found = int(self.live_slots([sha256], alive)[0])
        return found if found >= 0 else None

    def live_slots(self, ids: Sequence[str] | np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
        """The live slot of each id (hex str, or a (K, 32) uint8 digest array), -1 where none; shape (K,), int64.

        `alive` (a snapshot's copy of the first slots' flags) says which slots are live; default: the columns' own.
        """
        if isinstance(ids, np.ndarray) and ids.dtype == np.uint8:
            digests, valid = ids, np.ones(len(ids), bool)
        else:
            digests, valid = sha256_digests(ids)
        alive = self.alive if alive is None else alive
        n = min(self.n, alive.size)
        out = np.full(len(digests), -1, np.int64)
        if not len(digests) or not n:
            return out
        keys, order, indexed = self._sorted
        digest = self.digest
        wanted = _keys(digests)
        lo = np.searchsorted(keys, wanted)
        sorted_hit = keys[np.minimum(lo, keys.size - 1)] == wanted if keys.size else np.zeros(wanted.size, bool)
        tail = _keys(digest[indexed:n]) if n > indexed else np.zeros(0, np.uint64)
        maybe = valid & (sorted_hit | np.isin(wanted, tail))
        for i in np.flatnonzero(maybe).tolist():
            hi = int(np.searchsorted(keys, wanted[i], "right"))
            slots = np.concatenate([order[lo[i]:hi], indexed + np.flatnonzero(tail == wanted[i])])
            slots = slots[slots < n]
            slots = slots[alive[slots] & (digest[slots] == digests[i]).all(axis=1)]
            if slots.size:
                out[i] = slots.max()
        return out

    def add(self, block: SlotBlock, settle: bool = True) -> None:
        """Write a block's entries at their slots (past the end: slots only grow) and mark them alive.

        An id already live at another slot (a renamed file) leaves it dead;
        an id twice in the block keeps its last slot. With `settle` False
        (a whole catalog read into new columns) neither is looked up here:
        `settle` does it once for every block written.
        """
        k = int(block.slots.size)
        if k == 0:
            return
        slots = block.slots.astype(np.int64)
        self._reserve(int(slots.max()) + 1, block.embeddings.shape[1], block.lbps.shape[1])
        before = self.live_slots(block.sha256) if settle else None
        self.embedding[slots] = block.embeddings
        self.lbp[slots] = block.lbps
        self.added_at[slots] = block.added_at
        self.digest[slots] = block.sha256
        self.model_id[slots] = np.array(list(block.model_ids) + [None], dtype=object)[:k]  # the None keeps a 1-D object array
        self.path.write(slots, block.paths)
        self.label.write(slots, block.labels)
        self.keypoint_file[slots] = block.keypoints
        self.keypoint_index[slots] = np.arange(k)
        self.alive[slots] = True
        self.n = max(self.n, int(slots.max()) + 1)
        if before is None:
            return
        self._kill_older_copies(slots, block.sha256, before)
        if self.n - self._sorted[2] > self.LOOKUP_TAIL:
            self._extend_lookup()

    def settle(self, written: Sequence[np.ndarray], removed: Sequence[np.ndarray]) -> None:
        """After blocks were added with `settle=False`: the liveness adding them one by one (`add`, `remove`) gives.

        One sort of every id instead of a look-up per block: a 1M catalog
        opened in 2.7-4.1 s with a look-up per segment, 1.35-2.15 s settled at
        once (4 alternated runs each; bench/README.md, "The vote's Hamming weight, a compaction's tombstones").

        Parameters
        ----------
        written : sequence of ndarray, dtype int64
            The slots of each block, in the order the blocks were added.
        removed : sequence of ndarray, shape (R_i, 32), dtype uint8
            The digests each block's segment removed (its tombstones, applied
            before its entries were added): `removed[i]` kills copies written
            by blocks before block `i`.
        """
        slots = np.concatenate([np.zeros(0, np.int64), *written])
        block_of = np.repeat(np.arange(len(written)), [w.size for w in written])
        keys = _keys(self.digest[slots])
        by_key = np.argsort(keys, kind="stable")  # stable: within one id, the order written
        sorted_keys = keys[by_key]
        groups = np.flatnonzero(np.diff(sorted_keys) == 0)  # an id written twice (a rename), or two ids sharing 8 bytes
        last = np.ones(slots.size, bool)  # the last write of its id (one copy of an id stays live)
        for start in np.unique(np.searchsorted(sorted_keys, sorted_keys[groups])).tolist():
            stop = int(np.searchsorted(sorted_keys, sorted_keys[start], "right"))
            newest: dict[bytes, int] = {}
            for at in by_key[start:stop].tolist():
                digest = self.digest[slots[at]].tobytes()
                if digest in newest:
                    last[newest[digest]] = False
                newest[digest] = at
        kept = np.zeros(self.n + 1, bool)
        kept[slots[last]] = True
        earlier = slots[~last]
        self.alive[earlier[~kept[earlier]]] = False  # a slot written twice keeps its last write
        for block, digests in enumerate(removed):
            if len(digests):
                wanted = _keys(np.asarray(digests, np.uint8))
                lo, hi = np.searchsorted(sorted_keys, wanted), np.searchsorted(sorted_keys, wanted, "right")
                for i in np.flatnonzero(hi > lo).tolist():
                    for at in by_key[lo[i]:hi[i]].tolist():
                        if last[at] and block_of[at] < block and (self.digest[slots[at]] == digests[i]).all():
                            self.alive[slots[at]] = False
        # The look-up `add` extends, built at once: every written slot by its key (a slot never written is never live).
        self._sorted = (sorted_keys, slots[by_key], self.n)

    def _kill_older_copies(self, slots: np.ndarray, digests: np.ndarray, before: np.ndarray) -> None:
        """After writing `slots`: the slots their ids were live at `before` (-1: none) die, and so do the earlier
        of two slots of the block with one id."""
        renamed = (before >= 0) & (before != slots)
        self.alive[before[renamed]] = False
        k = slots.size
        if np.unique(_keys(digests)).size != k:  # maybe an id twice in the block (else no two first 8 bytes agree)
            _, last = np.unique(digests[::-1], axis=0, return_index=True)
            keep = np.zeros(k, bool)
            keep[k - 1 - last] = True
            self.alive[slots[~keep]] = False

    def _extend_lookup(self) -> None:
        """Merge the slots past the sorted look-up into it (a new triple: readers keep the one they hold)."""
        keys, order, indexed = self._sorted
        # Sorted first: a stable sort of two sorted runs is a merge (timsort), not a sort of the whole catalog.
        tail_keys = _keys(self.digest[indexed:self.n])
        tail_order = np.argsort(tail_keys, kind="stable")
        merged_keys = np.concatenate([keys, tail_keys[tail_order]])
        merged = np.concatenate([order, indexed + tail_order])
        by_key = np.argsort(merged_keys, kind="stable")
        self._sorted = (merged_keys[by_key], merged[by_key], self.n)

    def expect(self, slots: int) -> None:
        """Size the columns for `slots` rows when they are first allocated (a whole catalog read at open: no doubling copies)."""
        self._expected = max(self._expected, int(slots))

    def remove(self, shas: Sequence[str]) -> None:
        """Mark the entries of `shas` dead (their slots stay, never reused)."""
        found = self.live_slots(list(shas))
        self.alive[found[found >= 0]] = False

    def move_keypoints(self, slots: np.ndarray, keypoints: SegmentKeypoints | None) -> None:
        """After a compaction: `slots` now read their keypoints from `keypoints`, in that order."""
        self.keypoint_file[slots] = keypoints
        self.keypoint_index[slots] = np.arange(slots.size)

    def _reserve(self, size: int, dim: int, bins: int) -> None:
        """Room for `size` slots. Growth copies into new arrays: snapshots keep the old ones, which stay valid."""
        if size <= self._capacity and self.embedding.shape[1] == dim and self.lbp.shape[1] == bins:
            return
        # A catalog read whole at open gets a quarter more room than it holds: the next registrations write in
        # place instead of copying every column (1M entries: a 1.3 s copy on the first add after open). Untouched
        # room of the numeric columns is zero pages the OS has not handed out, so it costs no resident memory.
        capacity = max(size, 2 * self._capacity, 1024, self._expected + self._expected // HEADROOM)
        n = self.n

        def grown(old: np.ndarray, shape: tuple[int, ...], dtype: object) -> np.ndarray:
            new = np.zeros(shape, dtype=dtype)
            if n and old.shape[1:] == shape[1:]:
                new[:n] = old[:n]
            return new

        self.embedding = grown(self.embedding, (capacity, dim), np.float32)
        self.lbp = grown(self.lbp, (capacity, bins), np.float32)
        self.added_at = grown(self.added_at, (capacity,), np.float64)
        self.alive = grown(self.alive, (capacity,), bool)
        self.digest = grown(self.digest, (capacity, 32), np.uint8)
        for name in ("model_id", "keypoint_file"):
            setattr(self, name, grown(getattr(self, name), (capacity,), object))
        self.path.reserve(capacity, n)
        self.label.reserve(capacity, n)
        self.keypoint_index = grown(self.keypoint_index, (capacity,), np.int64)
        self._capacity = capacity


def gather_keypoints(columns: Columns, slots: np.ndarray, surfaces: bool = True) -> list[LocalFeatures | None]:
    """Keypoints of `slots` (compaction, index builds), neighbouring entries of a segment read together.

    The caller bounds memory by the number of slots it asks for at once. `surfaces` False leaves the reliefs
    (`LocalFeatures.surface`) unread: an index of the keypoints needs none.
    """
    out: list[LocalFeatures | None] = [None] * int(slots.size)
    by_file: dict[int, tuple[SegmentKeypoints, list[tuple[int, int]]]] = {}
    for i, slot in enumerate(slots.tolist()):
        file = columns.keypoint_file[slot]
        if file is not None:
            by_file.setdefault(id(file), (file, []))[1].append((i, int(columns.keypoint_index[slot])))
    for file, wanted in by_file.values():
        wanted.sort(key=lambda pair: pair[1])
        start = 0
        while start < len(wanted):
            # Entries close together in the file are read in one span (at most SPAN entries: a span's keypoints
            # are held in RAM at once); a lone entry is one small read.
            stop = start + 1
            while stop < len(wanted) and wanted[stop][1] - wanted[start][1] < SPAN and wanted[stop][1] - wanted[stop - 1][1] <= 4:
                stop += 1
            first, last = wanted[start][1], wanted[stop - 1][1]
            feats = file.read_span(first, last + 1, surfaces) if stop - start > 1 else [file.read(first, surfaces)]
            for i, index in wanted[start:stop]:
                out[i] = feats[index - first]
            start = stop
    return out
