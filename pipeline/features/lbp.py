"""Multi-scale uniform LBP histograms."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import local_binary_pattern


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey version of an RGB or grey uint8 image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
        RGB channel order when 3-channel.

    Returns
    -------
    ndarray, shape (H, W), dtype uint8
    """
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def lbp_histogram(
    image: np.ndarray,
    points_radii: tuple[tuple[int, int], ...] = ((8, 1), (16, 2), (24, 3)),
    size: int = 256,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Concatenated uniform-LBP histograms at several (P, R).

    The image is made grey and resized to `size` x `size` first, so that a
    radius R (in pixels of that resized image) covers the same fraction of the
    photo whatever its resolution.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    points_radii : tuple of (P, R)
        Number of circular neighbours P and radius R in pixels.
    size : int
        Side of the square working image, in pixels.
    mask : ndarray, shape (H, W), dtype bool, optional
        Count only these pixels (a located cake), less a border of the
        largest radius, whose codes would see what lies outside. None, or a
        mask leaving nothing, counts every pixel.

    Returns
    -------
    ndarray, shape (sum(P + 2),), dtype float32
        Each (P, R) block is a histogram over the P + 2 uniform codes that sums
        to 1; the blocks are concatenated in the order given.
    """
    grey = cv2.resize(to_grey(image), (size, size), interpolation=cv2.INTER_AREA)
    keep = _inner(mask, size, max(r for _, r in points_radii)) if mask is not None else None
    blocks = []
    for points, radius in points_radii:
        codes = local_binary_pattern(grey, points, radius, method="uniform")
        codes = codes[keep] if keep is not None else codes.ravel()
        hist = np.bincount(codes.astype(np.int64), minlength=points + 2).astype(np.float32)
        blocks.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(blocks)


def _inner(mask: np.ndarray, size: int, border: int) -> np.ndarray | None:
    """`mask` at `size` x `size`, less `border` + 1 px inside its edge; None when that leaves nothing."""
    small = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 3, 2 * border + 3))
    inner = cv2.erode(small, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return inner if inner.any() else None


def lbp_length(points_radii: tuple[tuple[int, int], ...]) -> int:
    """Length of the vector `lbp_histogram` returns for these (P, R) pairs."""
    return sum(p + 2 for p, _ in points_radii)


def chi2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chi-square distance between histogram `a` (B,) and each row of `b` (N, B).

    Returns
    -------
    ndarray, shape (N,), dtype float32
        0 for identical histograms; at most the number of concatenated blocks.
    """
    num = (b - a) ** 2
    den = b + a
    return 0.5 * np.sum(np.divide(num, den, out=np.zeros_like(num), where=den > 0), axis=-1).astype(np.float32)
