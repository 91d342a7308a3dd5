"""The catalog-wide keypoint vote: an inverted file of visual words, grown per commit.

The embedding can miss the right cake (bare textures, heavy tilt, blur) and
verification only sees what the shortlist passes on, so a third source
proposes the entries sharing the most distinctive local features with the
query, whatever the embedding thinks, as Pastec does. Each entry's strongest
`per_entry` keypoints become visual words (`pipeline.search.vocabulary`);
the store keeps, per word, the slots of the entries holding it. A query's
descriptors are looked up in their `QUERY_WORDS` nearest words (the catalog
files each of its descriptors under one) and vote for those slots, each
match weighted by its word's inverse document frequency. Adding a cake
appends its words (O(its keypoints), whatever the catalog's size); removing
one needs nothing, as votes are masked by the
snapshot's live rows. The FLANN index it replaces was rebuilt per
registration: 1.2 s at 1k entries, 15 s and 6.8 GB at 10k (issue 13).

Persistence: postings are saved beside the HDF5 segments in runs, each the
postings of a contiguous range of slots (written to a temporary name and
renamed in, with the catalog id, the vocabulary and the range): `votes.bin`
from slot 0, `votes-<start>-<stop>.bin` after it. Every `merge_every`
entries the unsaved postings become a new run (O(those entries)); a run is
merged into the one before it once it holds a quarter of that one's slots,
so runs shrink geometrically (a handful at 1M entries), each posting is
rewritten O(log N) times and no registration pays O(catalog): merging every
2,000 entries into one file rewrote all 1.8 GB of postings at 1M entries
each time. Runs are read memory-mapped, so opening costs nothing at any size;
slots past the saved chain are read from the segments on open. A run that is
missing, corrupt, for another catalog or another vocabulary is rebuilt from
the segments: they are never a source of truth.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.catalog import CatalogSnapshot
from pipeline.features.local import LocalFeatures
from pipeline.fsutil import fsync_path
from pipeline.search.vocabulary import Vocabulary

FILE = "votes.bin"
"""The run from slot 0; later runs are `votes-<start>-<stop>.bin` (`_run_path`)."""
FANOUT = 4
"""A run is merged into the one before it once it covers 1/FANOUT of that one's slots."""
_MAGIC = b"TPVOTES2"
_ALIGN = 64
# Entries whose keypoints a rebuild reads at once (all 400 of each, ~51 KB): 4,096 peaked at +375 MB on a 10k
# catalog, 1,024 at +175 MB in the same time (7.5 s against 8.1 s; bench/README.md, issue 14).
_READ_AT_ONCE = 1024
MAX_HAMMING = 24
"""Signature bits (of 64) two descriptors of one word may differ in and still match (Jegou et al. 2008 use 22-24)."""
HAMMING_SIGMA = 20.0
"""A match of signatures `h` bits apart weighs ``exp(-(h / HAMMING_SIGMA) ** 2)`` of its word's idf (Jegou, Douze &
Schmid 2009 weigh Hamming-embedding matches this way, sigma 16 of 64 bits). At 1M entries a chance match lies near the
`MAX_HAMMING` radius and a true one well inside it: over 54 hard re-shots, the right cake in the vote's top 10 for
48 -> 49, in its top 100 for 49 -> 50 (one re-shot whose only true match, 8 bits apart, ranked 34th now ranks 3rd);
at 1k, 52 -> 53 in the top 10 (bench/README.md, "The vote's Hamming weight")."""
QUERY_WORDS = 4
"""Words each query descriptor is looked up in (multiple assignment: Jegou, Douze & Schmid 2010 assign the query to
several words, the database to one). A true ratio-test match shares the query descriptor's one greedy word for 27 %
of hard cake re-shots' matches and 16 % of relit textures'; its 4 nearest words hold 54 % and 38 %. Right cake first /
in the top 10 of the vote at 1M (54 hard re-shots, two folders): 1 word 47 / 49 and 44 / 45, 2 words 49 / 51 and 46 /
48, 3 words 49 / 49 and 44 / 47, 4 words 49 / 50 and 45 / 49; at 1k 51 / 53 -> 52 / 53; +20-25 ms a vote at 1M
(bench/README.md, stop 36)."""
MAX_POSTINGS = 30_000
"""Postings above which a word is a stop word, skipped by `vote` (a 1M catalog averages ~9k per word).
20k -> 30k with `MAX_GATHERED` 2M -> 4M (2026-12-07): at 1M entries the right cake of 59 instead of 57 of 66 hard
re-shots in the vote's top 10 (first for 56 instead of 53); no stop word and an 8M budget reach 60
(bench/README.md, "The keypoint vote's budget at 1M"). Neither binds below ~500k entries."""
MAX_GATHERED = 4_000_000
"""Postings one query reads at most, rarest words first: bounds the vote's cost whatever the catalog's size."""
_NO_POSTING = np.iinfo(np.uint64).max
"""`vote`'s key of a descriptor that matched no live posting within `max_hamming`."""


