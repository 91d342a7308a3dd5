#!/usr/bin/env python3
"""Rendered benchmark of re-photographed discs ("cakes"), BENCHMARK.md layout.

    python bench/make_discs.py OUT_DIR [--seed S] [--per-source 2] [--shots 3]

Cakes are cut ONLY from photos the shipped encoder was never trained on: every
source is checked against the encoder's training record
(`pipeline.training.data.trained_photos`, the `training.data.photos` list in
pipeline/data/models/teaprint-encoder.json) and dropped when it or a
near-duplicate (same `family`) is listed there, whatever the held-out rule says.

* ``--split held_out`` (evaluation, the default): the held-out real photos
  (`pipeline.training.data.is_held_out`) of scikit-image's bundled photos and
  of Debian opencv-doc's samples (/usr/share/doc/opencv-doc/examples/data,
  when installed), and procedural textures drawn with benchmark keys (2, seed, i);
* ``--split calibration`` (fitting the fused decision): the held-out wallpaper
  and paper photos of the other Debian photo packages (`make train-photos`:
  mate-backgrounds' nature set, lomiri- and ukui-wallpapers, mypaint's
  backgrounds; GIMP's tiled patterns are no cakes) and procedural textures
  with calibration keys (1, seed, i). Training draws keys (0, ...) only.

Each source photo gives `--per-source` non-overlapping cakes, each its own
label ("same tea, different cake": they share their tea but not their leaves).
About a quarter of the cakes are never registered (truth label '').
Registered cakes get one catalog photo; every cake gets `--shots` query photos,
each an independent phone shot (any rotation, tilt <= 30 deg, zoom 0.7-1.4,
light, colour cast, table, JPEG 50-95). `outlines.json` beside truth.csv holds
every photo's true cake outline (for `bench/bench_locate.py --bench OUT`).
Cakes whose face is flat (`MIN_CAKE_DETAIL`: a gradient, a logo, a drawing,
a tiny photo blown up) are dropped: nothing tells them from a stranger cut
beside them (`--min-detail 0` keeps them, as folders built before
2026-12-06's evening did).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.training import data as tdata  # noqa: E402
from pipeline.training import views  # noqa: E402
from truth_csv import write_truth  # noqa: E402


def cakes_of(image: np.ndarray, count: int) -> list[tuple[tuple[float, float], float]]:
    """`count` non-overlapping discs (centre, radius) laid along the longer side."""
    h, w = image.shape[:2]
    long_side, short = max(h, w), min(h, w)
    radius = 0.95 * min(short / 2.0, long_side / (2.0 * count))
    out = []
    for k in range(count):
        t = (k + 0.5) / count * long_side
        centre = (t, h / 2.0) if w >= h else (w / 2.0, t)
        out.append((centre, radius))
    return out

# Photos of one physical object that `family` cannot tell from their names:
# opencv-doc's box_in_scene.png shows the very box of box.png, so a cake cut
# from each would be one object under two labels (a "stranger" with 18 true inliers).
SAME_OBJECT = {"data:box_in_scene": "data:box"}


MIN_CAKE_DETAIL = 1.0
"""Least fine grain (`detail`, grey levels) a cake's face needs to be one: below it the disc is flat (a gradient, a
logo's solid shapes, a drawing on white, a smooth cloud texture) or a tiny photo blown up 20-fold, and carries no
arrangement to fingerprint, so a stranger cut beside it from the same source is its twin (`--min-detail 0` keeps them)."""


def detail(patch: np.ndarray) -> float:
    """Fine grain present nearly everywhere: the 25th percentile, over 8x8 blocks of the patch at 128 px, of the
    standard deviation of the grey patch minus its 2-px blur."""
    grey = cv2.resize(cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY), (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    fine = grey - cv2.GaussianBlur(grey, (0, 0), 2)
    blocks = fine.reshape(16, 8, 16, 8).std(axis=(1, 3))
    return float(np.percentile(blocks, 25))


def cake_detail(image: np.ndarray, centre: tuple[float, float], radius: float) -> float:
    """`detail` of the square inscribed in the disc (centre, radius) of `image` (H, W, 3), source pixels."""
    half = radius / np.sqrt(2.0)
    x0, y0 = int(max(centre[0] - half, 0)), int(max(centre[1] - half, 0))
    return detail(image[y0:int(centre[1] + half), x0:int(centre[0] + half)])


PRINT_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
               cv2.FONT_HERSHEY_PLAIN)


def printed_source(rng: np.random.Generator, name: str, size: int = 512) -> tdata.Source:
    """A printed sheet (a cake's embedded ticket, a wrapper): dense lines of random words, or a grid of digits.

    Two cakes cut from one sheet share the font, the ink and the grid, not
    their arrangement: a stranger whose repeated glyphs give a handful of
    geometrically consistent matches against its registered sibling, the
    case a raw inlier count mistakes for a re-shot.
    """
    paper = rng.uniform(200, 250, 3)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = paper.astype(np.uint8)
    ink = tuple(float(v) for v in rng.uniform(0, 90, 3))
    font = int(rng.choice(PRINT_FONTS))
    if rng.random() < 0.5:
        scale = float(rng.uniform(0.5, 0.8))
        step = int(cv2.getTextSize("Ag", font, scale, 1)[0][1] * 1.9) + 2
        for y in range(step, size, step):
            words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), int(rng.integers(2, 9)))) for _ in range(12)]
            cv2.putText(image, " ".join(words), (int(rng.integers(-20, 4)), y), font, scale, ink, 1, cv2.LINE_AA)
    else:
        cell = int(rng.integers(28, 44))
        for k in range(0, size, cell):
            width = 2 if (k // cell) % 3 == 0 else 1
            cv2.line(image, (k, 0), (k, size), ink, width)
            cv2.line(image, (0, k), (size, k), ink, width)
        for y in range(0, size, cell):
            for x in range(0, size, cell):
                if rng.random() < 0.6:
                    cv2.putText(image, str(int(rng.integers(1, 10))), (x + cell // 4, y + 3 * cell // 4), font, cell / 40, ink, 1, cv2.LINE_AA)
    return tdata.Source(name, image, name)


def printed_sources(key: tuple[int, ...], count: int, size: int = 512) -> list[tdata.Source]:
    """`count` printed sheets; sheet i uses ``default_rng([*key, 77, i])`` (keys as `tdata.procedural_sources`)."""
    return [printed_source(np.random.default_rng([*key, 77, i]), "printed:" + ":".join(map(str, (*key, i))), size)
            for i in range(count)]


def add_shot_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every cake benchmark generator (this one, make_siblings.py)."""
    parser.add_argument("--hard", action="store_true",
                        help="hard re-shots (BENCHMARK.md): thumb, glare, tilt shrinking the far side up to 40%%, blur, "
                        "noise, JPEG 40-80, cake at 0.5-1.2 of its registration size, 640x480-1024x768 queries")
    parser.add_argument("--reg-size", type=int, default=None, help="side of registration photos (default --size; hard: 1024)")


def registration_shot(image: np.ndarray, rng: np.random.Generator, centre, radius, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A careful registration photo (near overhead, even light, high JPEG quality) and the cake's true outline in it."""
    return views.disc_shot(image, rng, centre, radius, out_size=side, fill=float(rng.uniform(0.8, 0.9)),
                           max_tilt=8.0, scale_range=(0.95, 1.05), quality_range=(90, 95))


def query_shot(image: np.ndarray, rng: np.random.Generator, centre, radius, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """A query photo and the cake's true outline in it, (N, 2) photo pixels."""
    if args.hard:
        w, h = (640, 480) if rng.uniform() < 0.5 else (1024, 768)
        if rng.uniform() < 0.5:  # portrait
            w, h = h, w
        return views.hard_disc_shot(image, rng, centre, radius, (w, h), fill=float(rng.uniform(0.75, 0.95)))
    quality = {"quality_range": (50, 95), "scale_range": (0.7, 1.4), "max_tilt": 30.0}
    return views.disc_shot(image, rng, centre, radius, out_size=args.size, fill=float(rng.uniform(0.75, 0.95)), **quality)


OUTLINE_POINTS = 90  # rim samples stored per photo in outlines.json


def outline_json(outline: np.ndarray) -> list[list[float]]:
    """A true outline for outlines.json: `OUTLINE_POINTS` (x, y) photo pixels, 0.01 px."""
    step = max(1, len(outline) // OUTLINE_POINTS)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in outline[::step]]


def write_bench(out: Path, cakes: list, rng: np.random.Generator, args: argparse.Namespace, what: str) -> None:
    """Render `cakes` ((source name, image, centre, radius) each its own label) into OUT's BENCHMARK.md layout.

    About `args.unregistered` of the cakes are never registered; every cake
    gets `args.shots` query photos, each an independent shot.
    """
    reg_side = args.reg_size or (1024 if args.hard else args.size)
    (out / "catalog").mkdir(parents=True, exist_ok=True)
    (out / "query").mkdir(parents=True, exist_ok=True)
    order = rng.permutation(len(cakes))
    n_unreg = int(round(args.unregistered * len(cakes)))
    unregistered = set(order[:n_unreg].tolist())
    numbers = rng.permutation(len(cakes) * args.shots) + 1  # query names say nothing about the cake
    rows, qn = [], 0
    outlines: dict[str, list] = {}
    for i, (name, image, centre, radius) in enumerate(cakes):
        label = f"cake{i:03d}"
        if i not in unregistered:
            shot, outline = registration_shot(image, rng, centre, radius, reg_side) if args.hard else query_shot(image, rng, centre, radius, args)
            cv2.imwrite(str(out / "catalog" / f"{label}-1.jpg"), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            outlines[f"catalog/{label}-1.jpg"] = outline_json(outline)
        for _ in range(args.shots):
            qname = f"q{numbers[qn]:05d}.jpg"
            qn += 1
            shot, outline = query_shot(image, rng, centre, radius, args)
            outlines[f"query/{qname}"] = outline_json(outline)
            # Hard shots already carry their JPEG 40-80; q98 only stores them.
            cv2.imwrite(str(out / "query" / qname), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98 if args.hard else 92])
            rows.append((qname, "" if i in unregistered else label, f"{name}@{centre[0]:.0f},{centre[1]:.0f},r{radius:.0f}"))
    write_truth(out, rows)
    # The cake's true rim in every photo, for the locator's accuracy (bench/bench_locate.py --bench OUT).
    (out / "outlines.json").write_text(json.dumps({"format": "teaprint-outlines/1", "shape": "disc", "outlines": outlines}))
    print(f"{len(cakes) - n_unreg} catalog {len(rows)} queries ({n_unreg} unregistered cakes) {what}{' (hard)' if args.hard else ''}")


def source_specs(split: str) -> list[str]:
    """`resolve_sources` items of a split: evaluation and calibration never share a package."""
    if split == "held_out":
        return ["skimage"] + ([str(tdata.OPENCV_DOC_DIR)] if tdata.OPENCV_DOC_DIR.is_dir() else [])
    return [spec for spec in tdata.DEBIAN_PHOTO_SPECS if Path(spec.split(":", 1)[1]).is_dir()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=2, help="cakes cut from each source photo")
    parser.add_argument("--shots", type=int, default=3, help="query photos per cake")
    parser.add_argument("--procedural", type=int, default=16, help="held-out procedural textures used as sources")
    parser.add_argument("--size", type=int, default=384, help="side of the rendered photos")
    parser.add_argument("--unregistered", type=float, default=0.25, help="share of cakes never registered")
    parser.add_argument("--printed", type=int, default=None,
                        help="printed sheets (random text, digit grids: `printed_source`) used as sources (default: 8 for "
                        "--split calibration, 0 for held_out, whose photos hold printed pages already)")
    parser.add_argument("--min-detail", type=float, default=MIN_CAKE_DETAIL,
                        help="drop cakes whose face has less fine grain than this (`cake_detail`, grey levels; 0 keeps all)")
    parser.add_argument(
        "--split",
        choices=("held_out", "calibration"),
        default="held_out",
        help="held_out (default): evaluation photos (scikit-image, opencv-doc); calibration: other Debian packages' "
        "held-out photos with calibration-key textures, for fitting the fused decision (`teaprint calibrate`) "
        "apart from evaluation data. Neither ever includes a photo the shipped encoder trained on",
    )
    parser.add_argument("--record", type=Path, default=tdata.SHIPPED_RECORD,
                        help="the encoder's training record whose photos are excluded (default: the shipped encoder's)")
    add_shot_arguments(parser)
    args = parser.parse_args(argv)

    items = source_specs(args.split)
    if not items:
        parser.error("--split calibration needs the Debian photo packages: make train-photos")
    # One photo per family: graf1/graf3, rubberwhale1/2, leuvenA/B show the same
    # scene, so cakes cut from both would be one physical cake under two labels.
    by_family: dict[str, tdata.Source] = {}
    held_out = tdata.resolve_sources(items, split="held_out").photos
    photos = tdata.without_trained(held_out, tdata.trained_photos(args.record))
    for s in sorted((s for s in photos if not s.tiled), key=lambda s: s.name):
        family = tdata.family(s.name)
        by_family.setdefault(SAME_OBJECT.get(family, family), s)
    sources = list(by_family.values())
    key = tdata.BENCH_KEY if args.split == "held_out" else tdata.CALIBRATION_KEY
    sources += tdata.procedural_sources((key, args.seed), args.procedural, size=512)
    printed = args.printed if args.printed is not None else (8 if args.split == "calibration" else 0)
    sources += printed_sources((key, args.seed), printed)
    rng = np.random.default_rng([args.seed, 2024])
    cut = [(s.name, s.image, centre, radius) for s in sources for centre, radius in cakes_of(s.image, args.per_source)]
    flat = [cake_detail(image, centre, radius) < args.min_detail for _, image, centre, radius in cut]
    cakes = [cake for cake, is_flat in zip(cut, flat) if not is_flat]
    if any(flat):
        dropped = sorted({cake[0] for cake, is_flat in zip(cut, flat) if is_flat})
        print(f"{sum(flat)} flat cakes dropped (detail < {args.min_detail}) from {', '.join(dropped)}")
    write_bench(args.out, cakes, rng, args, f"from {len(sources)} {args.split} sources")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
