#!/usr/bin/env python3
"""Peak memory of the two catalog-wide reads a daemon can meet: a compaction and a vote-store rebuild (issue 14).

    .venv/bin/python bench/bench_catalog_memory.py INDEX_DIR [--work DIR]

Copies INDEX_DIR (a catalog's `paths.index`, e.g. one built by
`bench/bench_scale.py --work`) to a scratch folder and measures, each in a
fresh process so that one's peak does not hide the other's:

- `compact`: `CatalogIndex.compact()` merging every segment into one (what
  a commit does when it leaves more than `max_segments` small segments);
- `votes`: `VoteStore.follow` from nothing (a missing `votes.bin`: the first
  start after `teaprint index` or an upgrade), 150 keypoints per entry.

Prints one line per step and a JSON line: seconds, VmRSS after opening the
catalog (the baseline), VmHWM after the step, and their difference (what the
step adds to the process that runs it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def step(index: Path, what: str) -> dict:
    """Run one step on `index` in this process; its figures."""
    sys.path.insert(0, str(REPO))
    from pipeline.catalog import CatalogIndex
    from pipeline.search.vocabulary import Vocabulary
    from pipeline.search.votes import VoteStore

    record = CatalogIndex(index)
    opened_mb = _vm("VmRSS")
    t0 = time.perf_counter()
    if what == "compact":
        record.compact()
    else:
        for run in index.glob("votes*.bin"):  # every saved run: the store starts from nothing
            run.unlink()
        VoteStore(index, Vocabulary.load(), per_entry=150).follow(record.snapshot())
    seconds = time.perf_counter() - t0
    peak = _vm("VmHWM")
    return {"step": what, "entries": len(record), "seconds": round(seconds, 2), "opened_rss_mb": round(opened_mb, 1),
            "peak_rss_mb": round(peak, 1), "added_mb": round(peak - opened_mb, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="the catalog's index folder (copied, never changed)")
    parser.add_argument("--work", type=Path, help="scratch folder for the copy (default: a temp folder)")
    parser.add_argument("--step", choices=("compact", "votes"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.index, args.step)))
        return 0
    figures = []
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        copy = Path(scratch) / "index"
        shutil.copytree(args.index, copy)
        for what in ("compact", "votes"):
            done = subprocess.run([sys.executable, __file__, str(copy), "--step", what], capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            figures.append(row)
            print(f"{what:8s} {row['entries']:>9,} entries  {row['seconds']:>7} s  RSS after open {row['opened_rss_mb']} MB  "
                  f"peak {row['peak_rss_mb']} MB  (+{row['added_mb']} MB)", flush=True)
    print(json.dumps({"bench": "catalog_memory", "steps": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
