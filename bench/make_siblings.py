#!/usr/bin/env python3
"""Sibling pu-erh cakes: disjoint squares of real cake faces, re-photographed (BENCHMARK.md layout).

    python bench/make_siblings.py OUT_DIR --faces cake1_a,cake1_b,cake2_a [--grid 4] [--hard] [--seed S]

Every square cut from one face is a "sibling cake": the same tea, leaves,
colour and pressing, another arrangement of leaves. Only the arrangement tells
them apart, which is what teaprint must do for cakes of one batch. The faces
are read from ``../shared/data/puerh_dev/faces`` (never copied anywhere).

Split by face, never by seed alone: evaluation uses cake1_a, cake1_b and
cake2_a (the default); calibration uses cake2_b, cake3_a and cake3_b
(`--faces cake2_b,cake3_a,cake3_b`). A face the shipped encoder was trained on
(listed in its training record, `pipeline.training.data.trained_photos`) is
refused: the encoder trains on puerh_dev's bare/ and chunks/, never faces/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from make_discs import add_shot_arguments, write_bench  # noqa: E402
from pipeline.training import data as tdata  # noqa: E402

FACES_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "puerh_dev" / "faces"
EVAL_FACES = ("cake1_a", "cake1_b", "cake2_a")
CALIBRATION_FACES = ("cake2_b", "cake3_a", "cake3_b")


def cake_disc(image: np.ndarray) -> tuple[tuple[float, float], float]:
    """Centre (x, y) and radius, in pixels, of the dark cake on the white paper."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    _, mask = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (x, y), r = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
    return (4 * x, 4 * y), 4 * r


def squares_of(image: np.ndarray, grid: int) -> list[tuple[tuple[float, float], float]]:
    """`grid` x `grid` disjoint discs (centre, radius) inscribed in squares inside the cake's face."""
    (cx, cy), r = cake_disc(image)
    side = 0.9 * r * np.sqrt(2.0)  # the square inside the face, clear of the rim
    cell = side / grid
    x0, y0 = cx - side / 2, cy - side / 2
    return [((x0 + (i + 0.5) * cell, y0 + (j + 0.5) * cell), 0.49 * cell) for j in range(grid) for i in range(grid)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--faces", default=",".join(EVAL_FACES), help="comma-separated face names in the faces folder")
    parser.add_argument("--faces-dir", type=Path, default=FACES_DIR)
    parser.add_argument("--record", type=Path, default=tdata.SHIPPED_RECORD,
                        help="the encoder's training record whose photos are refused (default: the shipped encoder's)")
    parser.add_argument("--grid", type=int, default=4, help="squares per side of each face")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=3, help="query photos per cake")
    parser.add_argument("--size", type=int, default=768, help="side of the easy query (and registration) photos")
    parser.add_argument("--unregistered", type=float, default=0.25, help="share of cakes never registered")
    add_shot_arguments(parser)
    args = parser.parse_args(argv)
    if args.reg_size is None:
        args.reg_size = args.size
    trained = tdata.trained_photos(args.record)
    cakes = []
    for face in args.faces.split(","):
        if f"{args.faces_dir.name}:{face}.jpg" in trained:
            parser.error(f"face {face!r} is one of the encoder's training photos ({args.record})")
        bgr = cv2.imread(str(args.faces_dir / f"{face}.jpg"))
        if bgr is None:
            parser.error(f"cannot read face {face!r} in {args.faces_dir}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        cakes += [(face, image, centre, radius) for centre, radius in squares_of(image, args.grid)]
    rng = np.random.default_rng([args.seed, 7])
    write_bench(args.out, cakes, rng, args, f"sibling cakes from faces {args.faces}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
