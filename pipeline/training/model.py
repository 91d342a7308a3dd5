"""Encoder architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.features.embedding import save_metadata


def build_encoder(input_size: int = 96, channels: int = 3, embedding_dim: int = 128, width: int = 32, seed: int = 0) -> Any:
    """A small CNN encoder: 0-255 input in, unit-norm embedding out.

    Rescaling and the final L2 normalisation live inside the model (both are
    safe-mode serialisable built-in layers), so serving cannot feed it the
    wrong range.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for i, mult in enumerate((1, 2, 4, 8)):
        x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"conv{i}a")(x)
        x = layers.BatchNormalization(name=f"bn{i}a")(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"conv{i}b")(x)
        x = layers.BatchNormalization(name=f"bn{i}b")(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(embedding_dim, name="project")(x)
    outputs = layers.UnitNormalization(name="l2")(x)
    return keras.Model(inputs, outputs, name="teaprint_encoder")


def save_encoder(model: Any, path: Path, metadata: dict[str, Any]) -> Path:
    """Save `model` to `path` (.keras) and its metadata JSON beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    size = int(model.input_shape[1])
    channels = int(model.input_shape[3])
    base = {"input_size": size, "channels": channels, "embedding_dim": int(model.output_shape[-1]), "input_range": [0, 255]}
    save_metadata(path, {**base, **metadata})
    return path
