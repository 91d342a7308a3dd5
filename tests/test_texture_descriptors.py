"""bench/compare_texture_descriptors.py: completed LBP is rotation-invariant, and the script prints a row per descriptor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import REPO

SCRIPT = REPO / "bench" / "compare_texture_descriptors.py"
sys.path.insert(0, str(REPO / "bench"))

from compare_texture_descriptors import clbp_histogram, parse_sets  # noqa: E402

from pipeline.features.lbp import chi2_distance  # noqa: E402


def grain(seed: int, sigma: float, size: int = 256) -> np.ndarray:
    """A grey random texture with grain of `sigma` px."""
    noise = np.random.default_rng(seed).normal(size=(size, size)).astype(np.float32)
    z = cv2.GaussianBlur(noise, (0, 0), sigma)
    return cv2.normalize(z, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_completed_lbp_blocks_are_histograms_and_turning_the_photo_keeps_them() -> None:
    radii = ((8, 1), (16, 2))
    fine, coarse = grain(0, 1.0), grain(1, 3.0)
    h = clbp_histogram(fine, radii)
    assert h.shape == (2 * (10 + 18),) and h.dtype == np.float32
    assert np.allclose([h[:10].sum(), h[10:20].sum(), h[20:38].sum(), h[38:].sum()], 1.0, atol=1e-5)
    turned = clbp_histogram(np.ascontiguousarray(np.rot90(fine)), radii)
    other = clbp_histogram(coarse, radii)
    # Rotation-invariant codes: a quarter turn of the same surface stays far nearer than another grain.
    assert chi2_distance(h, turned[None])[0] < 0.1 * chi2_distance(h, other[None])[0]


def test_parse_sets() -> None:
    assert parse_sets("8,1 16,2; 8,1 24,5 ;") == [((8, 1), (16, 2)), ((8, 1), (24, 5))]


def test_script_prints_a_row_per_descriptor_and_folder(tmp_path: Path) -> None:
    root = tmp_path / "tex"
    for k, sigma in enumerate((1.0, 2.0, 4.0)):
        label = f"tex{k:03d}"
        (root / "catalog").mkdir(parents=True, exist_ok=True)
        (root / "query").mkdir(exist_ok=True)
        surface = grain(10 + k, sigma, 320)
        cv2.imwrite(str(root / "catalog" / f"{label}-1.png"), surface)
        cv2.imwrite(str(root / "query" / f"q{k}.jpg"), np.ascontiguousarray(np.rot90(surface)))
    cv2.imwrite(str(root / "query" / "s.jpg"), grain(99, 8.0, 320))
    (root / "truth.csv").write_text("query,label\nq0.jpg,tex000\nq1.jpg,tex001\nq2.jpg,tex002\ns.jpg,\n")
    done = subprocess.run([sys.executable, str(SCRIPT), f"small={root},{root}", "--sets", "8,1 16,2; 8,1", "--clbp"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| small")]
    assert [r[2].strip() for r in rows] == ["8,1 16,2", "8,1", "clbp 8,1 16,2"]
    assert [int(r[3]) for r in rows] == [28, 10, 56]
    # Turned copies of the catalog's own photos: every descriptor names them.
    assert all(float(r[4]) == 1.0 for r in rows)
