"""The siamese encoder: load it, prepare its input, embed images.

A model is two files side by side: `NAME.keras` (Keras 3, loaded with
`safe_mode=True`) and `NAME.json`, its metadata. The metadata carries the input
size, channels and preprocessing, so that training and serving share one
definition: `prepare_input` below is what both call. The model itself contains
its rescaling from 0-255 and its final L2 normalisation, so a caller can never
feed it the wrong range (the seed trained on [0, 1] and served 0-255).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

METADATA_FORMAT = "teaprint-encoder/1"


class ModelError(RuntimeError):
    """The encoder or its metadata cannot be used."""


@dataclass(frozen=True)
class EncoderInfo:
    """What a caller must know about a loaded encoder.

    `model_id` is the first 16 hex digits of the sha256 of the `.keras` file,
    so an index built with other weights is always recognised as such.
    """

    model_id: str
    path: str
    input_size: int
    channels: int
    embedding_dim: int
    threshold: float | None
    rotation_pool: int = 1
    disc_mask: bool = False
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def metadata_path(model_path: Path) -> Path:
    """The metadata file that sits beside `model_path`."""
    return Path(model_path).with_suffix(".json")


def file_model_id(model_path: Path) -> str:
    """First 16 hex digits of the sha256 of the model file."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of `image` (H, W[, C]); a view, not a copy."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def prepare_input(image: np.ndarray, size: int, channels: int, disc_mask: bool = False) -> np.ndarray:
    """Turn a decoded photo into one encoder input.

    Centre square crop, area resize to `size`, grey or RGB, optional disc mask
    (pixels outside the inscribed circle set to mid-grey, so the corners, which
    rotate in and out of view, carry nothing).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3), dtype uint8, RGB order
    size : int
        Side of the encoder input, in pixels.
    channels : {1, 3}
    disc_mask : bool

    Returns
    -------
    ndarray, shape (size, size, channels), dtype float32, values in [0, 255]
    """
    square = cv2.resize(centre_square(image), (size, size), interpolation=cv2.INTER_AREA)
    if channels == 1:
        square = square if square.ndim == 2 else cv2.cvtColor(square, cv2.COLOR_RGB2GRAY)
        square = square[..., None]
    elif square.ndim == 2:
        square = np.repeat(square[..., None], 3, axis=2)
    out = square.astype(np.float32)
    if disc_mask:
        out[~_disc(size)] = 127.5
    return out


def rotations(batch: np.ndarray, count: int) -> np.ndarray:
    """`count` rotations about the centre, evenly spaced over 360 degrees.

    Parameters
    ----------
    batch : ndarray, shape (N, S, S, C), dtype float32

    Returns
    -------
    ndarray, shape (count, N, S, S, C), dtype float32; index 0 is unrotated.
    """
    if count <= 1:
        return batch[None]
    size = batch.shape[1]
    out = np.empty((count, *batch.shape), dtype=np.float32)
    out[0] = batch
    for k in range(1, count):
        angle = 360.0 * k / count
        if angle % 90 == 0:
            out[k] = np.rot90(batch, k=int(angle // 90), axes=(1, 2))
            continue
        matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
        for i, img in enumerate(batch):
            rotated = cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            out[k, i] = rotated.reshape(img.shape)
    return out


def _disc(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2


class Encoder:
    """A loaded encoder: `embed` maps photos to L2-normalised vectors."""

    def __init__(self, model: Any, info: EncoderInfo) -> None:
        self._model = model
        self.info = info

    @classmethod
    def load(cls, model_path: Path) -> "Encoder":
        """Load `model_path` (.keras, safe mode) and its metadata.

        Raises
        ------
        ModelError
            If either file is missing or unreadable, or they disagree.
        """
        model_path = Path(model_path)
        meta_file = metadata_path(model_path)
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"model metadata {meta_file} unreadable: {exc}") from None
        if meta.get("format") != METADATA_FORMAT:
            raise ModelError(f"{meta_file}: format {meta.get('format')!r}, expected {METADATA_FORMAT!r}")
        import keras  # deferred: importing TensorFlow costs seconds

        try:
            model = keras.models.load_model(model_path, safe_mode=True, compile=False)
        except Exception as exc:  # keras raises many types for a bad file
            raise ModelError(f"cannot load model {model_path}: {exc}") from None
        size, channels = int(meta["input_size"]), int(meta["channels"])
        expected = (None, size, size, channels)
        if tuple(model.input_shape) != expected:
            raise ModelError(f"{model_path}: input shape {model.input_shape} != metadata {expected}")
        info = EncoderInfo(
            model_id=file_model_id(model_path),
            path=str(model_path),
            input_size=size,
            channels=channels,
            embedding_dim=int(model.output_shape[-1]),
            threshold=meta.get("threshold"),
            rotation_pool=int(meta.get("rotation_pool", 1)),
            disc_mask=bool(meta.get("disc_mask", False)),
            metadata=meta,
        )
        return cls(model, info)

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Embed decoded photos.

        Parameters
        ----------
        images : sequence of ndarray, each (H, W) or (H, W, 3), dtype uint8, RGB
        batch_size : int

        Returns
        -------
        ndarray, shape (N, D), dtype float32
            Rows have unit L2 norm. With `rotation_pool` > 1 each row is the
            normalised mean over that many rotations of the input, which makes
            the embedding invariant to rotation about the photo's centre.
        """
        info = self.info
        if len(images) == 0:
            return np.zeros((0, info.embedding_dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = np.stack([prepare_input(im, info.input_size, info.channels, info.disc_mask) for im in chunk])
            out.append(self.embed_prepared(batch))
        return np.concatenate(out)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed inputs already made by `prepare_input`: (N, S, S, C) -> (N, D)."""
        views = rotations(batch, self.info.rotation_pool)
        flat = views.reshape(-1, *batch.shape[1:])
        vectors = self._model(flat, training=False).numpy().astype(np.float32, copy=False)
        pooled = vectors.reshape(views.shape[0], batch.shape[0], -1).mean(axis=0)
        return l2_normalise(pooled)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows of `vectors` (N, D) scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def save_metadata(model_path: Path, metadata: dict[str, Any]) -> Path:
    """Write `metadata` beside `model_path` atomically; returns the JSON path."""
    meta = {"format": METADATA_FORMAT, **metadata}
    target = metadata_path(model_path)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target
