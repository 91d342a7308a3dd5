"""Local features and their geometric verification.

Two photos of one cake share many small details that line up under a single
rotation, scale and tilt; two cakes of the same tea share colour and texture
but not that. `extract_local` finds keypoints, `verify_pair` matches them with
Lowe's ratio test and fits a RANSAC homography (a cake is nearly flat), whose
inlier count is the evidence.

SIFT descriptors are stored as uint8 (OpenCV's SIFT values are integers in
0-255, so this is lossless) and turned into RootSIFT at match time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from pipeline.config import LocalConfig
from pipeline.features.lbp import to_grey

Method = Literal["sift", "orb"]
Estimator = Literal["lo-ransac", "ransac", "magsac"]
# LO-RANSAC with SPRT (OpenCV's USAC_FAST) is the default: SPRT drops a bad
# hypothesis after a few points and local optimisation ends the search once a
# good one is found, where plain RANSAC on a stranger's chance matches runs all
# 2,000 iterations (3.6 ms a fit on 10k-catalog strangers, 0.08 ms with it;
# replayed on 1,461 fits of three folders, right cakes' inliers within 0.1 on
# average). MAGSAC++ scores a model by marginalising over the noise scale.
_ESTIMATORS = {"lo-ransac": cv2.USAC_FAST, "ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}
DESCRIPTOR_BYTES = {"sift": 128, "orb": 32}


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one photo.

    Attributes
    ----------
    points : ndarray, shape (K, 2), dtype float32
        (x, y) in pixels of the working image (longer side `side`, or the
        photo's own when smaller: photos are never enlarged).
    descriptors : ndarray, shape (K, 128) for SIFT or (K, 32) for ORB, dtype uint8
    side : int
        Longer side of the working image, in pixels.
    surface : ndarray, shape (128, 128), dtype int8, or None
        The photo's relief for dense correlation (`pipeline.features.surface.surface_patch`): kept for photos in
        which no cake was found, where it is read with the keypoints for the few candidates verified.
    """

    points: np.ndarray
    descriptors: np.ndarray
    side: int
    surface: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class Verification:
    """Outcome of matching a query's keypoints against one catalog entry's.

    Attributes
    ----------
    inliers : int
        Ratio-test matches consistent with the fitted homography.
    matches : int
        Ratio-test matches before RANSAC.
    rotation_deg : float or None
        Rotation of the fit, query to catalog, in degrees (-180, 180].
    scale : float or None
        Scale of the fit, query to catalog (sqrt of the affine part's determinant).
    homography : ndarray, shape (3, 3), or None
    inlier_pairs : ndarray, shape (M, 4), dtype float32
        (xq, yq, xc, yc) of each inlier, for drawing.
    surface_peak : float or None
        Sharpness of the two photos' relief correlation (`pipeline.features.surface.correlate`), when both
        kept a relief and verification correlated them; None otherwise.
    """

    inliers: int
    matches: int
    rotation_deg: float | None
    scale: float | None
    homography: np.ndarray | None
    inlier_pairs: np.ndarray
    surface_peak: float | None = None


def empty_features(method: Method, side: int = 0) -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES[method]), np.uint8), side)


def extract_local(
    image: np.ndarray, method: Method = "sift", max_keypoints: int = 400, side: int = 640, contrast_threshold: float = 0.04
) -> LocalFeatures:
    """Strongest `max_keypoints` keypoints of a photo.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8, RGB
    method : {"sift", "orb"}
    max_keypoints : int
        Cap on stored keypoints (storage and matching cost grow with it).
    side : int
        The photo is resized so its longer side is `side` pixels.
    contrast_threshold : float
        SIFT's DoG contrast threshold (OpenCV's default 0.04). Lower keeps the
        faint keypoints of blurred, dim or low-contrast shots; the strongest
        `max_keypoints` are kept either way. Ignored for ORB.

    Returns
    -------
    LocalFeatures
    """
    grey = to_grey(image)
    h, w = grey.shape
    # Never enlarge: upscaling a small photo invents no detail, only cost.
    scale = min(1.0, side / max(h, w))
    if scale != 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if method == "sift":
        detector = cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold)
    else:
        detector = cv2.ORB_create(nfeatures=max_keypoints)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return empty_features(method, max(grey.shape))
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:max_keypoints]
    points = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    desc = np.clip(np.rint(descriptors[order]), 0, 255).astype(np.uint8)
    return LocalFeatures(points, desc, max(grey.shape))


