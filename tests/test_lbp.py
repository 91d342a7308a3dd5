"""The whole-image LBP is skimage's `local_binary_pattern(method="uniform")`, code for code.

skimage stays the reference here only: catalogs indexed with it must keep
matching queries described without it, so the histograms must be identical,
not merely close.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.feature import local_binary_pattern

from conftest import source_photos
from reference_stages import POINTS_RADII, skimage_histogram
from pipeline.features import lbp
from pipeline.features.lbp import lbp_histogram, to_grey, uniform_lbp



def near_ties(seed: int, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    """Grey levels v-1, v, v+1 at random: many samples whose exact bilinear value equals the
    centre, so that the bit depends on how skimage's float64 arithmetic rounds."""
    return (100 + np.random.default_rng(seed).integers(-1, 2, size=shape)).astype(np.uint8)


def greys() -> dict[str, np.ndarray]:
    photos = {name: to_grey(rgb) for name, rgb in source_photos().items()}
    rng = np.random.default_rng(3)
    photos["noise"] = rng.integers(0, 256, size=(256, 256), dtype=np.uint8)
    photos["near-ties"] = near_ties(4)
    photos["flat"] = np.full((64, 64), 117, np.uint8)
    photos["black"] = np.zeros((40, 40), np.uint8)
    photos["odd"] = to_grey(source_photos()["chelsea"])[:101, :77].copy()
    photos["tiny"] = rng.integers(0, 256, size=(3, 5), dtype=np.uint8)
    photos["one-row"] = rng.integers(0, 256, size=(1, 9), dtype=np.uint8)
    return photos


@pytest.mark.parametrize("name", list(greys()))
def test_codes_are_skimages(name: str) -> None:
    grey = greys()[name]
    for points, radius in (*POINTS_RADII, (4, 1), (12, 1.5), (8, 2.5)):
        expected = local_binary_pattern(grey, points, radius, method="uniform")
        codes = uniform_lbp(grey, points, radius)
        assert codes.shape == grey.shape and codes.dtype == np.uint8
        np.testing.assert_array_equal(codes, expected.astype(np.uint8), err_msg=f"{name} P={points} R={radius}")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel"])
def test_histogram_is_skimages_on_real_photos(name: str) -> None:
    photo = source_photos()[name]
    np.testing.assert_array_equal(lbp_histogram(photo), skimage_histogram(photo))


def test_histogram_is_skimages_at_odd_sizes_and_settings() -> None:
    photo = source_photos()["coffee"][:333, :517]
    for size in (255, 97, 40):
        np.testing.assert_array_equal(lbp_histogram(photo, size=size), skimage_histogram(photo, size=size))
    settings = ((8, 1), (8, 2))
    np.testing.assert_array_equal(lbp_histogram(photo, settings, 128), skimage_histogram(photo, settings, 128))


def test_histogram_is_skimages_under_masks() -> None:
    photo = source_photos()["astronaut"]
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 220) ** 2 + (xx - 260) ** 2 < 150**2
    np.testing.assert_array_equal(lbp_histogram(photo, mask=disc), skimage_histogram(photo, mask=disc))
    corner = np.zeros((h, w), bool)
    corner[:90, -70:] = True
    np.testing.assert_array_equal(lbp_histogram(photo, mask=corner), skimage_histogram(photo, mask=corner))
    # A mask leaving nothing once its border is taken off counts every pixel, as before.
    speck = np.zeros((h, w), bool)
    speck[10, 10] = True
    np.testing.assert_array_equal(lbp_histogram(photo, mask=speck), skimage_histogram(photo, mask=speck))
    np.testing.assert_array_equal(lbp_histogram(photo, mask=speck), lbp_histogram(photo))


def test_ties_are_decided_by_skimages_float64_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The near-tie image would catch an interpolation that is merely close: the same
    bilinear value in float32 only (no exact float64 recomputation near the centre's
    level) gives other codes there, while the real implementation gives skimage's."""
    grey = near_ties(5)
    for points, radius in POINTS_RADII[1:]:
        expected = local_binary_pattern(grey, points, radius, method="uniform").astype(np.uint8)
        np.testing.assert_array_equal(uniform_lbp(grey, points, radius), expected)
    monkeypatch.setattr(lbp, "_TIE_MARGIN", -1.0)
    differ = [int((uniform_lbp(grey, p, r) != local_binary_pattern(grey, p, r, method="uniform")).sum()) for p, r in POINTS_RADII[1:]]
    assert min(differ) > 100, differ


def test_codes_within_where_are_skimages_and_ties_outside_it_are_not_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A canonical cake view: near-ties on the disc, flat black around it (every sample there ties
    with its centre). Codes and the masked histogram stay skimage's where they are counted, and the
    float64 recomputation of ties is done only there."""
    grey = near_ties(6)
    yy, xx = np.mgrid[:256, :256]
    disc = (yy - 127.5) ** 2 + (xx - 127.5) ** 2 <= 100**2
    grey[~disc] = 0
    for points, radius in POINTS_RADII:
        expected = local_binary_pattern(grey, points, radius, method="uniform").astype(np.uint8)
        np.testing.assert_array_equal(uniform_lbp(grey, points, radius, where=disc)[disc], expected[disc])
    np.testing.assert_array_equal(lbp_histogram(grey, mask=disc), skimage_histogram(grey, mask=disc))
    recomputed: list[int] = []
    exact = lbp._exact_bits
    monkeypatch.setattr(lbp, "_exact_bits", lambda *args: recomputed.append(len(args[-1])) or exact(*args))
    uniform_lbp(grey, 16, 2, where=disc)
    within = sum(recomputed)
    recomputed.clear()
    uniform_lbp(grey, 16, 2)
    assert 0 < within < 0.8 * sum(recomputed), (within, sum(recomputed))
    with pytest.raises(ValueError, match="where"):
        uniform_lbp(grey, 8, 1, where=disc[:10])
