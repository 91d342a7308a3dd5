#!/usr/bin/env python3
"""Which local features verify best, and at what cost? Method, working size, keypoint cap, estimator.

    python bench/compare_local_features.py BENCH_DIR [--keypoints 400,1000] [--side 640,1024]
        [--methods sift,orb] [--estimators ransac,magsac] [--contrast 0.04,0.01] [--guided 0,0.9]

For every query, verifies it against every catalog entry (ratio test + robust
homography) and ranks entries by inliers. Prints one JSON line per
combination: top1 and recall_at_far1 as BENCHMARK.md defines them, with two
scores: `inliers` (the best entry's inlier count) and `margin` (that count
minus the best count of any other label: what chance alone reaches on this
query), extraction ms per image, verification ms per pair, bytes per entry.
Photos are decoded with the shorter side at least the largest `--side`.
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

from dataclasses import replace  # noqa: E402

from pipeline.config import default_config  # noqa: E402
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
    ap.add_argument("--keypoints", default="400", help="comma-separated keypoint caps")
    ap.add_argument("--side", default="640", help="comma-separated working sizes (longer side, px)")
    ap.add_argument("--methods", default="sift,orb")
    ap.add_argument("--estimators", default="ransac")
    ap.add_argument("--contrast", default="0.04", help="comma-separated SIFT contrast thresholds")
    ap.add_argument("--guided", default="0", help="comma-separated guided-matching ratios (0 = off; see verify_pair)")
    ap.add_argument("--dump", type=Path, default=None, help="also save each combination's per-pair inliers and matches (.npz) here")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N queries")
    args = ap.parse_args()
    sides = [int(v) for v in args.side.split(",")]
    cfg = replace(default_config().intake, work_side=max(sides))
    catalog = sorted((args.bench / "catalog").iterdir())
    labels = np.array([p.name.split("-")[0] for p in catalog])
    rows = list(csv.DictReader(open(args.bench / "truth.csv")))
    if args.limit:
        rows = rows[: args.limit]
    cat_px = [read_photo(p, cfg).pixels for p in catalog]
    q_px = [read_photo(args.bench / "query" / r["query"], cfg).pixels for r in rows]
    truth = [r["label"] for r in rows]
    registered = np.array([t != "" for t in truth])
    for method in args.methods.split(","):
        for side in sides:
            for cap, contrast in ((int(k), float(c)) for k in args.keypoints.split(",") for c in args.contrast.split(",")):
                t0 = time.perf_counter()
                cat_f = [extract_local(im, method, cap, side, contrast) for im in cat_px]
                q_f = [extract_local(im, method, cap, side, contrast) for im in q_px]
                extract_ms = (time.perf_counter() - t0) * 1e3 / (len(cat_px) + len(q_px))
                for estimator, guided in ((e, float(g)) for e in args.estimators.split(",") for g in args.guided.split(",")):
                    t1 = time.perf_counter()
                    px = side / 640 * 8.0
                    checks = [[verify_pair(q, c, ransac_px=px, estimator=estimator, guided_ratio=guided) for c in cat_f] for q in q_f]
                    inl = np.array([[v.inliers for v in row] for row in checks], dtype=np.float32)
                    pair_ms = (time.perf_counter() - t1) * 1e3 / inl.size
                    best = inl.argmax(1)
                    correct = np.array([labels[b] == t for b, t in zip(best, truth)])
                    others = np.where(labels[None, :] == labels[best][:, None], -1, inl).max(1)
                    if args.dump:
                        args.dump.mkdir(parents=True, exist_ok=True)
                        np.savez(args.dump / f"{args.bench.name}-{method}-{side}-{cap}-{contrast}-{estimator}-{guided}.npz", inliers=inl,
                                 matches=np.array([[v.matches for v in row] for row in checks]), labels=labels, truth=np.array(truth),
                                 query_keypoints=np.array([len(q) for q in q_f]), catalog_keypoints=np.array([len(c) for c in cat_f]))
                    nbytes = np.mean([f.descriptors.nbytes + f.points.nbytes for f in cat_f])
                    print(json.dumps({"bench": args.bench.name, "method": method, "keypoints": cap, "side": side, "contrast": contrast, "estimator": estimator, "guided": guided,
                                      "query_keypoints_median": float(np.median([len(q) for q in q_f])),
                                      "top1": round(float(correct[registered].mean()), 4),
                                      "recall_at_far1": round(recall_at_far(inl.max(1), correct, registered), 4),
                                      "recall_at_far1_margin": round(recall_at_far(inl.max(1) - np.maximum(others, 0), correct, registered), 4),
                                      "extract_ms": round(extract_ms, 1), "verify_ms_per_pair": round(pair_ms, 2),
                                      "bytes_per_entry": int(nbytes), "queries": len(rows), "catalog": len(catalog)}), flush=True)


if __name__ == "__main__":
    main()
