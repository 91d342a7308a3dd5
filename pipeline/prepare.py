"""Model-free work on one photo file: decode, locate the cake, LBP, keypoints, encoder input.

Kept apart from the engine so that worker processes import only OpenCV,
scikit-image and numpy, never TensorFlow, h5py or scikit-learn.

Registration and query photos take this one path (`for_catalog` says
which): the cake is located and brought to a canonical view
(`pipeline.features.locate.canonical_view`: tilt undone, cropped, resized to
`locate.size`, masked outside the cake), and every descriptor is computed on
that view; when no cake is found with confidence the whole photo is
described, and the result says so (`Cake.fallback`).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pipeline.config import Config, LocalConfig, LocateConfig
from pipeline.features.embedding import prepare_input
from pipeline.features.lbp import lbp_histogram
from pipeline.features.local import LocalFeatures, extract_configured
from pipeline.features.locate import LOCATOR_VERSION, MIN_SIDE, CakeOutline, Rectified, canonical_view, locate
from pipeline.features.surface import MIN_SIDE as SURFACE_MIN_SIDE, surface_patch
from pipeline.intake import IntakeError, Photo, read_photo
from pipeline.results import Cake, Outline, Rectification

OUTSIDE_GREY = 127  # the encoder's "no information" fill (its disc mask's), outside the cake
POLYGON_POINTS = 36  # rim points of a disc's outline in the result
KEYPOINT_BORDER = 0.03  # keypoints closer than this (fraction of the canonical side) to the mask's edge describe the edge


@dataclass(frozen=True)
class EncoderInput:
    """How to shape a photo for the loaded encoder (picklable, for workers)."""

    size: int
    channels: int
    disc_mask: bool


@dataclass(frozen=True)
class Prepared:
    """A decoded photo's model-independent work, done once.

    Attributes
    ----------
    path : Path
    sha256 : str
    lbp : ndarray, shape (B,), dtype float32
    encoder_input : ndarray, shape (S, S, C), dtype float32, values 0-255
    local : LocalFeatures or None
        Keypoints for verification, on the described image (the canonical
        cake, or the whole photo on fallback), with the photo's relief
        (`LocalFeatures.surface`) when no cake was found and `local.surface`
        is on; None when `local.enabled` is off.
    timings_ms : dict
        `decode`, `locate`, `lbp`, `prepare`, `local` and `surface` stage times.
    cake : Cake or None
        What the locator found and the rectification applied; None when
        `locate.enabled` is off.
    cake_found : bool or None
        Whether the locator found a cake: from `cake` when the locator
        describes the cake; for a query with `locate.enabled` off, from a
        locator run that changes nothing described, when the decision asks
        (`matcher.decide.texture_needs_bare_photo` with verification on);
        None when nobody looked.
    """

    path: Path
    sha256: str
    lbp: np.ndarray
    encoder_input: np.ndarray
    local: LocalFeatures | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    cake: Cake | None = None
    cake_found: bool | None = None


def feature_settings(config: Config) -> dict[str, object]:
    """Every setting that shapes a stored descriptor, as recorded in the catalog beside the model id.

    Two catalogs (or a catalog and a query) are comparable only when these
    are equal; a change is a feature change that `teaprint reembed` handles.
    """
    loc, lbp, local = config.locate, config.lbp, config.local
    return {
        "locate": {"version": LOCATOR_VERSION, "size": loc.size, "margin": loc.margin, "min_confidence": loc.min_confidence}
        if loc.enabled else None,
        "lbp": {"points_radii": [list(p) for p in lbp.points_radii], "size": lbp.size},
        "local": {"enabled": local.enabled, "method": local.method, "max_keypoints": local.max_keypoints, "side": local.side,
                  "contrast_threshold": local.contrast_threshold},
    }


def prepare(path: Path, config: Config, shape: EncoderInput, root: Path | None = None, for_catalog: bool = False,
            beside: bool = True) -> Prepared:
    """Decode `path` and compute everything that needs no model.

    Parameters
    ----------
    for_catalog : bool
        A registration photo: one with several cakes is refused
        (`IntakeError` "several_cakes"), since an entry must be one cake. A
        query with several answers for the largest.
    beside : bool
        Run the LBP histogram and the encoder input on a thread beside the
        keypoints (a query answered alone: 15-20 ms sooner on two cores).
        Not for a catalog photo, nor where other processes already share the
        cores (the daemon's catalog workers, `teaprint eval`'s): there the
        thread only slows each photo, and eval's per-query cost, the sum of
        its steps, would count the overlap twice.

    Raises
    ------
    IntakeError
        When the file cannot be taken (see `pipeline.intake`).
    """
    t0 = time.perf_counter()
    photo = read_photo(Path(path), config.intake, root=root)
    t1 = time.perf_counter()
    view = locate_view(photo.pixels, config.locate)
    cake = cake_report(photo, view, config.locate) if view is not None else None
    if for_catalog and cake is not None and cake.count > 1:
        raise IntakeError("several_cakes", f"{path}: {cake.count} cakes in one photo; a catalog photo must show one cake "
                          "(photograph each alone, or crop)", sha256=photo.sha256)
    t2 = time.perf_counter()
    timings = {"decode": (t1 - t0) * 1e3}
    if view is not None:
        timings["locate"] = (t2 - t1) * 1e3
    probe = view is None and not for_catalog and _decision_asks_for_cake(config)
    image, mask = described(photo.pixels, view)
    # The look for a cake (locator off) and, for a query answered alone, the LBP histogram and the encoder input
    # run on a thread beside the keypoints: OpenCV's SIFT releases the GIL and keeps less than two cores busy
    # (discs-hard, 100 queries: prepare + match 139-145 -> 123-127 ms median, same answers; bench/README.md
    # "Beside the keypoints").
    with ThreadPoolExecutor(max_workers=1) as thread:
        looked = thread.submit(_timed, looks_like_a_cake, photo.pixels, config.locate) if probe else None
        textured = thread.submit(_texture_and_input, image, mask, config, shape) if beside and not for_catalog else None
        t4 = time.perf_counter()
        local = local_features(image, mask, config.local) if config.local.enabled else None
        t5 = time.perf_counter()
        lbp, encoder_input, side_ms = textured.result() if textured else _texture_and_input(image, mask, config, shape)
        cake_found: bool | None = (not view.outline.fallback) if view is not None else None
        if looked is not None:
            cake_found, timings["locate"] = looked.result()
    bare = mask is None and cake_found is not True  # the whole photo described: no cake in it
    if local is not None and config.local.surface and bare and min(image.shape[:2]) >= SURFACE_MIN_SIDE:
        t6 = time.perf_counter()
        local = dataclasses.replace(local, surface=surface_patch(image))
        timings["surface"] = (time.perf_counter() - t6) * 1e3
    timings.update(side_ms)
    if local is not None:
        timings["local"] = (t5 - t4) * 1e3
    return Prepared(photo.path, photo.sha256, lbp, encoder_input, local, timings, cake, cake_found)


def _texture_and_input(image: np.ndarray, mask: np.ndarray | None, config: Config,
                       shape: EncoderInput) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The LBP histogram and the encoder input of the described image, with their `lbp` and `prepare` times (ms)."""
    t0 = time.perf_counter()
    lbp = lbp_histogram(image, config.lbp.points_radii, config.lbp.size, mask=mask)
    t1 = time.perf_counter()
    encoder_input = prepare_input(_grey_outside(image, mask), shape.size, shape.channels, shape.disc_mask)
    return lbp, encoder_input, {"lbp": (t1 - t0) * 1e3, "prepare": (time.perf_counter() - t1) * 1e3}


