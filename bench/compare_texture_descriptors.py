#!/usr/bin/env python3
"""Texture descriptors alone, nearest neighbour by chi-square: top1 and recall at 1% FAR per folder. A diagnostic.

    .venv/bin/python bench/compare_texture_descriptors.py NAME=BENCH[,BENCH...]... \
        [--sets "8,1 16,2 24,3; 8,1 16,2 24,3 24,5 24,8"] [--clbp]

Each NAME pools the queries of its folders (each folder answered against its
own catalog, BENCHMARK.md layout), so that many small catalogs
(`bench/texture_catalog_sizes.sh`) read as one figure. A query's score is its
nearest label's chi-square distance (negated) or the log ratio of the second
nearest label's distance to the nearest's (the LBP margin the texture expert
weighs); top1 and recall at 1% FAR on each score are `teaprint eval`'s
(`pipeline.evaluation.metrics`). Descriptors: `pipeline.features.lbp.lbp_histogram` (the catalog's
LBP) at each (P, R) set of `--sets`, on the grey photo resized to 256 px as
the pipeline describes a bare photo; with `--clbp`, also completed LBP
(Guo, Zhang & Zhang 2010: the sign code beside a magnitude code thresholded
at the photo's mean magnitude, each rotation-invariant uniform, concatenated)
at the first set's radii.

This measures a descriptor before it is tried in the pipeline: a gain here
need not survive the fused decision (bench/README.md, "The photo's negative", its paragraph "More LBP radii").
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluation.metrics import Outcome, recall_at_far, top1  # noqa: E402
from pipeline.features.lbp import chi2_distance, lbp_histogram  # noqa: E402

SIZE = 256
"""Side of the grey image described, in px (the pipeline's `lbp.size`)."""


def parse_sets(text: str) -> list[tuple[tuple[int, int], ...]]:
    """'8,1 16,2; 8,1 24,5' -> [((8, 1), (16, 2)), ((8, 1), (24, 5))]."""
    return [tuple(tuple(int(v) for v in pair.split(",")) for pair in chunk.split()) for chunk in text.split(";") if chunk.strip()]


def _riu2(bits: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform codes of (P, H, W) bool bits: the set bits, or P + 1 when not uniform."""
    changes = (bits[1:] != bits[:-1]).sum(0) + (bits[0] != bits[-1])
    return np.where(changes <= 2, bits.sum(0), bits.shape[0] + 1)


def clbp_histogram(grey: np.ndarray, points_radii: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Completed LBP (sign and magnitude codes, separate histograms), shape (2 * sum(P + 2),), float32.

    Parameters
    ----------
    grey : ndarray, shape (H, W), dtype uint8
    points_radii : tuple of (P, R), R in px of `grey`
    """
    g = grey.astype(np.float32)
    ys, xs = np.mgrid[0 : g.shape[0], 0 : g.shape[1]].astype(np.float32)
    blocks = []
    for points, radius in points_radii:
        angles = 2 * np.pi * np.arange(points) / points
        diffs = np.stack([cv2.remap(g, xs + np.float32(radius * np.cos(a)), ys - np.float32(radius * np.sin(a)),
                                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for a in angles]) - g[None]
        magnitude = np.abs(diffs)
        for codes in (_riu2(diffs >= 0), _riu2(magnitude >= magnitude.mean())):
            hist = np.bincount(codes.ravel(), minlength=points + 2).astype(np.float32)
            blocks.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(blocks)


def folder_scores(root: Path, describe) -> list[tuple[str, str, float, float]]:
    """(truth, nearest label, -nearest distance, margin) per query of one folder."""
    catalog = sorted(p for p in (root / "catalog").iterdir() if p.is_file())
    labels = np.array([p.name.split("-")[0] for p in catalog])
    described = np.stack([describe(p) for p in catalog])
    names = np.unique(labels)
    out = []
    with open(root / "truth.csv", newline="") as f:
        for row in csv.DictReader(f):
            d = chi2_distance(describe(root / "query" / row["query"]), described)
            per_label = np.array([d[labels == n].min() for n in names])
            order = np.argsort(per_label)
            second = per_label[order[1]] if names.size > 1 else per_label[order[0]]
            out.append((row["label"], str(names[order[0]]), -float(per_label[order[0]]),
                        float(np.log(second + 1e-9) - np.log(per_label[order[0]] + 1e-9))))
    return out


def figures(rows: list[tuple[str, str, float, float]]) -> tuple[float, float, float]:
    """(top1, recall at 1% FAR on the distance, on the margin), as `teaprint eval` computes them."""
    by_distance = [Outcome(truth, label, "no_match", nearest) for truth, label, nearest, _ in rows]
    by_margin = [Outcome(truth, label, "no_match", margin) for truth, label, _, margin in rows]
    return top1(by_distance) or 0.0, recall_at_far(by_distance)[0] or 0.0, recall_at_far(by_margin)[0] or 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benches", nargs="+", help="NAME=BENCH[,BENCH...]")
    ap.add_argument("--sets", default="8,1 16,2 24,3; 8,1 16,2 24,3 24,5; 8,1 16,2 24,3 24,5 24,8",
                    help="(P, R) sets separated by ';', the shipped one first")
    ap.add_argument("--clbp", action="store_true", help="also completed LBP at the first set's radii")
    args = ap.parse_args(argv)
    sets = parse_sets(args.sets)
    greys: dict[Path, np.ndarray] = {}

    def grey(path: Path) -> np.ndarray:
        if path not in greys:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise SystemExit(f"cannot read {path}")
            greys[path] = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        return greys[path]

    describers = [(" ".join(f"{p},{r}" for p, r in s), lambda path, s=s: lbp_histogram(grey(path), s, SIZE)) for s in sets]
    if args.clbp:
        describers.append((f"clbp {' '.join(f'{p},{r}' for p, r in sets[0])}", lambda path: clbp_histogram(grey(path), sets[0])))
    print("| folders | descriptor | bins | top1 | R@FAR1 (distance) | R@FAR1 (margin) |")
    print("|---|---|---|---|---|---|")
    for spec in args.benches:
        name, _, folders = spec.partition("=")
        roots = [Path(f) for f in folders.split(",")]
        for label, describe in describers:
            rows = [r for root in roots for r in folder_scores(root, describe)]
            right_first, by_distance, by_margin = figures(rows)
            bins = describe(next((roots[0] / "catalog").iterdir())).size
            print(f"| {name} | {label} | {bins} | {right_first:.3f} | {by_distance:.3f} | {by_margin:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
