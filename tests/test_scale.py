"""The catalog at scale (issue 13): keypoints on disk, slots that never move, an incremental vote store."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.catalog import CatalogIndex, CatalogWriter, NewEntry
from pipeline.features.local import LocalFeatures
from pipeline.search.vocabulary import Vocabulary
from pipeline.search.votes import FILE, VoteStore

VOCAB = Vocabulary.load()


def keypoints(n: int, count: int = 60) -> LocalFeatures:
    """SIFT-like keypoints: sparse non-negative uint8 histograms, distinct per `n`."""
    rng = np.random.default_rng(1000 + n)
    d = (rng.gamma(0.6, 18.0, size=(count, 128)) * (rng.random((count, 128)) < 0.5)).clip(0, 255).astype(np.uint8)
    return LocalFeatures(rng.uniform(0, 640, size=(count, 2)).astype(np.float32), d, 640)


def entry(n: int, label: str | None = None) -> NewEntry:
    rng = np.random.default_rng(n)
    vec = rng.normal(size=8).astype(np.float32)
    return NewEntry(hashlib.sha256(f"p{n}".encode()).hexdigest(), f"/x/{n}.jpg", label or f"cake{n}", vec / np.linalg.norm(vec),
                    rng.random(10).astype(np.float32), keypoints(n))


def test_stored_entries_hold_no_keypoints_in_memory_and_read_them_from_the_segment(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    index.commit([entry(n) for n in range(5)])
    snap = CatalogIndex(tmp_path / "idx", model_id="m1").snapshot()
    got = snap.entry(int(snap.rows[2]))
    assert got.__dict__.get("_local") is None and got.stored_keypoints is not None  # nothing held: read on access
    for a, b in ((got.local.descriptors, entry(2).local.descriptors), (got.local.points, entry(2).local.points)):
        np.testing.assert_array_equal(a, b)
    assert [k.descriptors.tobytes() for k in snap.keypoints(snap.rows)] == [entry(n).local.descriptors.tobytes() for n in range(5)]
    with h5py.File(next((tmp_path / "idx").glob("seg-*.h5")), "r") as f:
        # chunked (appended chunk by chunk); not compressed: gzip kept 79 % of the bytes for 20x slower reads
        assert f["local/descriptors"].compression is None and f["local/descriptors"].chunks is not None


def test_rows_never_move_compaction_merges_only_the_newest_segments_and_keeps_keypoints(tmp_path: Path) -> None:
    # big_segment 100 with merges of 8 (`pipeline.catalog.tiers`): segments over 12 entries are never merged again
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=4, big_segment=100)
    index.commit([entry(n) for n in range(40)])  # a big base segment, never merged again
    first = index.snapshot()
    base = sorted((tmp_path / "idx").glob("seg-*.h5"))[0].name
    writer = CatalogWriter(index, "m1", require_local=True)
    for n in range(40, 46):
        writer.register([entry(n)])
    writer.remove([index.get(entry(3).sha256), index.get(entry(42).sha256)])
    writer.rename(index.get(entry(5).sha256), "/y/5.jpg", "moved")
    names = sorted(p.name for p in (tmp_path / "idx").glob("seg-*.h5"))
    assert base in names and len(names) <= 5  # the small tail was merged down to 4, the big base segment left alone
    index.compact()
    assert len(list((tmp_path / "idx").glob("seg-*.h5"))) == 1
    snap = CatalogIndex(tmp_path / "idx", model_id="m1").snapshot()
    for n in range(46):
        got = snap.get(entry(n).sha256)
        if n in (3, 42):
            assert got is None
            continue
        assert got is not None, n
        np.testing.assert_array_equal(got.local.descriptors, entry(n).local.descriptors)
        if n < 40 and n != 5:
            row = int(first.rows[n])
            assert snap.alive[row] and snap.labels[row] == f"cake{n}"  # same row as before any change
    assert snap.get(entry(5).sha256).label == "moved" and len(snap) == 44


def test_an_index_written_before_slots_opens_and_takes_new_commits(tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    index.commit([entry(0), entry(1)])
    index.commit([entry(2)], removes=[entry(0).sha256])
    del index
    gc.collect()  # the record keeps its segments open for their keypoints
    for seg in directory.glob("seg-*.h5"):  # as teaprint wrote them before slots and keypoint chunking
        with h5py.File(seg, "a") as f:
            del f["entries/slot"]
    manifest = json.loads((directory / "MANIFEST.json").read_text())
    del manifest["next_slot"], manifest["catalog_id"]
    (directory / "MANIFEST.json").write_text(json.dumps(manifest))
    old = CatalogIndex(directory, model_id="m1")
    assert sorted(e.label for e in old.entries()) == ["cake1", "cake2"]
    old.commit([entry(3)], removes=[entry(1).sha256])
    again = CatalogIndex(directory, model_id="m1")
    assert [e.label for e in again.entries()] == ["cake2", "cake3"]
    np.testing.assert_array_equal(again.get(entry(3).sha256).local.descriptors, entry(3).local.descriptors)


def votes_of(store: VoteStore, snap, queries: list[int]) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [[snap.labels[r] for r in store.vote(keypoints(q), snap, 3).tolist()] for q in queries]


def test_vote_store_grows_per_commit_and_its_saved_postings_agree_with_a_rebuild(tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    store = VoteStore(directory, VOCAB, per_entry=150, merge_every=10)
    older = None
    for start in range(0, 30, 6):
        index.commit([entry(n) for n in range(start, start + 6)])
        older = older or index.snapshot()
        store.follow(index.snapshot())
    snap = index.snapshot()
    store.follow(older)  # the query lane may still hold an older generation: nothing is reset or dropped
    assert store.covered == 30 and store.vote(keypoints(3), older, 1).tolist() == [3]
    assert all(r < older.alive.size for r in store.vote(keypoints(20), older, 3).tolist())  # rows past it never vote
    assert store.covered == snap.alive.size == 30 and (directory / FILE).exists()
    assert [v[0] for v in votes_of(store, snap, [0, 7, 29])] == ["cake0", "cake7", "cake29"]
    index.commit(removes=[entry(7).sha256])
    after = index.snapshot()
    assert "cake7" not in votes_of(store, after, [7])[0]  # a removed entry never votes, nothing rebuilt
    reopened = VoteStore(directory, VOCAB, per_entry=150)
    reopened.follow(after)
    assert reopened.opened_from_file == 24  # saved at the last merge; the 6 after it read from the segments
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(directory, fresh_dir)
    (fresh_dir / FILE).unlink()
    rebuilt = VoteStore(fresh_dir, VOCAB, per_entry=150, merge_every=10**9)
    rebuilt.follow(CatalogIndex(fresh_dir, model_id="m1").snapshot())
    assert not (fresh_dir / FILE).exists()
    queries = list(range(30))
    assert votes_of(reopened, after, queries) == votes_of(rebuilt, after, queries)
    (directory / FILE).write_bytes((directory / FILE).read_bytes()[:100])  # torn or corrupt: ignored, rebuilt
    broken = VoteStore(directory, VOCAB, per_entry=150)
    broken.follow(after)
    assert broken.opened_from_file == 0
    assert votes_of(broken, after, queries) == votes_of(rebuilt, after, queries)


def test_each_query_descriptor_votes_once_for_its_nearest_posting_and_a_tie_goes_to_the_lowest_row(tmp_path: Path) -> None:
    """Two entries with the very same keypoints (and a third with half of them) tie on every posting a query of
    those keypoints meets: each query descriptor votes once, for the lowest row, so the twin and the half get nothing
    until the first is removed."""
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    same = keypoints(70)  # no other entry's (entry(n) has keypoints(n))
    half = LocalFeatures(same.points[::2].copy(), same.descriptors[::2].copy(), same.side)
    twins = [dataclasses.replace(entry(n), local=local) for n, local in ((0, same), (1, same), (2, half))]
    index.commit(twins + [entry(n) for n in range(3, 8)])
    snap = index.snapshot()
    store = VoteStore(directory, VOCAB, per_entry=150)
    store.follow(snap)
    row = {snap.labels[r]: r for r in range(len(snap))}
    assert store.vote(same, snap, 8).tolist()[:1] == [row["cake0"]]
    assert row["cake1"] not in store.vote(same, snap, 8).tolist()  # its postings tie with cake0's, at a higher row
    assert store.vote(half, snap, 1).tolist() == [row["cake0"]]  # cake2's postings tie too: the lowest row wins
    index.commit(removes=[entry(0).sha256])
    after = index.snapshot()
    assert store.vote(same, after, 1).tolist() == [row["cake1"]]  # with cake0 gone its twin's postings are nearest


def test_a_match_weighs_less_the_more_signature_bits_differ(tmp_path: Path) -> None:
    """Entry "near" shares 10 of the query's keypoints, each nearly the same descriptor (signatures at most 6 bits
    apart); entry "far" shares 14 others, each a noisier copy (18-24 bits apart, within the match radius). Counted by
    idf alone, far outvotes near; weighted by its Hamming distance (the default), near comes first."""
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    query = keypoints(90, count=400)
    rng = np.random.default_rng(5)
    q_words, q_sigs = VOCAB.encode(query.descriptors)

    def noisy(scale: float, low: int, high: int, rounds: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Per query keypoint, a noisy copy of its descriptor in its word, `low`-`high` signature bits apart (or zeros)."""
        out, found = np.zeros_like(query.descriptors), np.zeros(len(query), bool)
        for _ in range(rounds):
            d = (query.descriptors + rng.normal(0, scale, query.descriptors.shape)).clip(0, 255).astype(np.uint8)
            words, sigs = VOCAB.encode(d)
            bits = np.bitwise_count(np.bitwise_xor(sigs, q_sigs))
            hit = ~found & (words == q_words) & (bits >= low) & (bits <= high)
            out[hit], found = d[hit], found | hit
        return out, found

    near_d, near_found = noisy(1.0, 0, 6)
    far_d, far_found = noisy(10.0, 18, 24)
    near_at = np.flatnonzero(near_found)[:10]
    far_at = np.setdiff1d(np.flatnonzero(far_found), near_at)[:14]
    assert near_at.size == 10 and far_at.size == 14
    near = LocalFeatures(query.points[near_at], near_d[near_at], 640)
    far = LocalFeatures(query.points[far_at], far_d[far_at], 640)
    index.commit([dataclasses.replace(entry(0), local=near), dataclasses.replace(entry(1), local=far)]
                 + [entry(n) for n in range(2, 8)])
    snap = index.snapshot()
    row = {snap.labels[r]: r for r in range(len(snap))}
    asked = LocalFeatures(query.points[np.concatenate([near_at, far_at])], query.descriptors[np.concatenate([near_at, far_at])], 640)
    weighted = VoteStore(directory, VOCAB, per_entry=150)
    unweighted = VoteStore(directory, VOCAB, per_entry=150, hamming_sigma=None)
    for store in (weighted, unweighted):
        store.follow(snap)
    assert weighted.vote(asked, snap, 2).tolist() == [row["cake0"], row["cake1"]]
    assert unweighted.vote(asked, snap, 2).tolist() == [row["cake1"], row["cake0"]]


