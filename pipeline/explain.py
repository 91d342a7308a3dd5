"""A picture of a decision: the query beside its best matches, with inlier lines.

A person confirms a match at a glance from this: the query photo on the left
with the cake's outline the locator found (further cakes dashed), the cake as
it was described (rectified, cropped and masked) beside it, and the best
candidates stacked on the right, each as described too, with label,
similarity, inliers and score, and a line for every RANSAC inlier between the
described query and each match. With the locator off, or when it fell back,
the described image is the whole photo.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.catalog import CatalogEntry
from pipeline.config import Config
from pipeline.features.local import LocalFeatures, verify_pair
from pipeline.fsutil import atomic_write_bytes
from pipeline.intake import IntakeError, read_photo
from pipeline.prepare import described, local_features, locate_view
from pipeline.results import Cake, MatchEvidence, MatchResult

PANEL = 360  # px, height of the query panel; matches share it
GAP = 40  # px between panels (the inlier lines cross it)
COLOURS = [(60, 200, 60), (60, 160, 230), (230, 160, 60), (200, 80, 200)]
OUTLINE = (40, 220, 40)  # BGR: the described cake
OTHERS = (0, 140, 255)  # BGR: further cakes in the photo


def render_explanation(
    query: np.ndarray,
    result: MatchResult,
    entries: dict[str, CatalogEntry],
    config: Config,
    max_matches: int = 3,
    query_local: LocalFeatures | None = None,
) -> np.ndarray:
    """Draw the explanation image.

    Parameters
    ----------
    query : ndarray, shape (H, W, 3), dtype uint8, RGB
        The query photo as decoded (`pipeline.intake.read_photo`).
    result : MatchResult
        Its result; `result.cake`'s outlines (original-photo pixels) are drawn on it.
    entries : dict
        Catalog entries by id, for the matches' keypoints.
    config : Config
    max_matches : int
    query_local : LocalFeatures or None
        The query's keypoints if already extracted (the matcher did); else
        extracted here.

    Returns
    -------
    ndarray, shape (PANEL + 40, W', 3), dtype uint8, BGR (ready for cv2.imwrite)
    """
    shown = list(result.matches[:max_matches])
    rows = max(1, len(shown))
    row_h = PANEL // rows
    photo_panel, _ = _fit(_draw_outlines(query, result.cake), PANEL)
    q_image, q_mask = described(query, locate_view(query, config.locate))
    rectified = q_mask is not None
    q_panel, q_scale = _fit(q_image, PANEL) if rectified else (photo_panel, PANEL / query.shape[0])
    left = photo_panel.shape[1] + (GAP // 2 + q_panel.shape[1] if rectified else 0)
    match_w = int(row_h * 1.4)
    width = left + GAP + match_w + 260
    canvas = np.full((PANEL + 40, width, 3), 245, np.uint8)
    canvas[40 : 40 + PANEL, : photo_panel.shape[1]] = cv2.cvtColor(photo_panel, cv2.COLOR_RGB2BGR)
    q_x0 = left - q_panel.shape[1]
    if rectified:
        canvas[40 : 40 + q_panel.shape[0], q_x0:left] = cv2.cvtColor(q_panel, cv2.COLOR_RGB2BGR)
    cv2.putText(canvas, _title(result), (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (20, 20, 20), 2, cv2.LINE_AA)
    q_local = query_local if query_local is not None else _local(q_image, q_mask, config)
    x0 = left + GAP
    for k, match in enumerate(shown):
        colour = COLOURS[k % len(COLOURS)]
        y0 = 40 + k * row_h
        try:
            pixels = read_photo(Path(match.image), config.intake).pixels
        except IntakeError:
            cv2.putText(canvas, f"{match.label}: image unavailable", (x0, y0 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 200), 1)
            continue
        m_image, _ = described(pixels, locate_view(pixels, config.locate))
        panel, m_scale = _fit(m_image, row_h - 6, max_width=match_w)
        canvas[y0 : y0 + panel.shape[0], x0 : x0 + panel.shape[1]] = cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)
        entry = entries.get(match.id)
        if q_local is not None and entry is not None and entry.local is not None:
            v = config.matcher.verify
            check = verify_pair(q_local, entry.local, v.ratio, v.ransac_px, v.min_matches)
            q_ratio = q_scale * max(q_image.shape[:2]) / q_local.side
            c_ratio = m_scale * max(m_image.shape[:2]) / entry.local.side
            for xq, yq, xc, yc in check.inlier_pairs[:200]:
                p1 = (int(q_x0 + xq * q_ratio), int(40 + yq * q_ratio))
                p2 = (int(x0 + xc * c_ratio), int(y0 + yc * c_ratio))
                cv2.line(canvas, p1, p2, colour, 1, cv2.LINE_AA)
        _caption(canvas, k, match, x0 + match_w + 10, y0, colour)
    return canvas


def _title(result: MatchResult) -> str:
    title = f"{result.query}: {result.status}" + (f" {result.label}" if result.label else "") + f"  confidence {result.confidence:.2f}"
    cake = result.cake
    if cake is not None:
        title += "  (whole photo: no cake found)" if cake.fallback else f"  ({cake.shape}" + (f", {cake.count} cakes)" if cake.count > 1 else ")")
    return title


def _caption(canvas: np.ndarray, k: int, match: MatchEvidence, x: int, y0: int, colour: tuple[int, int, int]) -> None:
    lines = [
        f"#{k + 1} {match.label}",
        f"similarity {match.similarity:.3f}",
        f"inliers {match.inliers if match.inliers is not None else '-'}",
        f"relief {match.surface_peak:.1f}" if match.surface_peak is not None else "",
        f"lbp {match.lbp_distance:.3f}",
        f"score {match.score:.2f}" if match.score is not None else "",
    ]
    for j, line in enumerate(t for t in lines if t):
        cv2.putText(canvas, line, (x, y0 + 22 + 20 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour if j == 0 else (40, 40, 40), 1, cv2.LINE_AA)


def _draw_outlines(image: np.ndarray, cake: Cake | None) -> np.ndarray:
    """The photo (RGB) with the result's outlines: the described cake solid, the others dashed."""
    if cake is None or cake.outline is None:
        return image
    out = image.copy()
    h, w = image.shape[:2]
    k = np.array([w / cake.photo_size[0], h / cake.photo_size[1]])  # original-photo px -> decoded px
    thick = max(2, round(max(h, w) / 300))
    rgb = lambda bgr: bgr[::-1]  # noqa: E731 - the photo is RGB until the canvas
    cv2.polylines(out, [np.round(np.asarray(cake.outline.polygon) * k).astype(np.int32)], True, rgb(OUTLINE), thick, cv2.LINE_AA)
    for other in cake.others:
        pts = np.round(np.asarray(other.polygon) * k).astype(np.int32)
        for i in range(0, len(pts), 2):  # dashed
            cv2.line(out, tuple(int(v) for v in pts[i]), tuple(int(v) for v in pts[(i + 1) % len(pts)]), rgb(OTHERS), thick, cv2.LINE_AA)
    return out


def write_explanation(path: Path, image: np.ndarray) -> None:
    """Write the picture atomically (temp file in the same folder, then rename), as PNG or JPEG by `path`'s suffix."""
    path = Path(path)
    png = path.suffix.lower() == ".png"
    ok, buf = cv2.imencode(".png" if png else ".jpg", image, [] if png else [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("could not encode the explanation image")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.tobytes())


def _fit(image: np.ndarray, height: int, max_width: int | None = None) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = height / h
    if max_width is not None and w * scale > max_width:
        scale = max_width / w
    resized = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return resized, scale


def _local(image: np.ndarray, mask: np.ndarray | None, config: Config) -> LocalFeatures | None:
    if not config.local.enabled:
        return None
    return local_features(image, mask, config.local)
