"""Find the cake in a photo and bring it to a canonical view.

A pu-erh cake is a flat disc (a brick is a rectangle; a tuocha seen from above
is a disc too), so a phone photo taken at an angle shows it as an ellipse (or
a quadrilateral). `locate` finds that outline; `rectify` maps it back to a
circle (or rectangle), crops it with a small margin, scales it to a fixed size
and masks what lies outside, keeping the homography so that coordinates found
on the canonical image can be drawn on the original photo.

How `locate` works (classical, about 60 ms of one CPU core on a 256 px working image):

1. *Background model*: the table is what the photo's border shows. The border
   strip's pixels (Lab colour plus a local-contrast channel, so a brown cake on
   a brown table still differs by its texture) are clustered with k-means;
   clusters that hold little of the border (a thumb, the cake itself running
   out of frame) are not table.
2. *Segmentation*: each pixel's distance to the nearest table cluster,
   thresholded at three levels, cleaned and hole-filled, gives blobs.
3. *Robust fit*: the outer contour of each blob is fitted with an ellipse by
   RANSAC, so a thumb over the edge, a glare notch or a touching wrapper do not
   pull the fit; contour points on the frame's edge (cake out of frame) are not
   rim points and are ignored. Sequential RANSAC finds a second cake that
   touches the first. A quadrilateral is tried too; the blob's shape decides
   between disc and brick.
4. *Edge ellipses*: long Canny chains of the coarse features (a leaf's detail
   averaged away, the rim kept) give further ellipses, each refitted on every
   edge pixel near it: the cake that fills the frame, or that has the table's
   colour, which segmentation misses.
5. *Snap*: along 96 rays each disc's rim is the strongest colour step near the
   ellipse; the steps are refitted (RANSAC), and the share of rays whose step
   lies on the fit is the rim's support.
6. *Verification*: an outline is a cake when, around most of its in-frame
   perimeter, a thin band just inside differs from a thin band just outside
   (ring contrast) and the segmentation edge (or, for an edge ellipse, the
   snapped rim) follows it. Refused besides: a blob whose rim strays from its
   ellipse (a chunk, a hand) unless the snapped rim follows it; a small
   outline whose inside recurs all around it (a hole in a texture); a small
   outline cut by the frame, or one centred outside it; an outline lying on a
   larger not-table region that runs out of frame (a detail of a cake that
   fills the frame). A texture close-up has no closed contrast curve, and
   falls back.

Coordinates are (x, y) in pixels of the image given, origin at the top-left
pixel's centre; angles are degrees, counter-clockwise on screen being negative
(image y points down), i.e. the major axis direction is ``(cos a, sin a)``.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

__all__ = ["CakeOutline", "Rectified", "LOCATOR_VERSION", "locate", "rectify", "canonical_view", "outline_mask", "outline_polygon"]

Shape = Literal["disc", "brick", "none"]

# Recorded in the catalog beside the model id: bump it whenever `locate` or
# `rectify` can give another outline or canonical image for the same photo
# (descriptors computed on the old ones must then be rebuilt by `teaprint reembed`).
LOCATOR_VERSION = "locate/3"

MIN_SIDE = 16  # px: `locate` refuses smaller photos, `canonical_view` describes them whole
WORK_SIDE = 256  # px, longer side of the working image: the rim needs no more
MIN_CONFIDENCE = 0.7  # accept threshold on `CakeOutline.confidence`: the highest keeping the hard re-shot targets (bench/bench_locate.py); non-cake photos score 0.5-0.75
BRICK_DISCOUNT = 0.15  # a brick's four-sided fit (no RANSAC) follows its rim less closely: true bricks score 0.52-0.8
MIN_AREA = 0.03  # smallest cake, fraction of the photo's area (a cake photographed to be identified is larger)
MIN_AXIS_RATIO = 0.5  # b/a: flatter than this is a 60 deg tilt, not a phone shot of a cake
EDGE_AREA = 0.1  # smallest cake found from edges alone, fraction of the photo's area (an eye printed on a cake filling the frame is 7 %)
EDGE_SUPPORT = 0.6  # least share of an edge ellipse's rays whose strongest step lies on it (`_snap`)
ROUGHNESS = 0.02  # a blob's rim may stray from its ellipse by this share of the radius (median)
CUT_AREA = 0.1  # an outline the frame cuts must cover at least this share of the photo
BLOB_AREA = 0.2  # outlines smaller than this (fraction of the photo) are checked for being a texture's blob
MIN_IN_FRAME = 0.3  # least share of an outline's perimeter inside the frame (a cake filling a 4:3 frame shows ~1/3)
OTHER_AREA = 0.3  # a further cake is at least this share of the largest one's area
OTHER_IN_FRAME = 0.6  # ... with at least this share of its rim in the frame
OTHER_CONFIDENCE = 0.8  # ... and at least this confidence
SURROUND = 0.8  # an outline whose surround is this share not table, in a region running out of frame, is a detail
_SECTORS = 72  # perimeter samples used by the verification


@dataclass(frozen=True)
class CakeOutline:
    """Where the cake lies in a photo.

    Attributes
    ----------
    shape : {"disc", "brick", "none"}
        "none" when no cake was found with confidence (`fallback` is True);
        the outline then spans the whole photo.
    centre : (float, float)
        Ellipse (or quadrilateral) centre (x, y), photo pixels.
    axes : (float, float)
        Semi-axes (a, b), a >= b, photo pixels. For a brick: half its mean
        side lengths.
    angle : float
        Direction of the major axis, degrees in [0, 180).
    corners : ndarray, shape (4, 2), dtype float64, or None
        A brick's corners (x, y), in order around the outline; None for discs.
    confidence : float
        0-1; the outline is a cake when it is at least `MIN_CONFIDENCE`.
    fallback : bool
        True when no cake was found: describe the whole photo.
    others : tuple of CakeOutline
        Further cakes found in the same photo, largest first (empty for most
        photos). The outline itself is the largest.
    """

    shape: Shape
    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    corners: np.ndarray | None
    confidence: float
    fallback: bool
    others: tuple["CakeOutline", ...] = ()

    @property
    def count(self) -> int:
        """Number of cakes found (0 on fallback)."""
        return 0 if self.fallback else 1 + len(self.others)

    def polygon(self, points: int = 180) -> np.ndarray:
        """The outline as a closed polygon, shape (N, 2) float64, photo pixels."""
        return outline_polygon(self, points)


@dataclass(frozen=True)
class Rectified:
    """The cake in canonical view.

    Attributes
    ----------
    image : ndarray, shape (size, size[, 3]), dtype uint8
        The rectified crop; pixels outside the cake are 0.
    mask : ndarray, shape (size, size), dtype bool
        True on the cake.
    homography : ndarray, shape (3, 3), dtype float64
        Maps photo pixels (x, y, 1) to rectified pixels.
    outline : CakeOutline
        What was rectified.
    """

    image: np.ndarray
    mask: np.ndarray
    homography: np.ndarray
    outline: CakeOutline

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) rectified-image points back to photo pixels, (N, 2) float64."""
        return _apply_h(np.linalg.inv(self.homography), points)