def test_a_query_descriptor_looked_up_in_its_nearest_words_finds_a_match_filed_under_a_neighbouring_word(tmp_path: Path) -> None:
    """Entry "beside" holds 12 slightly different copies of the query's keypoints, each filed (greedily) under another
    word than the query descriptor's own, but one of its `QUERY_WORDS` nearest; entry "same" holds 4 copies in the
    query's own words. Looked up in its greedy word alone (as the catalog files it), the query finds only "same";
    looked up in its nearest words (the default), "beside" and its 12 matches come first. Relit textures and hard
    re-shots: only a quarter of the true matches share the query descriptor's single word (bench/README.md, stop 36)."""
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    query = keypoints(91, count=400)
    rng = np.random.default_rng(6)
    q_words, _ = VOCAB.encode(query.descriptors)
    owners, near_words, _ = VOCAB.encode_nearest(query.descriptors, 4)
    beside_d, same_d = np.zeros_like(query.descriptors), np.zeros_like(query.descriptors)
    beside, same = np.zeros(len(query), bool), np.zeros(len(query), bool)
    for _ in range(60):
        d = (query.descriptors + rng.normal(0, 6.0, query.descriptors.shape)).clip(0, 255).astype(np.uint8)
        words, _ = VOCAB.encode(d)
        neighbour = (words != q_words) & (words[:, None] == near_words.reshape(-1, 4)).any(axis=1)
        hit = ~beside & ~same & neighbour
        beside_d[hit], beside = d[hit], beside | hit
        own = ~beside & ~same & (words == q_words)
        same_d[own], same = d[own], same | own
    beside_at, same_at = np.flatnonzero(beside)[:12], np.flatnonzero(same)[:4]
    assert beside_at.size == 12 and same_at.size == 4
    index.commit([dataclasses.replace(entry(0), local=LocalFeatures(query.points[same_at], same_d[same_at], 640)),
                  dataclasses.replace(entry(1), local=LocalFeatures(query.points[beside_at], beside_d[beside_at], 640))]
                 + [entry(n) for n in range(2, 8)])
    snap = index.snapshot()
    row = {snap.labels[r]: r for r in range(len(snap))}
    at = np.concatenate([same_at, beside_at])
    asked = LocalFeatures(query.points[at], query.descriptors[at], 640)
    nearest_words, greedy_word = VoteStore(directory, VOCAB, per_entry=150), VoteStore(directory, VOCAB, per_entry=150, query_words=1)
    for store in (nearest_words, greedy_word):
        store.follow(snap)
    assert nearest_words.vote(asked, snap, 2).tolist() == [row["cake1"], row["cake0"]]
    by_greedy_word = greedy_word.vote(asked, snap, 8).tolist()
    assert by_greedy_word[0] == row["cake0"] and row["cake1"] not in by_greedy_word


