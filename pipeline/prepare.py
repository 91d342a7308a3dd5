"""Model-free work on one photo file: decode, LBP, encoder input.

Kept apart from the engine so that worker processes import only OpenCV,
scikit-image and numpy, never TensorFlow, h5py or scikit-learn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.features.embedding import prepare_input
from pipeline.features.lbp import lbp_histogram
from pipeline.features.local import LocalFeatures, extract_configured
from pipeline.intake import IntakeError, read_photo


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
        Keypoints for verification; None when `local.enabled` is off.
    timings_ms : dict
        `decode`, `lbp`, `prepare` and `local` stage times.
    """

    path: Path
    sha256: str
    lbp: np.ndarray
    encoder_input: np.ndarray
    local: LocalFeatures | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def prepare(path: Path, config: Config, shape: EncoderInput, root: Path | None = None) -> Prepared:
    """Decode `path` and compute everything that needs no model.

    Raises
    ------
    IntakeError
        When the file cannot be taken (see `pipeline.intake`).
    """
    t0 = time.perf_counter()
    photo = read_photo(Path(path), config.intake, root=root)
    t1 = time.perf_counter()
    lbp = lbp_histogram(photo.pixels, config.lbp.points_radii, config.lbp.size)
    t2 = time.perf_counter()
    encoder_input = prepare_input(photo.pixels, shape.size, shape.channels, shape.disc_mask)
    t3 = time.perf_counter()
    local_cfg = config.local
    local = extract_configured(photo.pixels, local_cfg) if local_cfg.enabled else None
    t4 = time.perf_counter()
    timings = {"decode": (t1 - t0) * 1e3, "lbp": (t2 - t1) * 1e3, "prepare": (t3 - t2) * 1e3}
    if local is not None:
        timings["local"] = (t4 - t3) * 1e3
    return Prepared(photo.path, photo.sha256, lbp, encoder_input, local, timings)


def prepare_or_error(path: Path, config: Config, shape: EncoderInput, root: Path | None = None) -> Prepared | tuple[str, str]:
    """`prepare` for a worker process: an unreadable file comes back as (code, reason).

    Returning the error as plain data avoids pickling exception objects across
    the process boundary.
    """
    try:
        return prepare(path, config, shape, root)
    except IntakeError as err:
        return (err.code, str(err))
