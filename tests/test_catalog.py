from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog import CatalogIndex, FeatureMismatchError, ModelMismatchError, NewEntry, label_from_path

REPO = Path(__file__).resolve().parent.parent


def entry(n: int, label: str = "a", path: str | None = None) -> NewEntry:
    rng = np.random.default_rng(n)
    sha = hashlib.sha256(f"bytes-{n}".encode()).hexdigest()
    vec = rng.normal(size=8).astype(np.float32)
    return NewEntry(sha, path or f"/x/{label}-{n}.jpg", label, vec / np.linalg.norm(vec), rng.random(10).astype(np.float32))


def test_commit_round_trips_every_field(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    e = entry(1, label="普洱", path="/x/普洱-1.jpg")
    index.commit([e])
    reopened = CatalogIndex(tmp_path / "idx", model_id="m1")
    (got,) = reopened.entries()
    assert (got.sha256, got.path, got.label, got.model_id) == (e.sha256, e.path, "普洱", "m1")
    np.testing.assert_array_equal(got.embedding, e.embedding)
    np.testing.assert_array_equal(got.lbp, e.lbp)
    assert abs(got.added_at - time.time()) < 60
    assert got.id == e.sha256[:16]


def test_names_that_are_not_utf8_and_a_removal_only_segment_round_trip(tmp_path: Path) -> None:
    odd = os.fsdecode(b"/x/caf\xe9-\xff\xfe.jpg")  # Latin-1 bytes: lone surrogates after fsdecode
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    index.commit([entry(1, label="普洱", path="/x/普洱-1.jpg"), entry(2, label=os.fsdecode(b"caf\xe9"), path=odd), entry(3)])
    index.commit(removes=[entry(3).sha256])  # a segment of no entries, one tombstone
    got = {e.sha256: e for e in CatalogIndex(tmp_path / "idx", model_id="m1").entries()}
    assert set(got) == {entry(1).sha256, entry(2).sha256}
    assert (got[entry(1).sha256].path, got[entry(1).sha256].label) == ("/x/普洱-1.jpg", "普洱")
    assert os.fsencode(got[entry(2).sha256].path) == b"/x/caf\xe9-\xff\xfe.jpg"
    assert os.fsencode(got[entry(2).sha256].label) == b"caf\xe9" and got[entry(2).sha256].model_id == "m1"


def test_a_segment_written_with_variable_length_name_strings_still_opens(tmp_path: Path) -> None:
    """Segments written before names became one byte string per column (2026-12-06) read as before."""
    import h5py

    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    index.commit([entry(1, label="普洱", path="/x/普洱-1.jpg"), entry(2, label="b")])
    (segment,) = sorted((tmp_path / "idx").glob("seg-*.h5"))
    with h5py.File(segment, "r+") as f:  # rewrite the names as the old writer stored them
        g = f["entries"]
        for key in ("path", "label", "model_id"):
            names = g[f"{key}_bytes"][()].tobytes().split(b"\0")
            del g[f"{key}_bytes"]
            g.create_dataset(key, data=names, dtype=h5py.string_dtype("utf-8"), shape=(len(names),))
    got = sorted((e.path, e.label, e.model_id) for e in CatalogIndex(tmp_path / "idx", model_id="m1").entries())
    assert got == [("/x/b-2.jpg", "b", "m1"), ("/x/普洱-1.jpg", "普洱", "m1")]


def test_same_bytes_twice_is_a_no_op(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    first = index.commit([entry(1)])
    second = index.commit([entry(1, path="/elsewhere/a-1.jpg")])
    assert first.added and not second.added and second.duplicates == (entry(1).sha256,)
    assert len(index) == 1


def test_remove_and_rename(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1")
    index.commit([entry(1), entry(2)])
    index.commit(removes=[entry(1).sha256])
    assert [e.sha256 for e in index.entries()] == [entry(2).sha256]
    moved = entry(2, path="/new/place.jpg")
    index.commit([moved], removes=[moved.sha256])
    assert index.get(moved.sha256).path == "/new/place.jpg"
    assert len(CatalogIndex(tmp_path / "idx", model_id="m1")) == 1


def test_a_catalog_read_whole_has_the_entries_its_commits_left_one_by_one(tmp_path: Path) -> None:
    """Random commits that add, remove, rename (remove and add under another path in one commit) and add again what
    was removed, with compactions between them: the index that made them and a fresh open of its segments hold
    the live entries the commits left, at the same slots (a compaction once wrote a tombstone that killed an entry
    renamed into a segment it did not merge)."""
    rng = random.Random(7)
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=4)
    live: dict[str, NewEntry] = {}
    gone: dict[str, NewEntry] = {}
    made = 0
    done = {"removed": 0, "renamed": 0, "added again": 0}
    for step in range(60):
        adds, removes = [], []
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.4 or not live:
                made += 1
                adds.append(entry(made, label=f"c{made % 7}"))
            elif kind < 0.6:
                removes.append(rng.choice(sorted(live)))
                done["removed"] += 1
            elif kind < 0.8:
                sha = rng.choice(sorted(live))
                removes.append(sha)
                number = live[sha].path.split("-")[-1]  # "<n>.jpg": entry(n) has this sha
                adds.append(entry(int(number.split(".")[0]), label="moved", path=f"/moved/{step}-{number}"))
                done["renamed"] += 1
            elif gone:
                sha = rng.choice(sorted(gone))
                adds.append(gone[sha])
                done["added again"] += 1
        adds = list({a.sha256: a for a in adds if a.sha256 not in live or a.sha256 in removes}.values())
        index.commit(adds, removes=sorted(set(removes)))
        for sha in set(removes):
            gone[sha] = live.pop(sha, gone.get(sha))
        for a in adds:
            live[a.sha256] = a
            gone.pop(a.sha256, None)
    snap = index.snapshot()
    reopened = CatalogIndex(tmp_path / "idx", model_id="m1").snapshot()
    assert sorted((e.sha256, e.path) for e in reopened.entries) == sorted((e.sha256, e.path) for e in snap.entries)
    assert sorted((a.sha256, a.path) for a in live.values()) == sorted((e.sha256, e.path) for e in snap.entries)
    np.testing.assert_array_equal(reopened.alive, snap.alive[:len(reopened.alive)])
    assert min(done.values()) >= 10 and made > 60


def test_columns_settled_at_once_have_the_liveness_of_columns_filled_block_by_block() -> None:
    """Blocks holding ids more than once (within a block and across blocks), each after its segment's tombstones:
    written without look-ups and settled once (how a catalog is read whole), the same slots are live as when each
    block's renames and tombstones are applied as it comes."""
    from pipeline.catalog.columns import Columns, PackedNames, SlotBlock, sha256_digests

    rng = np.random.default_rng(3)
    ids = [hashlib.sha256(f"id{i}".encode()).hexdigest() for i in range(40)]
    digests = sha256_digests(ids)[0]

    def block(slots: np.ndarray, picks: np.ndarray) -> SlotBlock:
        k = slots.size
        names = PackedNames.of([f"/x/{s}.jpg" for s in slots.tolist()])
        return SlotBlock(slots, digests[picks], names, names, ["m1"] * k, np.ones((k, 8), np.float32),
                         np.ones((k, 10), np.float32), np.zeros(k), None)

    blocks, slot = [], 0
    for _ in range(40):
        k = int(rng.integers(0, 6))
        picks, removed = rng.integers(0, 40, k), rng.integers(0, 40, int(rng.integers(0, 3)))
        if k and rng.random() < 0.4:  # a rename: removed and added again in one segment
            removed = np.append(removed, picks[0])
        blocks.append((np.arange(slot, slot + k), picks, removed))
        slot += k
    one_by_one, at_once = Columns(), Columns()
    for slots, picks, removed in blocks:
        one_by_one.remove([ids[i] for i in removed.tolist()])
        one_by_one.add(block(slots, picks))
        at_once.add(block(slots, picks), settle=False)
    at_once.settle([s for s, _, _ in blocks], [digests[r] for _, _, r in blocks])
    np.testing.assert_array_equal(at_once.alive[:slot], one_by_one.alive[:slot])
    assert 10 < one_by_one.live < 40 < slot
    assert [at_once.slot(i) for i in ids] == [one_by_one.slot(i) for i in ids]


def test_compaction_keeps_entries_and_drops_old_segments(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=3)
    for n in range(10):
        index.commit([entry(n)])
    assert len(index) == 10
    assert len(list((tmp_path / "idx").glob("seg-*.h5"))) <= 3
    assert len(CatalogIndex(tmp_path / "idx", model_id="m1")) == 10


def test_a_commit_merges_a_bounded_amount_whatever_the_catalog_size() -> None:
    """A commit's merge never rewrites a finished segment nor writes more than `big`; each entry is rewritten a few
    times (once per size level), not once per commit (the policy before merged the whole small tail: 11.8 s at 10k)."""
    from pipeline.catalog.tiers import merge_count

    big, factor = 65_536, 8
    for batch, most_writes in ((40, 4.0), (1, 11.0)):
        sizes: list[int] = []
        written = 0
        for _ in range(200_000 // batch):
            sizes.append(batch)
            while (n := merge_count(sizes, big, factor, max_small=16)) >= 2:
                assert all(s * factor <= big for s in sizes[-n:])  # only unfinished segments are merged
                merged = sum(sizes[-n:])
                assert merged <= big
                written += merged
                sizes[-n:] = [merged]
            assert sum(s * factor <= big for s in sizes) <= 16
        assert sum(sizes) == 200_000 and written / 200_000 < most_writes, (batch, written / 200_000)


def test_commits_merge_the_newest_small_segments_and_never_rewrite_a_finished_one(tmp_path: Path) -> None:
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=4, big_segment=800)  # over 100 entries: finished
    index.commit([entry(n) for n in range(150)])
    (base,) = [p.name for p in (tmp_path / "idx").glob("seg-*.h5")]
    for n in range(150, 190):
        index.commit([entry(n)])
        names = sorted(p.name for p in (tmp_path / "idx").glob("seg-*.h5"))
        assert names[0] == base and len(names) <= 5
    reopened = CatalogIndex(tmp_path / "idx", model_id="m1")
    assert sorted(e.sha256 for e in reopened.entries()) == sorted(entry(n).sha256 for n in range(190))


def test_other_model_is_refused(tmp_path: Path) -> None:
    CatalogIndex(tmp_path / "idx", model_id="m1").commit([entry(1)])
    with pytest.raises(ModelMismatchError, match="reembed"):
        CatalogIndex(tmp_path / "idx", model_id="m2")


def test_other_feature_settings_are_refused_until_rebuilt(tmp_path: Path) -> None:
    """Descriptors made with another locator or canonical size are never mixed with the loaded settings'."""
    old = {"locate": {"version": "locate/2", "size": 512}, "lbp": {"size": 256}}
    new = {"locate": {"version": "locate/2", "size": 384}, "lbp": {"size": 256}}
    CatalogIndex(tmp_path / "idx", model_id="m1", features=old).commit([entry(1)])
    assert CatalogIndex(tmp_path / "idx", model_id="m1", features=old).index_features == old
    with pytest.raises(FeatureMismatchError, match="locate.*reembed"):
        CatalogIndex(tmp_path / "idx", model_id="m1", features=new)
    assert len(CatalogIndex(tmp_path / "idx")) == 1  # a reader that checks nothing (status) still opens it
    rebuilt = CatalogIndex(tmp_path / "idx", model_id="m1")
    rebuilt.replace_all([entry(1), entry(2)], "m1", new)
    assert len(CatalogIndex(tmp_path / "idx", model_id="m1", features=new)) == 2
    with pytest.raises(FeatureMismatchError):
        CatalogIndex(tmp_path / "idx", model_id="m1", features=old)


def test_an_index_from_before_feature_settings_were_recorded_serves_the_whole_photo_settings_only(tmp_path: Path) -> None:
    """A catalog written before the manifest recorded features described whole photos: usable with the locator off."""
    CatalogIndex(tmp_path / "idx", model_id="m1").commit([entry(1)])  # no features: as an older teaprint wrote it
    assert CatalogIndex(tmp_path / "idx").index_features is None
    whole = {"locate": None, "lbp": {"size": 256}}
    index = CatalogIndex(tmp_path / "idx", model_id="m1", features=whole)
    index.commit([entry(2)])  # the first commit with the locator off records the settings
    assert len(index) == 2 and CatalogIndex(tmp_path / "idx").index_features == whole
    legacy = tmp_path / "legacy"
    CatalogIndex(legacy, model_id="m1").commit([entry(1)])
    with pytest.raises(FeatureMismatchError, match="not recorded.*reembed"):
        CatalogIndex(legacy, model_id="m1", features={"locate": {"version": "locate/2", "size": 512}, "lbp": {"size": 256}})


def test_second_reader_sees_commits(tmp_path: Path) -> None:
    writer = CatalogIndex(tmp_path / "idx", model_id="m1")
    reader = CatalogIndex(tmp_path / "idx", model_id="m1")
    writer.commit([entry(1)])
    assert reader.refresh() and len(reader) == 1


def test_labels_from_name_and_folder(tmp_path: Path) -> None:
    assert label_from_path(Path("a-000001.jpg")) == "a"
    assert label_from_path(Path("cake7-side-2.png")) == "cake7"
    assert label_from_path(Path("plain.jpg")) == "plain"
    assert label_from_path(tmp_path / "cat" / "menghai" / "x-1.jpg", tmp_path / "cat") == "menghai"
    assert label_from_path(tmp_path / "cat" / "b-1.jpg", tmp_path / "cat") == "b"


def test_writer_killed_at_random_moments_leaves_a_readable_complete_index(tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    confirmed: set[str] = set()
    removed: set[str] = set()
    maybe_removed: set[str] = set()
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 25
    opened_from_file = 0
    for round_ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "catalog_writer.py"), str(directory), str(round_ * 10_000)],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        first = proc.stdout.readline()  # the writer is up and committing; now kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in (first + out).splitlines():
            kind, sha = line.split()
            if kind == "added":
                confirmed.add(sha)
            elif kind == "removing":
                maybe_removed.add(sha)
            else:
                removed.add(sha)
                confirmed.discard(sha)
        index = CatalogIndex(directory, model_id="m1")
        present = {e.sha256 for e in index.entries()}
        missing = confirmed - present - maybe_removed
        assert not missing, f"round {round_}: {len(missing)} committed entries lost"
        assert not (removed & present), f"round {round_}: removed entries came back"
        if round_ % 5 == 4:
            assert_saved_votes_agree_with_a_rebuild(directory, tmp_path / f"rebuilt{round_}", rng)
        opened_from_file += assert_saved_ann_opens_and_agrees_with_the_segments(directory, rng)
    assert len(confirmed) > kills  # the writer really committed between kills
    assert opened_from_file > kills // 2  # the saved ANN index was mostly taken over, not rebuilt


def assert_saved_votes_agree_with_a_rebuild(directory: Path, scratch: Path, rng: random.Random) -> None:
    """The vote store the killed writer saved (or half-saved) opens and votes as one rebuilt from the segments."""
    import shutil

    from catalog_writer import keypoints
    from pipeline.search.vocabulary import Vocabulary
    from pipeline.search.votes import FILE, VoteStore

    vocab = Vocabulary.load()
    snap = CatalogIndex(directory, model_id="m1").snapshot()
    saved = VoteStore(directory, vocab, per_entry=150)
    saved.follow(snap)
    assert saved.opened_from_file > 0, "the killed writer's saved postings were not used"
    shutil.copytree(directory, scratch)
    (scratch / FILE).unlink(missing_ok=True)
    rebuilt = VoteStore(scratch, vocab, per_entry=150, merge_every=10**9)
    rebuilt.follow(CatalogIndex(scratch, model_id="m1").snapshot())
    numbers = [int(Path(e.path).stem) for e in snap.entries]
    for n in rng.sample(numbers, min(8, len(numbers))):
        query = keypoints(n)
        assert saved.vote(query, snap, 5).tolist() == rebuilt.vote(query, snap, 5).tolist()


def assert_saved_ann_opens_and_agrees_with_the_segments(directory: Path, rng: random.Random) -> int:
    """The ANN index the killed writer saved (or half-saved) opens, or is rebuilt, and finds what an exact scan finds; 1 if it was opened."""
    from catalog_writer import ANN
    from pipeline.search.ann import AnnIndex

    snap = CatalogIndex(directory, model_id="m1").snapshot()
    ann = AnnIndex(directory, ANN)
    ann.follow(snap)
    assert ann.ready(snap) and ann.covered == snap.alive.size
    for _ in range(5):
        query = np.random.default_rng(rng.randrange(10**6)).random(16).astype(np.float32)
        exact = snap.rows[np.lexsort((snap.rows, -(snap.embeddings[snap.rows] @ query)))][:5]
        assert ann.nearest(query, snap, 5)[0].tolist() == exact.tolist()
    return int(ann.opened_from_file > 0)


def test_snapshots_stay_whole_while_another_thread_writes_through_the_same_record(tmp_path: Path) -> None:
    """Readers share the writer's record without a lock of their own: each snapshot is one generation, entire."""
    import threading

    from pipeline.catalog import CatalogWriter

    record = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=4)
    writer = CatalogWriter(record, "m1", require_local=False)
    done = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                snap = record.snapshot()
                # rows are slots: one per entry ever committed, the live ones flagged in `alive`
                assert snap.embeddings.shape[0] == snap.lbps.shape[0] == len(snap.labels) == snap.alive.size
                assert len(snap.entries) == int(snap.alive.sum()) == len(snap)
                assert [e.sha256 for e in snap.entries] == [snap.get(e.sha256).sha256 for e in snap.entries]
                assert not snap.embeddings.flags.writeable
                seen.append((snap.generation, len(snap)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for n in range(30):
        writer.register([entry(n)])
        if n % 7 == 6:
            writer.remove([writer.snapshot().get(entry(n - 3).sha256)])
    done.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert len(seen) > 30
    by_generation: dict[int, int] = {}
    for generation, size in seen:
        assert by_generation.setdefault(generation, size) == size  # one generation, one content
    assert len(writer.snapshot()) == 30 - 4


def test_rename_through_the_writer_keeps_every_descriptor_and_the_registration_time(tmp_path: Path) -> None:
    from pipeline.catalog import CatalogWriter
    from pipeline.features.local import LocalFeatures

    writer = CatalogWriter(CatalogIndex(tmp_path / "idx", model_id="m1"), "m1", require_local=True)
    local = LocalFeatures(np.arange(8, dtype=np.float32).reshape(4, 2), np.full((4, 128), 7, np.uint8), 320)
    base = entry(1)
    (stored,) = writer.register([NewEntry(base.sha256, base.path, base.label, base.embedding, base.lbp, local)]).added
    moved = writer.rename(stored, "/y/b-1.jpg", "b")
    again = CatalogIndex(tmp_path / "idx", model_id="m1").get(base.sha256)
    for got in (moved, again):
        assert (got.path, got.label, got.added_at, got.model_id) == ("/y/b-1.jpg", "b", stored.added_at, "m1")
        np.testing.assert_array_equal(got.local.descriptors, local.descriptors)
        np.testing.assert_array_equal(got.local.points, local.points)
        np.testing.assert_array_equal(got.embedding, base.embedding)
        assert got.local.side == 320