def test_words_over_the_stop_word_bound_are_skipped_and_the_gather_budget_takes_the_rarest_words_first(tmp_path: Path) -> None:
    """Six entries share one set of keypoints, a seventh has its own; a query holding both sets. With the defaults
    the shared keypoints vote (for the lowest of the six rows); a word held by more postings than `max_postings` is a
    stop word, and a budget of `max_gathered` postings reads the rarest words first: either way only the seventh
    entry's own words vote."""
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    common, rare = keypoints(80), keypoints(81)
    index.commit([dataclasses.replace(entry(n), local=common) for n in range(6)] + [dataclasses.replace(entry(6), local=rare)])
    snap = index.snapshot()
    row = {snap.labels[r]: r for r in range(len(snap))}
    query = LocalFeatures(np.concatenate([common.points, rare.points]), np.concatenate([common.descriptors, rare.descriptors]), 640)
    shared_words = set(VOCAB.words(common.descriptors).tolist())
    own = [w for w in VOCAB.words(rare.descriptors).tolist() if w not in shared_words]
    assert len(own) > 10
    voted = {}
    for name, kwargs in (("defaults", {}), ("stop words", {"max_postings": 5}), ("budget", {"max_gathered": len(own)})):
        store = VoteStore(directory, VOCAB, per_entry=150, **kwargs)
        store.follow(snap)
        voted[name] = store.vote(query, snap, 7).tolist()
    assert row["cake0"] in voted["defaults"] and row["cake6"] in voted["defaults"]
    assert voted["stop words"] == [row["cake6"]]
    assert voted["budget"] == [row["cake6"]]
    # A vote with half the budget (the photo's, or its negative's: they share one) reads half as many postings.
    store = VoteStore(directory, VOCAB, per_entry=150, max_gathered=2 * len(own))
    store.follow(snap)
    assert row["cake0"] in store.vote(query, snap, 7)
    assert store.vote(query, snap, 7, share=0.5).tolist() == [row["cake6"]]


