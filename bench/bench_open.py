#!/usr/bin/env python3
"""How long opening the catalog record takes at N entries, and where the time goes.

    python bench/bench_open.py WORK [--entries 1000000] [--segment 65536] [--profile 12]

Builds (once; reused when WORK/index holds N entries) a record of N entries
through `CatalogIndex.commit`, one segment of `--segment` entries per commit,
with real-sized descriptors (128-d embedding, 26-bin LBP histogram, paths and
labels as a scanner export names them) and no keypoints, so that a million
entries take minutes, not the hour `bench_scale.py` needs. Then, in fresh
processes, opens it three times (`CatalogIndex(WORK/index)` and its first
snapshot) and prints the wall time of each, the resident memory (VmRSS)
the open and first snapshot add, per entry (median of the three), and the
top functions of a cProfile of one more open. The keypoint-free record times what the open
reads for every entry (ids, names, descriptors); the keypoints stay on disk
at open either way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.catalog import CatalogIndex, NewEntry  # noqa: E402

MODEL = "bench-open-model"
PAGE = __import__("os").sysconf("SC_PAGE_SIZE")


def build(index: Path, entries: int, segment: int, dim: int = 128, bins: int = 26) -> float:
    rng = np.random.default_rng(0)
    record = CatalogIndex(index, MODEL, max_segments=10_000)
    start = time.perf_counter()
    for first in range(len(record), entries, segment):
        count = min(segment, entries - first)
        emb = rng.normal(size=(count, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        lbp = rng.random((count, bins), dtype=np.float32)
        batch = [NewEntry(hashlib.sha256(str(first + i).encode()).hexdigest(),
                          f"/srv/teaprint/inbox/catalog/2026-12/cake{(first + i) // 3:07d}-{(first + i) % 3}.jpg",
                          f"cake{(first + i) // 3:07d}", emb[i], lbp[i]) for i in range(count)]
        record.commit(batch)
        print(f"  {first + count:,} entries, {time.perf_counter() - start:.0f} s", flush=True)
    return time.perf_counter() - start


def open_once(index: Path, profile: int) -> dict:
    code = ("import sys, time, json; sys.path.insert(0, %r)\n"
            "from pipeline.catalog import CatalogIndex\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * %d\n"
            "before = rss(); t = time.perf_counter(); r = CatalogIndex(%r); s = r.snapshot(); n = len(s)\n"
            "print(json.dumps({'open_s': time.perf_counter() - t, 'entries': n, 'rss_added': rss() - before}))\n"
            ) % (str(Path(__file__).resolve().parent.parent), PAGE, str(index))
    if profile:
        code = ("import cProfile, pstats, io\npr = cProfile.Profile(); pr.enable()\n" + code +
                "pr.disable(); out = io.StringIO(); pstats.Stats(pr, stream=out).sort_stats('tottime').print_stats(%d); print(out.getvalue(), file=sys.stderr)\n" % profile)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if profile:
        print("\n".join(line for line in done.stderr.splitlines() if line.strip())[:6000])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--segment", type=int, default=65_536)
    ap.add_argument("--profile", type=int, default=12, help="functions of the profile to print (0 = none)")
    args = ap.parse_args(argv)
    index = args.work / "index"
    if len(CatalogIndex(index)) < args.entries:
        print(f"building {args.entries:,} entries in {index}")
        print(f"built in {build(index, args.entries, args.segment):.1f} s")
    runs = [open_once(index, 0) for _ in range(3)]
    opens = [r["open_s"] for r in runs]
    print(f"entries {args.entries:,}  open s: " + ", ".join(f"{s:.2f}" for s in opens) + f"  (median {sorted(opens)[1]:.2f})")
    added = sorted(r["rss_added"] for r in runs)[1]
    print(f"resident memory the open adds: {added / 2**20:,.0f} MB, {added / max(runs[0]['entries'], 1):,.0f} B per entry (median of 3)")
    if args.profile:
        open_once(index, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
