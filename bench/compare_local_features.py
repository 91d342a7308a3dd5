#!/usr/bin/env python3
"""Which local features verify best, and at what cost? SIFT (RootSIFT) vs ORB.

    python bench/compare_local_features.py BENCH_DIR [--keypoints 400] [--side 640]

For every query, verifies it against every catalog entry (ratio test + RANSAC
homography) and ranks entries by inliers. Prints, per method: top1 and
recall_at_far1 as BENCHMARK.md defines them (score = best inlier count),
extraction ms per image, verification ms per pair, and bytes per entry.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import IntakeConfig  # noqa: E402
from pipeline.features.local import extract_local, verify_pair  # noqa: E402
from pipeline.intake import read_photo  # noqa: E402


def recall_at_far(scores: np.ndarray, correct: np.ndarray, registered: np.ndarray, far: float = 0.01) -> float:
    neg = np.sort(scores[~registered])
    if not len(neg):
        return float("nan")
    k = int(np.floor(far * len(neg)))
    thr = neg[len(neg) - 1 - k]
    return float((correct & (scores > thr))[registered].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", type=Path)
    ap.add_argument("--keypoints", type=int, default=400)
    ap.add_argument("--side", type=int, default=640)
    ap.add_argument("--methods", default="sift,orb")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N queries")
    args = ap.parse_args()
    cfg = IntakeConfig()
    catalog = sorted((args.bench / "catalog").iterdir())
    labels = [p.name.split("-")[0] for p in catalog]
    rows = list(csv.DictReader(open(args.bench / "truth.csv")))
    if args.limit:
        rows = rows[: args.limit]
    cat_px = [read_photo(p, cfg).pixels for p in catalog]
    q_px = [read_photo(args.bench / "query" / r["query"], cfg).pixels for r in rows]
    truth = [r["label"] for r in rows]
    registered = np.array([t != "" for t in truth])
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        cat_f = [extract_local(im, method, args.keypoints, args.side) for im in cat_px]
        q_f = [extract_local(im, method, args.keypoints, args.side) for im in q_px]
        extract_ms = (time.perf_counter() - t0) * 1e3 / (len(cat_px) + len(q_px))
        t1 = time.perf_counter()
        inl = np.array([[verify_pair(q, c).inliers for c in cat_f] for q in q_f], dtype=np.float32)
        pair_ms = (time.perf_counter() - t1) * 1e3 / inl.size
        best = inl.argmax(1)
        correct = np.array([labels[b] == t for b, t in zip(best, truth)])
        top1 = float(correct[registered].mean())
        rec = recall_at_far(inl.max(1), correct, registered)
        nbytes = np.mean([f.descriptors.nbytes + f.points.nbytes for f in cat_f])
        print(json.dumps({"bench": args.bench.name, "method": method, "keypoints": args.keypoints, "side": args.side,
                          "top1": round(top1, 4), "recall_at_far1": round(rec, 4), "extract_ms": round(extract_ms, 1),
                          "verify_ms_per_pair": round(pair_ms, 2), "bytes_per_entry": int(nbytes),
                          "queries": len(rows), "catalog": len(catalog)}), flush=True)


if __name__ == "__main__":
    main()
