"""Re-photograph an image the way a phone changes between two shots.

Every function here is pure: it takes an image (and, where random, an explicit
`np.random.Generator`) and returns a new image; nothing is read from global
state, so the same generator state always yields the same view.

Images are ``uint8`` arrays, shape ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB).

Geometry (rotation, tilt, scale, shift) is composed into ONE homography and
applied with one warp (`camera_homography` + `warp`), so a view is resampled
once, with an area pre-reduction against aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "ViewParams",
    "sample_view_params",
    "camera_homography",
    "warp",
    "rotate",
    "tilt",
    "scale_shift",
    "lighting_gradient",
    "colour_cast",
    "gamma",
    "blur",
    "sensor_noise",
    "jpeg",
    "photometric",
    "rephotograph",
    "make_table",
    "make_named_table",
    "disc_photo",
    "disc_shot",
    "disc_scene",
    "disc_outline",
    "hard_view_params",
    "add_thumb",
    "add_glare",
    "hard_disc_photo",
    "hard_disc_shot",
]


@dataclass(frozen=True)
class ViewParams:
    """The parameters of one simulated shot.

    Attributes
    ----------
    angle : float
        In-plane rotation, degrees (any value).
    tilt : float
        Out-of-plane camera tilt, degrees (0 = straight above).
    tilt_axis : float
        Direction of the tilt axis in the image plane, degrees.
    scale : float
        Zoom: > 1 means the object looks bigger (closer camera).
    shift : tuple of float
        Centre offset (x, y) as a fraction of the output side.
    light : float
        Strength of the linear lighting gradient, 0 = flat.
    light_angle : float
        Direction of the gradient, degrees.
    cast : tuple of float
        Per-channel (R, G, B) gains of the colour cast.
    gamma : float
        Gamma exponent applied to [0, 1] intensities.
    gain : float
        Global exposure gain.
    blur : float
        Gaussian blur sigma in output pixels (0 = sharp).
    noise : float
        Sensor noise standard deviation, in 0-255 units.
    quality : int
        JPEG quality 1-100 (100 or more = no JPEG round trip).
    """

    angle: float = 0.0
    tilt: float = 0.0
    tilt_axis: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    light: float = 0.0
    light_angle: float = 0.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    gain: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    quality: int = 100


def sample_view_params(
    rng: np.random.Generator,
    max_tilt: float = 30.0,
    scale_range: tuple[float, float] = (0.7, 1.4),
    max_shift: float = 0.08,
    quality_range: tuple[int, int] = (50, 95),
) -> ViewParams:
    """Draw the parameters of one phone shot.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    max_tilt : float
        Tilt is drawn in [0, max_tilt] degrees.
    scale_range : (float, float)
        Zoom drawn log-uniformly in this range.
    max_shift : float
        Centre offset bound, fraction of the output side.
    quality_range : (int, int)
        JPEG quality drawn uniformly in this closed range.

    Returns
    -------
    ViewParams
    """
    lo, hi = scale_range
    return ViewParams(
        angle=float(rng.uniform(0.0, 360.0)),
        tilt=float(max_tilt * np.sqrt(rng.uniform())),
        tilt_axis=float(rng.uniform(0.0, 180.0)),
        scale=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        shift=(float(rng.uniform(-max_shift, max_shift)), float(rng.uniform(-max_shift, max_shift))),
        light=float(rng.uniform(0.0, 0.6)),
        light_angle=float(rng.uniform(0.0, 360.0)),
        cast=tuple(float(g) for g in rng.uniform(0.85, 1.15, size=3)),  # type: ignore[arg-type]
        gamma=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
        gain=float(rng.uniform(0.75, 1.25)),
        blur=float(rng.choice([0.0, rng.uniform(0.3, 1.5)], p=[0.5, 0.5])),
        noise=float(rng.uniform(0.0, 6.0)),
        quality=int(rng.integers(quality_range[0], quality_range[1] + 1)),
    )


# ----------------------------------------------------------------- geometry


def camera_homography(
    src_centre: tuple[float, float],
    src_side: float,
    out_size: int,
    params: ViewParams,
) -> np.ndarray:
    """Homography from source pixels to output pixels for one shot.

    At ``scale == 1``, no tilt and no shift, the square of side `src_side`
    centred on `src_centre` fills the output exactly; rotation turns it about
    its centre; tilt is a camera rotation about an in-plane axis (focal length
    = output side, about a 53 degree field of view).

    Parameters
    ----------
    src_centre : (float, float)
        (x, y) of the object centre in the source image.
    src_side : float
        Side, in source pixels, of the region that fills the frame at scale 1.
    out_size : int
    params : ViewParams

    Returns
    -------
    ndarray, shape (3, 3), dtype float64
    """
    cx, cy = src_centre
    c = (out_size - 1) / 2.0
    k = params.scale * out_size / float(src_side)
    t = np.radians(params.angle)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    zoom = np.diag([k, k, 1.0])
    sx, sy = params.shift
    to_out = np.array([[1, 0, c + sx * out_size], [0, 1, c + sy * out_size], [0, 0, 1]], dtype=np.float64)
    h = zoom @ rot @ to_origin
    if params.tilt:
        f = float(out_size)
        kmat = np.array([[f, 0, 0], [0, f, 0], [0, 0, 1.0]])
        a = np.radians(params.tilt_axis)
        axis = np.array([np.cos(a), np.sin(a), 0.0])
        rvec = axis * np.radians(params.tilt)
        r3, _ = cv2.Rodrigues(rvec)
        h = kmat @ r3 @ np.linalg.inv(kmat) @ h
        # the camera re-aims at the object: its centre stays the frame centre
        o = h @ np.array([cx, cy, 1.0])
        h = np.array([[1, 0, -o[0] / o[2]], [0, 1, -o[1] / o[2]], [0, 0, 1.0]]) @ h
    return to_out @ h


def warp(
    image: np.ndarray,
    homography: np.ndarray,
    out_size: int,
    border: int = cv2.BORDER_REFLECT_101,
) -> np.ndarray:
    """Apply `homography` (source -> output) with an anti-aliasing pre-reduction.

    When the homography shrinks the image by more than 1.25x, the source is
    first reduced with area interpolation, then warped linearly.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    homography : ndarray, shape (3, 3)
    out_size : int
    border : int
        OpenCV border mode for pixels that fall outside the source.

    Returns
    -------
    ndarray, shape (out_size, out_size) or (out_size, out_size, 3), dtype uint8
    """
    h = np.asarray(homography, dtype=np.float64)
    # local linear scale at the output centre
    c = (out_size - 1) / 2.0
    hinv = np.linalg.inv(h)
    pts = np.array([[c, c, 1], [c + 1, c, 1], [c, c + 1, 1]], dtype=np.float64).T
    src = hinv @ pts
    src = src[:2] / src[2]
    shrink = float(np.sqrt(abs(np.linalg.det(np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=1)))))
    if shrink > 1.25:
        f = 1.0 / shrink
        ih, iw = image.shape[:2]
        nw, nh = max(1, int(round(iw * f))), max(1, int(round(ih * f)))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / iw, nh / ih
        h = h @ np.diag([1.0 / sx, 1.0 / sy, 1.0])
    return cv2.warpPerspective(image, h, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border)


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the centre by `angle` degrees (counter-clockwise), same shape.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    angle : float

    Returns
    -------
    ndarray, same shape and dtype as `image`; corners are reflected.
    """
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def tilt(image: np.ndarray, degrees: float, axis_deg: float = 0.0) -> np.ndarray:
    """View the (flat) image from a camera tilted by `degrees` about an in-plane axis.

    Parameters
    ----------
    image : ndarray, shape (S, S) or (S, S, 3), dtype uint8
        Square image.
    degrees : float
        Tilt angle; about 30 is the most a phone shot gives in practice.
    axis_deg : float
        Direction of the tilt axis, degrees.

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    s = image.shape[0]
    p = ViewParams(tilt=degrees, tilt_axis=axis_deg)
    return warp(image, camera_homography(((s - 1) / 2, (s - 1) / 2), s, s, p), s)


def scale_shift(image: np.ndarray, scale: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Zoom by `scale` about the centre and shift by `shift` (fractions of the side).

    Parameters
    ----------
    image : ndarray, shape (S, S) or (S, S, 3), dtype uint8
    scale : float
        > 1 enlarges (crops), < 1 shrinks (reflected border fills).
    shift : (float, float)

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    s = image.shape[0]
    p = ViewParams(scale=scale, shift=shift)
    return warp(image, camera_homography(((s - 1) / 2, (s - 1) / 2), s, s, p), s)


# ---------------------------------------------------------------- photometry


def _as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lighting_gradient(image: np.ndarray, strength: float, angle: float) -> np.ndarray:
    """Multiply by a linear light ramp: 1 - strength/2 .. 1 + strength/2 across the frame.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    strength : float
        0 = no change; 0.6 = one side 70 %, the other 130 %.
    angle : float
        Direction in which the light increases, degrees.

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    a = np.radians(angle)
    u = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)) / max(h, w)
    ramp = 1.0 + strength * u
    x = _as_float(image)
    x = x * (ramp[..., None] if image.ndim == 3 else ramp)
    return _to_uint8(x)


