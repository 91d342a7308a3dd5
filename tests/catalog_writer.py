"""Subprocess for the crash test: commits small batches forever, reporting each.

Entries carry keypoints, and a vote store and an embedding ANN index follow
every commit and save every few entries, so a kill also lands inside a save."""

import hashlib
import sys
from pathlib import Path

import numpy as np

from pipeline.catalog import CatalogIndex, NewEntry
from pipeline.features.local import LocalFeatures
from pipeline.search.ann import AnnIndex, AnnSettings
from pipeline.search.vocabulary import Vocabulary
from pipeline.search.votes import VoteStore


def keypoints(n: int) -> LocalFeatures:
    rng = np.random.default_rng(1000 + n)
    d = (rng.gamma(0.6, 18.0, size=(40, 128)) * (rng.random((40, 128)) < 0.5)).clip(0, 255).astype(np.uint8)
    return LocalFeatures(rng.uniform(0, 640, size=(40, 2)).astype(np.float32), d, 640)


ANN = AnnSettings(min_rows=8, lists=4, probes=4, save_every=3)  # every list probed: searches are exact


def main(directory: str, start: int) -> None:
    index = CatalogIndex(Path(directory), model_id="m1", max_segments=4)
    votes = VoteStore(Path(directory), Vocabulary.load(), per_entry=150, merge_every=3)
    ann = AnnIndex(Path(directory), ANN)
    rng = np.random.default_rng(start)
    n = start
    while True:
        batch = []
        for _ in range(int(rng.integers(1, 6))):
            sha = hashlib.sha256(f"photo-{n}".encode()).hexdigest()
            batch.append(NewEntry(sha, f"/photos/{n}.jpg", f"label{n % 7}", rng.random(16).astype(np.float32), rng.random(54).astype(np.float32), keypoints(n)))
            n += 1
        removes = [hashlib.sha256(f"photo-{n - 3}".encode()).hexdigest()] if rng.random() < 0.2 else []
        for sha in removes:
            print("removing", sha, flush=True)  # the kill may land after the commit, before "removed"
        result = index.commit(batch, removes=removes)
        votes.follow(index.snapshot())
        ann.follow(index.snapshot())
        for sha in result.removed:
            print("removed", sha, flush=True)
        for sha in result.added:
            print("added", sha, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
