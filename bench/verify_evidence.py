#!/usr/bin/env python3
"""Which verification evidence tells a re-shot from a stranger? Every query against every entry.

    python bench/verify_evidence.py BENCH_DIR --out PAIRS.npz [--limit N]
    python bench/verify_evidence.py --score PAIRS.npz... [--fit FIT.npz...]

First form: verifies every query against every catalog entry with the
shipped local-feature and verification settings (`local.*`,
`matcher.verify.*`) and saves, per pair, the evidence a decision could use:
inliers, ratio-test matches, the inliers' spread (convex-hull area of the
inlier query points over that of all the query's keypoints; the same on the
catalog side), the fit's scale and rotation.

Second form: for each PAIRS file, recall at 1 % FAR (BENCHMARK.md) of a
query's best label under several scores built from that evidence. With
`--fit`, a logistic model of each score's features is fitted on the FIT files
(calibration folders) and applied to the PAIRS files (evaluation folders), so
no score is tuned on what it is judged on.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import default_config  # noqa: E402
from pipeline.features.local import extract_configured, verify_pair  # noqa: E402
from pipeline.intake import read_photo  # noqa: E402

from compare_local_features import recall_at_far  # noqa: E402

FIELDS = ("inliers", "matches", "spread_q", "spread_c", "scale", "rotation")


def hull_area(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def collect(bench: Path, limit: int) -> dict[str, np.ndarray]:
    cfg = default_config()
    verify_cfg = cfg.matcher.verify
    catalog = sorted((bench / "catalog").iterdir())
    labels = np.array([p.name.split("-")[0] for p in catalog])
    rows = list(csv.DictReader(open(bench / "truth.csv")))[: limit or None]
    cat_f = [extract_configured(read_photo(p, cfg.intake).pixels, cfg.local) for p in catalog]
    q_f = [extract_configured(read_photo(bench / "query" / r["query"], cfg.intake).pixels, cfg.local) for r in rows]
    cat_area = np.array([hull_area(c.points) for c in cat_f])
    out = np.zeros((len(FIELDS), len(q_f), len(cat_f)), np.float32)
    for i, q in enumerate(q_f):
        q_area = hull_area(q.points)
        for j, c in enumerate(cat_f):
            v = verify_pair(q, c, ratio=verify_cfg.ratio, ransac_px=verify_cfg.ransac_px, min_matches=verify_cfg.min_matches,
                            guided_ratio=verify_cfg.guided_ratio)
            pairs = v.inlier_pairs
            out[:, i, j] = (v.inliers, v.matches, hull_area(pairs[:, :2]) / max(q_area, 1.0),
                            hull_area(pairs[:, 2:]) / max(cat_area[j], 1.0), v.scale or 0.0, v.rotation_deg or 0.0)
    return {"evidence": out, "labels": labels, "truth": np.array([r["label"] for r in rows]),
            "query_keypoints": np.array([len(q) for q in q_f])}


def best_label_features(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: features of its best label (most inliers), whether it is right, whether registered."""
    ev, labels, truth = d["evidence"], d["labels"], d["truth"]
    inl = ev[0]
    best = inl.argmax(1)
    rows = np.arange(len(best))
    other = np.where(labels[None, :] == labels[best][:, None], -1, inl).max(1).clip(0)
    f = ev[:, rows, best]
    feats = np.stack([np.log1p(f[0]), np.log1p(f[0]) - np.log1p(other), np.log1p(f[1]), f[2], f[3],
                      np.log1p(f[0]) - np.log1p(f[1]), np.log(np.maximum(f[4], 1e-3)) ** 2], 1)
    correct = labels[best] == truth
    return feats, correct, truth != ""


NAMES = ("log_inliers", "log_margin", "log_matches", "spread_q", "spread_c", "log_inlier_ratio", "log_scale_sq")
SCORES = {
    "inliers": [0],
    "inliers+margin (shipped)": [0, 1],
    "+matches": [0, 1, 2],
    "+spread_q": [0, 1, 3],
    "+spread_c": [0, 1, 4],
    "+spread both": [0, 1, 3, 4],
    "+inlier ratio": [0, 1, 5],
    "+scale": [0, 1, 6],
    "all": [0, 1, 2, 3, 4, 5, 6],
}


def score(paths: list[Path], fit_paths: list[Path]) -> None:
    from sklearn.linear_model import LogisticRegression

    fit = [best_label_features(dict(np.load(p))) for p in fit_paths]
    for name, cols in SCORES.items():
        row = {"score": name}
        model = None
        if fit:
            x = np.vstack([f[:, cols] for f, _, _ in fit])
            y = np.concatenate([c & r for _, c, r in fit])
            model = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
            row["weights"] = [round(float(w), 3) for w in model.coef_[0]]
        for p in paths:
            f, correct, registered = best_label_features(dict(np.load(p)))
            s = model.decision_function(f[:, cols]) if model else f[:, cols].sum(1)
            row[p.stem] = round(recall_at_far(s, correct, registered), 3)
        print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, nargs="?")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--score", type=Path, nargs="*", default=[])
    ap.add_argument("--fit", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    if args.score:
        score(args.score, args.fit)
        return
    d = collect(args.bench, args.limit)
    np.savez(args.out, **d)
    f, correct, registered = best_label_features(d)
    print(json.dumps({"bench": args.bench.name, "queries": len(correct), "top1_by_inliers": round(float(correct[registered].mean()), 3)}))


if __name__ == "__main__":
    main()