def test_vote_store_saves_runs_that_merge_geometrically_and_a_restart_chains_them(tmp_path: Path) -> None:
    """Every `merge_every` entries the new postings are saved as a run of their own; a run is merged into the one
    before it once it holds a quarter of that one's slots, so saving never rewrites the whole store."""
    from pipeline.search.votes import FANOUT

    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    store = VoteStore(directory, VOCAB, per_entry=150, merge_every=2)
    sizes, first_rewrites = [], 0
    for n in range(34):
        index.commit([entry(n)])
        before = {p.name: p.stat().st_mtime_ns for p in directory.glob("votes*.bin")}
        store.follow(index.snapshot())
        after = {p.name: p.stat().st_mtime_ns for p in directory.glob("votes*.bin")}
        rewritten = [name for name in after if before.get(name) != after[name]]
        sizes.append(len(after))
        first_rewrites += FILE in rewritten
        if n % 2 == 0:
            assert not rewritten  # 1 new entry: kept in memory
    spans = sorted(((0, 0) if p.name == FILE else tuple(int(x) for x in p.stem.split("-")[1:])) for p in directory.glob("votes*.bin"))
    assert spans[0] == (0, 0) and len(spans) <= 3 and max(sizes) <= 3  # a handful of runs, not one per save
    assert first_rewrites <= 9 < 17  # of 17 saves; the run from slot 0 is rewritten once the catalog grew by a quarter
    runs = [(0, spans[1][0] if len(spans) > 1 else 34)] + [s for s in spans[1:]]
    for (a, b), (c, d) in zip(runs, runs[1:]):
        assert b == c and (d - c) * FANOUT < b - a  # contiguous, each under a quarter of the one before
    snap = index.snapshot()
    reopened = VoteStore(directory, VOCAB, per_entry=150)
    reopened.follow(snap)
    assert reopened.opened_from_file == 34
    scratch = tmp_path / "scratch"
    shutil.copytree(directory, scratch)
    for path in scratch.glob("votes*.bin"):
        path.unlink()
    rebuilt = VoteStore(scratch, VOCAB, per_entry=150, merge_every=10**9)
    rebuilt.follow(CatalogIndex(scratch, model_id="m1").snapshot())
    queries = list(range(34))
    assert votes_of(reopened, snap, queries) == votes_of(rebuilt, snap, queries) == votes_of(store, snap, queries)
    reopened.save()  # `teaprint reindex`: one run of everything
    assert [p.name for p in directory.glob("votes*.bin")] == [FILE]
    assert votes_of(reopened, snap, queries) == votes_of(rebuilt, snap, queries)