def extract_configured(image: np.ndarray, config: LocalConfig) -> LocalFeatures:
    """`extract_local` with the `local:` settings (the one place they are unpacked)."""
    return extract_local(image, config.method, config.max_keypoints, config.side, config.contrast_threshold)


SIFT_CELLS_TURNED = np.arange(128).reshape(4, 4, 8)[::-1, ::-1, :].reshape(-1)
"""Column order that turns a SIFT descriptor's 4 x 4 spatial cells by 180 degrees, orientation bins kept."""


def light_inverted(features: LocalFeatures) -> LocalFeatures | None:
    """The keypoints of the photo's negative (255 - grey), computed without detecting again; None for ORB.

    A bare relief lit from the opposite side shades nearly as the negative of
    the first photo (Lambert, gentle slopes: n.l -> 2 n_z l_z - n.l). SIFT on
    the negative finds the same keypoints (difference-of-Gaussian extrema
    swap sign, both are kept), each oriented 180 degrees the other way; in
    that turned frame the negated gradients keep their relative angle and
    every sample sits at the mirrored cell, so the descriptor is the
    original's with its spatial cells turned 180 degrees (checked against
    OpenCV's SIFT on the negative photo: identical descriptors).

    Parameters
    ----------
    features : LocalFeatures
        SIFT keypoints, shape (K, 128) descriptors.

    Returns
    -------
    LocalFeatures or None
        The same points and side, descriptors reordered by `SIFT_CELLS_TURNED`.
    """
    if features.descriptors.shape[1] != SIFT_CELLS_TURNED.size:
        return None
    return LocalFeatures(features.points, np.ascontiguousarray(features.descriptors[:, SIFT_CELLS_TURNED]), features.side)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then square root.

    Parameters
    ----------
    descriptors : ndarray, shape (K, 128), dtype uint8

    Returns
    -------
    ndarray, shape (K, 128), dtype float32, rows of unit L2 norm
    """
    d = descriptors.astype(np.float32)
    d /= d.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(d)


def verify_pair(
    query: LocalFeatures,
    candidate: LocalFeatures,
    ratio: float = 0.8,
    ransac_px: float = 8.0,
    min_matches: int = 8,
    estimator: Estimator = "lo-ransac",
    guided_ratio: float = 0.0,
) -> Verification:
    """Ratio-test matching, then a robust homography from query to candidate.

    Parameters
    ----------
    query, candidate : LocalFeatures (same method)
    ratio : float
        Lowe's ratio: keep a match when its distance is below `ratio` times the
        second-best distance.
    ransac_px : float
        RANSAC reprojection threshold, in pixels of the working images.
    min_matches : int
        Fewer ratio-test matches than this are not worth a homography.
    estimator : {"lo-ransac", "ransac", "magsac"}
        Robust estimator of the homography (OpenCV USAC_FAST: LO-RANSAC with
        SPRT; plain RANSAC; USAC MAGSAC++).
    guided_ratio : float
        0: off. Otherwise, once a plausible homography is found, every query
        keypoint is matched again among the candidate keypoints lying within
        `ransac_px` of where the homography puts it, kept when that distance is
        below `guided_ratio` times its second-best distance over the whole
        candidate (a looser test than `ratio`, made safe by the spatial gate),
        and the homography is refitted on these (guided matching).
    """
    none = Verification(0, 0, None, None, None, np.zeros((0, 4), np.float32))
    if len(query) < 2 or len(candidate) < 2:
        return none
    if query.descriptors.shape[1] == DESCRIPTOR_BYTES["orb"]:
        return _verify_binary(query, candidate, ratio, ransac_px, min_matches, estimator, guided_ratio)
    table = DistanceTable(root_sift(query.descriptors), root_sift(candidate.descriptors))
    q_idx, c_idx = table.ratio_matches(ratio)
    found = _fit(query.points[q_idx], candidate.points[c_idx], len(q_idx), min_matches, ransac_px, estimator)
    if guided_ratio > 0 and found.homography is not None:
        gq, gc = table.guided_matches(*_near_pairs(query.points, candidate.points, found.homography, ransac_px), guided_ratio)
        again = _fit(query.points[gq], candidate.points[gc], len(q_idx), min_matches, ransac_px, estimator)
        if again.inliers > found.inliers:
            return again
    return found


def _verify_binary(
    query: LocalFeatures, candidate: LocalFeatures, ratio: float, ransac_px: float, min_matches: int,
    estimator: Estimator, guided_ratio: float,
) -> Verification:
    """`verify_pair` for binary (ORB) descriptors, with OpenCV's brute-force Hamming matcher."""
    matcher, qd, cd = cv2.BFMatcher(cv2.NORM_HAMMING), query.descriptors, candidate.descriptors
    pairs = matcher.knnMatch(qd, cd, k=2)
    good = _one_to_one([p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance])
    found = _fit(query.points[[m.queryIdx for m in good]], candidate.points[[m.trainIdx for m in good]], len(good),
                 min_matches, ransac_px, estimator)
    if guided_ratio > 0 and found.homography is not None:
        second = np.array([p[1].distance if len(p) == 2 else np.inf for p in pairs], np.float32)
        near = np.zeros((len(query), len(candidate)), bool)
        near[_near_pairs(query.points, candidate.points, found.homography, ransac_px)] = True
        q_idx, c_idx = _guided_matches(near, matcher, qd, cd, second, guided_ratio)
        again = _fit(query.points[q_idx], candidate.points[c_idx], len(good), min_matches, ransac_px, estimator)
        if again.inliers > found.inliers:
            return again
    return found