def _timed(fn: Callable[..., bool], *args: object) -> tuple[bool, float]:
    """`fn(*args)` and the ms it took (run on the probe's thread)."""
    start = time.perf_counter()
    return fn(*args), (time.perf_counter() - start) * 1e3


def _decision_asks_for_cake(config: Config) -> bool:
    return config.matcher.decide.texture_needs_bare_photo and config.matcher.verify.enabled


def looks_like_a_cake(pixels: np.ndarray, settings: LocateConfig) -> bool:
    """Whether the locator finds a cake in `pixels` (its outline is not used: the whole photo stays described).

    A photo under `MIN_SIDE` px a side has no room for a cake's rim: no cake (as `canonical_view` treats it).
    """
    if min(pixels.shape[:2]) < MIN_SIDE:
        return False
    return not locate(pixels, settings.min_confidence).fallback


def locate_view(pixels: np.ndarray, settings: LocateConfig) -> Rectified | None:
    """The cake's canonical view (`canonical_view` with the `locate:` settings); None when the locator is off."""
    if not settings.enabled:
        return None
    return canonical_view(pixels, settings.size, settings.margin, settings.min_confidence)


def described(pixels: np.ndarray, view: Rectified | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The image every descriptor describes, and its cake mask (None: every pixel counts)."""
    if view is None or view.outline.fallback:
        return pixels, None
    return view.image, view.mask


def local_features(image: np.ndarray, mask: np.ndarray | None, settings: LocalConfig) -> LocalFeatures:
    """Keypoints of the described image (`described`), those on the cake's cut edge dropped."""
    return _inside(extract_configured(image, settings), mask)


def _grey_outside(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return image
    out = image.copy()
    out[~mask] = OUTSIDE_GREY
    return out


def _inside(local: LocalFeatures, mask: np.ndarray | None) -> LocalFeatures:
    """Keypoints well inside the cake: those on the mask's edge describe the cut, not the cake."""
    if mask is None or len(local) == 0:
        return local
    size = mask.shape[0]
    border = max(1, int(round(KEYPOINT_BORDER * size)))
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1,) * 2),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    at = np.clip(np.round(local.points * (size / float(local.side))).astype(int), 0, size - 1)
    keep = inner[at[:, 1], at[:, 0]].astype(bool)
    return LocalFeatures(local.points[keep], local.descriptors[keep], local.side)


