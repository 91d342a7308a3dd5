#!/usr/bin/env python3
"""Simulated re-shots of the real pu-erh photos in ../shared/data/puerh_dev (BENCHMARK.md layout).

    python bench/make_real_reshots.py OUT_DIR [--seed S] [--shots 2] [--side 1600] [--include-trained]

Each real photo (cake faces, bare cakes and bricks, chunks) is one object.
The photos the shipped encoder trained on (7 of the 15: bare/ and chunks/
photos listed in its training record, `pipeline.training.data.trained_photos`)
are left out unless `--include-trained` (the 15-photo folder of earlier
tables, whose figures on those 7 flatter the embedding). Every fifth photo (by sorted name, offset by the seed) is never
registered; the others are registered as they are. Every photo gets `--shots`
re-shots: the whole photo photographed again by another phone (any rotation,
tilt up to 30 degrees, zoom 0.8-1.25, light, colour cast, blur, noise, JPEG
50-90) at `--side` px. The photos are read from ../shared/data/puerh_dev and
never copied anywhere but OUT_DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.training import data as tdata  # noqa: E402
from pipeline.training import views  # noqa: E402
from truth_csv import write_truth  # noqa: E402

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "puerh_dev"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--side", type=int, default=1600)
    ap.add_argument("--dev", type=Path, default=DEV)
    ap.add_argument("--include-trained", action="store_true", help="also re-shoot the encoder's training photos")
    ap.add_argument("--record", type=Path, default=tdata.SHIPPED_RECORD, help="the encoder's training record")
    args = ap.parse_args(argv)
    photos = sorted(p for p in args.dev.rglob("*.jpg"))
    if not args.include_trained:
        trained = tdata.trained_photos(args.record)  # names are folder:file, as training reads them
        photos = [p for p in photos if f"{p.parent.name}:{p.name}" not in trained]
    rng = np.random.default_rng([args.seed, 15])
    (args.out / "catalog").mkdir(parents=True, exist_ok=True)
    (args.out / "query").mkdir(parents=True, exist_ok=True)
    numbers = rng.permutation(len(photos) * args.shots) + 1
    rows, qn = [], 0
    for i, path in enumerate(photos):
        label = f"real{i:02d}"
        registered = (i + args.seed) % 5 != 0
        bgr = cv2.imread(str(path))
        if registered:
            cv2.imwrite(str(args.out / "catalog" / f"{label}-1.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for _ in range(args.shots):
            shot = views.rephotograph(rgb, rng, out_size=args.side, max_tilt=30.0, scale_range=(0.8, 1.25), quality_range=(50, 90))
            name = f"q{numbers[qn]:04d}.jpg"
            qn += 1
            cv2.imwrite(str(args.out / "query" / name), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
            rows.append((name, label if registered else "", path.relative_to(args.dev).as_posix()))
    write_truth(args.out, rows)
    print(f"{sum(1 for r in rows if r[1]) // args.shots} catalog {len(rows)} queries from {len(photos)} real photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