# ------------------------------------------------------------------ helpers


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("image must be a uint8 numpy array")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image too small to locate a cake: {image.shape[:2]}")


def _apply_h(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ np.asarray(h, dtype=np.float64).T
    return q[:, :2] / q[:, 2:3]


def _ellipse_points(centre: tuple[float, float], axes: tuple[float, float], angle: float, n: int) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.c_[centre[0] + c * x - s * y, centre[1] + s * x + c * y]


def outline_polygon(outline: CakeOutline, points: int = 180) -> np.ndarray:
    """Closed polygon of an outline, shape (N, 2) float64, photo pixels.

    Discs (and the fallback) give `points` ellipse samples, bricks their 4 corners.
    """
    if outline.corners is not None:
        return np.asarray(outline.corners, dtype=np.float64)
    return _ellipse_points(outline.centre, outline.axes, outline.angle, points)


def outline_mask(outline: CakeOutline, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise an outline into a boolean mask of `shape` (H, W)."""
    mask = np.zeros(shape[:2], np.uint8)
    poly = np.round(outline_polygon(outline) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _from_cv_ellipse(box: tuple) -> tuple[tuple[float, float], tuple[float, float], float]:
    (cx, cy), (w, h), ang = box
    if w >= h:
        return (float(cx), float(cy)), (w / 2.0, h / 2.0), float(ang % 180.0)
    return (float(cx), float(cy)), (h / 2.0, w / 2.0), float((ang + 90.0) % 180.0)


def _radial(points: np.ndarray, ell: tuple) -> np.ndarray:
    """Approximate distance (px) of points from an ellipse: (r - 1) * mean axis."""
    (cx, cy), (a, b), ang = ell
    c, s = np.cos(np.radians(ang)), np.sin(np.radians(ang))
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    u, v = (c * dx + s * dy) / a, (-s * dx + c * dy) / b
    return (np.sqrt(u * u + v * v) - 1.0) * np.sqrt(a * b)


# -------------------------------------------------------------- background


NFEAT = 8  # Lab + contrast at two scales


def _features(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel features: Lab colour and local contrast at two scales, shape (H, W, 8) float32.

    Smoothed, so that the leaves inside a cake read as one region, not as
    hundreds of little ones; the coarse scale averages a striped or checked
    cloth into one colour, which the cake's brown is not.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    grey = lab[..., 0]
    side = min(rgb.shape[:2])
    layers = []
    for sigma in (0.008 * side, 0.025 * side):
        sigma = max(1.0, sigma)
        mean = cv2.GaussianBlur(grey, (0, 0), sigma)
        contrast = np.sqrt(np.maximum(cv2.GaussianBlur(grey * grey, (0, 0), sigma) - mean * mean, 0.0))
        layers.append(cv2.GaussianBlur(np.dstack([lab, 1.5 * contrast]), (0, 0), sigma))
    return np.dstack(layers)


def _table_distance(feats: np.ndarray) -> np.ndarray:
    """Distance of each pixel from the table, in units of a table cluster's spread.

    The table is what the photo's corners show: the border strip's pixels are
    clustered, and a cluster is table when it covers a good part of at least
    two corners. A cake running out of frame, or a thumb, reaches the border
    too, but rarely two corners (a round cake filling the frame reaches none).
    """
    h, w = feats.shape[:2]
    k = max(2, int(round(0.04 * min(h, w))))
    q = max(k, int(round(0.12 * min(h, w))))
    strip = np.concatenate([feats[:k].reshape(-1, NFEAT), feats[-k:].reshape(-1, NFEAT),
                            feats[k:-k, :k].reshape(-1, NFEAT), feats[k:-k, -k:].reshape(-1, NFEAT)])
    corners = [feats[:q, :q], feats[:q, -q:], feats[-q:, :q], feats[-q:, -q:]]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(1)  # k-means' seeding: the same photo always gives the same outline
    _, labels, centres = cv2.kmeans(strip, 4, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    flat = feats.reshape(-1, NFEAT)
    corner_labels = [np.argmin(((c.reshape(-1, 1, NFEAT) - centres[None]) ** 2).sum(axis=2), axis=1) for c in corners]
    best = np.full(flat.shape[0], np.inf, np.float32)
    for j, mu in enumerate(centres):
        members = strip[labels == j]
        in_corners = sum(float((cl == j).mean()) >= 0.35 for cl in corner_labels)
        if len(members) < 0.05 * len(strip) or in_corners < 2:
            continue
        best = np.minimum(best, _zdist(flat, members, mu))
    if not np.isfinite(best).any():  # no cluster holds two corners: every corner its own table
        return _table_distance_any(feats, strip, labels, centres)
    return best.reshape(h, w)


def _table_distance_any(feats: np.ndarray, strip: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    flat = feats.reshape(-1, NFEAT)
    best = np.full(flat.shape[0], np.inf, np.float32)
    for j, mu in enumerate(centres):
        members = strip[labels == j]
        if len(members) == 0:
            continue
        best = np.minimum(best, _zdist(flat, members, mu))
    return best.reshape(feats.shape[:2])


def _zdist(flat: np.ndarray, members: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """RMS per-feature z-score of each pixel against one table cluster (std floored: flat paper is not noiseless)."""
    std = np.sqrt(((members - mu) ** 2).mean(axis=0)) + 3.0
    return np.sqrt((((flat - mu) / std) ** 2).mean(axis=1))


THRESHOLDS = (2.0, 3.0, 4.5)  # table distances tried, in z units: a faint cake and a bold one


def _blobs(dist: np.ndarray, threshold: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Outer contours (N, 2) float64 of the regions farther than `threshold` from the table, and the mask (uint8 0/1)."""
    mask = (dist > threshold).astype(np.uint8)
    side = min(dist.shape)
    r = max(1, side // 100)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * r + 1,) * 2))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    min_area = MIN_AREA * dist.size
    return [c.reshape(-1, 2).astype(np.float64) for c in contours if cv2.contourArea(c) >= min_area], mask


# --------------------------------------------------------------- fitting


def _rim_points(contour: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Contour points not on the frame's edge (where the cake runs out of frame)."""
    h, w = shape
    x, y = contour[:, 0], contour[:, 1]
    keep = (x > 1) & (y > 1) & (x < w - 2) & (y < h - 2)
    return contour[keep]


def _ransac_ellipse(points: np.ndarray, rng: np.random.Generator, tol: float, iters: int = 80) -> tuple | None:
    """Ellipse with the most points within `tol` px, refitted on its inliers.

    All hypotheses at once: each is the conic through 5 random points
    (a batched null space), scored by the Sampson distance of every point
    (first-order distance to a conic, px); hyperbolas and parabolas score 0.
    """
    n = len(points)
    if n < 12:
        return None
    mean, spread = points.mean(axis=0), float(points.std()) + 1e-9
    p = (points - mean) / spread  # normalised: a conic fit in pixel units is ill-conditioned
    x, y = p[:, 0], p[:, 1]
    design = np.c_[x * x, x * y, y * y, x, y, np.ones(n)]
    idx = rng.integers(0, n, size=(iters, 5))
    conics = np.linalg.svd(design[idx])[2][:, -1, :]  # (iters, 6): A B C D E F
    a, b, c, d, e, f = conics.T
    q = design @ conics.T  # (n, iters)
    gx = 2 * a * x[:, None] + b * y[:, None] + d
    gy = b * x[:, None] + 2 * c * y[:, None] + e
    dist = np.abs(q) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-12) * spread
    counts = np.where(b * b - 4 * a * c < 0, (dist < tol).sum(axis=0), 0)
    if counts.max(initial=0) < 6:
        return None
    inl = points[dist[:, int(np.argmax(counts))] < tol]
    best = _fit(inl)
    for _ in range(2):
        if best is None:
            return None
        inl = points[np.abs(_radial(points, best)) < tol]
        best = _fit(inl) if len(inl) >= 6 else None
    return best


def _fit(points: np.ndarray) -> tuple | None:
    if len(points) < 5:
        return None
    try:
        ell = _from_cv_ellipse(cv2.fitEllipseDirect(points.astype(np.float32)))
    except cv2.error:
        return None
    a, b = ell[1]
    if not (np.isfinite(a) and np.isfinite(b)) or b < 2.0 or a > 1e5:
        return None
    return ell


def _quads(contour: np.ndarray) -> list[np.ndarray]:
    """Four-cornered fits of a blob: its hull simplified to 4 vertices (perspective kept) and its minimum-area rectangle.

    The rectangle survives a thumb that makes the hull five-sided.
    """
    hull = cv2.convexHull(contour.astype(np.float32))
    peri = cv2.arcLength(hull, True)
    out = [cv2.boxPoints(cv2.minAreaRect(contour.astype(np.float32))).astype(np.float64)]
    for eps in (0.02, 0.04, 0.06, 0.08, 0.12):
        approx = cv2.approxPolyDP(hull, eps * peri, True)
        if len(approx) == 4:
            out.append(approx.reshape(4, 2).astype(np.float64))
            break
        if len(approx) < 4:
            break
    return out


def _edge_distance(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Distance (px) of each point from the nearest side of a quadrilateral."""
    best = np.full(len(points), np.inf)
    for i in range(4):
        p, q = corners[i], corners[(i + 1) % 4]
        d = q - p
        t = np.clip(((points - p) @ d) / max(float(d @ d), 1e-9), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (p + t[:, None] * d), axis=1))
    return best


def _is_brick(corners: np.ndarray, ell: tuple, rim: np.ndarray, tol: float) -> bool:
    """A brick when its rim follows the quadrilateral's sides clearly better than the ellipse.

    Judged on the rim points, not on areas: a thumb over a disc's edge makes
    the blob's hull four-sided, but the rim still follows the ellipse.
    """
    on_quad = float((_edge_distance(rim, corners) < 1.5 * tol).mean())
    on_ell = float((np.abs(_radial(rim, ell)) < 1.5 * tol).mean())
    return on_quad >= 0.45 and on_quad > on_ell + 0.12


# ------------------------------------------------------------------ edges


@dataclass(frozen=True)
class _Edges:
    """Step edges of the smoothed colour-and-texture features (Canny on the strongest channel's gradient).

    `dist` is each pixel's distance (px) to the nearest edge pixel, `gx`,
    `gy` the gradient used, `points` the edge pixels (x, y) float64.
    """

    dist: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    points: np.ndarray
    chains: list[np.ndarray]


def _edges_and_lab(feats: np.ndarray, small: np.ndarray) -> tuple[_Edges, np.ndarray]:
    """`_edges(feats)` and the smoothed Lab image `_snap` reads (float32), both free of random draws."""
    lab = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32), (0, 0), 1.0)
    return _edges(feats), lab


def _edges(feats: np.ndarray) -> _Edges:
    """Edges at the rim's scale: the coarse features average a leaf (or a printed letter) away, not the cake's rim."""
    layer = feats[..., NFEAT // 2 :]  # Lab + contrast at the coarse scale
    norm = layer / (layer.reshape(-1, layer.shape[2]).std(axis=0) + 1.0)
    gx = np.stack([cv2.Sobel(norm[..., i], cv2.CV_32F, 1, 0, ksize=3) for i in range(norm.shape[2])], axis=-1)
    gy = np.stack([cv2.Sobel(norm[..., i], cv2.CV_32F, 0, 1, ksize=3) for i in range(norm.shape[2])], axis=-1)
    # one direction for all channels: the gradient of the channel that steps most
    best = np.argmax(gx * gx + gy * gy, axis=-1)[..., None]
    bx, by = np.take_along_axis(gx, best, -1)[..., 0], np.take_along_axis(gy, best, -1)[..., 0]
    m = np.sqrt(bx * bx + by * by)
    k = 1000.0 / max(float(np.percentile(m, 90)), 1e-6)
    dx, dy = np.clip(bx * k, -32000, 32000).astype(np.int16), np.clip(by * k, -32000, 32000).astype(np.int16)
    edge = cv2.Canny(dx, dy, 500.0, 1000.0, L2gradient=True)
    dist = cv2.distanceTransform(255 - edge, cv2.DIST_L2, 3)
    ys, xs = np.nonzero(edge)
    chains, _ = cv2.findContours(edge, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return _Edges(dist, bx, by, np.c_[xs, ys].astype(np.float64), [c.reshape(-1, 2).astype(np.float64) for c in chains])


def _edge_candidates(edges: _Edges, feats: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Ellipses through long edge chains, each refitted on every edge pixel near it (a thumb breaks the rim into arcs)."""
    h, w = feats.shape[:2]
    side = min(h, w)
    tol = max(1.5, 0.012 * max(h, w))
    out: list[tuple] = []
    for chain in sorted(edges.chains, key=len, reverse=True)[:12]:
        if len(chain) < 0.5 * side:  # traced on both sides: an arc of a quarter of a small cake
            break
        ell = _ransac_ellipse(chain, rng, tol, iters=30)
        if ell is None or not _plausible(ell, (h, w)):
            continue
        near = edges.points[np.abs(_radial(edges.points, ell)) < 2 * tol]
        ell = _ransac_ellipse(near, rng, tol, iters=30) if len(near) >= 12 else ell
        if ell is None or not _plausible(ell, (h, w)):
            continue
        if any(_same_ellipse(ell, e) for e in out):
            continue
        out.append(ell)
    return out


def _edge_candidate(ell: tuple, feats: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> "_Candidate":
    """A disc from the edges, snapped to the rim (`_snap`), scored by rim contrast times the rim's support."""
    snapped, support = _snap(ell, lab, rng)
    support = 0.0 if np.isnan(support) else support
    (cx, cy), (a, b), ang = ell = snapped or ell
    area = float(np.pi * a * b)
    ring, in_frame = _ring_score(feats, _ellipse_points((cx, cy), (a, b), ang, _SECTORS), np.array([cx, cy]), max(2.0, 0.06 * b))
    small = area < EDGE_AREA * feats.shape[0] * feats.shape[1]  # the snapped rim, not the chain's first fit
    if in_frame < MIN_IN_FRAME or support < EDGE_SUPPORT or small:  # a chunk's ragged edge, a bowl with what lies in it
        return _Candidate("disc", ell, None, 0.0, area, in_frame)
    return _Candidate("disc", ell, None, float(np.sqrt(ring * support * min(1.0, in_frame / 0.5))), area, in_frame)


def _plausible(ell: tuple, shape: tuple[int, int]) -> bool:
    """A large, not too flat ellipse whose centre lies in (or just off) the frame.

    Edge chains are for the cakes segmentation misses: one filling the frame,
    or one of the table's colour. Textures close up are full of small
    elliptic holes and shadows, so an edge ellipse must be larger than a
    segmented blob.
    """
    (cx, cy), (a, b), _ = ell
    h, w = shape
    return (b / a >= MIN_AXIS_RATIO and np.pi * a * b >= EDGE_AREA * h * w and a <= 1.5 * max(h, w)
            and -0.1 * w <= cx <= 1.1 * w and -0.1 * h <= cy <= 1.1 * h)


def _same_ellipse(e1: tuple, e2: tuple) -> bool:
    (c1, (a1, b1), _), (c2, (a2, b2), _) = e1, e2
    return bool(np.hypot(c1[0] - c2[0], c1[1] - c2[1]) < 0.1 * a1 and abs(a1 / a2 - 1) < 0.1 and abs(b1 / b2 - 1) < 0.1)


# ------------------------------------------------------------ verification


def _ring_score(feats: np.ndarray, boundary: np.ndarray, centre: np.ndarray, band: float) -> tuple[float, float]:
    """(fraction of in-frame perimeter samples whose inner and outer bands differ, in-frame fraction).

    `boundary` are perimeter samples (N, 2); bands lie `band` px inside and
    outside along the ray from `centre`.
    """
    h, w = feats.shape[:2]
    ray = boundary - centre
    length = np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-6)
    unit = ray / length
    inner = boundary - unit * band
    outer = boundary + unit * band
    inside = lambda p: (p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] <= h - 1)  # noqa: E731
    ok = inside(inner) & inside(outer)
    if ok.sum() < 0.3 * len(boundary):
        return 0.0, float(ok.mean())
    fi = feats[np.round(inner[ok, 1]).astype(int), np.round(inner[ok, 0]).astype(int)]
    fo = feats[np.round(outer[ok, 1]).astype(int), np.round(outer[ok, 0]).astype(int)]
    diff = np.linalg.norm(fi - fo, axis=1)
    return float((diff > 12.0).mean()), float(ok.mean())


def _support(edge_dist: np.ndarray, boundary: np.ndarray, tol: float) -> float:
    """Fraction of in-frame perimeter samples with a segmentation edge within `tol` px."""
    h, w = edge_dist.shape
    ok = (boundary[:, 0] >= 0) & (boundary[:, 1] >= 0) & (boundary[:, 0] <= w - 1) & (boundary[:, 1] <= h - 1)
    if not ok.any():
        return 0.0
    p = np.round(boundary[ok]).astype(int)
    return float((edge_dist[p[:, 1], p[:, 0]] < tol).mean())


@dataclass(frozen=True)
class _Candidate:
    shape: Shape
    ell: tuple
    corners: np.ndarray | None
    confidence: float
    area: float = field(default=0.0)
    in_frame: float = 1.0  # share of the outline's perimeter inside the photo
    rough: bool = False  # the blob's rim strays from the ellipse (`_rough`): the photo's steps must vouch for it


def _fill(mask: np.ndarray, boundary: np.ndarray) -> float:
    """Fraction of the outline's in-frame interior that is not table (a cup's ring is hollow, a cake is not)."""
    inner = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(inner, [np.round(boundary).astype(np.int32)], 1)
    area = int(inner.sum())
    return float((mask & inner).sum()) / area if area else 0.0


def _score(cand_shape: Shape, ell: tuple, corners: np.ndarray | None, feats: np.ndarray,
           edge_dist: np.ndarray, mask: np.ndarray, tol: float) -> tuple[float, float]:
    """(confidence, share of the perimeter in the frame) of one outline."""
    (cx, cy), (a, b), ang = ell
    if corners is not None:
        t = np.linspace(0, 1, _SECTORS // 4, endpoint=False)[:, None]
        boundary = np.concatenate([corners[i] + t * (corners[(i + 1) % 4] - corners[i]) for i in range(4)])
    else:
        boundary = _ellipse_points((cx, cy), (a, b), ang, _SECTORS)
    band = max(2.0, 0.06 * b)
    ring, in_frame = _ring_score(feats, boundary, np.array([cx, cy]), band)
    support = _support(edge_dist, boundary, tol)
    if in_frame < MIN_IN_FRAME or _fill(mask, boundary) < 0.75:  # mostly out of frame, or hollow
        return 0.0, in_frame
    # a cake filling the frame shows a short rim: trusted a little less than a whole one
    return float(np.sqrt(ring * support * min(1.0, in_frame / 0.5))), in_frame


def _cut_small(c: "_Candidate", shape: tuple[int, int]) -> bool:
    """A small outline that the frame cuts, or one centred outside the frame: not the photo's subject.

    A cake runs out of frame only when it is close, so large.

    What a small one cut by the frame edge usually is: a patch of fur, a
    cup's corner, a shadow reaching the border.
    """
    (cx, cy), h, w = c.ell[0], shape[0], shape[1]
    outside = not (0 <= cx <= w - 1 and 0 <= cy <= h - 1)  # a photo of a cake has the cake's centre in it
    return outside or (c.in_frame < 0.95 and c.area < CUT_AREA * h * w)


def _texture_blob(c: "_Candidate", feats: np.ndarray) -> bool:
    """A small outline whose inside recurs all around it: a hole or a shadow of a texture, not a cake.

    A cake's surface is not what the table around it looks like; in a
    close-up of a texture (bread, foil, gravel) the dark patch inside one
    ellipse is what half the photo looks like. Only small outlines are
    judged: a large one leaves too little outside to judge by (a cake
    filling the frame), and textures give no large closed rims.
    """
    h, w = feats.shape[:2]
    if c.area >= BLOB_AREA * h * w:
        return False
    yy, xx = np.mgrid[:h, :w]
    r = _radial(np.c_[xx.ravel(), yy.ravel()].astype(np.float64), c.ell) / np.sqrt(c.ell[1][0] * c.ell[1][1])
    coarse = feats[..., NFEAT // 2 :].reshape(-1, NFEAT // 2)
    inside, outside = coarse[r < -0.15], coarse[r > 0.2]
    if len(inside) < 20 or len(outside) < 20:
        return False
    z = np.sqrt((((outside - inside.mean(axis=0)) / (inside.std(axis=0) + 3.0)) ** 2).mean(axis=1))
    return float((z < 1.5).mean()) > 0.5


def _detail(c: "_Candidate", mask: np.ndarray) -> bool:
    """An outline lying on something larger that runs out of frame: a detail of a cake filling the frame.

    A cake photographed close fills the frame, so its rim shows only in the
    corners, and a round detail printed or pressed on it (an eye, a ticket, a
    dimple) is the best ellipse left. Such an outline's surround, a band just
    outside it, is not table either, and the not-table region it lies in
    reaches the frame's edge and is far larger than it. A cake on a table is
    surrounded by table (a thumb or a wrapper touches part of its rim), and a
    cake in a bowl is surrounded by a bowl that lies in the frame.

    Parameters
    ----------
    c : _Candidate
    mask : ndarray, shape (H, W), dtype uint8
        1 where the pixel is not table (the lowest threshold's segmentation).
    """
    h, w = mask.shape
    (cx, cy), (a, b), ang = c.ell
    band = np.concatenate([_ellipse_points((cx, cy), (a * k, b * k), ang, _SECTORS) for k in (1.12, 1.25)])
    band = np.round(band).astype(int)
    ok = (band[:, 0] >= 0) & (band[:, 1] >= 0) & (band[:, 0] < w) & (band[:, 1] < h)
    if ok.sum() < 0.5 * len(band):
        return False
    hit = mask[band[ok, 1], band[ok, 0]].astype(bool)
    if hit.mean() < SURROUND:
        return False
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    around = np.unique(labels[band[ok, 1][hit], band[ok, 0][hit]])
    around = around[around > 0]
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    reaches = np.isin(border, around).mean() >= 0.25  # the region runs out of frame along a good part of it
    return bool(reaches and stats[around, cv2.CC_STAT_AREA].sum() >= 2.5 * c.area)


def _candidates(contour: np.ndarray, feats: np.ndarray, edge_dist: np.ndarray, mask: np.ndarray,
                rng: np.random.Generator) -> list[_Candidate]:
    """Up to three outlines from one blob (touching cakes give one blob)."""
    shape = feats.shape[:2]
    tol = max(1.5, 0.012 * max(shape))
    rim = rim_all = _rim_points(contour, shape)
    out: list[_Candidate] = []
    quads = _quads(contour)
    for _ in range(3):
        ell = _ransac_ellipse(rim, rng, tol)
        if ell is None:
            break
        (cx, cy), (a, b), ang = ell
        near = np.abs(_radial(rim, ell)) < 2 * tol
        area = np.pi * a * b
        if b / a >= MIN_AXIS_RATIO and area >= MIN_AREA * feats.shape[0] * feats.shape[1]:
            cand_shape: Shape = "disc"
            corners = None
            quad = min(quads, key=lambda q: -float((_edge_distance(rim_all, q) < tol).mean()))
            if not out and _is_brick(quad, ell, rim_all, tol):
                cand_shape, corners = "brick", quad
            conf, in_frame = _score(cand_shape, ell, corners, feats, edge_dist, mask, tol)
            out.append(_Candidate(cand_shape, ell, corners, conf, area, in_frame, cand_shape == "disc" and _rough(rim_all, ell)))
        rim = rim[~near]
        if len(rim) < 0.25 * len(contour):
            break
    return out


def _rough(rim: np.ndarray, ell: tuple) -> bool:
    """Whether a blob's rim strays from its ellipse like a chunk's broken edge, not like a cake's pressed rim.

    The rim points near the ellipse (within 15 % of its radius: a second cake
    in the same blob lies farther) sit, for a cake, within about 1 % of the
    radius of it (median; a thumb is the minority RANSAC ignores); a chunk, a
    hand, a bowl with a chunk in it stray by 2.5-20 %. So does a cake whose
    colour is close to the table's (the blob's edge wobbles): such a blob is
    kept only when the photo's steps follow its ellipse (`_snap`).
    """
    scale = np.sqrt(ell[1][0] * ell[1][1])
    off = np.abs(_radial(rim, ell)) / scale
    near = off[off < 0.15]
    return len(near) < 12 or float(np.median(near)) > ROUGHNESS


def _refine(c: _Candidate, lab: np.ndarray, rng: np.random.Generator) -> _Candidate:
    """A disc's ellipse snapped to the rim (`_snap`); kept as it is when the snap fails, and for bricks.

    A segmented blob is not refused for a weak snap, unlike an edge ellipse:
    inside a sibling cake the leaves' steps often beat its rim's on a ray,
    and the blob's own contour already vouches for the outline.
    """
    if c.shape != "disc":
        return c
    ell, _ = _snap(c.ell, lab, rng)
    if ell is None:
        return c
    return _Candidate(c.shape, ell, c.corners, c.confidence, float(np.pi * ell[1][0] * ell[1][1]), c.in_frame)


def _snap(ell: tuple, lab: np.ndarray, rng: np.random.Generator) -> tuple[tuple | None, float]:
    """The rim near an ellipse: each ray's strongest step, refitted; and the share of rays whose step lies on the fit.

    Smoothed features put an outline a few px off; along each ray the rim is
    where the mean colour over a short stretch inside differs most from the
    stretch outside (a step detector at a scale above a leaf's). The snapped
    points are refitted by RANSAC, so a thumb or a glare notch on some rays
    does not pull the rim. A cake's rim is the strongest step on most rays; a
    chunk's ragged edge or a bowl with a chunk in it, to which an ellipse fits
    only in part, is not: the share is the rim's support.

    Returns
    -------
    (ellipse or None, support)
        None when too few rays lie in the frame, the refit fails or moves far
        (another object); support in 0-1 (NaN when too few rays lie in the frame).
    """
    (cx, cy), (a, b), ang = ell
    h, w = lab.shape[:2]
    rays, steps, half = 96, 41, 5
    t = np.linspace(0, 2 * np.pi, rays, endpoint=False)
    s = np.linspace(0.8, 1.2, steps)
    co, si = np.cos(np.radians(ang)), np.sin(np.radians(ang))
    u, v = a * np.cos(t)[:, None] * s[None], b * np.sin(t)[:, None] * s[None]
    px, py = cx + co * u - si * v, cy + si * u + co * v  # (rays, steps)
    ok = ((px >= 0) & (py >= 0) & (px <= w - 1) & (py <= h - 1)).all(axis=1)
    if ok.sum() < 12:
        return None, float("nan")
    f = lab[np.round(py[ok]).astype(int), np.round(px[ok]).astype(int)]  # (R, steps, 3)
    csum = np.concatenate([np.zeros((f.shape[0], 1, 3)), np.cumsum(f, axis=1)], axis=1)
    j = np.arange(half, steps - half)
    inner = (csum[:, j] - csum[:, j - half]) / half
    outer = (csum[:, j + half] - csum[:, j]) / half
    best = j[np.argmax(np.linalg.norm(inner - outer, axis=2), axis=1)]
    pts = np.c_[px[ok][np.arange(len(best)), best], py[ok][np.arange(len(best)), best]]
    tol = max(1.0, 0.02 * b)
    fit = _ransac_ellipse(pts, rng, tol, iters=40)
    if fit is None:
        return None, 0.0
    support = float((np.abs(_radial(pts, fit)) < tol).mean())
    if support < 0.5 or abs(fit[1][0] / a - 1) > 0.2 or abs(fit[1][1] / b - 1) > 0.2:  # a different object
        return None, support
    return fit, support


def _brick_geometry(corners: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float]:
    side = [np.linalg.norm(corners[(i + 1) % 4] - corners[i]) for i in range(4)]
    w, h = (side[0] + side[2]) / 2, (side[1] + side[3]) / 2
    long_edge = corners[1] - corners[0] if w >= h else corners[2] - corners[1]
    ang = float(np.degrees(np.arctan2(long_edge[1], long_edge[0])) % 180.0)
    c = corners.mean(axis=0)
    return (float(c[0]), float(c[1])), (max(w, h) / 2, min(w, h) / 2), ang


def _overlaps(c: _Candidate, k: _Candidate) -> bool:
    """True when either centre lies inside the other's ellipse."""
    return bool(_radial(np.array([c.ell[0]]), k.ell)[0] < 0 or _radial(np.array([k.ell[0]]), c.ell)[0] < 0)


def _select(cands: list[_Candidate]) -> list[_Candidate]:
    """One outline per cake, largest cake first.

    Outlines of about the same size on the same spot are one cake seen at
    several thresholds: the most confident wins (the smaller on a near tie). A much smaller outline on a
    cake is a ticket or a glare spot on it, and a small one beside it a cup.
    """
    kept: list[_Candidate] = []
    for c in sorted(cands, key=lambda c: -c.area):
        hit = next((i for i, k in enumerate(kept) if _overlaps(c, k)), None)
        if hit is None:
            kept.append(c)
        elif c.area >= 0.6 * kept[hit].area and c.confidence >= kept[hit].confidence - 0.03:
            kept[hit] = c  # ties go to the tighter outline: a shadow or a thumb only ever adds area
    kept.sort(key=lambda c: -c.area)
    # a further cake must be plainly one: a wrapper or a cup half out of frame is not (a catalog photo would be refused)
    return kept[:1] + [c for c in kept[1:] if c.area >= OTHER_AREA * kept[0].area and c.in_frame >= OTHER_IN_FRAME
                       and c.confidence >= OTHER_CONFIDENCE]


def _to_outline(c: _Candidate, scale: float) -> CakeOutline:
    if c.corners is not None:
        corners = c.corners * scale
        centre, axes, ang = _brick_geometry(corners)
    else:
        corners = None
        (cx, cy), (a, b), ang = c.ell
        centre, axes = (cx * scale, cy * scale), (a * scale, b * scale)
    return CakeOutline(c.shape, centre, axes, float(ang), corners, round(c.confidence, 4), False)


def _fallback(shape: tuple[int, int], confidence: float) -> CakeOutline:
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    axes = (max(w, h) / 2.0, min(w, h) / 2.0)
    return CakeOutline("none", ((w - 1) / 2.0, (h - 1) / 2.0), axes, 0.0 if w >= h else 90.0, corners,
                       round(confidence, 4), True)


# ------------------------------------------------------------------ public


def locate(image: np.ndarray, min_confidence: float = MIN_CONFIDENCE, work_side: int = WORK_SIDE) -> CakeOutline:
    """Find the cake (or cakes) in a photo.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
        The photo, RGB or grey; at least 16 px a side.
    min_confidence : float
        Outlines scoring below this are not cakes (bricks: `BRICK_DISCOUNT` below it).
    work_side : int
        Longer side, px, of the reduced image the search runs on.

    Returns
    -------
    CakeOutline
        The largest confident cake, with the other cakes in `others`; or, when
        none is confident, a fallback outline (shape "none", the whole photo,
        `fallback` True, `confidence` the best score seen).

    Raises
    ------
    TypeError, ValueError
        When `image` is not a uint8 (H, W) or (H, W, 3) array of at least 16 px.
    """
    _check_image(image)
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    scale = max(h, w) / float(work_side) if max(h, w) > work_side else 1.0
    small = cv2.resize(rgb, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA) if scale > 1 else rgb
    if min(small.shape[:2]) < MIN_SIDE:  # a sliver of a panorama: no room for a cake's rim
        return _fallback((h, w), 0.0)
    feats = _features(small)
    # The photo's edge map needs no random draw and is mostly OpenCV and large-array numpy (the GIL released):
    # it is built on a thread while the segmentation's candidates are fitted here (with the disc mask built once,
    # `locate_view` 35-37 -> 30.5 ms p50 on 270 benchmark photos, on two cores).
    with ThreadPoolExecutor(max_workers=1) as thread:
        edge_map = thread.submit(_edges_and_lab, feats, small)
        dist = _table_distance(feats)
        rng = np.random.default_rng(0)  # RANSAC: deterministic for one photo
        cands: list[_Candidate] = []
        blobs = [_blobs(dist, threshold) for threshold in THRESHOLDS]
        not_table = blobs[0][1]  # the lowest threshold's mask: what `_detail` calls not table
        for contours, mask in blobs:
            edges = np.full(small.shape[:2], 255, np.uint8)
            for c in contours:
                cv2.polylines(edges, [c.astype(np.int32)], True, 0)
            edge_dist = cv2.distanceTransform(edges, cv2.DIST_L2, 3)
            cands += [c for contour in contours for c in _candidates(contour, feats, edge_dist, mask, rng)]
        photo_edges, lab = edge_map.result()
    cands += [_edge_candidate(ell, feats, lab, rng) for ell in _edge_candidates(photo_edges, feats, rng)]
    best_seen = max((c.confidence for c in cands), default=0.0)
    sure = [c for c in cands if c.confidence >= min_confidence - (BRICK_DISCOUNT if c.shape == "brick" else 0.0)
            and not _cut_small(c, feats.shape[:2]) and not _texture_blob(c, feats) and not _detail(c, not_table)
            and not (c.rough and not _snap(c.ell, lab, rng)[1] >= EDGE_SUPPORT)]
    kept = _select([_refine(c, lab, rng) for c in sure])
    if not kept:
        return _fallback((h, w), best_seen)
    outlines = [_to_outline(c, scale) for c in kept]
    first = outlines[0]
    return CakeOutline(first.shape, first.centre, first.axes, first.angle, first.corners, first.confidence,
                       False, tuple(outlines[1:]))


def _disc_homography(outline: CakeOutline, size: int, margin: float) -> np.ndarray:
    """Affine map taking the ellipse to a circle centred in a `size` square."""
    (cx, cy), (a, b), ang = outline.centre, outline.axes, outline.angle
    t = np.radians(ang)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    stretch = np.diag([1.0, a / b, 1.0])  # minor axis up to the major: undoes the tilt's foreshortening
    radius = (size / 2.0) / (1.0 + margin)
    k = radius / a
    c = (size - 1) / 2.0
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    to_out = np.array([[k, 0, c], [0, k, c], [0, 0, 1.0]])
    # rotating back after the stretch keeps the cake's in-plane orientation as photographed
    return to_out @ rot @ stretch @ rot.T @ to_origin


def _conic(centre: tuple[float, float], axes: tuple[float, float], angle: float) -> np.ndarray:
    """The ellipse as a symmetric 3x3 conic matrix C (x^T C x = 0 on the rim)."""
    cx, cy = centre
    a, b = axes
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    qa, qb, qc = c * c / a**2 + s * s / b**2, 2 * c * s * (1 / a**2 - 1 / b**2), s * s / a**2 + c * c / b**2
    d, e = -2 * qa * cx - qb * cy, -qb * cx - 2 * qc * cy
    f = qa * cx * cx + qb * cx * cy + qc * cy * cy - 1
    return np.array([[qa, qb / 2, d / 2], [qb / 2, qc, e / 2], [d / 2, e / 2, f]])


def _roundness(points: np.ndarray) -> float:
    """1 - b/a of the ellipse through a closed curve's points (0 = a circle).

    Not the spread of radii about the points' mean: a homography can keep a
    circle a circle while sliding points along it, which moves their mean.
    """
    (_, _), (w, h), _ = cv2.fitEllipse(points.astype(np.float32))
    return float(1.0 - min(w, h) / max(w, h, 1e-9))


def _perspective_unroll(outline: CakeOutline, shape: tuple[int, int], focal: float) -> np.ndarray:
    """Camera rotation (as an image homography) that turns the cake's plane to face the camera.

    A circle seen by a pinhole camera of focal length `focal` (principal point
    at the photo centre) is an ellipse whose conic gives the plane's normal,
    up to a two-fold ambiguity; rotating the camera onto the normal makes the
    ellipse a circle again, undoing the perspective that an affine stretch
    leaves (at 30 deg tilt, ~14 % in the radius). Of the candidate
    rotations the one giving the roundest rim wins; identity when none is rounder.
    """
    h, w = shape
    kmat = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1.0]])
    q = kmat.T @ _conic(outline.centre, outline.axes, outline.angle) @ kmat
    lam, vec = np.linalg.eigh(q)
    if (lam < 0).sum() > 1:
        lam, vec = np.linalg.eigh(-q)
    l3, l2, l1 = lam  # ascending: l3 < 0 < l2 <= l1
    rim = _ellipse_points(outline.centre, outline.axes, outline.angle, 90)
    best, best_round = np.eye(3), _roundness(rim)
    if not (l3 < 0 < l2 <= l1) or l1 - l3 <= 0:
        return best
    for sign in (1.0, -1.0):
        n = sign * np.sqrt((l1 - l2) / (l1 - l3)) * vec[:, 2] + np.sqrt((l2 - l3) / (l1 - l3)) * vec[:, 0]
        n = n / np.linalg.norm(n) * (1 if n[2] >= 0 else -1)
        axis = np.cross(n, [0.0, 0.0, 1.0])
        if np.linalg.norm(axis) < 1e-9:
            continue
        rvec = axis / np.linalg.norm(axis) * np.arccos(np.clip(n[2], -1, 1))
        for r in (cv2.Rodrigues(rvec)[0], cv2.Rodrigues(-rvec)[0]):
            hmat = kmat @ r @ np.linalg.inv(kmat)
            mapped = _apply_h(hmat, rim)
            roundness = _roundness(mapped)
            if roundness < best_round:
                best, best_round = hmat, roundness
    return best


def _quad_homography(corners: np.ndarray, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Homography taking the quadrilateral to an upright rectangle; also the rectangle's corners."""
    side = [np.linalg.norm(corners[(i + 1) % 4] - corners[i]) for i in range(4)]
    w, h = (side[0] + side[2]) / 2, (side[1] + side[3]) / 2
    k = (size / (1.0 + 2 * margin)) / max(w, h)
    c = (size - 1) / 2.0
    hw, hh = w * k / 2, h * k / 2
    target = np.array([[c - hw, c - hh], [c + hw, c - hh], [c + hw, c + hh], [c - hw, c + hh]])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), target.astype(np.float32)).astype(np.float64), target


def rectify(image: np.ndarray, outline: CakeOutline, size: int = 512, margin: float = 0.04,
            focal: float | None = None) -> Rectified:
    """Warp the cake to a canonical, fixed-size, masked view.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
        The photo `outline` was found in.
    outline : CakeOutline
        From `locate`. A disc's ellipse becomes a circle: a camera rotation
        onto the plane's normal (from the ellipse and `focal`) undoes the
        perspective, then a similarity centres and scales it; a brick's
        quadrilateral becomes a rectangle; a fallback outline maps the whole
        photo (aspect kept).
    size : int
        Side of the square output, px (>= 16).
    margin : float
        Gap between the cake and the crop's edge, fraction of the cake's radius.
    focal : float, optional
        Camera focal length, px of `image`; default its longer side (a phone's
        main camera, about 53 deg across the longer side).

    Returns
    -------
    Rectified
    """
    _check_image(image)
    if size < 16 or not 0.0 <= margin < 1.0:
        raise ValueError(f"need size >= 16 and 0 <= margin < 1, got {size}, {margin}")
    if outline.shape == "disc":
        unroll = _perspective_unroll(outline, image.shape[:2], focal if focal else float(max(image.shape[:2])))
        rim = _apply_h(unroll, _ellipse_points(outline.centre, outline.axes, outline.angle, 90))
        facing = CakeOutline("disc", *_from_cv_ellipse(cv2.fitEllipse(rim.astype(np.float32))), None, 1.0, False)
        hmat = _disc_homography(facing, size, margin) @ unroll
        keep = _disc_mask(size, margin)
    else:
        corners = outline.corners if outline.corners is not None else outline_polygon(outline, 4)
        hmat, target = _quad_homography(np.asarray(corners, np.float64), size, 0.0 if outline.fallback else margin)
        if outline.fallback:  # keep the photo's aspect: fit its longer side
            hmat = _fit_whole(image.shape[:2], size)
            target = _apply_h(hmat, corners)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(target).astype(np.int32)], 1)
        keep = mask.astype(bool)
    warped = _warp(image, hmat, size)
    warped *= (keep[..., None] if warped.ndim == 3 else keep)  # 0 outside the cake (as `warped[~keep] = 0`, in place)
    return Rectified(warped, keep, hmat, outline)


