#!/usr/bin/env python3
"""Per-query stages, old implementation against new, on real photos.

    .venv/bin/python bench/bench_stages.py [--photos DIR] [--repeats 3] [--candidates 10]

Photos: scikit-image's bundled photos, each rendered at 1600x1200 and at
640x480 and written as JPEG (q90) to a temp dir, or the JPEG/PNG files of
`--photos DIR` (at most `--limit`). Stages, p50 over the photos (and repeats) in ms:

* decode: `pipeline.intake.read_photo` with the shipped `intake:` settings;
* LBP old: `lbp_histogram` as written on skimage's `local_binary_pattern`
  (kept here as the reference) against LBP new: `lbp_histogram` now; the
  histograms are checked identical;
* SIFT: `extract_configured` with the shipped `local:` settings;
* verify x N: one query (a re-shot of a photo: rotated, tilted, a little
  blurred) against N candidates (its own photo and N - 1 others) with the
  shipped `matcher.verify` settings, old (BFMatcher knnMatch + masked match,
  kept here as the reference) against new (`verify_pair`); the inlier counts
  and homographies are checked identical.

Old and new alternate item by item, so that the load of this shared machine
weighs on both alike. Last line: one JSON object with every figure and the
ratios new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (str(REPO), str(REPO / "tests")):  # tests/reference_stages.py: the pre-speed-up stages, timed as "old"
    if path not in sys.path:
        sys.path.insert(0, path)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.features.lbp import lbp_histogram  # noqa: E402
from pipeline.features.local import extract_configured, verify_pair  # noqa: E402
from pipeline.intake import read_photo  # noqa: E402
from reference_stages import reference_verify, skimage_histogram  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "cat", "immunohistochemistry")


def reshoot(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A re-shot: rotated 20-60 deg, tilted, brightness changed, a little blurred."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(20, 60)), float(rng.uniform(0.8, 1.1))), [0, 0, 1]])
    d = float(rng.uniform(0.03, 0.1)) * w
    persp = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), np.float32([[d, d / 2], [w - d, d / 2], [w, h], [0, h]]))
    out = cv2.warpPerspective(rgb, persp @ rot, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(120, 110, 100))
    out = cv2.GaussianBlur(out, (0, 0), 0.8)
    return np.clip(out.astype(np.float32) * float(rng.uniform(0.85, 1.15)), 0, 255).astype(np.uint8)


def write_skimage_photos(folder: Path) -> list[Path]:
    from skimage import data

    paths = []
    for name in SKIMAGE_PHOTOS:
        rgb = getattr(data, name)()
        rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
        for w, h in ((1600, 1200), (640, 480)):
            image = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC if w > rgb.shape[1] else cv2.INTER_AREA)
            path = folder / f"{name}-{w}x{h}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(path)
    return paths


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1e3, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, help="folder of JPEG/PNG photos (default: scikit-image's, rendered at 1600x1200 and 640x480)")
    ap.add_argument("--limit", type=int, default=40, help="at most this many photos from --photos")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the photos (old and new alternate within each)")
    ap.add_argument("--candidates", type=int, default=10, help="candidates verified per query")
    args = ap.parse_args()
    config = load_config()
    v = config.matcher.verify
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        if args.photos:
            paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
        else:
            paths = write_skimage_photos(Path(tmp))
        if len(paths) < args.candidates:
            print(f"need at least {args.candidates} photos, have {len(paths)}", file=sys.stderr)
            return 2
        print(f"{len(paths)} photos ({args.photos or 'scikit-image, 1600x1200 and 640x480'}), {args.repeats} passes, "
              f"cv2 threads {cv2.getNumThreads()}, {os.cpu_count()} CPUs")
        times: dict[str, list[float]] = {k: [] for k in ("decode", "lbp_old", "lbp_new", "sift", "verify_old", "verify_new")}
        pixels = []
        for path in paths:
            t0 = time.perf_counter()
            photo = read_photo(path, config.intake)
            times["decode"].append(time.perf_counter() - t0)
            pixels.append(photo.pixels)
        lbp_identical = True
        features = []
        for rep in range(args.repeats):
            for i, image in enumerate(pixels):
                if rep:
                    t0 = time.perf_counter()
                    read_photo(paths[i], config.intake)
                    times["decode"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                old = skimage_histogram(image, config.lbp.points_radii, config.lbp.size)
                t1 = time.perf_counter()
                new = lbp_histogram(image, config.lbp.points_radii, config.lbp.size)
                t2 = time.perf_counter()
                times["lbp_old"].append(t1 - t0)
                times["lbp_new"].append(t2 - t1)
                lbp_identical &= bool(np.array_equal(old, new))
                t0 = time.perf_counter()
                local = extract_configured(image, config.local)
                times["sift"].append(time.perf_counter() - t0)
                if not rep:
                    features.append(local)
        queries = [extract_configured(reshoot(image, i), config.local) for i, image in enumerate(pixels)]
        verify_identical = True
        inliers = []
        for rep in range(args.repeats):
            for i, query in enumerate(queries):
                others = [j for j in range(len(features)) if j != i]
                chosen = [i] + [others[(i + k * 3) % len(others)] for k in range(args.candidates - 1)]
                candidates = [features[j] for j in chosen]
                t0 = time.perf_counter()
                old_results = [reference_verify(query, c, v.ratio, v.ransac_px, v.min_matches, "ransac", v.guided_ratio) for c in candidates]
                t1 = time.perf_counter()
                new_results = [verify_pair(query, c, v.ratio, v.ransac_px, v.min_matches, guided_ratio=v.guided_ratio) for c in candidates]
                t2 = time.perf_counter()
                times["verify_old"].append(t1 - t0)
                times["verify_new"].append(t2 - t1)
                for a, b in zip(old_results, new_results):
                    verify_identical &= a.inliers == b.inliers and a.matches == b.matches and (
                        (a.homography is None and b.homography is None)
                        or (a.homography is not None and b.homography is not None and np.array_equal(a.homography, b.homography)))
                if not rep:
                    inliers.append(new_results[0].inliers)
    figures = {k: p50(vals) for k, vals in times.items()}
    rows = [("decode (read_photo)", "decode", None), ("LBP", "lbp_old", "lbp_new"), ("SIFT extraction", "sift", None),
            (f"verify 1 query x {args.candidates}", "verify_old", "verify_new")]
    print(f"{'stage (p50 ms)':<26}{'old':>10}{'new':>10}{'new/old':>9}")
    for label, a, b in rows:
        if b is None:
            print(f"{label:<26}{figures[a]:>10.2f}")
        else:
            print(f"{label:<26}{figures[a]:>10.2f}{figures[b]:>10.2f}{figures[b] / figures[a]:>9.3f}")
    print(f"LBP histograms identical: {lbp_identical}; verify results identical: {verify_identical}; "
          f"true-pair inliers p50 {statistics.median(inliers)}")
    summary = {
        "photos": len(paths), "repeats": args.repeats, "candidates": args.candidates, "cv2_threads": cv2.getNumThreads(),
        "decode_ms": figures["decode"], "lbp_old_ms": figures["lbp_old"], "lbp_new_ms": figures["lbp_new"],
        "lbp_ratio_new_old": round(figures["lbp_new"] / figures["lbp_old"], 3), "sift_ms": figures["sift"],
        "verify_old_ms": figures["verify_old"], "verify_new_ms": figures["verify_new"],
        "verify_ratio_new_old": round(figures["verify_new"] / figures["verify_old"], 3),
        "lbp_identical": lbp_identical, "verify_identical": verify_identical,
        "true_pair_inliers_p50": statistics.median(inliers),
    }
    print(json.dumps(summary))
    return 0 if lbp_identical and verify_identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