def cake_report(photo: Photo, view: Rectified, settings: LocateConfig) -> Cake:
    """The result's `cake` object: outlines and rectification in original-photo pixels."""
    h, w = photo.pixels.shape[:2]
    ow, oh = photo.original_size
    sx, sy = ow / float(w), oh / float(h)
    # decoded pixel centres to original ones (a reduced decode averages r x r blocks)
    to_original = np.array([[sx, 0, 0.5 * (sx - 1)], [0, sy, 0.5 * (sy - 1)], [0, 0, 1.0]])
    found = view.outline
    if found.fallback:
        return Cake(True, "none", float(found.confidence), None, (), None, (ow, oh), LOCATOR_VERSION)
    hmat = view.homography @ np.linalg.inv(to_original)
    hmat = hmat / hmat[2, 2]
    rect = Rectification(tuple(tuple(float(f"{v:.8g}") for v in row) for row in hmat), settings.size, settings.margin)
    outlines = [_outline(o, to_original) for o in (found, *found.others)]
    return Cake(False, found.shape, float(found.confidence), outlines[0], tuple(outlines[1:]), rect, (ow, oh), LOCATOR_VERSION)


def _outline(o: CakeOutline, to_original: np.ndarray) -> Outline:
    poly = o.polygon(POLYGON_POINTS)
    q = np.c_[poly, np.ones(len(poly))] @ to_original.T
    c = to_original @ np.array([o.centre[0], o.centre[1], 1.0])
    k = float(np.sqrt(to_original[0, 0] * to_original[1, 1]))
    shape = "brick" if o.shape == "brick" else "disc"
    return Outline(shape, (round(float(c[0]), 2), round(float(c[1]), 2)), (round(o.axes[0] * k, 2), round(o.axes[1] * k, 2)),
                   round(float(o.angle), 2), tuple((round(float(x), 2), round(float(y), 2)) for x, y in q[:, :2]),
                   round(float(o.confidence), 4))


def prepare_or_error(path: Path, config: Config, shape: EncoderInput, root: Path | None = None,
                     for_catalog: bool = False, beside: bool = True) -> Prepared | tuple[str, str]:
    """`prepare` for a worker process: an unreadable file comes back as (code, reason).

    Returning the error as plain data avoids pickling exception objects across
    the process boundary.
    """
    try:
        return prepare(path, config, shape, root, for_catalog, beside)
    except IntakeError as err:
        return (err.code, str(err))