@functools.lru_cache(maxsize=8)
def _disc_mask(size: int, margin: float) -> np.ndarray:
    """The canonical disc: True within the cake's radius of the centre; read-only, shared by every rectified disc.

    The same for every photo of one `size` and `margin`: built once (2.5 ms
    a photo at 512 px, float64 over the whole square).
    """
    radius = (size / 2.0) / (1.0 + margin)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2.0
    keep = (xx - c) ** 2 + (yy - c) ** 2 <= radius * radius
    keep.flags.writeable = False
    return keep


def _fit_whole(shape: tuple[int, int], size: int) -> np.ndarray:
    h, w = shape
    k = size / float(max(h, w))
    return np.array([[k, 0, (size - w * k) / 2], [0, k, (size - h * k) / 2], [0, 0, 1.0]])


def _warp(image: np.ndarray, hmat: np.ndarray, size: int) -> np.ndarray:
    """warpPerspective with an area pre-reduction when the map shrinks (against aliasing)."""
    shrink = 1.0 / np.sqrt(max(abs(np.linalg.det(hmat[:2, :2])), 1e-12))  # exact for discs (affine)
    h = hmat
    if shrink > 1.25:
        ih, iw = image.shape[:2]
        nw, nh = max(1, round(iw / shrink)), max(1, round(ih / shrink))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        h = hmat @ np.diag([iw / nw, ih / nh, 1.0])
    return cv2.warpPerspective(image, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def canonical_view(image: np.ndarray, size: int = 512, margin: float = 0.04,
                   min_confidence: float = MIN_CONFIDENCE) -> Rectified:
    """What the descriptors describe: the located cake rectified, or the whole photo.

    `locate`, then `rectify` of the largest cake. When no cake is found with
    confidence (a close-up, a chunk, a texture) the photo itself comes back
    unchanged (not squared, not resized): the whole photo is described, as
    with the locator switched off.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    size : int
        Side of the canonical image, px.
    margin : float
        Gap around the cake, fraction of its radius.
    min_confidence : float
        `locate`'s acceptance threshold.

    Returns
    -------
    Rectified
        On fallback (also for a photo under `MIN_SIDE` px a side): `image`
        itself, a mask all True, the identity homography and the fallback
        outline (`outline.fallback` True).
    """
    if isinstance(image, np.ndarray) and image.ndim >= 2 and min(image.shape[:2]) < MIN_SIDE:
        outline = _fallback(image.shape[:2], 0.0)  # a thumbnail-sized photo: nothing to find a rim in
    else:
        outline = locate(image, min_confidence)
    if outline.fallback:
        return Rectified(image, np.ones(image.shape[:2], bool), np.eye(3), outline)
    return rectify(image, outline, size=size, margin=margin)