def test_a_follower_that_defers_saving_votes_with_the_new_entries_and_saves_them_when_asked(tmp_path: Path) -> None:
    """The daemon's catalog lane publishes a generation before the save that falls due (`follow(persist=False)`)."""
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    store = VoteStore(directory, VOCAB, per_entry=150, merge_every=4)
    index.commit([entry(n) for n in range(6)])
    snap = index.snapshot()
    store.follow(snap, persist=False)
    assert not list(directory.glob("votes*.bin"))  # due (6 >= 4) but deferred
    assert [v[0] for v in votes_of(store, snap, [0, 5])] == ["cake0", "cake5"]  # the new entries vote already
    store.persist()
    assert (directory / FILE).exists()
    reopened = VoteStore(directory, VOCAB, per_entry=150)
    reopened.follow(snap)
    assert reopened.opened_from_file == 6 and votes_of(reopened, snap, list(range(6))) == votes_of(store, snap, list(range(6)))


def test_entries_with_zero_keypoints_are_stored_and_vote_for_nothing(tmp_path: Path) -> None:
    """A 1-pixel photo has no keypoint at all: its segment stores an empty keypoint set."""
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), 1)
    base = entry(1)
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    index.commit([NewEntry(base.sha256, base.path, base.label, base.embedding, base.lbp, empty)])
    snap = index.snapshot()
    (got,) = snap.keypoints(snap.rows)
    assert got is not None and len(got) == 0 and got.side == 1
    store = VoteStore(tmp_path / "idx", VOCAB, per_entry=150)
    store.follow(snap)
    assert store.vote(keypoints(1), snap, 3).size == 0


