"""The siamese encoder: load it, prepare its input, embed images.

A model is two files side by side: `NAME.keras` (Keras 3, loaded with
`safe_mode=True`) and `NAME.json`, its metadata; for serving, a third,
`NAME.tflite`, the same weights exported for LiteRT (`ai-edge-litert`,
TensorFlow's inference runtime; `pipeline.training.export`), so that serving
never imports TensorFlow. The metadata carries the input
size, channels and preprocessing, so that training and serving share one
definition: `prepare_input` below is what both call. The model itself contains
its rescaling from 0-255 and its final L2 normalisation, so a caller can never
feed it the wrong range (the seed trained on [0, 1] and served 0-255).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import structlog

METADATA_FORMAT = "teaprint-encoder/1"
# The runtime that serves exported encoders, and the file suffix it reads.
SERVING_RUNTIME = "litert"
SERVING_SUFFIX = ".tflite"
# An export whose outputs differ more than this from Keras' is refused (issue 14).
MIN_EXPORT_COSINE = 0.999

log = structlog.get_logger()


class ModelError(RuntimeError):
    """The encoder or its metadata cannot be used."""


@dataclass(frozen=True)
class EncoderInfo:
    """What a caller must know about a loaded encoder.

    `model_id` is the first 16 hex digits of the sha256 of the `.keras` file,
    so an index built with other weights is always recognised as such. It is
    the same whichever runtime serves the weights (`runtime`: "keras" or
    "litert"): an export records the id of the `.keras` it came from.
    """

    model_id: str
    path: str
    input_size: int
    channels: int
    embedding_dim: int
    threshold: float | None
    rotation_pool: int = 1
    disc_mask: bool = False
    runtime: str = "keras"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def metadata_path(model_path: Path) -> Path:
    """The metadata file that sits beside `model_path`."""
    return Path(model_path).with_suffix(".json")


def serving_path(model_path: Path) -> Path:
    """The exported serving model that sits beside `model_path`."""
    return Path(model_path).with_suffix(SERVING_SUFFIX)


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
    """A loaded encoder: `embed` maps photos to L2-normalised vectors.

    `run` is the bare model call, (N, S, S, C) float32 0-255 -> (N, D); it is
    thread-safe for both runtimes (a Keras model may be called from several
    threads at once; LiteRT gets one interpreter per calling thread).
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], info: EncoderInfo) -> None:
        self.run = run
        self.info = info

    @classmethod
    def load(cls, model_path: Path, runtime: str = "auto") -> "Encoder":
        """Load the encoder at `model_path` (the `.keras` path) and its metadata.

        Parameters
        ----------
        model_path : Path
        runtime : {"auto", "keras", "litert"}
            "auto" serves the export recorded in the metadata when it is there
            and made from this `.keras`, else falls back to Keras with a logged
            warning; "keras" always loads Keras (training, export);
            "litert" requires the export.

        Raises
        ------
        ModelError
            If a needed file is missing or unreadable, or they disagree.
        """
        model_path = Path(model_path)
        if not model_path.is_file() and not serving_path(model_path).is_file():
            raise ModelError(f"model file not found: {model_path}")
        meta = _read_metadata(model_path)
        if runtime not in ("auto", "keras", SERVING_RUNTIME):
            raise ModelError(f"unknown encoder runtime {runtime!r}")
        if runtime != "keras":
            problem, exported, model_id = _serving_export(model_path, meta)
            if problem is None:
                return cls.from_litert(exported, _info(model_id, model_path, meta, runtime=SERVING_RUNTIME))
            if runtime == SERVING_RUNTIME:
                raise ModelError(problem)
            log.warning("encoder_fallback_keras", reason=problem, model=str(model_path),
                        hint="run `teaprint export` to serve without TensorFlow")
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        import keras  # deferred: importing TensorFlow costs seconds

        try:
            model = keras.models.load_model(model_path, safe_mode=True, compile=False)
        except Exception as exc:  # keras raises many types for a bad file
            raise ModelError(f"cannot load model {model_path}: {exc}") from None
        return cls.from_keras(model, _info(file_model_id(model_path), model_path, meta, runtime="keras"))

    @classmethod
    def from_keras(cls, model: Any, info: EncoderInfo) -> "Encoder":
        """An encoder served by the Keras `model`, described by `info`.

        Raises
        ------
        ModelError
            If the model's shapes disagree with `info`.
        """
        info = _check_shapes(Path(info.path), tuple(model.input_shape), int(model.output_shape[-1]), info)

        from keras import ops  # any backend; a torch tensor may live on a GPU

        def run(batch: np.ndarray) -> np.ndarray:
            return np.asarray(ops.convert_to_numpy(model(batch, training=False)), dtype=np.float32)

        return cls(run, replace(info, runtime="keras"))

    @classmethod
    def from_litert(cls, tflite_path: Path, info: EncoderInfo) -> "Encoder":
        """An encoder served by LiteRT from `tflite_path`, described by `info`.

        A LiteRT interpreter is not thread-safe, so each calling thread gets
        its own (the weights are memory-mapped once by the OS; each adds its
        activation arena, a few MB). Resizing to a batch size seen before is
        cheap (XNNPACK keeps the plans), so one interpreter serves all sizes.

        Raises
        ------
        ModelError
            If the file cannot be loaded or its shapes disagree with `info`.
        """
        from ai_edge_litert.interpreter import Interpreter  # deferred: only serving needs it

        path = str(tflite_path)
        threads = os.cpu_count() or 1

        def open_interpreter() -> Any:
            try:
                return Interpreter(model_path=path, num_threads=threads)
            except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad files
                raise ModelError(f"cannot load exported model {path}: {exc}") from None

        first = open_interpreter()
        inp, out = first.get_input_details()[0], first.get_output_details()[0]
        dims = tuple(None if d < 0 else int(d) for d in inp["shape_signature"])
        info = _check_shapes(Path(tflite_path), dims, int(out["shape"][-1]), info)
        local = threading.local()
        local.interpreter, local.batch = first, None
        in_index, out_index = inp["index"], out["index"]

        def run(batch: np.ndarray) -> np.ndarray:
            interpreter = getattr(local, "interpreter", None)
            if interpreter is None:
                interpreter = local.interpreter = open_interpreter()
                local.batch = None
            if local.batch != batch.shape:
                interpreter.resize_tensor_input(in_index, list(batch.shape))
                interpreter.allocate_tensors()
                local.batch = batch.shape
            interpreter.set_tensor(in_index, np.ascontiguousarray(batch, dtype=np.float32))
            interpreter.invoke()
            return interpreter.get_tensor(out_index).copy()  # the arena is reused by the next call

        return cls(run, replace(info, path=path, runtime=SERVING_RUNTIME))

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
        vectors = self.run(flat)
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


