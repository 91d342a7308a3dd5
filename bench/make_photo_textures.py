#!/usr/bin/env python3
"""Calibration benchmark of bare textures cut from real photos, under other light, scale and pose (BENCHMARK.md layout).

    python bench/make_photo_textures.py OUT_DIR [--seed S] [--per-source 4] [--shots 3] [--size 200]

`bench/make_textures.py` renders relit height fields: their strangers look
more alike than real materials do, and a decision calibrated on them alone
is too strict for real textures (KTH-TIPS: recall at the accept point 0.6
of recall at 1% false accepts) while refitting on them let KTH's strangers
through. This one cuts its surfaces from the same held-out Debian photos
as `make_discs.py --split calibration` (wallpapers, mypaint's paper and
canvas scans; never a photo the encoder trained on, never KTH-TIPS): each
photo gives up to `--per-source` non-overlapping square regions with fine
grain (`MIN_DETAIL`: a wallpaper's smooth gradient is no texture), each a
material sample with its own label. The catalog photo is the region as it is; each
query is the same region photographed again the way KTH-TIPS varies its
shots: scale 0.6-1.5, rotation, a shifted frame, light from another side
(a brightness ramp), exposure and contrast, sometimes grey, blur, sensor
noise and JPEG 60-95. A quarter of the regions are never registered.
Calibration only: evaluation uses `make_textures.py` and KTH-TIPS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.training import data as tdata  # noqa: E402

from make_discs import detail, source_specs  # noqa: E402
from truth_csv import write_truth  # noqa: E402


MIN_DETAIL = 4.0
"""Least fine grain (grey levels) a region needs nearly everywhere to be a texture: a wallpaper's smooth
gradient, or one sharp edge across it, is not."""


def regions(image: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Up to `count` non-overlapping textured squares (x, y, side), side a quarter of the photo's shorter side."""
    h, w = image.shape[:2]
    side = min(h, w) // 4
    cells = [(x, y) for y in range(0, h - side + 1, side) for x in range(0, w - side + 1, side)
             if detail(image[y:y + side, x:x + side]) >= MIN_DETAIL]
    picked = rng.permutation(len(cells))[:count]
    return [(cells[i][0], cells[i][1], side) for i in sorted(picked.tolist())]


def reshot(image: np.ndarray, region: tuple[int, int, int], rng: np.random.Generator, out: int) -> np.ndarray:
    """The region photographed again: another scale, rotation, frame, light, exposure, blur, noise."""
    x, y, side = region
    h, w = image.shape[:2]
    centre = (x + side / 2 + rng.uniform(-0.1, 0.1) * side, y + side / 2 + rng.uniform(-0.1, 0.1) * side)
    span = side / rng.uniform(0.6, 1.5)  # zoomed in (<side) or out (>side, the region's surroundings come in)
    m = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 360)), out / span)
    m[:, 2] += np.array([out / 2, out / 2]) - np.array(centre)
    shot = cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)  # light from another side: a brightness ramp across the frame
    ramp = np.cos(angle) * np.linspace(-1, 1, out)[None, :] + np.sin(angle) * np.linspace(-1, 1, out)[:, None]
    shot *= (1 + rng.uniform(0.1, 0.45) * ramp)[..., None] * rng.uniform(0.7, 1.3)
    mean = shot.mean()
    shot = (shot - mean) * rng.uniform(0.75, 1.25) + mean
    if rng.random() < 0.3:
        shot = np.repeat(shot.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.5:
        shot = cv2.GaussianBlur(shot, (0, 0), rng.uniform(0.5, 1.5))
    shot += rng.normal(0, rng.uniform(1, 5), shot.shape).astype(np.float32)
    return np.clip(shot, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-source", type=int, default=4)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--size", type=int, default=200, help="photo side in px (KTH-TIPS: 200)")
    ap.add_argument("--record", type=Path, default=tdata.SHIPPED_RECORD, help="the encoder's training record whose photos are excluded")
    args = ap.parse_args(argv)
    items = source_specs("calibration")
    if not items:
        ap.error("needs the Debian photo packages: make train-photos")
    photos = tdata.without_trained(tdata.resolve_sources(items, split="held_out").photos, tdata.trained_photos(args.record))
    rng = np.random.default_rng([5, args.seed])
    for folder in ("catalog", "query"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    rows, n, k = [], 0, 0
    for source in sorted(photos, key=lambda s: s.name):
        bgr = cv2.cvtColor(source.image, cv2.COLOR_RGB2BGR)
        for region in regions(bgr, 1 if source.tiled else args.per_source, rng):  # a tiling's regions are one material
            label, registered = f"surface{k:03d}", k % 4 != 3
            k += 1
            x, y, side = region
            if registered:
                flat = cv2.resize(bgr[y:y + side, x:x + side], (args.size, args.size), interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(args.out / "catalog" / f"{label}-1.png"), flat)
            for _ in range(args.shots):
                n += 1
                name = f"p{n:05d}.jpg"
                cv2.imwrite(str(args.out / "query" / name), reshot(bgr, region, rng, args.size),
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
                rows.append((name, label if registered else "", f"{source.name}@{x},{y},{side}"))
    write_truth(args.out, rows)  # rows come in name order: sorting changes nothing
    print(f"{sum(1 for i in range(k) if i % 4 != 3)} catalog {n} queries ({k} surfaces from {len(photos)} photos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
