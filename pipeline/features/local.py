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
Estimator = Literal["ransac", "magsac"]
# MAGSAC++ (OpenCV's USAC) scores a model by marginalising over the noise
# scale, so chance correspondences between two cakes of one tea rarely line up
# into a homography; plain RANSAC counts whatever falls inside a fixed radius.
_ESTIMATORS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}
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
    """

    points: np.ndarray
    descriptors: np.ndarray
    side: int

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
    """

    inliers: int
    matches: int
    rotation_deg: float | None
    scale: float | None
    homography: np.ndarray | None
    inlier_pairs: np.ndarray


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
    estimator: Estimator = "ransac",
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
    estimator : {"ransac", "magsac"}
        Robust estimator of the homography (OpenCV RANSAC or USAC MAGSAC++).
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
    binary = query.descriptors.shape[1] == DESCRIPTOR_BYTES["orb"]
    if binary:
        matcher, qd, cd = cv2.BFMatcher(cv2.NORM_HAMMING), query.descriptors, candidate.descriptors
    else:
        matcher, qd, cd = cv2.BFMatcher(cv2.NORM_L2), root_sift(query.descriptors), root_sift(candidate.descriptors)
    pairs = matcher.knnMatch(qd, cd, k=2)
    good = _one_to_one([p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance])
    found = _fit(query.points[[m.queryIdx for m in good]], candidate.points[[m.trainIdx for m in good]], len(good),
                 min_matches, ransac_px, estimator)
    if guided_ratio > 0 and found.homography is not None:
        second = np.array([p[1].distance if len(p) == 2 else np.inf for p in pairs], np.float32)
        q_idx, c_idx = _guided_matches(query.points, candidate.points, found.homography, matcher, qd, cd, second, ransac_px, guided_ratio)
        again = _fit(query.points[q_idx], candidate.points[c_idx], len(good), min_matches, ransac_px, estimator)
        if again.inliers > found.inliers:
            return again
    return found


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
    q_points: np.ndarray, c_points: np.ndarray, homography: np.ndarray, matcher: cv2.DescriptorMatcher,
    qd: np.ndarray, cd: np.ndarray, second: np.ndarray, radius: float, guided_ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches among candidate keypoints within `radius` of each query keypoint's projection.

    Returns (query indices, candidate indices), each (M,) int64.
    """
    projected = cv2.perspectiveTransform(q_points.reshape(-1, 1, 2).astype(np.float64), homography).reshape(-1, 2)
    near = ((projected[:, None, :] - c_points[None, :, :]) ** 2).sum(axis=2) <= radius * radius
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