@dataclass(frozen=True)
class Postings:
    """Slots per word in CSR form, with each posting's Hamming signature.

    Attributes
    ----------
    indptr : ndarray, shape (W + 1,), dtype int64
    slots : ndarray, shape (M,), dtype uint32
        `slots[indptr[w]:indptr[w + 1]]` hold word `w`.
    signatures : ndarray, shape (M,), dtype uint64
        The signature of the entry's descriptor behind each posting.
    """

    indptr: np.ndarray
    slots: np.ndarray
    signatures: np.ndarray

    @classmethod
    def empty(cls, words: int) -> "Postings":
        return cls(np.zeros(words + 1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.uint64))

    @classmethod
    def of(cls, words: int, word_ids: np.ndarray, slots: np.ndarray, signatures: np.ndarray) -> "Postings":
        order = np.argsort(word_ids, kind="stable")
        counts = np.bincount(word_ids, minlength=words)
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), slots[order].astype(np.uint32),
                   signatures[order].astype(np.uint64))

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def size(self) -> int:
        return int(self.slots.size)

    def merged(self, other: "Postings") -> "Postings":
        """Both postings in one CSR, `self`'s first within each word (O(M), no sort)."""
        a, b = self.counts(), other.counts()
        indptr = np.concatenate([[0], np.cumsum(a + b)]).astype(np.int64)
        slots = np.empty(int(indptr[-1]), np.uint32)
        signatures = np.empty(int(indptr[-1]), np.uint64)
        # Element i of word w in `self` moves by the `other` postings of the words before w, and vice versa.
        mine = np.arange(self.slots.size) + np.repeat(other.indptr[:-1], a)
        theirs = np.arange(other.slots.size) + np.repeat(self.indptr[1:], b)
        slots[mine], slots[theirs] = self.slots, other.slots
        signatures[mine], signatures[theirs] = self.signatures, other.signatures
        return Postings(indptr, slots, signatures)

    def nearest_in(self, words: np.ndarray, signatures: np.ndarray, alive: np.ndarray, max_hamming: int,
                   counts: np.ndarray, best: np.ndarray) -> None:
        """Fold these postings of `words` into `counts` and `best` (each shape (len(words),), updated in place).

        `counts[i]` gains the live postings of `words[i]` (slots below `alive.size` whose `alive` is set);
        `best[i]` becomes the smaller of itself and the smallest key ``distance << 32 | slot`` of a live posting
        of `words[i]` whose signature differs from `signatures[i]` in at most `max_hamming` bits (uint64 keys).
        Each word's postings are one contiguous slice, copied as such (fancy indexing of the ~3M postings a
        query gathers at 1M entries cost 5x more), and reduced per word by `reduceat`: no per-posting owner
        array, no scatter (at 1M entries and the 4M budget: 96 -> 70 ms a vote, the same top-300 rows;
        bench/README.md, "The keypoint vote's budget at 1M").
        """
        starts, stops = self.indptr[words], self.indptr[words + 1]
        lengths = stops - starts
        here = np.flatnonzero(lengths)
        if not here.size:
            return
        spans = list(zip(starts[here].tolist(), stops[here].tolist()))
        slots = np.concatenate([self.slots[a:b] for a, b in spans])
        # Bits that differ: np.bitwise_count is 25x a byte look-up table (2.4M pairs: 7.6 vs 189 ms).
        distance = np.bitwise_count(np.bitwise_xor(np.concatenate([self.signatures[a:b] for a, b in spans]),
                                                   np.repeat(signatures[here], lengths[here])))
        first = np.concatenate([[0], np.cumsum(lengths[here])[:-1]])
        live = np.take(alive, slots, mode="clip") & (slots < alive.size)
        counts[here] += np.add.reduceat(live.view(np.uint8), first, dtype=np.int64)
        key = (distance.astype(np.uint64) << np.uint64(32)) | slots
        key[~(live & (distance <= max_hamming))] = _NO_POSTING
        best[here] = np.minimum(best[here], np.minimum.reduceat(key, first))