def colour_cast(image: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """Per-channel gains (white balance error). Grey images get the mean gain.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8, RGB
    gains : (float, float, float)

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    g = np.asarray(gains, dtype=np.float32)
    x = _as_float(image)
    x = x * (g if image.ndim == 3 else float(g.mean()))
    return _to_uint8(x)


def gamma(image: np.ndarray, exponent: float, gain: float = 1.0) -> np.ndarray:
    """``out = gain * in ** exponent`` on [0, 1] intensities.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    exponent : float
    gain : float

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    lut = _to_uint8(gain * (np.arange(256, dtype=np.float32) / 255.0) ** exponent)
    return cv2.LUT(image, lut)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (defocus / shake); sigma 0 returns a copy.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    sigma : float

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def sensor_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `sigma` (0-255 units).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    rng : numpy.random.Generator
    sigma : float

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    if sigma <= 0:
        return image.copy()
    noise = rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.clip(image.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode/decode round trip at `quality` (>= 100 returns a copy).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8, RGB
    quality : int

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    if quality >= 100:
        return image.copy()
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out if image.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def photometric(image: np.ndarray, params: ViewParams, rng: np.random.Generator) -> np.ndarray:
    """Light, colour, exposure, blur, noise and JPEG of one shot, in camera order.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    params : ViewParams
    rng : numpy.random.Generator
        Used for the sensor noise only.

    Returns
    -------
    ndarray, same shape and dtype as `image`.
    """
    x = lighting_gradient(image, params.light, params.light_angle) if params.light else image
    x = colour_cast(x, params.cast)
    x = gamma(x, params.gamma, params.gain)
    x = blur(x, params.blur)
    x = sensor_noise(x, rng, params.noise)
    return jpeg(x, params.quality)


def rephotograph(
    image: np.ndarray,
    rng: np.random.Generator,
    out_size: int = 128,
    src_centre: tuple[float, float] | None = None,
    src_side: float | None = None,
    params: ViewParams | None = None,
    border: int = cv2.BORDER_REFLECT_101,
    **param_kwargs: object,
) -> np.ndarray:
    """One simulated phone shot of (a square region of) `image`.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8
    rng : numpy.random.Generator
        Draws the shot parameters (unless `params` is given) and the noise.
    out_size : int
        Side of the square output.
    src_centre : (float, float), optional
        Object centre (x, y) in `image`; default the image centre.
    src_side : float, optional
        Side of the region that fills the frame at zoom 1; default min(H, W).
    params : ViewParams, optional
        Fixed parameters; otherwise drawn with `sample_view_params(rng, **param_kwargs)`.
    border : int
        OpenCV border mode outside the source.

    Returns
    -------
    ndarray, shape (out_size, out_size[, 3]), dtype uint8 (channels as `image`)
    """
    h, w = image.shape[:2]
    if src_centre is None:
        src_centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    if src_side is None:
        src_side = float(min(h, w))
    if params is None:
        params = sample_view_params(rng, **param_kwargs)  # type: ignore[arg-type]
    geo = warp(image, camera_homography(src_centre, src_side, out_size, params), out_size, border)
    return photometric(geo, params, rng)


# --------------------------------------------------------------- cakes/discs


def make_table(rng: np.random.Generator, size: int, channels: int = 3) -> np.ndarray:
    """A plausible table top: flat colour, wood-like grain, or cloth-like noise.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square output.
    channels : {1, 3}

    Returns
    -------
    ndarray, shape (size, size, 3) or (size, size), dtype uint8
    """
    return make_named_table(rng, size, channels)[0]


TABLE_KINDS = ("flat colour", "wood", "cloth")  # `make_named_table`'s kinds, in the order it draws them


def make_named_table(rng: np.random.Generator, size: int, channels: int = 3) -> tuple[np.ndarray, str]:
    """`make_table` and which kind of table it drew (one of `TABLE_KINDS`); same draws from `rng`."""
    base = rng.uniform(30, 230, size=3).astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # flat, slightly noisy
        field = rng.normal(0, 3, size=(size, size)).astype(np.float32)
    elif kind == 1:  # wood grain: stretched noise
        small = rng.normal(0, 1, size=(max(2, size // 32), max(2, size // 2))).astype(np.float32)
        field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) * 18.0
        m = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(0, 180)), 1.0)
        field = cv2.warpAffine(field, m, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    else:  # cloth: fine noise blurred
        field = cv2.GaussianBlur(rng.normal(0, 20, size=(size, size)).astype(np.float32), (0, 0), 1.0)
    table = np.clip(base[None, None, :] + field[..., None], 0, 255).astype(np.uint8)
    if channels == 1:
        return cv2.cvtColor(table, cv2.COLOR_RGB2GRAY), TABLE_KINDS[kind]
    return table, TABLE_KINDS[kind]


def disc_photo(
    source: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    out_size: int = 128,
    table: np.ndarray | None = None,
    fill: float = 0.85,
    params: ViewParams | None = None,
    **param_kwargs: object,
) -> np.ndarray:
    """Cut a disc (a "cake") out of `source`, lay it on a table, photograph it.

    The same (`source`, `centre`, `radius`) is the same physical cake; each
    call with a different generator state is another shot of it (any rotation,
    tilt, zoom, light, table, JPEG).

    Parameters
    ----------
    source : ndarray, shape (H, W) or (H, W, 3), dtype uint8
        Photo the cake surface is cut from.
    rng : numpy.random.Generator
    centre : (float, float)
        Disc centre (x, y) in `source` pixels.
    radius : float
        Disc radius in `source` pixels.
    out_size : int
        Side of the square output photo.
    table : ndarray, optional
        Background, same channel count as `source`; default `make_table(rng, ...)`.
    fill : float
        Fraction of the frame side the disc diameter covers at zoom 1.
    params : ViewParams, optional
        Fixed shot parameters, otherwise drawn with `sample_view_params`.

    Returns
    -------
    ndarray, shape (out_size, out_size[, 3]), dtype uint8
    """
    return disc_shot(source, rng, centre, radius, out_size, table, fill, params, **param_kwargs)[0]


def disc_shot(
    source: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    out_size: int = 128,
    table: np.ndarray | None = None,
    fill: float = 0.85,
    params: ViewParams | None = None,
    **param_kwargs: object,
) -> tuple[np.ndarray, np.ndarray]:
    """`disc_photo` and the cake's true outline in it.

    Draws from `rng` exactly as `disc_photo` does (same photo for the same state).

    Returns
    -------
    photo : ndarray, shape (out_size, out_size[, 3]), dtype uint8
    outline : ndarray, shape (360, 2), dtype float64
        The cake's rim (x, y) in photo pixels; may run out of frame.
    """
    canvas = int(2 * out_size / fill) | 1
    scene = disc_scene(source, rng, centre, radius, canvas, table, fill)
    if params is None:
        params = sample_view_params(rng, **param_kwargs)  # type: ignore[arg-type]
    homography = camera_homography(((canvas - 1) / 2.0, (canvas - 1) / 2.0), canvas, out_size, params)
    photo = rephotograph(scene, rng, out_size=out_size, params=params, border=cv2.BORDER_REPLICATE)
    return photo, disc_outline(homography, canvas, fill)


def disc_outline(homography: np.ndarray, canvas_side: int, fill: float, points: int = 360) -> np.ndarray:
    """The rim of `disc_scene`'s disc mapped by `homography`, shape (points, 2) float64, photo pixels."""
    c = (canvas_side - 1) / 2.0
    r = canvas_side * fill / 2.0
    t = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    rim = np.c_[c + r * np.cos(t), c + r * np.sin(t), np.ones(points)] @ np.asarray(homography, np.float64).T
    return rim[:, :2] / rim[:, 2:3]


def disc_scene(
    source: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    canvas_side: int,
    table: np.ndarray | None = None,
    fill: float = 0.85,
) -> np.ndarray:
    """The disc cut from `source` lying on a table, seen from straight above.

    The disc's diameter is `fill` of `canvas_side` and it is centred; the
    table gets a soft contact shadow.

    Returns
    -------
    ndarray, shape (canvas_side, canvas_side[, 3]), dtype uint8
    """
    channels = 1 if source.ndim == 2 else 3
    disc_px = canvas_side * fill / 2.0  # disc radius in canvas pixels
    k = disc_px / float(radius)
    cx, cy = centre
    c = (canvas_side - 1) / 2.0
    m = np.array([[k, 0, c - k * cx], [0, k, c - k * cy]], dtype=np.float64)
    src = source
    if k < 0.8:  # anti-alias
        src = cv2.resize(source, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        m = np.array([[1, 0, c - k * cx], [0, 1, c - k * cy]], dtype=np.float64)
    surface = cv2.warpAffine(src, m, (canvas_side, canvas_side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if table is None:
        table = make_table(rng, canvas_side, channels)
    else:
        table = cv2.resize(table, (canvas_side, canvas_side), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[:canvas_side, :canvas_side].astype(np.float32)
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    alpha = np.clip(disc_px - d + 0.5, 0.0, 1.0)  # anti-aliased edge
    # soft contact shadow on the table, offset a little
    shadow = np.clip((disc_px * 1.06 - d) / (disc_px * 0.08), 0.0, 1.0) * 0.35
    t = table.astype(np.float32) * (1.0 - (shadow[..., None] if channels == 3 else shadow))
    s = surface.astype(np.float32)
    a = alpha[..., None] if channels == 3 else alpha
    return np.clip(a * s + (1 - a) * t + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------- hard re-shots


def hard_view_params(rng: np.random.Generator, fill: float, zoom_range: tuple[float, float] = (0.5, 1.2), max_shrink: float = 0.4) -> ViewParams:
    """Parameters of one hard phone shot of a flat cake (BENCHMARK.md, "Hard re-shots").

    The tilt is drawn as the foreshortening it causes: the far side of the
    cake shrinks by up to `max_shrink` against the near side. With the focal
    length equal to the frame side and the cake's radius rho (fraction of the
    side), a tilt t gives far/near = (1 - tan t * rho) / (1 + tan t * rho).

    Parameters
    ----------
    rng : numpy.random.Generator
    fill : float
        Cake diameter as a fraction of the frame side at zoom 1.
    zoom_range : (float, float)
        Cake size relative to its size in the registration framing.
    max_shrink : float
        Largest relative shrink of the far side, 0-1.
    """
    zoom = float(np.exp(rng.uniform(np.log(zoom_range[0]), np.log(zoom_range[1]))))
    rho = fill * zoom / 2.0
    ratio = 1.0 - float(rng.uniform(0.0, max_shrink))
    tilt = float(np.degrees(np.arctan((1.0 - ratio) / (1.0 + ratio) / rho)))
    return ViewParams(
        angle=float(rng.uniform(0.0, 360.0)),
        tilt=min(tilt, 65.0),
        tilt_axis=float(rng.uniform(0.0, 180.0)),
        scale=zoom,
        shift=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
        light=float(rng.uniform(0.0, 0.8)),
        light_angle=float(rng.uniform(0.0, 360.0)),
        cast=tuple(float(g) for g in rng.uniform(0.8, 1.2, size=3)),  # type: ignore[arg-type]
        gamma=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        gain=float(rng.uniform(0.7, 1.3)),
        blur=float(rng.uniform(0.8, 2.2)),
        noise=float(rng.uniform(3.0, 10.0)),
        quality=int(rng.integers(40, 81)),
    )


def add_thumb(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray, edge: np.ndarray, radius: float) -> np.ndarray:
    """A thumb (and the hand behind it) over the cake's edge at `edge`.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), dtype uint8, RGB
    centre, edge : ndarray, shape (2,)
        Cake centre and a point of its rim, (x, y) in pixels.
    radius : float
        Cake radius in pixels (sets the thumb's size: about 2 cm on a 20 cm cake).
    """
    h, w = image.shape[:2]
    out_dir = (edge - centre) / (np.linalg.norm(edge - centre) + 1e-9)
    length, width = float(rng.uniform(0.35, 0.5)) * radius, float(rng.uniform(0.13, 0.18)) * radius
    tip = edge + out_dir * (length * float(rng.uniform(-0.6, -0.3)))  # inside the rim
    mask = np.zeros((h, w), np.uint8)
    angle = float(np.degrees(np.arctan2(out_dir[1], out_dir[0])))
    mid = tip + out_dir * length
    cv2.ellipse(mask, (int(mid[0]), int(mid[1])), (int(length), int(width)), angle, 0, 360, 255, -1, cv2.LINE_AA)
    far = mid + out_dir * (2.0 * max(h, w))
    cv2.line(mask, (int(mid[0]), int(mid[1])), (int(far[0]), int(far[1])), 255, int(2.6 * width), cv2.LINE_AA)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 1.2)
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    shade = 0.7 + 0.3 * np.clip(depth / max(width, 1.0), 0, 1)
    skin = np.array([rng.uniform(170, 230), rng.uniform(115, 165), rng.uniform(90, 135)], np.float32)
    thumb = skin[None, None, :] * shade[..., None]
    out = image.astype(np.float32) * (1 - soft[..., None]) + thumb * soft[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def add_glare(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """A lamp's specular spot somewhere on the cake: a bright, saturating blob."""
    h, w = image.shape[:2]
    r = float(rng.uniform(0.0, 0.7)) * radius
    a = float(rng.uniform(0.0, 2 * np.pi))
    gx, gy = centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)
    sigma = float(rng.uniform(0.08, 0.2)) * radius
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    blob = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * sigma * sigma)) * float(rng.uniform(140, 255))
    out = image.astype(np.float32) + (blob[..., None] if image.ndim == 3 else blob)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def hard_disc_photo(
    source: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    out_wh: tuple[int, int],
    fill: float = 0.85,
    zoom_range: tuple[float, float] = (0.5, 1.2),
    params: ViewParams | None = None,
) -> np.ndarray:
    """One hard phone shot of a cake: all of BENCHMARK.md's hard conditions at once.

    Strong tilt (far side shrunk by up to 40 %), any rotation, the cake at
    `zoom_range` of its registration framing, a thumb over its edge, a glare
    spot, defocus blur, sensor noise and JPEG quality 40-80, in a `out_wh`
    (width, height) frame.

    Parameters
    ----------
    source : ndarray, shape (H, W, 3), dtype uint8, RGB
    rng : numpy.random.Generator
    centre, radius : the cake in `source` pixels (as `disc_photo`)
    out_wh : (int, int)
        Width and height of the photo, in pixels.
    fill : float
        Cake diameter as a fraction of the frame's shorter side at zoom 1.
    params : ViewParams, optional
        Fixed shot parameters; otherwise drawn with `hard_view_params`.

    Returns
    -------
    ndarray, shape (out_wh[1], out_wh[0], 3), dtype uint8, RGB
    """
    return hard_disc_shot(source, rng, centre, radius, out_wh, fill, zoom_range, params)[0]


def hard_disc_shot(
    source: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    out_wh: tuple[int, int],
    fill: float = 0.85,
    zoom_range: tuple[float, float] = (0.5, 1.2),
    params: ViewParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`hard_disc_photo` and the cake's true outline in it (thumb and glare are over the cake, not in its outline).

    Draws from `rng` exactly as `hard_disc_photo` does.

    Returns
    -------
    photo : ndarray, shape (out_wh[1], out_wh[0], 3), dtype uint8, RGB
    outline : ndarray, shape (360, 2), dtype float64
        The cake's rim (x, y) in photo pixels; may run out of frame.
    """
    w, h = out_wh
    side = max(w, h)
    fill = fill * min(w, h) / side  # rendered on a square of the longer side, then cropped
    canvas = int(2 * side / fill) | 1
    scene = disc_scene(source, rng, centre, radius, canvas, None, fill)
    params = params or hard_view_params(rng, fill, zoom_range)
    homography = camera_homography(((canvas - 1) / 2, (canvas - 1) / 2), canvas, side, params)
    geo = warp(scene, homography, side, cv2.BORDER_REPLICATE)
    c = (canvas - 1) / 2.0
    disc_px = canvas * fill / 2.0
    rim_angle = float(rng.uniform(0, 2 * np.pi))
    pts = homography @ np.array([[c, c, 1.0], [c + disc_px * np.cos(rim_angle), c + disc_px * np.sin(rim_angle), 1.0]]).T
    centre_px, rim_px = pts[:2, 0] / pts[2, 0], pts[:2, 1] / pts[2, 1]
    cake_r = float(np.linalg.norm(rim_px - centre_px))
    geo = add_thumb(geo, rng, centre_px, rim_px, cake_r)
    geo = add_glare(geo, rng, centre_px, cake_r)
    y0, x0 = (side - h) // 2, (side - w) // 2
    photo = photometric(np.ascontiguousarray(geo[y0 : y0 + h, x0 : x0 + w]), params, rng)
    return photo, disc_outline(homography, canvas, fill) - np.array([x0, y0], np.float64)
