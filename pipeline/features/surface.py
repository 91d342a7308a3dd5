"""Dense correlation of a bare surface's relief: identity evidence where no keypoint survives the light.

A bare pressed surface lit from another side keeps few keypoints (the
shading moves with the light), and its texture statistics are shared by
every surface of its kind. What a re-shot keeps is the relief itself: once
the photo is turned and scaled to the registration's frame, its high-passed
shading still correlates with the registration's at one shift, where another
surface of the same kind correlates nowhere. The rotation and scale come from
the magnitude spectra (Fourier-Mellin: a turn and a zoom of the image are a
shift of its log-polar magnitude spectrum, which ignores where the surface
lies); the evidence is the sharpness of the phase-correlation peak at the
alignment found (peak-to-sidelobe ratio, of the peak or of the trough: lit
from the opposite side a relief shades as its own negative): two unrelated
surfaces leave it at 6-9, a relit re-shot of the same one mostly above 9
(bench/README.md, "The relief correlation").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.features.lbp import to_grey

SIDE = 128
"""Side of the stored patch, px: a 16 KB int8 patch per bare entry (256 px separated no better, bench/README.md)."""
MIN_SIDE = 32
"""Photos narrower than this (px) keep no relief: too few pixels to say anything about a surface."""
QUANT = 32.0
"""int8 steps per unit of the locally normalised relief (values beyond +-4 are clipped)."""
HIGH_PASS_SIGMA = 3.0
CONTRAST_SIGMA = 8.0
POSE_PEAKS = 4
"""Log-polar correlation peaks tried as (rotation, scale) hypotheses, each at 0 and 180 degrees: ranked by a
correlation at half size (`SCREEN_SIDE`), the best one measured at full size."""
SCREEN_SIDE = SIDE // 2
"""Side (px) of the reliefs the pose hypotheses are ranked on: measuring every hypothesis at full size cost 2.7 ms a
pair, ranking them at half size and measuring the best one 1.6 ms, with 0.913 against 0.922 of tex2-400's right pairs
above 10 (two hypotheses measured at full size: 1.6 ms, 0.887; bench/README.md, stop 42)."""
EXCLUDED = 5
"""Half-width (px) of the square around the peak left out of the sidelobe statistics."""

_HANN = np.outer(np.hanning(SIDE), np.hanning(SIDE)).astype(np.float32)
_SCREEN_HANN = np.outer(np.hanning(SCREEN_SIDE), np.hanning(SCREEN_SIDE)).astype(np.float32)
_ONES = np.ones((SIDE, SIDE), np.float32)  # warped like the relief: where the turned query covers the entry
_Y, _X = np.mgrid[-SIDE // 2:SIDE // 2, -SIDE // 2:SIDE // 2]
# The lowest frequencies carry the light's gradient and the window's shape, not the relief.
_SPECTRUM_WEIGHT = (1.0 - np.exp(-(np.hypot(_X, _Y) / 4.0) ** 2)).astype(np.float32)
_LOG_RADIUS = np.log(SIDE / 2.0) / SIDE  # log-polar columns per unit of log scale: scale = exp(shift * _LOG_RADIUS)


@dataclass(frozen=True)
class SurfaceSpectrum:
    """A patch ready to correlate: its relief (float32, (SIDE, SIDE)), log-polar magnitude spectrum (same shape) and
    the relief at half size (float32, (SCREEN_SIDE, SCREEN_SIDE)), on which pose hypotheses are ranked."""

    relief: np.ndarray
    polar: np.ndarray
    small: np.ndarray


@dataclass(frozen=True)
class SurfaceMatch:
    """The best alignment of a query's relief to an entry's.

    Attributes
    ----------
    peak : float
        Peak-to-sidelobe ratio of the phase correlation's sharpest extremum at that alignment, a peak or a trough
        (unitless; unrelated surfaces 6-9).
    rotation_deg : float
        Rotation applied to the query, degrees.
    scale : float
        Scale applied to the query.
    """

    peak: float
    rotation_deg: float
    scale: float


def surface_patch(image: np.ndarray) -> np.ndarray:
    """The relief of a photo's centre square: high-passed, locally contrast-normalised, quantised.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
        The described photo (RGB when colour).

    Returns
    -------
    ndarray, shape (SIDE, SIDE), dtype int8
        The relief in steps of 1 / `QUANT` local standard deviations.
    """
    if image.ndim not in (2, 3) or image.dtype != np.uint8 or min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"surface_patch needs a uint8 image of at least {MIN_SIDE} px a side, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    s = min(h, w)
    square = to_grey(image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]).astype(np.float32)
    square = cv2.resize(square, (SIDE, SIDE), interpolation=cv2.INTER_AREA if s > SIDE else cv2.INTER_LINEAR)
    relief = square - cv2.GaussianBlur(square, (0, 0), HIGH_PASS_SIGMA)
    relief /= np.sqrt(cv2.GaussianBlur(relief * relief, (0, 0), CONTRAST_SIGMA)) + 1e-3
    return np.clip(np.round(relief * QUANT), -127, 127).astype(np.int8)


def spectrum(patch: np.ndarray) -> SurfaceSpectrum:
    """`patch` (from `surface_patch`) ready to correlate: done once per photo."""
    if patch.shape != (SIDE, SIDE):
        raise ValueError(f"a surface patch is {SIDE} x {SIDE}, got {patch.shape}")
    relief = patch.astype(np.float32) / QUANT
    planes = cv2.dft(relief * _HANN, flags=cv2.DFT_COMPLEX_OUTPUT)
    magnitude = np.fft.fftshift(cv2.magnitude(planes[..., 0], planes[..., 1]))
    weighted = (np.log1p(magnitude) * _SPECTRUM_WEIGHT).astype(np.float32)
    polar = cv2.warpPolar(weighted, (SIDE, SIDE), (SIDE / 2, SIDE / 2), SIDE / 2, cv2.WARP_POLAR_LOG + cv2.INTER_LINEAR)
    small = cv2.resize(relief, (SCREEN_SIDE, SCREEN_SIDE), interpolation=cv2.INTER_AREA)
    return SurfaceSpectrum(relief, polar, small)


def correlate(query: SurfaceSpectrum, entry: SurfaceSpectrum, max_scale: float = 2.2) -> SurfaceMatch:
    """Align `query`'s relief to `entry`'s and measure how sharply they correlate.

    The log-polar spectra's `POSE_PEAKS` strongest correlation peaks within
    `max_scale` give (rotation, scale) hypotheses, each tried as found and
    turned by 180 degrees (a magnitude spectrum cannot tell them apart). The
    hypotheses are ranked by how sharply the half-size reliefs correlate
    under them (`_screen`), and the query's relief is warped by the best one
    and phase-correlated with the entry's at full size.

    Returns
    -------
    SurfaceMatch
        The best hypothesis's peak (0 when no hypothesis lies within `max_scale`).
    """
    poses = []
    for dy, dx in _strongest(_phase_correlation(query.polar, entry.polar), POSE_PEAKS):
        scale = float(np.exp((dx if dx < SIDE // 2 else dx - SIDE) * _LOG_RADIUS))
        if 1.0 / max_scale <= scale <= max_scale:
            poses.append(((dy if dy < SIDE // 2 else dy - SIDE) * 360.0 / SIDE, scale))
    if not poses:
        return SurfaceMatch(0.0, 0.0, 1.0)
    angle, scale, turned = _screen(query.small, entry.small, poses)
    m = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), angle, scale)
    warped = cv2.warpAffine(query.relief, m, (SIDE, SIDE), borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(_ONES, m, (SIDE, SIDE))
    moved = np.fft.rfft2(warped * inside * _HANN)
    # Turned 180 degrees about the centre, a real image's spectrum is its conjugate.
    cross = (np.conj(moved) if turned else moved) * np.conj(np.fft.rfft2(entry.relief * _HANN))
    peak = _extreme_ratio(_whitened_inverse(cross, SIDE))
    return SurfaceMatch(peak, float(((angle + (180.0 if turned else 0.0) + 180.0) % 360.0) - 180.0), scale)


def _screen(query: np.ndarray, entry: np.ndarray, poses: list[tuple[float, float]]) -> tuple[float, float, bool]:
    """The (rotation, scale, turned by 180 degrees) under which the half-size reliefs correlate most sharply.

    All hypotheses' phase correlations in one inverse transform; sharpness
    is the largest absolute value over the standard deviation (no window
    left out: a ranking, not the evidence).
    """
    side = query.shape[0]
    moved = []
    for angle, scale in poses:
        m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
        turned = np.fft.rfft2(cv2.warpAffine(query, m, (side, side), borderMode=cv2.BORDER_CONSTANT) * _SCREEN_HANN)
        moved += [turned, np.conj(turned)]  # as found, and half a turn more
    flat = _whitened_inverse(np.stack(moved) * np.conj(np.fft.rfft2(entry * _SCREEN_HANN)), side).reshape(len(moved), -1)
    best = int(np.argmax(np.abs(flat).max(axis=1) / (flat.std(axis=1) + 1e-12)))
    return poses[best // 2][0], poses[best // 2][1], bool(best % 2)


def _phase_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The phase correlation of two same-sized real images (circular): a peak at the shift that carries b onto a."""
    return _whitened_inverse(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), a.shape[0])