def exact_nearest(snap, query: np.ndarray, k: int, column: str = "embeddings") -> list[int]:
    sims = getattr(snap, column) @ query
    rows = snap.rows
    return rows[np.lexsort((rows, -sims[rows]))][:k].tolist()


@pytest.mark.parametrize("column", ["embeddings", "lbps_sqrt"])
def test_ann_index_is_built_at_min_rows_follows_commits_masks_removals_and_is_rebuilt_when_stale(tmp_path: Path, column: str) -> None:
    from pipeline.search.ann import AnnIndex, AnnSettings

    ANN_FILE = f"{column}.ivf"

    settings = AnnSettings(min_rows=30, lists=4, probes=4, save_every=10)  # every list probed: the search must be exact
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    writer = CatalogWriter(index, "m1", require_local=True)
    writer.register([entry(n) for n in range(20)])
    ann = AnnIndex(directory, settings, column)
    ann.follow(index.snapshot())
    assert not ann.ready(index.snapshot()) and not (directory / ANN_FILE).exists()  # small: scanned exactly
    writer.register([entry(n) for n in range(20, 40)])
    ann.follow(index.snapshot())
    assert ann.ready(index.snapshot()) and ann.covered == 40 and (directory / ANN_FILE).exists()
    writer.remove([index.get(entry(n).sha256) for n in (3, 4, 5)])
    writer.register([entry(n) for n in range(40, 45)])  # not followed: the rows past the index are scanned exactly
    snap = index.snapshot()
    rng = np.random.default_rng(5)
    queries = [rng.random(getattr(snap, column).shape[1]).astype(np.float32) for _ in range(5)]
    for q in queries:
        rows, sims = ann.nearest(q, snap, 6)
        assert rows.tolist() == exact_nearest(snap, q, 6, column)
        np.testing.assert_allclose(sims, getattr(snap, column)[rows] @ q, rtol=1e-6)
        assert snap.alive[rows].all()
    ann.follow(snap)
    ann.close()  # the 5 rows added since the save at 40 are left to the next opener
    reopened = AnnIndex(directory, settings, column)
    reopened.follow(snap)
    assert reopened.opened_from_file == 40 and reopened.covered == 45
    assert [reopened.nearest(q, snap, 6)[0].tolist() for q in queries] == [exact_nearest(snap, q, 6, column) for q in queries]
    # Stale or broken files are rebuilt: one from another catalog, one cut short, one whose rows changed.
    other = tmp_path / "other"
    other_index = CatalogIndex(other, model_id="m1")
    other_index.commit([entry(n + 100) for n in range(45)])
    foreign = AnnIndex(other, settings, column)
    foreign.follow(other_index.snapshot())
    foreign.close()
    saved = (directory / ANN_FILE).read_bytes()
    for damage in ((other / ANN_FILE).read_bytes(), saved[: len(saved) // 2],
                   saved[:200] + bytes(len(saved) - 500) + saved[-300:]):  # the trailer intact, the rows zeroed
        # Replaced, not rewritten in place: a file this process has memory-mapped (the indexes above) must never
        # shrink under the mapping (SIGBUS), and every writer of ours renames a new file in.
        (directory / "damaged.tmp").write_bytes(damage)
        os.replace(directory / "damaged.tmp", directory / ANN_FILE)
        fresh = AnnIndex(directory, settings, column)
        fresh.follow(snap)
        assert fresh.opened_from_file == 0 and fresh.ready(snap)
        assert [fresh.nearest(q, snap, 6)[0].tolist() for q in queries] == [exact_nearest(snap, q, 6, column) for q in queries]


def test_a_saved_ann_index_is_memory_mapped_and_rows_added_after_it_merge_into_the_next_save(tmp_path: Path) -> None:
    from pipeline.search.ann import AnnIndex, AnnSettings

    settings = AnnSettings(min_rows=30, lists=4, probes=4, save_every=10)  # every list probed: the search must be exact
    directory = tmp_path / "idx"
    index = CatalogIndex(directory, model_id="m1")
    writer = CatalogWriter(index, "m1", require_local=True)
    writer.register([entry(n) for n in range(40)])
    ann = AnnIndex(directory, settings)
    ann.follow(index.snapshot())
    path = str((directory / "embeddings.ivf").resolve())
    assert ann.mapped == ann.covered == 40 and path in Path("/proc/self/maps").read_text()  # saved, then mapped
    rng = np.random.default_rng(9)
    queries = [rng.normal(size=8).astype(np.float32) for _ in range(6)]

    def exact_everywhere(ann: AnnIndex, snap) -> bool:  # type: ignore[no-untyped-def]
        return all(ann.nearest(q, snap, 7)[0].tolist() == exact_nearest(snap, q, 7, "embeddings") for q in queries)

    writer.register([entry(n) for n in range(40, 45)])
    writer.remove([index.get(entry(n).sha256) for n in (1, 42)])  # one row of each part dies
    snap = index.snapshot()
    ann.follow(snap)  # 5 new rows: not yet due for a save, searched in the in-memory part
    assert ann.mapped == 40 and ann.covered == 45 and exact_everywhere(ann, snap)
    writer.register([entry(n) for n in range(45, 52)])
    snap = index.snapshot()
    ann.follow(snap)  # 12 rows since the save: merged with the mapped ones into the next file, which is mapped
    assert ann.mapped == ann.covered == 52 and exact_everywhere(ann, snap)
    reopened = AnnIndex(directory, settings)
    reopened.follow(snap)
    assert reopened.opened_from_file == 52 == reopened.mapped and exact_everywhere(reopened, snap)


def test_a_compaction_larger_than_one_read_chunk_keeps_every_keypoint(tmp_path: Path) -> None:
    """Compaction streams keypoints in chunks of entries: entries on both sides of a chunk boundary survive intact."""
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    small = [NewEntry(e.sha256, e.path, e.label, e.embedding, e.lbp, keypoints(n, count=3)) for n, e in ((n, entry(n)) for n in range(1100))]
    index.commit(small[:600])
    index.commit(small[600:])
    index.compact()
    assert len(list((tmp_path / "idx").glob("seg-*.h5"))) == 1
    snap = CatalogIndex(tmp_path / "idx", model_id="m1").snapshot()
    got = snap.keypoints_bulk(snap.rows)
    assert [g.descriptors.tobytes() for g in got] == [keypoints(n, count=3).descriptors.tobytes() for n in range(1100)]
    assert [g.points.tobytes() for g in got] == [keypoints(n, count=3).points.tobytes() for n in range(1100)]


def test_the_first_registration_after_open_writes_in_place_instead_of_copying_the_catalog(tmp_path: Path) -> None:
    # At 1M entries the first add after open copied every column (1.3 s); the columns read at open keep room.
    CatalogIndex(tmp_path / "idx", model_id="m1").commit([entry(n) for n in range(2000)])
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    before = index.snapshot()
    writer = CatalogWriter(index, "m1", require_local=True)
    for n in range(2000, 2003):
        writer.register([entry(n)])
    after = index.snapshot()
    assert len(after) == 2003 and after.get(entry(2002).sha256).label == "cake2002"
    assert np.shares_memory(before.embeddings, after.embeddings) and np.shares_memory(before.lbps, after.lbps)
    np.testing.assert_array_equal(after.embeddings[: before.embeddings.shape[0]], before.embeddings)


def test_an_open_record_holds_each_entrys_descriptors_once(tmp_path: Path) -> None:
    """Descriptors live in the columns only: the segment cache keeps slots and tombstones, and the LBP square
    roots are computed when read (1M entries: 1.85 -> 1.12 KB per entry, bench/bench_open.py); the open reads
    one segment at a time into new columns (1M: peak 1.62 -> 0.93 GB)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n, dim, bins = 20_000, 128, 26
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    batch = [NewEntry(hashlib.sha256(str(i).encode()).hexdigest(), f"/srv/catalog/cake{i:07d}.jpg", f"cake{i // 3:07d}",
                      emb[i], rng.random(bins, dtype=np.float32)) for i in range(n)]
    writer = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=100, big_segment=10_000)  # 8 segments kept (never merged)
    for first in range(0, n, n // 8):  # 8 segments
        writer.commit(batch[first:first + n // 8])
    tracemalloc.start()
    try:
        index = CatalogIndex(tmp_path / "idx")
        snap = index.snapshot()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Columns sized with a quarter of room (zero pages, but traced): 1.25 x (embedding + LBP + per-slot ids and flags)
    # plus the names; a second copy of the descriptors would add ~620 B per entry.
    assert len(snap) == n == len(index) and held / n < 1400, held / n  # 1,920 B before, 1,145 B now
    # Segments are read into new columns one at a time: the open's transient is one segment's block, not all eight.
    assert (peak - held) / n < 400, (peak - held) / n  # 784 B when every block was read before any was applied
    np.testing.assert_array_equal(snap.lbps_sqrt[5:9], np.sqrt(snap.lbps[5:9]))


def test_lbp_square_roots_computed_when_read_rank_as_a_stored_matrix_does() -> None:
    from pipeline.catalog.snapshot import SquareRoots
    from pipeline.matcher.shortlist import lbp_nearest

    rng = np.random.default_rng(3)
    lbps = rng.random((5000, 26)).astype(np.float32)
    lbps /= lbps.sum(axis=1, keepdims=True)
    alive = rng.random(5000) < 0.9
    roots = SquareRoots(lbps)
    roots.CHUNK = 777  # several chunks, the last one partial
    query = lbps[42] * 0.9 + 0.1 / 26
    stored = lbp_nearest(query, lbps, 10, alive, np.sqrt(lbps), exact_up_to=300)
    np.testing.assert_array_equal(lbp_nearest(query, lbps, 10, alive, roots, exact_up_to=300), stored)
    np.testing.assert_allclose(roots @ np.sqrt(query), np.sqrt(lbps) @ np.sqrt(query), rtol=1e-6)
    assert roots.shape == lbps.shape and len(roots) == 5000


def test_sha256_look_up_finds_live_slots_across_its_sorted_part_and_the_newer_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ids are found by a sorted array of their first 8 bytes plus a scan of the slots added since it was merged."""
    from pipeline.catalog.columns import Columns

    monkeypatch.setattr(Columns, "LOOKUP_TAIL", 70)  # merged once more than 70 slots are newer
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=1000)
    for first in range(0, 300, 30):
        index.commit([entry(n) for n in range(first, first + 30)])
    columns = index.snapshot()._columns
    assert 200 <= columns._sorted[2] < 300  # part sorted, part newer
    assert [index.get(entry(n).sha256).path for n in (0, 123, 250, 299)] == ["/x/0.jpg", "/x/123.jpg", "/x/250.jpg", "/x/299.jpg"]
    assert index.commit([entry(5), entry(290)]).duplicates == (entry(5).sha256, entry(290).sha256)
    # Removed, then registered again: the new slot is found, the old one stays dead.
    old = index.snapshot()
    index.commit(removes=[entry(7).sha256, entry(295).sha256])
    assert index.get(entry(7).sha256) is None and old.get(entry(7).sha256).path == "/x/7.jpg"  # each snapshot answers for itself
    moved = [NewEntry(e.sha256, f"/y/{n}.jpg", e.label, e.embedding, e.lbp, e.local) for n, e in ((n, entry(n)) for n in (7, 295))]
    index.commit(moved)
    assert [index.get(entry(n).sha256).path for n in (7, 295)] == ["/y/7.jpg", "/y/295.jpg"] and len(index) == 300
    reopened = CatalogIndex(tmp_path / "idx")
    assert reopened.get(entry(7).sha256).path == "/y/7.jpg" and len(reopened) == 300
    assert columns.live_slots(["nothex", "0" * 64]).tolist() == [-1, -1]
