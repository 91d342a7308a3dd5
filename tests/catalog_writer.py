"""Subprocess for the crash test: commits small batches forever, reporting each."""

import hashlib
import sys
from pathlib import Path

import numpy as np

from pipeline.catalog import CatalogIndex, NewEntry


def main(directory: str, start: int) -> None:
    index = CatalogIndex(Path(directory), model_id="m1", max_segments=4)
    rng = np.random.default_rng(start)
    n = start
    while True:
        batch = []
        for _ in range(int(rng.integers(1, 6))):
            sha = hashlib.sha256(f"photo-{n}".encode()).hexdigest()
            batch.append(NewEntry(sha, f"/photos/{n}.jpg", f"label{n % 7}", rng.random(16).astype(np.float32), rng.random(54).astype(np.float32)))
            n += 1
        removes = [hashlib.sha256(f"photo-{n - 3}".encode()).hexdigest()] if rng.random() < 0.2 else []
        for sha in removes:
            print("removing", sha, flush=True)  # the kill may land after the commit, before "removed"
        result = index.commit(batch, removes=removes)
        for sha in result.removed:
            print("removed", sha, flush=True)
        for sha in result.added:
            print("added", sha, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