def _whitened_inverse(cross: np.ndarray, side: int) -> np.ndarray:
    """A cross-power spectrum, shape (..., side, side // 2 + 1), brought to unit magnitude and transformed back:
    the phase correlation surface(s), shape (..., side, side)."""
    return np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=(side, side))


def _strongest(surface: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The `count` highest local peaks of a (circular) correlation surface, at least 4 px apart."""
    work = surface.copy()
    out = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        out.append((int(y), int(x)))
        work[np.ix_(np.arange(y - 4, y + 5) % work.shape[0], np.arange(x - 4, x + 5) % work.shape[1])] = -np.inf
    return out


def _extreme_ratio(surface: np.ndarray) -> float:
    """The larger of the peak's and the trough's (peak - mean) / std of the rest of `surface`, the square of
    `EXCLUDED` px around it left out; from one pass of sums. A re-shot lit from the other side has a trough."""
    n = surface.size
    total, squares = float(surface.sum()), float(np.square(surface, dtype=np.float64).sum())
    best = 0.0
    for sign, at in ((1.0, int(np.argmax(surface))), (-1.0, int(np.argmin(surface)))):
        y, x = divmod(at, surface.shape[1])
        window = surface[np.ix_(np.arange(y - EXCLUDED, y + EXCLUDED + 1) % surface.shape[0],
                                np.arange(x - EXCLUDED, x + EXCLUDED + 1) % surface.shape[1])]
        m = n - window.size
        mean = (total - float(window.sum())) / m
        std = np.sqrt(max((squares - float(np.square(window, dtype=np.float64).sum())) / m - mean * mean, 0.0))
        best = max(best, sign * (float(surface[y, x]) - mean) / (std + 1e-12))
    return best