@dataclass(frozen=True)
class Run:
    """Saved postings of slots [start, stop)."""

    start: int
    stop: int
    postings: Postings


class VoteStore:
    """The vote source for one catalog directory; shared by every reader of it (thread-safe).

    Parameters
    ----------
    directory : Path
        The catalog index directory (`votes.bin` lives there).
    vocabulary : Vocabulary
    per_entry : int
        Strongest keypoints of each entry that are indexed.
    max_hamming : int
        Signature bits (of 64) a match may differ in.
    max_postings : int
        Words with more postings than this are skipped when voting (stop words).
    max_gathered : int
        Postings one query reads at most: its rarest words are taken first.
    query_words : int
        Words each query descriptor is looked up in (`Vocabulary.encode_nearest`); the catalog files each
        descriptor under one.
    hamming_sigma : float or None
        Matches weigh ``exp(-(bits / hamming_sigma) ** 2)`` of their word's
        idf (`HAMMING_SIGMA`); None: the idf alone, however many bits differ.
    merge_every : int
        Save the postings added since the last save as a new run once they
        cover this many entries (a restart reads at most that many entries'
        keypoints from the segments).
    """

    def __init__(self, directory: Path, vocabulary: Vocabulary, per_entry: int, merge_every: int = 2000,
                 max_hamming: int = MAX_HAMMING, max_postings: int = MAX_POSTINGS, max_gathered: int = MAX_GATHERED,
                 hamming_sigma: float | None = HAMMING_SIGMA, query_words: int = QUERY_WORDS) -> None:
        self.directory = Path(directory)
        self.query_words = query_words
        self.max_hamming = max_hamming
        self.hamming_sigma = hamming_sigma
        self.max_postings = max_postings
        self.max_gathered = max_gathered
        self.vocabulary = vocabulary
        self.per_entry = per_entry
        self.merge_every = merge_every
        self._lock = threading.Lock()  # guards the swap of postings, held only briefly
        self._follow_lock = threading.Lock()  # one follower at a time
        self._catalog_id: str | None = None
        self._runs: tuple[Run, ...] = ()
        self._delta: list[tuple[np.ndarray, np.ndarray]] = []
        self._delta_postings = Postings.empty(vocabulary.size)
        self._covered = 0
        self._delta_entries = 0
        self._opened_from_file = 0

    @property
    def opened_from_file(self) -> int:
        """Slots the saved postings covered when the store last (re)started: 0 when it started from nothing."""
        return self._opened_from_file

    @property
    def covered(self) -> int:
        """Slots [0, covered) are in the store."""
        return self._covered

    def follow(self, snap: CatalogSnapshot, persist: bool = True) -> None:
        """Take in the snapshot's slots not yet in the store (read from the segments), loading or rebuilding the saved postings first.

        The work (reading keypoints, merging, saving) runs outside the lock
        that `vote` takes: a query never waits for it, it sees the store as it
        was until the new postings are swapped in. A snapshot older than what
        the store covers changes nothing (votes are masked to its rows).
        With `persist` False the new postings are only held in memory, and a
        save that is due waits for `persist` (the daemon's catalog lane
        publishes the generation first: a merge into the run from slot 0
        took 14.5 s at 1M entries).
        """
        if self._catalog_id == snap.catalog_id and snap.alive.size <= self._covered:
            return  # nothing new (the query lane's case): no wait behind a follower reading another batch
        with self._follow_lock:
            if self._catalog_id != snap.catalog_id:
                self._reset(snap)
            if snap.alive.size <= self._covered:
                return
            new = np.arange(self._covered, snap.alive.size)
            new = new[snap.alive[new]]
            delta, entries = list(self._delta), self._delta_entries
            for start in range(0, new.size, _READ_AT_ONCE):  # bounded RAM when a whole catalog is read (rebuild)
                part = new[start:start + _READ_AT_ONCE]
                delta.append(self._words_of(part, snap.keypoints_bulk(part, surfaces=False)))
                entries += int(part.size)
            postings = Postings.of(self.vocabulary.size, *map(np.concatenate, zip(*delta)))
            with self._lock:
                self._delta_postings, self._covered = postings, int(snap.alive.size)
                self._delta, self._delta_entries = delta, entries
            if persist:
                self._persist_locked()

    def persist(self) -> None:
        """Save the postings taken in since the last save as a run, when they cover `merge_every` entries."""
        with self._follow_lock:
            self._persist_locked()

    def _persist_locked(self) -> None:
        # Saved every `merge_every` entries, so that a restarted process re-reads at most that many entries'
        # keypoints from the segments; O(those entries) plus the geometric merges.
        if self._delta_entries < self.merge_every:
            return
        runs = self._runs
        runs = self._compacted((*runs, self._saved(Run(runs[-1].stop if runs else 0, self._covered, self._delta_postings))))
        with self._lock:
            self._runs, self._delta_postings, self._delta, self._delta_entries = runs, Postings.empty(self.vocabulary.size), [], 0

    def vote(self, query: LocalFeatures | None, snap: CatalogSnapshot, top_k: int, share: float = 1.0) -> np.ndarray:
        """Live rows of `snap` with the most (idf-weighted) keypoint matches to the query, best first.

        Each query descriptor is matched, like a nearest-neighbour search, to
        the one live posting of its `query_words` nearest words whose
        signature is nearest (fewest differing bits, then the lowest row),
        provided it differs in at most `max_hamming` bits; the match votes for
        that posting's entry with the word's inverse document frequency over
        the snapshot's live postings,
        times ``exp(-(bits / hamming_sigma) ** 2)`` of the bits that differ.
        Letting a descriptor vote for every entry within the radius instead
        lost the right cake among 10k distractors far more often (in the top
        5 for 0.64-0.73 of hard re-shots, against 0.82-0.87; bench/README.md).

        `share` (0-1] of the `max_gathered` budget is this vote's: a query that
        asks twice (the photo and its negative, `pipeline.matcher.run`) gathers
        no more postings than one vote.

        Returns
        -------
        ndarray, shape (<= top_k,), dtype int64; rows with at least one match.
        """
        if query is None or len(query) == 0 or top_k <= 0 or not snap.alive.any():
            return np.zeros(0, np.int64)
        owners, words, signatures = self.vocabulary.encode_nearest(query.descriptors, self.query_words)
        with self._lock:
            parts = (*(r.postings for r in self._runs), self._delta_postings)
        # Stop words: a word held by more than `max_postings` postings is skipped. Its idf is low, and at 1M
        # entries scanning such words made one query gather tens of millions of postings (p50 1.1 s, 13 GB peak).
        held = sum(p.indptr[words + 1] - p.indptr[words] for p in parts)
        # Rarest words first, up to `max_gathered` postings in all (their idf is the highest): at 10k entries a
        # query reads ~40k postings and the budget never binds; at 1M it bounds the cost.
        order = np.argsort(held, kind="stable")
        within = np.zeros(words.size, bool)
        within[order[np.cumsum(held[order]) <= self.max_gathered * share]] = True
        keep = within & (held <= self.max_postings)
        owners, words, signatures = owners[keep], words[keep], signatures[keep]
        # Document frequency over this snapshot's live postings only (`counts`): the same whatever dead slots
        # the postings still hold, so a rebuilt store votes exactly as the one that grew commit by commit.
        # Each descriptor's nearest posting is its smallest (distance, slot), packed into one key per posting
        # (slots < 2^32): a minimum per descriptor, over every part of the store.
        counts = np.zeros(words.size, np.int64)
        best = np.full(words.size, _NO_POSTING, np.uint64)
        for part in parts:
            part.nearest_in(words, signatures, snap.alive, self.max_hamming, counts, best)
        idf = np.log1p(int(np.count_nonzero(snap.alive)) / (1.0 + counts))
        # One vote per query descriptor: its nearest posting over all the words it was looked up in.
        found = np.flatnonzero(best != _NO_POSTING)
        ranked = found[np.lexsort((best[found], owners[found]))]
        voters = np.sort(ranked[np.unique(owners[ranked], return_index=True)[1]])
        nearest = (best[voters] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        weights = idf[voters]
        if self.hamming_sigma is not None:
            bits = (best[voters] >> np.uint64(32)).astype(np.float64)
            weights = weights * np.exp(-np.square(bits / self.hamming_sigma))
        # At most one vote per query descriptor: score the few rows voted for, not an array over the catalog.
        voted, at = np.unique(nearest, return_inverse=True)
        scores = np.bincount(at, weights=weights, minlength=voted.size)
        voted, scores = voted[scores > 0], scores[scores > 0]
        return voted[np.lexsort((voted, -scores))][:top_k].astype(np.int64)

    def save(self) -> None:
        """Merge every run and what was added since the last save into one run and save it now (`teaprint reindex`)."""
        with self._follow_lock:
            whole = Postings.empty(self.vocabulary.size)
            for part in (*(r.postings for r in self._runs), self._delta_postings):
                whole = whole.merged(part) if whole.size else part
            runs = (self._saved(Run(0, self._covered, whole)),)
            self._remove_runs_within(0, self._covered, keep=runs[0])
            with self._lock:
                self._runs, self._delta_postings, self._delta, self._delta_entries = runs, Postings.empty(self.vocabulary.size), [], 0

    # ---------------------------------------------------------------- internals
    def _words_of(self, slots: np.ndarray, feats: list[LocalFeatures | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(word, slot, signature) of each of the entries' strongest keypoints, encoded in one pass."""
        kept = [(slot, f.descriptors[: self.per_entry]) for slot, f in zip(slots.tolist(), feats) if f is not None and len(f)]
        if not kept:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64)
        words, signatures = self.vocabulary.encode(np.concatenate([d for _, d in kept]))
        # Compact dtypes: a whole catalog's postings are held at once while a missing store is rebuilt.
        owners = np.repeat(np.array([slot for slot, _ in kept], np.uint32), [len(d) for _, d in kept])
        return words.astype(np.int32), owners, signatures

    def _reset(self, snap: CatalogSnapshot) -> None:
        """Start from the saved runs that belong to this catalog and vocabulary, chained from slot 0, else from nothing."""
        runs = _load_chain(self.directory, snap.catalog_id, self.vocabulary.vocab_id, self.per_entry, int(snap.alive.size))
        covered = runs[-1].stop if runs else 0
        with self._lock:
            self._catalog_id, self._runs, self._covered, self._opened_from_file = snap.catalog_id, runs, covered, covered
            self._delta, self._delta_postings, self._delta_entries = [], Postings.empty(self.vocabulary.size), 0

    def _compacted(self, runs: tuple[Run, ...]) -> tuple[Run, ...]:
        """`runs` with the newest merged into the one before while it covers at least 1/FANOUT of that one's slots."""
        out = list(runs)
        while len(out) >= 2 and (out[-1].stop - out[-1].start) * FANOUT >= out[-2].stop - out[-2].start:
            older, newer = out[-2], out.pop()
            out[-1] = self._saved(Run(older.start, newer.stop, older.postings.merged(newer.postings)))
            self._remove_runs_within(older.start, newer.stop, keep=out[-1])
        return tuple(out)

    def _saved(self, run: Run) -> Run:
        """`run`, saved (best effort: a reader without write access keeps its postings in memory; files are only a cache)."""
        try:
            _save(_run_path(self.directory, run.start, run.stop), run.postings, run.start, run.stop, self._catalog_id,
                  self.vocabulary.vocab_id, self.per_entry)
        except OSError:
            pass
        return run

    def _remove_runs_within(self, start: int, stop: int, keep: Run) -> None:
        """Delete the run files a merged run [start, stop) replaces."""
        for path in self.directory.glob("votes-*.bin"):
            span = _run_span(path)
            if span is not None and start <= span[0] and span[1] <= stop and span != (keep.start, keep.stop):
                path.unlink(missing_ok=True)


def _run_path(directory: Path, start: int, stop: int) -> Path:
    return directory / (FILE if start == 0 else f"votes-{start:012d}-{stop:012d}.bin")


def _run_span(path: Path) -> tuple[int, int] | None:
    """(start, stop) from a later run's file name, None for any other name."""
    parts = path.stem.split("-")
    if len(parts) != 3 or parts[0] != "votes" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def _load_chain(directory: Path, catalog_id: str | None, vocab_id: str, per_entry: int, slots: int) -> tuple[Run, ...]:
    """The saved runs that chain from slot 0 without a gap, up to `slots`, the longest next run first at each step."""
    later: dict[int, list[Path]] = {}
    for path in directory.glob("votes-*.bin"):
        span = _run_span(path)
        if span is not None and span[0] < span[1] <= slots:
            later.setdefault(span[0], []).append(path)
    chain: list[Run] = []
    first = _load(directory / FILE, catalog_id, vocab_id, per_entry)
    if first is None or first.start != 0 or not 0 < first.stop <= slots:
        return ()
    chain.append(first)
    while chain[-1].stop in later:
        found = None
        for path in sorted(later[chain[-1].stop], key=lambda p: -_run_span(p)[1]):  # type: ignore[index]
            found = _load(path, catalog_id, vocab_id, per_entry)
            if found is not None and found.start == chain[-1].stop:
                break
            found = None
        if found is None:
            break
        chain.append(found)
    return tuple(chain)


def _save(path: Path, postings: Postings, start: int, stop: int, catalog_id: str | None, vocab_id: str, per_entry: int) -> None:
    header = {"catalog_id": catalog_id, "vocabulary": vocab_id, "per_entry": per_entry, "start": start, "covered": stop,
              "words": int(postings.indptr.size - 1), "postings": int(postings.slots.size)}
    raw = json.dumps(header).encode()
    start = -(-(16 + len(raw)) // _ALIGN) * _ALIGN
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + len(raw).to_bytes(8, "little") + raw)
        f.write(b"\0" * (start - 16 - len(raw)))
        f.write(postings.indptr.astype("<i8").tobytes())
        f.write(postings.signatures.astype("<u8").tobytes())
        f.write(postings.slots.astype("<u4").tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def _load(path: Path, catalog_id: str | None, vocab_id: str, per_entry: int) -> Run | None:
    """The saved run, or None when absent, corrupt or for something else (a file from before runs starts at 0)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if head[:8] != _MAGIC:
                return None
            raw_len = int.from_bytes(head[8:], "little")
            header = json.loads(f.read(raw_len))
        if (header["catalog_id"], header["vocabulary"], header["per_entry"]) != (catalog_id, vocab_id, per_entry):
            return None
        words, m = int(header["words"]), int(header["postings"])
        start = -(-(16 + raw_len) // _ALIGN) * _ALIGN
        size = path.stat().st_size
        if size != start + 8 * (words + 1) + 12 * m:
            return None
        indptr = np.memmap(path, dtype="<i8", mode="r", offset=start, shape=(words + 1,))
        at = start + 8 * (words + 1)
        signatures = np.memmap(path, dtype="<u8", mode="r", offset=at, shape=(m,)) if m else np.zeros(0, np.uint64)
        slots = np.memmap(path, dtype="<u4", mode="r", offset=at + 8 * m, shape=(m,)) if m else np.zeros(0, np.uint32)
        if indptr[0] != 0 or indptr[-1] != m:
            return None
        return Run(int(header.get("start", 0)), int(header["covered"]), Postings(np.asarray(indptr), slots, signatures))
    except (OSError, ValueError, KeyError, TypeError):
        return None
