"""Multi-scale uniform LBP histograms."""

from __future__ import annotations

import math

import cv2
import numpy as np


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
        codes = uniform_lbp(grey, points, radius, where=keep)
        codes = codes[keep] if keep is not None else codes.ravel()
        hist = np.bincount(codes.astype(np.int64), minlength=points + 2).astype(np.float32)
        blocks.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(blocks)


# A sample's interpolated grey level, computed in float32 from the 2x2 pixels
# around it (values 0-255, a handful of roundings), is within ~1e-4 of the
# float64 value skimage computes; beyond this margin of the centre pixel's
# level its comparison with the centre cannot differ. Nearer (flat areas, where
# it equals the centre up to float64 rounding), the float64 value is computed
# exactly as skimage does.
_TIE_MARGIN = 2e-3


def uniform_lbp(grey: np.ndarray, points: int, radius: float, where: np.ndarray | None = None) -> np.ndarray:
    """skimage's `local_binary_pattern(grey, points, radius, method="uniform")`, identical codes, whole-image numpy.

    skimage samples each of the `points` neighbours at (r + rp, c + cp), with
    rp, cp the circle's offsets rounded to 5 decimals, by bilinear
    interpolation in float64 (pixels outside the image read 0), sets the bit
    when the sample minus the centre is >= 0, and codes a pattern with at most
    2 changes between consecutive bits (not counting the wrap from the last
    bit to the first) by its number of set bits, any other by `points` + 1.

    Parameters
    ----------
    grey : ndarray, shape (H, W), dtype uint8
    points : int
        Number of circular neighbours P (at most 254).
    radius : float
    where : ndarray, shape (H, W), dtype bool, optional
        The pixels whose codes are used. A sample within rounding of its
        centre's level is settled by skimage's float64 arithmetic only here;
        elsewhere its code may differ from skimage's. Outside a located cake
        the canonical image is flat black, every sample ties there, and that
        exact arithmetic was 56 % of `lbp_histogram`'s time (22 -> 8 ms on
        benchmark photos). None: every pixel.

    Returns
    -------
    ndarray, shape (H, W), dtype uint8, codes in [0, P + 1]
    """
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ValueError(f"uniform_lbp takes a 2-D uint8 image, not {grey.ndim}-D {grey.dtype}")
    grey = np.ascontiguousarray(grey)
    h, w = grey.shape
    pad = int(math.ceil(abs(radius))) + 1
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    img64, img32 = padded.astype(np.float64), padded.astype(np.float32)
    centre32 = img32[pad : pad + h, pad : pad + w]
    # skimage's own expressions (radius is a C float there), so that rp, cp are the same doubles.
    r32 = float(np.float32(radius))
    rr = -r32 * np.sin(2 * np.pi * np.arange(points, dtype=np.double) / points)
    cc = r32 * np.cos(2 * np.pi * np.arange(points, dtype=np.double) / points)
    rp, cp = np.round(rr, 5), np.round(cc, 5)
    # Sample coordinates as skimage computes them, pixel index + offset in float64: the
    # interpolation weights are these very doubles, which differ from row to row in the last bits.
    rows = _Axis(np.arange(h, dtype=np.float64)[None, :] + rp[:, None], pad)
    cols = _Axis(np.arange(w, dtype=np.float64)[None, :] + cp[:, None], pad)
    ones = np.zeros((h, w), np.uint8)
    changes = np.zeros((h, w), np.uint8)
    previous = None
    if where is not None and where.shape != grey.shape:
        raise ValueError(f"where has shape {where.shape}, the image {grey.shape}")
    for i in range(points):
        bits = _sample_bits(img64, img32, grey, centre32, rows, cols, i, where)
        ones += bits
        if previous is not None:
            changes += bits ^ previous
        previous = bits
    return np.where(changes <= 2, ones, np.uint8(points + 1)).astype(np.uint8)


class _Axis:
    """Per sample (rows of `at`), along one image axis: the two pixels bracketing
    each coordinate in `at` (indices into the image padded by `pad`) and the
    weight of the second, `at` - floor(`at`), all as skimage computes them."""

    def __init__(self, at: np.ndarray, pad: int) -> None:
        low, high = np.floor(at), np.ceil(at)
        self.weight = at - low
        index = np.arange(at.shape[1])
        self.low, self.high = (pad + low).astype(np.intp), (pad + high).astype(np.intp)
        # The same offset from the centre for every pixel, unless an offset lies within
        # rounding of an integer (never, for offsets rounded to 5 decimals).
        self.constant = (np.ptp(self.low - index, axis=1) == 0) & (np.ptp(self.high - index, axis=1) == 0)
        self.integral = ~self.weight.any(axis=1)


def _sample_bits(
    img64: np.ndarray, img32: np.ndarray, centre8: np.ndarray, centre32: np.ndarray, rows: _Axis, cols: _Axis, i: int,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) uint8 0/1: skimage's bilinear value of sample `i` at each pixel >= that pixel (exactly so within `where`)."""
    h, w = centre8.shape
    if not (rows.constant[i] and cols.constant[i]):
        return _exact_bits(img64, centre8, rows, cols, i, np.arange(h * w)).reshape(h, w)
    r0, r1, c0, c1 = int(rows.low[i, 0]), int(rows.high[i, 0]), int(cols.low[i, 0]), int(cols.high[i, 0])
    if rows.integral[i] and cols.integral[i]:
        # An integer offset: skimage's value is the pixel itself, exactly.
        return (img32[r0 : r0 + h, c0 : c0 + w] >= centre32).view(np.uint8)
    fr, fc = float(rows.weight[i, 0]), float(cols.weight[i, 0])
    a, b = img32[r0 : r0 + h, c0 : c0 + w], img32[r0 : r0 + h, c1 : c1 + w]
    value = cv2.addWeighted(a, 1.0 - fc, b, fc, 0.0)
    if fr:
        c_, d_ = img32[r1 : r1 + h, c0 : c0 + w], img32[r1 : r1 + h, c1 : c1 + w]
        value = cv2.addWeighted(value, 1.0 - fr, cv2.addWeighted(c_, 1.0 - fc, d_, fc, 0.0), fr, 0.0)
    diff = cv2.subtract(value, centre32)
    bits = (diff >= 0).view(np.uint8)
    tied = np.abs(diff) <= _TIE_MARGIN
    near = np.flatnonzero(tied if where is None else tied & where)
    if near.size:
        bits.ravel()[near] = _exact_bits(img64, centre8, rows, cols, i, near)
    return bits


def _exact_bits(img64: np.ndarray, centre8: np.ndarray, rows: _Axis, cols: _Axis, i: int, where: np.ndarray) -> np.ndarray:
    """skimage's float64 bilinear value and comparison, operation for operation, at flat pixel indices `where`."""
    ys, xs = np.divmod(where, centre8.shape[1])
    flat, stride = img64.ravel(), img64.shape[1]
    row0, row1 = rows.low[i][ys] * stride, rows.high[i][ys] * stride
    col0, col1 = cols.low[i][xs], cols.high[i][xs]
    wr, wc = rows.weight[i][ys], cols.weight[i][xs]
    top = (1 - wc) * flat[row0 + col0] + wc * flat[row0 + col1]
    bottom = (1 - wc) * flat[row1 + col0] + wc * flat[row1 + col1]
    value = (1 - wr) * top + wr * bottom
    return (value - centre8.ravel()[where] >= 0).view(np.uint8)


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