def _read_metadata(model_path: Path) -> dict[str, Any]:
    meta_file = metadata_path(model_path)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model metadata {meta_file} unreadable: {exc}") from None
    if meta.get("format") != METADATA_FORMAT:
        raise ModelError(f"{meta_file}: format {meta.get('format')!r}, expected {METADATA_FORMAT!r}")
    return meta


def _serving_export(model_path: Path, meta: dict[str, Any]) -> tuple[str | None, Path, str]:
    """(problem or None, export path, model id) for the export recorded in `meta`.

    The model id is the `.keras` file's when that file is there (and must equal
    the id the export recorded: else the export is stale), else the recorded one.
    """
    serving = meta.get("serving") or {}
    exported = model_path.with_name(str(serving.get("file", serving_path(model_path).name)))
    recorded = serving.get("source_model_id")
    if not serving:
        return f"{metadata_path(model_path)} records no serving export", exported, ""
    if serving.get("runtime") != SERVING_RUNTIME:
        return f"serving export is for {serving.get('runtime')!r}, not {SERVING_RUNTIME!r}", exported, ""
    if not exported.is_file():
        return f"serving export not found: {exported}", exported, ""
    model_id = file_model_id(model_path) if model_path.is_file() else str(recorded)
    if model_id != recorded:
        return f"serving export {exported.name} was made from model {recorded}, not {model_id} (stale)", exported, ""
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError as exc:
        return f"ai-edge-litert not importable: {exc}", exported, ""
    return None, exported, model_id


def _info(model_id: str, model_path: Path, meta: dict[str, Any], runtime: str) -> EncoderInfo:
    return EncoderInfo(
        model_id=model_id,
        path=str(model_path),
        input_size=int(meta["input_size"]),
        channels=int(meta["channels"]),
        embedding_dim=int(meta.get("embedding_dim", 0)),
        threshold=meta.get("threshold"),
        rotation_pool=int(meta.get("rotation_pool", 1)),
        disc_mask=bool(meta.get("disc_mask", False)),
        runtime=runtime,
        metadata=meta,
    )


def _check_shapes(path: Path, input_shape: tuple, output_dim: int, info: EncoderInfo) -> EncoderInfo:
    """`info` with the model's output dimension; refuses shapes that disagree with the metadata."""
    expected = (None, info.input_size, info.input_size, info.channels)
    if tuple(input_shape) != expected:
        raise ModelError(f"{path}: input shape {input_shape} != metadata {expected}")
    if info.embedding_dim and output_dim != info.embedding_dim:
        raise ModelError(f"{path}: output dimension {output_dim} != metadata {info.embedding_dim}")
    return replace(info, embedding_dim=output_dim)
