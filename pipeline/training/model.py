"""Encoder architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.features.embedding import save_metadata


def build_encoder(input_size: int = 96, channels: int = 3, embedding_dim: int = 128, width: int = 32, seed: int = 0) -> Any:
    """A small CNN encoder: 0-255 input in, unit-norm embedding out.

    Rescaling and the final L2 normalisation live inside the model (both are
    safe-mode serialisable built-in layers), so serving cannot feed it the
    wrong range. A stride-2 5x5 stem halves the resolution first (4x fewer
    FLOPs than a full-resolution first stage, which matters on a 2-core CPU),
    then four stages of two 3x3 conv+BN+ReLU at width x (1, 2, 4, 8), global
    average pooling (a texture statistic: position-free) and a linear
    projection. width=32 at 96 px: ~1.2 M parameters, ~140 M MACs per image.

    Parameters
    ----------
    input_size : int
        Side of the square input, pixels.
    channels : {1, 3}
    embedding_dim : int
    width : int
        Channels of the first stage.
    seed : int
        Seeds Keras / TensorFlow / NumPy / Python before the weights are drawn.

    Returns
    -------
    keras.Model
        Input (None, input_size, input_size, channels) float 0-255, output
        (None, embedding_dim) with unit L2 norm.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="bn_stem")(x)
    x = layers.Activation("relu")(x)
    for i, mult in enumerate((1, 2, 4, 8)):
        x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"conv{i}a")(x)
        x = layers.BatchNormalization(name=f"bn{i}a")(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"conv{i}b")(x)
        x = layers.BatchNormalization(name=f"bn{i}b")(x)
        x = layers.Activation("relu")(x)
        if i < 3:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(embedding_dim, name="project")(x)
    outputs = layers.UnitNormalization(name="l2")(x)
    return keras.Model(inputs, outputs, name="teaprint_encoder")


def save_encoder(model: Any, path: Path, metadata: dict[str, Any]) -> Path:
    """Save `model` to `path` (.keras) and its metadata JSON beside it.

    A compiled model is saved as an uncompiled copy: the served file holds the
    weights alone, not the optimizer's state (3x the size; resuming reads the
    training checkpoint, not this file).
    """
    import keras

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None:
        bare = keras.Model.from_config(model.get_config())
        bare.set_weights(model.get_weights())
        model = bare
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    size = int(model.input_shape[1])
    channels = int(model.input_shape[3])
    base = {"input_size": size, "channels": channels, "embedding_dim": int(model.output_shape[-1]), "input_range": [0, 255]}
    save_metadata(path, {**base, **metadata})
    return path
