#!/usr/bin/env python3
"""Accuracy and speed of the cake locator (`pipeline.features.locate`).

    python bench/bench_locate.py [--seed 0] [--n 60] [--kth-n 810] [--overlays /tmp/locate] [--bench DIR ...]

Renders photos with a known outline (`pipeline.training.scenes`): cakes cut
from the real pu-erh faces in ../shared/data/puerh_dev/faces when present
(else scikit-image's bundled photos), on white paper, wood, cloth, patterned
cloth or flat colour, with wrappers, cups and pens around, in five sets:

* easy: one disc, tilt <= 25 deg, JPEG 60-95;
* hard: one disc, tilt <= 40 deg, a thumb over its edge, a glare spot, blur,
  noise, JPEG 40-80 (BENCHMARK.md's hard re-shot);
* edge: the hard set with the cake shifted partly out of frame;
* brick: one rectangular brick, hard;
* two: two discs, hard (thumb and glare on the larger).

Prints, per set, the mean IoU of the found outline against the truth (the
best-matching found outline for each true cake), the detection rate (not a
fallback), the rate of IoU >= 0.5, the shape and count found, and ms per
photo; then, with `--bench`, the same on generated benchmark folders' photos
(make_discs.py / make_siblings.py write each photo's true outline to
outlines.json: the hard re-shots and sibling cakes exactly as `teaprint eval`
sees them), with the CPU time of `locate` as a ratio to the photo's decode
(wall time drifts with the shared machine's load); then the fallback rate on
KTH-TIPS texture photos (evaluation only, read in place) and, per real photo
of ../shared/data/puerh_dev, what was found. The last line is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.features.locate import CakeOutline, locate  # noqa: E402
from pipeline.training import scenes  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SETS = {
    "easy": dict(kind="disc", hard=False),
    "hard": dict(kind="disc", hard=True),
    "edge": dict(kind="disc", hard=True, out_of_frame=True),
    "brick": dict(kind="brick", hard=True),
    "two": dict(kind="two", hard=True),
}


def load_sources(faces: Path) -> tuple[list[np.ndarray], str]:
    """The cake surfaces: pu-erh faces when present, else scikit-image photos."""
    files = sorted(faces.glob("*.jpg")) if faces.is_dir() else []
    if files:
        out = [cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (1024, 1024), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB) for f in files]
        return out, f"{len(out)} pu-erh faces from {faces}"
    import skimage.data

    names = ("coffee", "chelsea", "astronaut", "rocket")
    return [np.ascontiguousarray(getattr(skimage.data, n)()[..., :3]) for n in names], "scikit-image photos " + ",".join(names)


def polygon_iou(a: np.ndarray, b: np.ndarray, side: int) -> float:
    """IoU of two polygons (photo pixels) rasterised on a canvas 3x the photo (outlines may leave the frame)."""
    ma, mb = np.zeros((3 * side, 3 * side), np.uint8), np.zeros((3 * side, 3 * side), np.uint8)
    cv2.fillPoly(ma, [np.round((a + side) * 4).astype(np.int32)], 1, shift=2)
    cv2.fillPoly(mb, [np.round((b + side) * 4).astype(np.int32)], 1, shift=2)
    union = int(np.count_nonzero(ma | mb))
    return int(np.count_nonzero(ma & mb)) / union if union else 0.0


def found_outlines(o: CakeOutline) -> list[CakeOutline]:
    return [] if o.fallback else [o, *o.others]


def run_set(name: str, spec: dict, n: int, sources: list[np.ndarray], seed: int, size: int, overlays: Path | None) -> dict:
    rng = np.random.default_rng([seed, 10, list(SETS).index(name)])
    ious, detected, shapes_ok, counts_ok, ms = [], [], [], [], []
    by_table: dict[str, list[tuple[float, bool]]] = {}  # the largest cake's IoU and detection, by what it lies on
    for i in range(n):
        scene = scenes.render_scene(rng, sources, out_size=size, **spec)
        t0 = time.perf_counter()
        o = locate(scene.image)
        ms.append((time.perf_counter() - t0) * 1e3)
        found = found_outlines(o)
        for k, truth in enumerate(scene.outlines):
            ious.append(max((polygon_iou(f.polygon(), truth, size) for f in found), default=0.0))
            if k == 0:
                by_table.setdefault(scene.table, []).append((ious[-1], not o.fallback))
        detected.append(not o.fallback)
        shapes_ok.append(bool(found) and found[0].shape == scene.shapes[0])
        counts_ok.append(len(found) == len(scene.outlines))
        if overlays is not None:
            draw_overlay(overlays / f"{name}-{i:03d}.png", scene.image, found, scene.outlines, f"{name} iou={ious[-1]:.2f}")
    iou = np.asarray(ious)
    return {
        "photos": n,
        "mean_iou": round(float(iou.mean()), 4),
        "detected": round(float(np.mean(detected)), 4),
        "iou_ge_0.5": round(float((iou >= 0.5).mean()), 4),
        "shape_ok": round(float(np.mean(shapes_ok)), 4),
        "count_ok": round(float(np.mean(counts_ok)), 4),
        "ms_per_photo": round(float(np.mean(ms)), 1),
        "by_table": {t: {"photos": len(v), "mean_iou": round(float(np.mean([i for i, _ in v])), 4),
                         "detected": round(float(np.mean([d for _, d in v])), 4)} for t, v in sorted(by_table.items())},
    }


def draw_overlay(path: Path, rgb: np.ndarray, found: list[CakeOutline], truth: tuple | list, label: str) -> None:
    """Truth in green, found outlines in red (for looking at, in /tmp: never in the repository)."""
    im = cv2.cvtColor(rgb if rgb.ndim == 3 else cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB), cv2.COLOR_RGB2BGR).copy()
    k = max(1, max(im.shape[:2]) // 400)
    cv2.polylines(im, [np.round(t).astype(np.int32) for t in truth], True, (0, 255, 0), k)
    cv2.polylines(im, [np.round(f.polygon()).astype(np.int32) for f in found], True, (0, 0, 255), k)
    cv2.putText(im, label, (5, 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * k, (255, 0, 255), k)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), im)


def run_bench(folder: Path, n: int, overlays: Path | None) -> dict:
    """The locator on a generated benchmark folder's photos (make_discs.py / make_siblings.py), against outlines.json.

    Photos are read as the product reads them (`pipeline.intake.read_photo`,
    reduced JPEG decode), so the figures are those of the pipeline's input;
    outlines are scaled by the decode's reduction. Catalog and query photos
    are reported apart; `n` caps each (evenly spread).
    """
    from pipeline.config import default_config
    from pipeline.intake import read_photo

    truth = json.loads((folder / "outlines.json").read_text())["outlines"]
    out = {}
    for part in ("catalog", "query"):
        names = sorted(k for k in truth if k.startswith(part + "/"))
        names = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(n, len(names))).astype(int))] if names else []
        ious, detected, ms, cpu, decode_cpu = [], [], [], [], []
        for name in names:
            c0 = time.process_time()
            photo = read_photo(folder / name, default_config().intake)
            c1, t0 = time.process_time(), time.perf_counter()
            o = locate(photo.pixels)
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c1) * 1e3)
            decode_cpu.append((c1 - c0) * 1e3)
            outline = np.asarray(truth[name], np.float64) / photo.reduction
            side = max(photo.pixels.shape[:2])
            found = found_outlines(o)
            ious.append(max((polygon_iou(f.polygon(), outline, side) for f in found), default=0.0))
            detected.append(not o.fallback)
            if overlays is not None:
                draw_overlay(overlays / f"{folder.name}-{name.replace('/', '-')}.png", photo.pixels, found, [outline],
                             f"{folder.name} iou={ious[-1]:.2f}")
        if names:
            iou = np.asarray(ious)
            out[part] = {"photos": len(names), "mean_iou": round(float(iou.mean()), 4), "detected": round(float(np.mean(detected)), 4),
                         "iou_ge_0.5": round(float((iou >= 0.5).mean()), 4), "iou_ge_0.9": round(float((iou >= 0.9).mean()), 4),
                         "ms_per_photo": round(float(np.mean(ms)), 1), "cpu_ms_per_photo": round(float(np.mean(cpu)), 1),
                         "decode_cpu_ms": round(float(np.mean(decode_cpu)), 1),
                         "cpu_ratio_to_decode": round(float(np.mean(cpu) / max(np.mean(decode_cpu), 1e-6)), 2)}
    return out


def run_kth(folder: Path, n: int) -> dict | None:
    files = sorted(folder.rglob("*.png")) if folder.is_dir() else []
    if not files:
        return None
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).astype(int)]
    fallbacks, ms = [], []
    for f in pick:
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        t0 = time.perf_counter()
        o = locate(grey)
        ms.append((time.perf_counter() - t0) * 1e3)
        fallbacks.append(o.fallback)
    return {"photos": len(pick), "fallback_rate": round(float(np.mean(fallbacks)), 4), "ms_per_photo": round(float(np.mean(ms)), 1)}


def run_real(folder: Path, overlays: Path | None) -> list[dict]:
    out = []
    for f in sorted(folder.glob("*/*.jpg")) if folder.is_dir() else []:
        bgr = cv2.imread(str(f))
        scale = 1024 / max(bgr.shape[:2]) if max(bgr.shape[:2]) > 1024 else 1.0  # a phone upload's working size
        rgb = cv2.cvtColor(cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        o = locate(rgb)
        ms = (time.perf_counter() - t0) * 1e3
        row = {"photo": f"{f.parent.name}/{f.name}", "shape": o.shape, "cakes": o.count, "confidence": o.confidence,
               "centre_frac": [round(o.centre[0] / rgb.shape[1], 3), round(o.centre[1] / rgb.shape[0], 3)],
               "axes_frac": [round(o.axes[0] / max(rgb.shape[:2]), 3), round(o.axes[1] / max(rgb.shape[:2]), 3)],
               "ms": round(ms, 1)}
        out.append(row)
        if overlays is not None:
            draw_overlay(overlays / f"real-{f.parent.name}-{f.stem}.png", rgb, found_outlines(o), [], f"{o.shape} n={o.count} c={o.confidence:.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=60, help="photos per rendered set")
    parser.add_argument("--size", type=int, default=512, help="side of the rendered photos, px")
    parser.add_argument("--kth", type=Path, default=SHARED / "kth_tips_grey")
    parser.add_argument("--kth-n", type=int, default=810, help="KTH-TIPS photos used (evenly spread)")
    parser.add_argument("--real", type=Path, default=SHARED / "puerh_dev")
    parser.add_argument("--sets", default=",".join(SETS), help="rendered sets, comma-separated ('' for none)")
    parser.add_argument("--overlays", type=Path, default=None, help="write overlay PNGs here (outside the repository)")
    parser.add_argument("--bench", type=Path, nargs="*", default=[],
                        help="benchmark folders with outlines.json (bench/make_discs.py, make_siblings.py): IoU on their photos")
    parser.add_argument("--bench-n", type=int, default=400, help="photos used per benchmark part (evenly spread)")
    args = parser.parse_args(argv)
    sources, what = load_sources(args.real / "faces")
    print(f"cake surfaces: {what}; seed {args.seed}, {args.n} photos a set, {args.size} px")
    figures: dict = {"seed": args.seed, "sources": what, "sets": {}}
    print(f"{'set':6} {'photos':>6} {'meanIoU':>8} {'detect':>7} {'IoU>=.5':>8} {'shape':>6} {'count':>6} {'ms':>6}")
    for name in filter(None, args.sets.split(",")):
        r = run_set(name, SETS[name], args.n, sources, args.seed, args.size, args.overlays)
        figures["sets"][name] = r
        print(f"{name:6} {r['photos']:6d} {r['mean_iou']:8.3f} {r['detected']:7.3f} {r['iou_ge_0.5']:8.3f} "
              f"{r['shape_ok']:6.3f} {r['count_ok']:6.3f} {r['ms_per_photo']:6.1f}")
    one = [figures["sets"][k] for k in figures["sets"]] or [{"mean_iou": 0.0, "detected": 0.0, "photos": 1}]
    figures["all_mean_iou"] = round(float(np.average([r["mean_iou"] for r in one], weights=[r["photos"] for r in one])), 4)
    figures["all_detected"] = round(float(np.average([r["detected"] for r in one], weights=[r["photos"] for r in one])), 4)
    print(f"all sets: mean IoU {figures['all_mean_iou']:.3f}, detected {figures['all_detected']:.3f}")
    tables: dict[str, list[tuple[int, float, float]]] = {}
    for r in figures["sets"].values():
        for table, t in r["by_table"].items():
            tables.setdefault(table, []).append((t["photos"], t["mean_iou"], t["detected"]))
    figures["by_table"] = {table: {"photos": sum(n for n, _, _ in v),
                                   "mean_iou": round(float(np.average([i for _, i, _ in v], weights=[n for n, _, _ in v])), 4),
                                   "detected": round(float(np.average([d for _, _, d in v], weights=[n for n, _, _ in v])), 4)}
                           for table, v in sorted(tables.items())}
    for table, t in figures["by_table"].items():  # the largest cake of each photo, all sets together
        print(f"  on {table:16} {t['photos']:4d} photos: mean IoU {t['mean_iou']:.3f}, detected {t['detected']:.3f}")
    figures["benches"] = {}
    for folder in args.bench:
        parts = run_bench(folder, args.bench_n, args.overlays)
        figures["benches"][folder.name] = parts
        for part, r in parts.items():
            print(f"{folder.name + '/' + part:22} {r['photos']:4d} photos: mean IoU {r['mean_iou']:.3f}, detected {r['detected']:.3f}, "
                  f"IoU>=.5 {r['iou_ge_0.5']:.3f}, IoU>=.9 {r['iou_ge_0.9']:.3f}, {r['ms_per_photo']:.1f} ms wall, "
                  f"{r['cpu_ms_per_photo']:.1f} ms CPU = {r['cpu_ratio_to_decode']:.1f}x the photo's decode")
    kth = run_kth(args.kth, args.kth_n)
    figures["kth"] = kth
    print("KTH-TIPS: " + (f"fallback on {kth['fallback_rate']:.3f} of {kth['photos']} photos, {kth['ms_per_photo']:.1f} ms" if kth else "not found"))
    real = run_real(args.real, args.overlays)
    figures["real"] = real
    for row in real:
        print(f"  {row['photo']:45} {row['shape']:5} cakes={row['cakes']} conf={row['confidence']:.2f} "
              f"centre={row['centre_frac']} axes={row['axes_frac']} {row['ms']:.0f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
