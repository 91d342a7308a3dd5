"""Stage implementations as they were before they were made faster: the references they must equal.

`tests/test_lbp.py` and `tests/test_verify.py` assert that the shipped code
gives the same histograms and matches; `bench/bench_stages.py` times both.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import local_binary_pattern

from pipeline.features.lbp import _inner, to_grey
from pipeline.features.local import LocalFeatures, Verification, _fit, _one_to_one, root_sift

POINTS_RADII = ((8, 1), (16, 2), (24, 3))


def skimage_histogram(image: np.ndarray, points_radii=POINTS_RADII, size: int = 256, mask: np.ndarray | None = None) -> np.ndarray:
    """`lbp_histogram` as it was written on skimage (the reference)."""
    grey = cv2.resize(to_grey(image), (size, size), interpolation=cv2.INTER_AREA)
    keep = _inner(mask, size, max(r for _, r in points_radii)) if mask is not None else None
    blocks = []
    for points, radius in points_radii:
        codes = local_binary_pattern(grey, points, radius, method="uniform")
        codes = codes[keep] if keep is not None else codes.ravel()
        hist = np.bincount(codes.astype(np.int64), minlength=points + 2).astype(np.float32)
        blocks.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(blocks)


def reference_verify(query: LocalFeatures, candidate: LocalFeatures, ratio: float = 0.8, ransac_px: float = 8.0,
                     min_matches: int = 8, estimator: str = "lo-ransac", guided_ratio: float = 0.0):
    """`verify_pair` as it was before the distance table: BFMatcher.knnMatch, then BFMatcher.match under the mask."""
    none = Verification(0, 0, None, None, None, np.zeros((0, 4), np.float32))
    if len(query) < 2 or len(candidate) < 2:
        return none
    matcher, qd, cd = cv2.BFMatcher(cv2.NORM_L2), root_sift(query.descriptors), root_sift(candidate.descriptors)
    pairs = matcher.knnMatch(qd, cd, k=2)
    good = _one_to_one([p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance])
    found = _fit(query.points[[m.queryIdx for m in good]], candidate.points[[m.trainIdx for m in good]], len(good),
                 min_matches, ransac_px, estimator)
    if guided_ratio > 0 and found.homography is not None:
        second = np.array([p[1].distance if len(p) == 2 else np.inf for p in pairs], np.float32)
        projected = cv2.perspectiveTransform(query.points.reshape(-1, 1, 2).astype(np.float64), found.homography).reshape(-1, 2)
        near = ((projected[:, None, :] - candidate.points[None, :, :]) ** 2).sum(axis=2) <= ransac_px * ransac_px
        kept = [(m.distance, m.queryIdx, m.trainIdx) for m in matcher.match(qd, cd, mask=near.astype(np.uint8))
                if near[m.queryIdx, m.trainIdx] and m.distance < guided_ratio * second[m.queryIdx]]
        taken: set[int] = set()
        q_idx, c_idx = [], []
        for _, qi, ci in sorted(kept):
            if ci not in taken:
                taken.add(ci)
                q_idx.append(qi)
                c_idx.append(ci)
        again = _fit(query.points[q_idx], candidate.points[c_idx], len(good), min_matches, ransac_px, estimator)
        if again.inliers > found.inliers:
            return again
    return found
