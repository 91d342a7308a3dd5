"""Rendered phone photos of cakes on cluttered tables, with the true outline known.

For measuring the cake locator (`pipeline.features.locate`): a disc (or a
brick, or two discs) is cut from a real photo, laid on a table with clutter
(wrappers, a cup, printed paper), photographed by the camera model of
`pipeline.training.views` (tilt, rotation, zoom, shift, light, JPEG), and
optionally given a thumb over its edge and a lamp's glare spot. Because the
whole geometry is one known homography, the true outline in the photo is
exact.

Pure functions of an explicit `np.random.Generator`: the same generator state
gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from pipeline.training import views

__all__ = ["Scene", "render_scene", "cut_surface"]

Kind = Literal["disc", "brick", "two"]


@dataclass(frozen=True)
class Scene:
    """One rendered photo and its truth.

    Attributes
    ----------
    image : ndarray, shape (S, S, 3), dtype uint8, RGB
    outlines : tuple of ndarray, each shape (N, 2), float64
        True outline of each cake in photo pixels (may run out of frame),
        largest first.
    shapes : tuple of str
        "disc" or "brick" for each outline.
    params : views.ViewParams
        The camera of the shot.
    table : str
        What the cakes lie on: "white paper", "patterned cloth", or one of
        `views.TABLE_KINDS` (for accuracy by background, `bench/bench_locate.py`).
    """

    image: np.ndarray
    outlines: tuple[np.ndarray, ...]
    shapes: tuple[str, ...]
    params: views.ViewParams
    table: str = ""


def cut_surface(source: np.ndarray, rng: np.random.Generator, side: int, inner: float = 1.0) -> np.ndarray:
    """A random square cut of `source`'s central `inner` fraction, resized to `side` px, RGB."""
    src = source if source.ndim == 3 else cv2.cvtColor(source, cv2.COLOR_GRAY2RGB)
    h, w = src.shape[:2]
    span = inner * min(h, w)
    cut = float(rng.uniform(0.5, 1.0)) * span
    x0 = (w - span) / 2 + float(rng.uniform(0, span - cut))
    y0 = (h - span) / 2 + float(rng.uniform(0, span - cut))
    crop = src[int(y0):int(y0 + cut), int(x0):int(x0 + cut)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def _table(rng: np.random.Generator, side: int) -> tuple[np.ndarray, str]:
    """White paper, a patterned cloth, or `views.make_named_table` (flat colour, wood, cloth), and which it is."""
    kind = int(rng.integers(0, 4))
    if kind == 0:  # paper: near white, faint noise
        base = rng.uniform(200, 250)
        table = np.clip(base + rng.normal(0, 3, (side, side, 1)) + rng.uniform(-8, 8, 3), 0, 255)
        return table.astype(np.uint8), "white paper"
    if kind == 1:  # patterned cloth: stripes or checks in two colours
        a, b = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
        period = float(rng.uniform(0.02, 0.08)) * side
        yy, xx = np.mgrid[:side, :side].astype(np.float32)
        t = np.radians(rng.uniform(0, 180))
        u = (xx * np.cos(t) + yy * np.sin(t)) / period
        v = (-xx * np.sin(t) + yy * np.cos(t)) / period
        pattern = (np.floor(u) % 2) if rng.uniform() < 0.5 else ((np.floor(u) + np.floor(v)) % 2)
        pattern = cv2.GaussianBlur(pattern.astype(np.float32), (0, 0), 1.0)[..., None]
        return np.clip(pattern * a + (1 - pattern) * b, 0, 255).astype(np.uint8), "patterned cloth"
    return views.make_named_table(rng, side)


def _clutter(rng: np.random.Generator, canvas: np.ndarray, keep_out: list[tuple[float, float, float]]) -> None:
    """Draw wrappers, printed paper and cup rims on the table, away from the cakes (in place)."""
    side = canvas.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        for _try in range(10):
            x, y = rng.uniform(0, side, 2)
            if all(np.hypot(x - cx, y - cy) > r * 1.25 + 0.08 * side for cx, cy, r in keep_out):
                break
        else:
            continue
        colour = tuple(float(v) for v in rng.uniform(20, 245, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:  # a wrapper or a sheet of printed paper, with "text"
            w, h = rng.uniform(0.1, 0.35, 2) * side
            box = cv2.boxPoints(((float(x), float(y)), (float(w), float(h)), float(rng.uniform(0, 180))))
            cv2.fillPoly(canvas, [box.astype(np.int32)], colour, cv2.LINE_AA)
            ink = tuple(float(v) for v in rng.uniform(0, 120, 3))
            for k in range(int(rng.integers(0, 6))):
                p = (int(x - w / 3), int(y - h / 3 + k * h / 8))
                cv2.putText(canvas, "PU ERH 1999", p, cv2.FONT_HERSHEY_SIMPLEX, side / 900, ink, max(1, side // 400), cv2.LINE_AA)
        elif kind == 1:  # a cup seen from above: a ring
            r = float(rng.uniform(0.05, 0.12)) * side
            cv2.circle(canvas, (int(x), int(y)), int(r), colour, max(2, int(r * 0.25)), cv2.LINE_AA)
        else:  # a tea knife or a pen
            t = rng.uniform(0, np.pi)
            d = rng.uniform(0.1, 0.3) * side * np.array([np.cos(t), np.sin(t)])
            cv2.line(canvas, (int(x - d[0]), int(y - d[1])), (int(x + d[0]), int(y + d[1])), colour, max(2, side // 120), cv2.LINE_AA)


def _lay(canvas: np.ndarray, surface: np.ndarray, mask: np.ndarray) -> None:
    """Lay `surface` on `canvas` where `mask` (float 0-1) says, with a soft contact shadow (in place)."""
    side = canvas.shape[0]
    grow = cv2.GaussianBlur(mask, (0, 0), side * 0.004)  # a contact shadow: a few px wide in the photo
    shadow = np.clip(grow * 1.6, 0, 1) * 0.3
    t = canvas.astype(np.float32) * (1.0 - shadow[..., None])
    a = mask[..., None]
    canvas[:] = np.clip(a * surface.astype(np.float32) + (1 - a) * t + 0.5, 0, 255).astype(np.uint8)


def _disc_mask(side: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    d = np.sqrt((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2)
    return np.clip(radius - d + 0.5, 0.0, 1.0)


def _thumb(rng: np.random.Generator, image: np.ndarray, outline: np.ndarray) -> None:
    """A thumb from the nearest frame edge reaching over the cake's rim (in place)."""
    s = image.shape[0]
    inside = outline[(outline >= 0).all(axis=1) & (outline < s).all(axis=1)]
    if len(inside) == 0:
        return
    rim = inside[int(rng.integers(len(inside)))]
    centre = outline.mean(axis=0)
    direction = (centre - rim) / max(1e-6, float(np.linalg.norm(centre - rim)))
    radius = float(np.linalg.norm(outline - centre, axis=1).mean())
    tip = rim + direction * radius * float(rng.uniform(0.08, 0.2))
    base = rim - direction * s  # from outside the frame
    width = float(rng.uniform(0.06, 0.09)) * s
    skin = np.array([rng.uniform(190, 235), rng.uniform(140, 180), rng.uniform(110, 150)])
    layer = np.zeros((s, s), np.float32)
    cv2.line(layer, tuple(int(v) for v in base), tuple(int(v) for v in tip), 1.0, int(2 * width), cv2.LINE_AA)
    cv2.circle(layer, tuple(int(v) for v in tip), int(width), 1.0, -1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
    shade = 0.8 + 0.2 * cv2.GaussianBlur(layer, (0, 0), width / 2)  # rounder in the middle
    thumb = skin[None, None, :] * shade[..., None]
    a = layer[..., None]
    image[:] = np.clip(a * thumb + (1 - a) * image, 0, 255).astype(np.uint8)


def _glare(rng: np.random.Generator, image: np.ndarray, outline: np.ndarray) -> None:
    """A lamp's specular spot somewhere on the cake (in place)."""
    s = image.shape[0]
    centre = outline.mean(axis=0)
    radius = float(np.linalg.norm(outline - centre, axis=1).mean())
    p = centre + rng.uniform(-0.7, 0.7, 2) * radius
    sigma = float(rng.uniform(0.03, 0.08)) * s
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    spot = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma * sigma)) * float(rng.uniform(120, 230))
    image[:] = np.clip(image.astype(np.float32) + spot[..., None], 0, 255).astype(np.uint8)


def _params(rng: np.random.Generator, hard: bool) -> views.ViewParams:
    p = views.sample_view_params(rng, max_tilt=40.0 if hard else 25.0, scale_range=(0.7, 1.2),
                                 max_shift=0.08, quality_range=(40, 80) if hard else (60, 95))
    if hard:
        blur = float(rng.uniform(0.0, 1.8))
        p = views.ViewParams(**{**p.__dict__, "blur": blur, "noise": float(rng.uniform(2.0, 8.0))})
    return p


def render_scene(
    rng: np.random.Generator,
    sources: list[np.ndarray],
    kind: Kind = "disc",
    out_size: int = 512,
    hard: bool = False,
    thumb: bool | None = None,
    glare: bool | None = None,
    out_of_frame: bool = False,
    params: views.ViewParams | None = None,
) -> Scene:
    """Render one photo of cakes on a cluttered table.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    sources : list of ndarray, each (H, W[, 3]) uint8
        Photos the cake surfaces are cut from (central 60 %: a face photo's
        rim and paper stay out).
    kind : {"disc", "brick", "two"}
        One round cake, one rectangular brick, or two round cakes.
    out_size : int
        Side of the square photo, px.
    hard : bool
        Tilt up to 40 deg (far side shrunk by up to ~40 %), blur, noise, JPEG 40-80;
        thumb and glare default on.
    thumb, glare : bool, optional
        Force a thumb over the edge / a glare spot; default: on when `hard`.
    out_of_frame : bool
        Shift the cake so that part of it leaves the frame.
    params : views.ViewParams, optional
        A fixed camera; by default drawn from `rng` (`hard` sets the ranges).

    Returns
    -------
    Scene
    """
    side = 2 * out_size  # the scene is drawn at twice the photo's resolution, then warped down
    canvas, table = _table(rng, side)
    c = (side - 1) / 2.0
    discs: list[tuple[float, float, float]] = []
    if kind == "two":
        r = side * float(rng.uniform(0.17, 0.22))
        t = rng.uniform(0, np.pi)
        gap = r * float(rng.uniform(1.05, 1.5))
        discs = [(c + gap * np.cos(t), c + gap * np.sin(t), r), (c - gap * np.cos(t), c - gap * np.sin(t), r * float(rng.uniform(0.75, 0.95)))]
    elif kind == "disc":
        discs = [(c, c, side * float(rng.uniform(0.2, 0.32)))]
    _clutter(rng, canvas, discs or [(c, c, side * 0.35)])
    truth: list[np.ndarray] = []
    shapes: list[str] = []
    t = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    for cx, cy, r in discs:
        surface = cut_surface(sources[int(rng.integers(len(sources)))], rng, side, inner=0.6)
        _lay(canvas, surface, _disc_mask(side, (cx, cy), r))
        truth.append(np.c_[cx + r * np.cos(t), cy + r * np.sin(t)])
        shapes.append("disc")
    if kind == "brick":
        w, h = side * float(rng.uniform(0.45, 0.62)), 0.0
        h = w / float(rng.uniform(1.3, 1.7))
        box = cv2.boxPoints(((c, c), (w, h), float(rng.uniform(0, 180)))).astype(np.float64)
        mask = np.zeros((side, side), np.float32)
        cv2.fillPoly(mask, [np.round(box * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        _lay(canvas, cut_surface(sources[int(rng.integers(len(sources)))], rng, side, inner=0.6), mask)
        truth.append(box)
        shapes.append("brick")
    params = _params(rng, hard) if params is None else params
    if out_of_frame:
        a = rng.uniform(0, 2 * np.pi)
        params = views.ViewParams(**{**params.__dict__, "shift": (0.3 * float(np.cos(a)), 0.3 * float(np.sin(a))), "scale": 1.1})
    hmat = views.camera_homography((c, c), side, out_size, params)
    photo = views.warp(canvas, hmat, out_size, border=cv2.BORDER_REPLICATE)
    outlines = [_project(hmat, o) for o in truth]
    if thumb if thumb is not None else hard:
        _thumb(rng, photo, outlines[0])
    if glare if glare is not None else hard:
        _glare(rng, photo, outlines[0])
    photo = views.photometric(photo, params, rng)
    order = np.argsort([-cv2.contourArea(o.astype(np.float32)) for o in outlines])
    return Scene(photo, tuple(outlines[i] for i in order), tuple(shapes[i] for i in order), params, table)


def _project(hmat: np.ndarray, points: np.ndarray) -> np.ndarray:
    q = np.c_[points, np.ones(len(points))] @ hmat.T
    return q[:, :2] / q[:, 2:3]
