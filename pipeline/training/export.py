"""Export a trained Keras encoder to the serving runtime (LiteRT).

Serving must not import TensorFlow (650 MB of RSS and seconds of start-up), so
`teaprint train` (and `teaprint export` for a model already on disk) writes
`NAME.tflite` beside `NAME.keras` and records it in `NAME.json` under `serving`:

    "serving": {"file": "NAME.tflite", "runtime": "litert",
                "source_model_id": <model id of NAME.keras>, "sha256": ...,
                "check": {"inputs": N, "cosine_min": ...}}

`source_model_id` ties the export to the exact weights it came from: the model
id (sha256 of the `.keras` file) stays the catalog's key whichever runtime
serves, and a `.keras` retrained without re-export is detected as stale.
LiteRT won over ONNX Runtime on the measured figures (`bench/bench_runtime.py`,
README); `export_onnx` stays for that comparison.

This module imports TensorFlow; serving never imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features.embedding import (
    MIN_EXPORT_COSINE,
    SERVING_RUNTIME,
    Encoder,
    ModelError,
    file_model_id,
    metadata_path,
    save_metadata,
    serving_path,
)


@dataclass(frozen=True)
class ExportReport:
    """What `export_encoder` wrote and how close it is to Keras."""

    path: Path
    source_model_id: str
    cosine_min: float
    inputs: int


def _load_keras(keras_path: Path) -> Any:
    import keras

    model = keras.models.load_model(keras_path, safe_mode=True, compile=False)
    # Keras' exporters trace a model only once it has been called.
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    return model


def export_onnx(keras_path: Path, out: Path) -> Path:
    """Convert `keras_path` to ONNX at `out` (Keras' exporter; needs tf2onnx); for `bench/bench_runtime.py`."""
    model = _load_keras(Path(keras_path))
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its traced signature
        model.export(str(tmp), format="onnx", verbose=False)
    os.replace(tmp, out)
    return Path(out)


def export_litert(keras_path: Path, out: Path) -> Path:
    """Convert `keras_path` to a LiteRT flatbuffer at `out`: float32, no quantisation, dynamic batch."""
    import tensorflow as tf

    model = _load_keras(Path(keras_path))
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the traced signature
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return Path(out)


def probe_inputs(size: int, channels: int, count: int = 48, seed: int = 0) -> np.ndarray:
    """Deterministic check inputs (count, S, S, C) in 0-255: real photos' crops plus smoothed noise.

    Real photos come from scikit-image (bundled, no download); noise covers
    value ranges the photos miss.
    """
    import cv2
    from skimage import data

    from pipeline.features.embedding import prepare_input

    rng = np.random.default_rng(seed)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.camera(), data.brick(), data.grass()]
    out = []
    for i in range(count):
        if i % 4 == 3:
            noise = cv2.GaussianBlur(rng.random((size * 2, size * 2)).astype(np.float32), (0, 0), 1 + i % 3) * 255
            out.append(prepare_input(np.clip(noise, 0, 255).astype(np.uint8), size, channels))
            continue
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(prepare_input(img[top : top + side, left : left + side], size, channels))
    return np.stack(out)


def export_encoder(keras_path: Path) -> ExportReport:
    """Export `keras_path` for serving, check it against Keras, record it in the metadata.

    Parameters
    ----------
    keras_path : Path
        A `.keras` encoder with its `.json` metadata beside it.

    Returns
    -------
    ExportReport

    Raises
    ------
    ModelError
        If the export's outputs differ from Keras' (cosine below
        `MIN_EXPORT_COSINE` on any probe input); nothing is recorded then.
    """
    keras_path = Path(keras_path)
    keras_encoder = Encoder.load(keras_path, runtime="keras")
    out = serving_path(keras_path)
    export_litert(keras_path, out)
    info = keras_encoder.info
    probes = probe_inputs(info.input_size, info.channels)
    light = Encoder.from_litert(out, info)
    ref, got = keras_encoder.run(probes), light.run(probes)
    cosine = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    cosine_min = float(cosine.min())
    if cosine_min < MIN_EXPORT_COSINE:
        out.unlink(missing_ok=True)
        raise ModelError(f"{out}: export differs from Keras (min cosine {cosine_min:.6f} < {MIN_EXPORT_COSINE})")
    source_id = file_model_id(keras_path)
    meta_file = metadata_path(keras_path)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["serving"] = {
        "file": out.name,
        "runtime": SERVING_RUNTIME,
        "source_model_id": source_id,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "check": {"inputs": int(len(probes)), "cosine_min": round(cosine_min, 7)},
    }
    save_metadata(keras_path, meta)
    return ExportReport(out, source_id, cosine_min, len(probes))