# OpenCV's BFMatcher (NORM_L2 on float32) computes each distance as the float32 square root of a
# float32 sum of 128 squared float32 differences, summed in an order of its own (SIMD lanes):
# whatever the order, that is within 130 roundings of 2^-24 (relative) of the exact sum of
# squares, so its distance lies within 4e-6 (relative) of the exact distance; 1e-5 is allowed.
_BF_RELATIVE = 1e-5
# The float32 matrix product q.c (128 products of non-negative terms, in BLAS's order) is within
# 128 roundings of 2^-24 of exact, relative to |q||c|; |q|^2 + |c|^2 - 2 q.c in float32 then adds
# a few roundings of its terms: with RootSIFT's unit rows, within 2e-5 of the exact square. 5e-5
# (times the largest squared norm) is allowed.
_SQUARE_ABSOLUTE = 5e-5
# `guided_ratio * second[i]` (a Python float times a numpy float32) as the reference expression
# evaluates it: in float32 under NumPy 2's promotion rules, in float64 under NumPy 1's.
_SCALAR_PRODUCT = type(0.5 * np.float32(1.0))


class DistanceTable:
    """Query x candidate RootSIFT distances, computed once (a float32 matrix product) for both
    the ratio-test matches and the guided matches, with the very matches that OpenCV's
    `BFMatcher(NORM_L2)` gives (`knnMatch(k=2)`, then `match` under a mask).

    The product's distances are not OpenCV's to the last bit, but each lies within a known
    bound of it. Every decision is taken from them when that bound cannot change it; the few
    query keypoints where it could (two candidates at nearly the same distance, a distance at
    nearly the ratio times the second, two matches nearly tied in the guided order) are matched
    again with `BFMatcher` itself, alone (OpenCV's distance of a pair does not depend on the
    other rows), and decided on its distances.

    Parameters
    ----------
    qd, cd : ndarray, shape (Q, 128) and (C, 128), dtype float32
        RootSIFT descriptors of the query and the candidate, C >= 2.
    """

    def __init__(self, qd: np.ndarray, cd: np.ndarray) -> None:
        self.qd, self.cd = qd, cd
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)
        q2 = np.einsum("ij,ij->i", qd, qd, dtype=np.float64)
        c2 = np.einsum("ij,ij->i", cd, cd, dtype=np.float64)
        # OpenCV's product, not numpy's: OpenBLAS's threads, on a busy machine, make this one 30x slower.
        square = cv2.gemm(qd, cd, -2.0, None, 0.0, flags=cv2.GEMM_2_T)
        square += q2.astype(np.float32)[:, None]
        square += c2.astype(np.float32)[None, :]
        self.square = square  # (Q, C) float32: squared distances, approximately
        self.margin = _SQUARE_ABSOLUTE * max(1.0, float(q2.max()), float(c2.max()))
        n = len(qd)
        rows = np.arange(n)
        # Best and second-best candidate of each query keypoint over the whole candidate.
        self.best = np.argmin(square, axis=1)
        best_square = square[rows, self.best].astype(np.float64)
        saved = square[rows, self.best].copy()
        square[rows, self.best] = np.inf
        runner = np.argmin(square, axis=1)
        second_square = square[rows, runner].astype(np.float64)
        square[rows, self.best] = saved
        self.best_lo, self.best_hi = self._bounds(best_square)
        self.second_lo, self.second_hi = self._bounds(second_square)
        # The best candidate is certain unless the runner-up may be as near.
        self.exact = np.zeros(n, bool)
        self.guided_exact = np.zeros(n, bool)
        self.best_value = np.sqrt(np.maximum(best_square, 0.0))
        self.second_value = np.sqrt(np.maximum(second_square, 0.0))
        self._make_exact(np.flatnonzero(self.second_lo <= self.best_hi))

    def _bounds(self, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on OpenCV's distances for these approximate squared distances."""
        lo = np.sqrt(np.maximum(square - self.margin, 0.0)) * (1.0 - _BF_RELATIVE)
        hi = np.sqrt(square + self.margin) * (1.0 + _BF_RELATIVE)
        return lo, hi

    def _make_exact(self, rows: np.ndarray) -> None:
        """Take the best and second-best matches of these query keypoints from `BFMatcher.knnMatch`."""
        rows = rows[~self.exact[rows]]
        if not rows.size:
            return
        for row, pair in zip(rows, self.matcher.knnMatch(self.qd[rows], self.cd, k=2)):
            self.best[row] = pair[0].trainIdx
            self.best_lo[row] = self.best_hi[row] = self.best_value[row] = pair[0].distance
            self.second_lo[row] = self.second_hi[row] = self.second_value[row] = pair[1].distance
        self.exact[rows] = True

    def ratio_matches(self, ratio: float) -> tuple[np.ndarray, np.ndarray]:
        """One-to-one ratio-test matches, as (query indices, candidate indices), each (M,) int64, by query index.

        A query keypoint is kept when its best distance is below `ratio` times its second-best;
        of those on one candidate keypoint, the nearest (the first, on a tie) is kept.
        """
        while True:
            exact = self.exact
            sure_in = self.best_hi < ratio * self.second_lo * (1.0 - 1e-9)
            sure_out = self.best_lo > ratio * self.second_hi * (1.0 + 1e-9)
            unsure = ~exact & ~sure_in & ~sure_out
            if unsure.any():
                self._make_exact(np.flatnonzero(unsure))
                continue
            passed = np.where(exact, self.best_value < ratio * self.second_value, sure_in)
            q = np.flatnonzero(passed)
            winners, unsure_rows = _nearest_per_key(q, self.best[q], self.best_value[q], self.best_lo[q], self.best_hi[q], exact[q])
            if unsure_rows.size:
                self._make_exact(unsure_rows)
                continue
            return winners, self.best[winners].astype(np.int64)

    def guided_matches(self, q_near: np.ndarray, c_near: np.ndarray, guided_ratio: float) -> tuple[np.ndarray, np.ndarray]:
        """One-to-one matches among the pairs (`q_near`[k], `c_near`[k]) of query and candidate keypoints.

        Each query keypoint's nearest candidate keypoint among its near ones (the first, on a
        tie) is kept when that distance is below `guided_ratio` times its second-best distance
        over the whole candidate; the kept ones are taken by distance (then query index), each
        candidate keypoint once. Returns (query indices, candidate indices), each (M,) int64, in
        that order.
        """
        q_all, c_all = q_near, c_near
        if not q_all.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n = len(self.qd)
        value_sq = self.square[q_all, c_all].astype(np.float64)
        order = np.lexsort((c_all, value_sq, q_all))  # by query, then distance, then candidate index
        q_all, c_all, value_sq = q_all[order], c_all[order], value_sq[order]
        first = np.ones(q_all.size, bool)
        first[1:] = q_all[1:] != q_all[:-1]
        starts = np.flatnonzero(first)
        rows = q_all[starts]
        target = np.full(n, -1, np.int64)
        target[rows] = c_all[starts]
        square = np.full(n, np.inf)
        square[rows] = value_sq[starts]
        lo, hi = self._bounds(square)
        value = np.sqrt(np.maximum(square, 0.0))
        # A runner-up among the near ones that may be as near makes the nearest uncertain.
        runner = np.full(n, np.inf)
        after = starts + 1
        follows = after < q_all.size
        follows[follows] = ~first[after[follows]]
        runner[rows[follows]] = value_sq[after[follows]]
        runner_lo, _ = self._bounds(runner)
        unsure = np.zeros(n, bool)
        unsure[rows] = runner_lo[rows] <= hi[rows]
        has_near = np.zeros(n, bool)
        has_near[rows] = True
        while True:
            todo = np.flatnonzero(unsure & has_near & ~(self.exact & self.guided_exact))
            if todo.size:
                self._make_exact(todo)
                for row, match in self._guided_exact(todo, q_near, c_near):
                    target[row] = match.trainIdx
                    lo[row] = hi[row] = value[row] = match.distance
                self.guided_exact[todo] = True
                unsure[:] = False
            both = self.exact & self.guided_exact
            limit = guided_ratio * self.second_value.astype(_SCALAR_PRODUCT)
            sure_in = hi < guided_ratio * self.second_lo * (1.0 - 1e-6)
            sure_out = lo > guided_ratio * self.second_hi * (1.0 + 1e-6)
            unsure = has_near & ~both & ~sure_in & ~sure_out
            if unsure.any():
                continue
            kept = has_near & np.where(both, value < limit, sure_in)
            q = np.flatnonzero(kept)
            # By distance, then query index (candidate indices never tie: one per query keypoint).
            order = np.lexsort((q, value[q]))
            q = q[order]
            sure = both[q]
            gaps = (hi[q][:-1] < lo[q][1:]) | (sure[:-1] & sure[1:])
            if not gaps.all():
                bad = np.flatnonzero(~gaps)
                unsure = np.zeros(n, bool)
                unsure[q[bad]] = unsure[q[bad + 1]] = True
                continue
            c = target[q]
            _, first_use = np.unique(c, return_index=True)
            taken = np.sort(first_use)  # each candidate keypoint to its first (nearest) query keypoint
            return q[taken].astype(np.int64), c[taken].astype(np.int64)

    def _guided_exact(self, rows: np.ndarray, q_near: np.ndarray, c_near: np.ndarray) -> list:
        """(row, DMatch) of `BFMatcher.match` of these query keypoints, masked to their near candidate keypoints."""
        position = np.full(len(self.qd), -1)
        position[rows] = np.arange(rows.size)
        mask = np.zeros((rows.size, len(self.cd)), np.uint8)
        pick = position[q_near] >= 0
        mask[position[q_near[pick]], c_near[pick]] = 1
        found = self.matcher.match(self.qd[rows], self.cd, mask=mask)
        return [(rows[m.queryIdx], m) for m in found]


def _nearest_per_key(
    rows: np.ndarray, keys: np.ndarray, value: np.ndarray, lo: np.ndarray, hi: np.ndarray, exact: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Of the `rows` sharing a key, the one with the least value (the first row, on a tie).

    Returns (winning rows in row order, rows whose order against their key's winner the bounds
    [lo, hi] leave uncertain: both must be made exact).
    """
    if not rows.size:
        return rows.astype(np.int64), rows
    order = np.lexsort((rows, value, keys))
    rows, keys, value, lo, hi, exact = rows[order], keys[order], value[order], lo[order], hi[order], exact[order]
    first = np.ones(rows.size, bool)
    first[1:] = keys[1:] != keys[:-1]
    winner = np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
    sure = first | (hi[winner] < lo) | (exact[winner] & exact)
    unsure = np.flatnonzero(~sure)
    doubtful = np.unique(np.concatenate([rows[unsure], rows[winner[unsure]]]))
    return np.sort(rows[first]).astype(np.int64), doubtful


def _near_pairs(q_points: np.ndarray, c_points: np.ndarray, homography: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, candidate indices), by query then candidate index: the candidate keypoints
    within `radius` of where `homography` puts each query keypoint.

    Only the pairs within `radius` (and a hair) in x are measured, in float64, squared distance
    against `radius` squared.
    """
    projected = cv2.perspectiveTransform(q_points.reshape(-1, 1, 2).astype(np.float64), homography).reshape(-1, 2)
    c = c_points.astype(np.float64)
    order = np.argsort(c[:, 0], kind="stable")
    xs = c[order, 0]
    lo = np.searchsorted(xs, projected[:, 0] - radius - 1e-6, "left")
    hi = np.searchsorted(xs, projected[:, 0] + radius + 1e-6, "right")
    counts = np.maximum(hi - lo, 0)
    q = np.repeat(np.arange(len(projected)), counts)
    c_idx = order[np.arange(q.size) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)]
    d = projected[q] - c[c_idx]
    d *= d
    keep = d[:, 0] + d[:, 1] <= radius * radius
    q, c_idx = q[keep], c_idx[keep]
    by = np.lexsort((c_idx, q))
    return q[by], c_idx[by]


def _one_to_one(matches: list) -> list:
    """The best match of each candidate keypoint: several query keypoints on one
    candidate keypoint (a glare spot, a repeated grain) let RANSAC fit a
    collapsed homography that outvotes the true one."""
    best: dict[int, object] = {}
    for m in matches:
        if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
            best[m.trainIdx] = m
    return sorted(best.values(), key=lambda m: m.queryIdx)


def _fit(src: np.ndarray, dst: np.ndarray, matches: int, min_matches: int, ransac_px: float, estimator: Estimator) -> Verification:
    """A robust homography from `src` to `dst` (matched points, (M, 2) each) and its plausible inliers."""
    if len(src) < min_matches:
        return Verification(0, matches, None, None, None, np.zeros((0, 4), np.float32))
    homography, mask = cv2.findHomography(src, dst, _ESTIMATORS[estimator], ransac_px, maxIters=2000, confidence=0.995)
    if homography is None or mask is None:
        return Verification(0, matches, None, None, None, np.zeros((0, 4), np.float32))
    keep = mask.ravel().astype(bool)
    if not keep.any():
        return Verification(0, matches, None, None, None, np.zeros((0, 4), np.float32))
    rotation, scale = similarity_of(homography, src[keep].mean(axis=0))
    if not plausible(homography, scale, src[keep].mean(axis=0)):
        return Verification(0, matches, rotation, scale, None, np.zeros((0, 4), np.float32))
    inlier_pairs = np.hstack([src[keep], dst[keep]]).astype(np.float32)
    return Verification(int(keep.sum()), matches, rotation, scale, homography, inlier_pairs)


def _guided_matches(
    near: np.ndarray, matcher: cv2.DescriptorMatcher, qd: np.ndarray, cd: np.ndarray, second: np.ndarray, guided_ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches among candidate keypoints where `near` (Q, C) is True (binary descriptors).

    Returns (query indices, candidate indices), each (M,) int64.
    """
    found = matcher.match(qd, cd, mask=near.astype(np.uint8))
    kept = [(m.distance, m.queryIdx, m.trainIdx) for m in found if near[m.queryIdx, m.trainIdx] and m.distance < guided_ratio * second[m.queryIdx]]
    taken: set[int] = set()
    q_idx, c_idx = [], []
    for _, qi, ci in sorted(kept):  # best distance first: each candidate keypoint once
        if ci not in taken:
            taken.add(ci)
            q_idx.append(qi)
            c_idx.append(ci)
    return np.array(q_idx, np.int64), np.array(c_idx, np.int64)


def similarity_of(homography: np.ndarray, at: np.ndarray) -> tuple[float, float]:
    """Rotation (degrees) and scale of a homography near the point `at` (x, y).

    A tilted view's homography has no single scale: it is measured from the
    map's Jacobian at `at` (the inliers' centroid), where the cake is.
    """
    jac, _ = _jacobian(homography, at)
    rotation = math.degrees(math.atan2(jac[1, 0] - jac[0, 1], jac[0, 0] + jac[1, 1]))
    scale = math.sqrt(abs(float(np.linalg.det(jac))))
    return rotation, scale


def plausible(homography: np.ndarray, scale: float, at: np.ndarray) -> bool:
    """Reject fits no phone shot of a flat cake produces: mirrored, collapsed or wild."""
    a, w = _jacobian(homography, at)
    if w <= 0 or np.linalg.det(a) <= 0 or not 0.2 <= scale <= 5.0:
        return False
    singular = np.linalg.svd(a, compute_uv=False)
    return bool(singular[1] > 0 and singular[0] / singular[1] < 4.0)


def _jacobian(homography: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, float]:
    """(2x2 Jacobian of the homography at point `at`, projective denominator there)."""
    h = homography / homography[2, 2]
    x, y = float(at[0]), float(at[1])
    w = h[2, 0] * x + h[2, 1] * y + 1.0
    mapped = (h[:2, :2] @ np.array([x, y]) + h[:2, 2]) / w
    return (h[:2, :2] - np.outer(mapped, h[2, :2])) / w, w
