#!/usr/bin/env python3
"""Rendered benchmark of bare pressed-leaf textures under other light (BENCHMARK.md layout).

    python bench/make_textures.py OUT_DIR [--seed S] [--objects 24] [--shots 4]

Each object is a random height field (a bare cake surface: its own grain size,
relief depth and grain shape). The catalog photo is lit from one direction;
each query is the same surface lit from another azimuth and elevation, at
another zoom and rotation, through another JPEG encoder. Moving the light
moves every shadow, so local features rarely survive while texture statistics
do: the KTH-TIPS situation, generated so it can be used for calibration
without touching KTH-TIPS. A quarter of the objects are never registered.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from truth_csv import write_truth


def height_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random surface: grain size, depth and elongation drawn per object."""
    sigma = rng.uniform(0.8, 6.0)
    stretch = rng.uniform(1.0, 2.5)
    noise = rng.normal(size=(size, size)).astype(np.float32)
    z = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma * stretch, sigmaY=sigma)
    if rng.random() < 0.5:  # a second scale of grain: leaves over stems
        z += rng.uniform(0.2, 0.8) * cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), sigma * 3)
    z = z / (z.std() + 1e-6) * rng.uniform(1.5, 4.0)
    return z


def lit(z: np.ndarray, azimuth: float, elevation: float, albedo: float) -> np.ndarray:
    gy, gx = np.gradient(z)
    n = np.dstack([-gx, -gy, np.ones_like(z)])
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    a, e = np.radians(azimuth), np.radians(elevation)
    light = np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
    return np.clip(n @ light, 0, 1) * 200 * albedo + 25


def shot(z: np.ndarray, rng: np.random.Generator, azimuth: float, elevation: float, out: int, albedo: float) -> np.ndarray:
    """Light the surface, then zoom, rotate, crop and add sensor noise."""
    img = lit(z, azimuth, elevation, albedo).astype(np.float32)
    size = z.shape[0]
    zoom = rng.uniform(0.8, 1.25)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(0, 360), zoom * out / (size / 1.5))
    m[:, 2] += (out / 2 - size / 2)
    img = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    img += rng.normal(0, rng.uniform(1, 4), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objects", type=int, default=24)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--size", type=int, default=320)
    args = ap.parse_args(argv)
    rng = np.random.default_rng([3, args.seed])
    (args.out / "catalog").mkdir(parents=True, exist_ok=True)
    (args.out / "query").mkdir(parents=True, exist_ok=True)
    rows = []
    n = 0
    for k in range(args.objects):
        z = height_field(rng, int(args.size * 1.6))
        albedo = rng.uniform(0.6, 1.1)
        label = f"tex{k:03d}"
        registered = k % 4 != 3
        if registered:
            img = shot(z, rng, azimuth=rng.uniform(0, 360), elevation=50, out=args.size, albedo=albedo)
            cv2.imwrite(str(args.out / "catalog" / f"{label}-1.png"), img)
        for _ in range(args.shots):
            n += 1
            az, el = rng.uniform(0, 360), rng.uniform(25, 65)
            img = shot(z, rng, az, el, args.size, albedo * rng.uniform(0.85, 1.15))
            name = f"t{n:05d}.jpg"
            cv2.imwrite(str(args.out / "query" / name), img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
            rows.append((name, label if registered else "", f"{label}@az{az:.0f},el{el:.0f}"))
    write_truth(args.out, rows)  # rows come in name order: sorting changes nothing
    print(f"{sum(1 for k in range(args.objects) if k % 4 != 3)} catalog {n} queries ({args.objects} surfaces)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
