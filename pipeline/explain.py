"""A picture of a decision: the query beside its best matches, with inlier lines.

A person confirms a match at a glance from this: the query on the left, the
best candidates stacked on the right with label, similarity, inliers and
score, and a line for every RANSAC inlier between the query and each match.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.catalog import CatalogEntry
from pipeline.config import Config
from pipeline.features.local import LocalFeatures, extract_configured, verify_pair
from pipeline.fsutil import atomic_write_bytes
from pipeline.intake import IntakeError, read_photo
from pipeline.results import MatchResult

PANEL = 360  # px, height of the query panel; matches share it
COLOURS = [(60, 200, 60), (60, 160, 230), (230, 160, 60), (200, 80, 200)]


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
    result : MatchResult
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
    shown = [m for m in result.matches[:max_matches]]
    rows = max(1, len(shown))
    row_h = PANEL // rows
    q_panel, q_scale = _fit(query, PANEL)
    match_w = int(row_h * 1.4)
    width = q_panel.shape[1] + 40 + match_w + 260
    canvas = np.full((PANEL + 40, width, 3), 245, np.uint8)
    canvas[40 : 40 + PANEL, : q_panel.shape[1]] = cv2.cvtColor(q_panel, cv2.COLOR_RGB2BGR)
    title = f"{result.query}: {result.status}" + (f" {result.label}" if result.label else "") + f"  confidence {result.confidence:.2f}"
    cv2.putText(canvas, title, (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (20, 20, 20), 2, cv2.LINE_AA)
    q_local = query_local if query_local is not None else _local(query, config)
    x0 = q_panel.shape[1] + 40
    for k, match in enumerate(shown):
        colour = COLOURS[k % len(COLOURS)]
        y0 = 40 + k * row_h
        try:
            pixels = read_photo(Path(match.image), config.intake).pixels
        except IntakeError:
            cv2.putText(canvas, f"{match.label}: image unavailable", (x0, y0 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 200), 1)
            continue
        panel, m_scale = _fit(pixels, row_h - 6, max_width=match_w)
        canvas[y0 : y0 + panel.shape[0], x0 : x0 + panel.shape[1]] = cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)
        entry = entries.get(match.id)
        if q_local is not None and entry is not None and entry.local is not None:
            check = verify_pair(q_local, entry.local, config.matcher.verify.ratio, config.matcher.verify.ransac_px, config.matcher.verify.min_matches)
            q_ratio = q_scale * max(query.shape[:2]) / q_local.side
            c_ratio = m_scale * max(pixels.shape[:2]) / entry.local.side
            for xq, yq, xc, yc in check.inlier_pairs[:200]:
                p1 = (int(xq * q_ratio), int(40 + yq * q_ratio))
                p2 = (int(x0 + xc * c_ratio), int(y0 + yc * c_ratio))
                cv2.line(canvas, p1, p2, colour, 1, cv2.LINE_AA)
        text_x = x0 + match_w + 10
        lines = [
            f"#{k + 1} {match.label}",
            f"similarity {match.similarity:.3f}",
            f"inliers {match.inliers if match.inliers is not None else '-'}",
            f"lbp {match.lbp_distance:.3f}",
            f"score {match.score:.2f}" if match.score is not None else "",
        ]
        for j, line in enumerate(t for t in lines if t):
            cv2.putText(canvas, line, (text_x, y0 + 22 + 20 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour if j == 0 else (40, 40, 40), 1, cv2.LINE_AA)
    return canvas


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


def _local(image: np.ndarray, config: Config) -> LocalFeatures | None:
    if not config.local.enabled:
        return None
    return extract_configured(image, config.local)
