#!/usr/bin/env python3
"""How well the relief correlation tells a re-shot from a stranger on a benchmark folder (BENCHMARK.md layout).

    python bench/compare_surface_correlation.py BENCH_DIR ANSWERS.jsonl [--thresholds 8,9,10,12]

For every query the photo's relief (`pipeline.features.surface`) is correlated
with each catalog photo of its own label (right pairs; registered queries) and
with the first offered candidate of another label in ANSWERS (`teaprint eval
--json` of the same folder: the pipeline's own nearest other surface, for a
relit texture its LBP near twin; impostor pairs, every query). Prints the
impostors' largest peaks and, per threshold, how many impostor pairs pass and
what share of the registered queries' right pairs pass, in all and among those
the answers did not accept; then the ms per correlation.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.features.surface import SurfaceSpectrum, correlate, spectrum, surface_patch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("answers", type=Path)
    ap.add_argument("--thresholds", default="8,9,10,12,15")
    args = ap.parse_args(argv)
    truth = {r["query"]: r["label"] for r in csv.DictReader((args.bench / "truth.csv").open())}
    by_label: dict[str, list[Path]] = {}
    for p in sorted((args.bench / "catalog").iterdir()):
        by_label.setdefault(p.stem.rsplit("-", 1)[0], []).append(p)
    cache: dict[Path, SurfaceSpectrum] = {}

    def relief(path: Path) -> SurfaceSpectrum:
        if path not in cache:
            cache[path] = spectrum(surface_patch(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)))
        return cache[path]

    right, right_refused, impostor = [], [], []
    spent, pairs = 0.0, 0
    for line in args.answers.open():
        answer = json.loads(line)
        label = truth[answer["query"]]
        query = relief(args.bench / "query" / answer["query"])
        if label:
            peak = max(correlate(query, relief(p)).peak for p in by_label[label])
            right.append(peak)
            right_refused.append(peak if answer["status"] != "matched" else -1.0)
        other = next((m for m in answer["matches"] if m["label"] != label), None)
        if other is not None:
            target = relief(Path(other["image"]))
            start = time.perf_counter()
            impostor.append(correlate(query, target).peak)
            spent += time.perf_counter() - start
            pairs += 1
    imp, ok, refused = np.array(impostor), np.array(right), np.array(right_refused)
    print(f"{args.bench.name}: {len(ok)} registered queries, {len(imp)} impostor pairs; impostor peak max {imp.max():.2f}, "
          f"99th percentile {np.percentile(imp, 99):.2f}")
    print("| threshold | impostor pairs above | right pairs above | right above, answer not matched |")
    print("|---|---|---|---|")
    for t in map(float, args.thresholds.split(",")):
        print(f"| {t:g} | {int((imp > t).sum())} | {np.mean(ok > t):.3f} | {np.mean(refused > t):.3f} |")
    print(f"{spent / max(pairs, 1) * 1e3:.2f} ms per correlation (spectra of both photos ready)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
