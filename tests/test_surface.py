"""The relief correlation of bare photos (`pipeline.features.surface`) and its storage beside the keypoints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_verify import lit, relief
from pipeline.catalog import CatalogIndex, NewEntry
from pipeline.features.local import LocalFeatures
from pipeline.features.surface import SIDE, _screen, correlate, spectrum, surface_patch


def reshot(height: np.ndarray, azimuth: float, angle: float, zoom: float) -> np.ndarray:
    """The surface lit from `azimuth`, turned by `angle` degrees and zoomed by `zoom` about its centre (a 320 px crop)."""
    shot = lit(height, azimuth=azimuth, elevation=40)
    size = shot.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
    turned = cv2.warpAffine(shot, m, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(turned[32:352, 32:352])


def test_a_relit_turned_zoomed_reshot_correlates_with_its_registration_and_a_same_grain_stranger_does_not() -> None:
    registered = spectrum(surface_patch(reshot(relief(4, 2.5), azimuth=0, angle=0, zoom=1.0)))
    again = spectrum(surface_patch(reshot(relief(4, 2.5), azimuth=100, angle=37, zoom=1.2)))
    stranger = spectrum(surface_patch(reshot(relief(5, 2.5), azimuth=100, angle=37, zoom=1.2)))
    found = correlate(again, registered)
    assert found.peak > 12, found
    # the query is turned back by the rotation found (modulo the half turn a magnitude spectrum cannot tell)
    assert min(abs((found.rotation_deg + 37 + d + 180) % 360 - 180) for d in (0, 180)) < 3, found
    assert 1 / 1.2 * 0.95 < found.scale < 1 / 1.2 * 1.05, found
    assert correlate(stranger, registered).peak < 9


def test_a_reshot_lit_from_the_opposite_side_correlates_through_its_trough() -> None:
    """Lit from the other side a relief shades as its own negative: the correlation has a trough, not a peak, and the
    trough counts (without it this re-shot scored as a stranger)."""
    registered = spectrum(surface_patch(reshot(relief(4, 4.0), azimuth=0, angle=0, zoom=1.0)))
    opposite = spectrum(surface_patch(reshot(relief(4, 4.0), azimuth=180, angle=-20, zoom=0.9)))
    assert correlate(opposite, registered).peak > 12  # its peak alone: 7.1


def test_the_pose_hypotheses_are_ranked_on_the_half_size_reliefs() -> None:
    """`_screen` picks the (rotation, scale, half turn) under which the reliefs correlate, wherever it lies among the
    log-polar spectrum's hypotheses: with two hypotheses measured in their order, a right pose found third was lost
    (tex2-400, kth1: peaks of 11-28 fell to 6-8)."""
    registered = spectrum(surface_patch(reshot(relief(4, 2.5), azimuth=0, angle=0, zoom=1.0)))
    again = spectrum(surface_patch(reshot(relief(4, 2.5), azimuth=100, angle=37, zoom=1.2)))
    right = correlate(again, registered)
    truth = (right.rotation_deg, right.scale)
    decoys = [(truth[0] + 61.0, 1.0), (truth[0] - 23.0, 0.7), (truth[0] + 90.0, 1.3)]
    for at in range(4):
        poses = decoys[:at] + [truth] + decoys[at:]
        angle, scale, turned = _screen(again.small, registered.small, poses)
        assert (angle, scale, turned) == (*truth, False), (at, angle, scale, turned)
    # the same relief turned half a turn is told by the conjugate spectrum, not by another warp
    upside = spectrum(surface_patch(np.ascontiguousarray(np.rot90(reshot(relief(4, 2.5), azimuth=100, angle=37, zoom=1.2), 2))))
    assert _screen(upside.small, registered.small, decoys + [truth])[2] is True


def test_surface_patch_checks_its_input_and_quantises_the_relief() -> None:
    patch = surface_patch(lit(relief(6, 3.0), azimuth=30, elevation=40))
    assert patch.shape == (SIDE, SIDE) and patch.dtype == np.int8
    assert 10 < np.abs(patch.astype(np.float64)).mean() < 60  # about one local standard deviation = 32 steps
    for bad in (np.zeros((64, 64), np.float32), np.zeros((8, 300), np.uint8), np.zeros((4, 4, 4, 4), np.uint8)):
        with pytest.raises(ValueError):
            surface_patch(bad)
    with pytest.raises(ValueError):
        spectrum(np.zeros((64, 64), np.int8))


def local_entry(n: int, with_surface: bool) -> NewEntry:
    rng = np.random.default_rng(n)
    vec = rng.normal(size=8).astype(np.float32)
    surface = rng.integers(-127, 128, size=(SIDE, SIDE)).astype(np.int8) if with_surface else None
    local = LocalFeatures(rng.random((20, 2)).astype(np.float32) * 500, rng.integers(0, 256, (20, 128)).astype(np.uint8), 512, surface)
    return NewEntry(hashlib.sha256(f"s{n}".encode()).hexdigest(), f"/x/{n}.png", f"surface{n}", vec / np.linalg.norm(vec),
                    rng.random(10).astype(np.float32), local)


def test_reliefs_are_stored_with_the_keypoints_and_survive_a_compaction(tmp_path: Path) -> None:
    """Bare entries keep their relief, a cake's entry none; across segments and after a compaction each entry
    reads back its own; an index build of the keypoints reads no relief."""
    index = CatalogIndex(tmp_path / "idx", model_id="m1", max_segments=8)
    entries = [local_entry(n, with_surface=n % 3 != 1) for n in range(9)]
    for start in range(0, 9, 3):
        index.commit(entries[start:start + 3])

    def check(snap) -> None:
        rows = snap.rows.tolist()  # registration order: the order of `entries`
        assert [snap.labels[r] for r in rows] == [e.label for e in entries]
        for e, got in zip(entries, snap.keypoints(rows)):
            np.testing.assert_array_equal(got.descriptors, e.local.descriptors)
            if e.local.surface is None:
                assert got.surface is None
            else:
                np.testing.assert_array_equal(got.surface, e.local.surface)
        for e, got in zip(entries, snap.keypoints_bulk(np.asarray(rows))):
            assert (got.surface is None) == (e.local.surface is None)
        assert all(got.surface is None for got in snap.keypoints_bulk(np.asarray(rows), surfaces=False))

    assert len(list((tmp_path / "idx").glob("seg-*.h5"))) == 3
    check(CatalogIndex(tmp_path / "idx", model_id="m1").snapshot())
    index.compact()
    assert len(list((tmp_path / "idx").glob("seg-*.h5"))) == 1
    check(CatalogIndex(tmp_path / "idx", model_id="m1").snapshot())


def test_the_comparison_script_separates_a_folders_reshots_from_their_near_twins(tmp_path: Path) -> None:
    """bench/compare_surface_correlation.py on a rendered folder (bench/make_textures.py) with answers that offer
    another surface for every query: the impostor pairs stay below the right pairs' typical peak, and the
    table has a row per threshold."""
    import csv
    import json
    import subprocess
    import sys

    from conftest import REPO

    bench = tmp_path / "tex"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_textures.py"), str(bench), "--seed", "7", "--objects", "4",
                    "--shots", "2"], check=True, capture_output=True)
    catalog = sorted((bench / "catalog").iterdir())
    with (tmp_path / "answers.jsonl").open("w") as fh:
        for row in csv.DictReader((bench / "truth.csv").open()):
            other = next(p for p in catalog if not p.name.startswith(row["label"] or "-"))
            fh.write(json.dumps({"query": row["query"], "status": "no_match",
                                 "matches": [{"image": str(other), "label": other.stem.rsplit("-", 1)[0]}]}) + "\n")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "compare_surface_correlation.py"), str(bench),
                          str(tmp_path / "answers.jsonl"), "--thresholds", "9,12"], check=True, capture_output=True, text=True).stdout
    assert "6 registered queries, 8 impostor pairs" in out, out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 9 ") or line.startswith("| 12 ")]
    assert len(rows) == 2
    impostors_above_9, right_above_9 = int(rows[0][1]), float(rows[0][2])
    assert impostors_above_9 == 0 and right_above_9 >= 0.5, out
