"""Shared fixtures: a real tiny Keras encoder on disk and real photo files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import structlog

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Undo a test's structlog set-up: `cli.main()` run in-process points it at that test's captured stderr,
    which is closed afterwards, and a later test logging in-process would fail writing to it."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def tiny_keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, untrained, tiny encoder saved as .keras + .json only (32 px, 16-d), not exported."""
    from pipeline.training.model import build_encoder, save_encoder

    path = tmp_path_factory.mktemp("model-keras") / "tiny.keras"
    model = build_encoder(input_size=32, channels=3, embedding_dim=16, width=4, seed=1)
    save_encoder(model, path, {"threshold": 0.5, "rotation_pool": 1})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_keras_model: Path) -> Path:
    """The tiny encoder as shipped models are: .keras + .json + its LiteRT export (.tflite), served by LiteRT."""
    import shutil

    from pipeline.features.embedding import metadata_path
    from pipeline.training.export import export_encoder

    folder = tmp_path_factory.mktemp("model")
    path = folder / tiny_keras_model.name
    shutil.copy2(tiny_keras_model, path)
    shutil.copy2(metadata_path(tiny_keras_model), metadata_path(path))
    export_encoder(path)
    return path


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A user config pointing at the tiny model, with smaller decode work."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(
        f"model:\n  path: {tiny_model}\n  batch_size: 8\n"
        "intake:\n  work_side: 256\n"
        "local:\n  side: 320\n  max_keypoints: 150\n"
        # The tiny model is untrained, so the shipped model's calibrated accept
        # threshold means nothing for it; 0.5 is the fusion's neutral point.
        "matcher:\n  decide:\n    accept_confidence: 0.5\n"
    )
    return path


@pytest.fixture(scope="session")
def locate_config_file(tmp_path_factory: pytest.TempPathFactory, tiny_config_file: Path) -> Path:
    """`tiny_config_file` with the cake locator on (as in the shipped defaults), named where a test needs it."""
    path = tmp_path_factory.mktemp("config") / "tiny-locate.yaml"
    path.write_text(tiny_config_file.read_text() + "locate:\n  enabled: true\n")
    return path


def source_photos() -> dict[str, np.ndarray]:
    """Distinct real RGB photos bundled with scikit-image, keyed by name."""
    from skimage import data

    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "camera": np.repeat(data.camera()[..., None], 3, axis=2),
        "brick": np.repeat(data.brick()[..., None], 3, axis=2),
        "grass": np.repeat(data.grass()[..., None], 3, axis=2),
        "gravel": np.repeat(data.gravel()[..., None], 3, axis=2),
    }
    return {k: np.ascontiguousarray(v) for k, v in photos.items()}


def write_rgb(path: Path, rgb: np.ndarray, quality: int = 92) -> Path:
    """Write an RGB uint8 image with OpenCV (format from the suffix)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def rotated_view(rgb: np.ndarray, angle: float, gain: float = 1.0) -> np.ndarray:
    """The same photo rotated about its centre with a brightness change."""
    import cv2

    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    out = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT_101).astype(np.float32) * gain
    return np.clip(out, 0, 255).astype(np.uint8)


def rendered_cakes(seed: int, kind: str = "disc", size: int = 512, **view: object):  # -> pipeline.training.scenes.Scene
    """A rendered photo of cakes (`kind`: disc, brick or two) on a cluttered table, with its true outlines.

    The surfaces are procedural leaf textures drawn from `seed`; `view` sets
    `pipeline.training.views.ViewParams` fields (default: overhead, rotated 10 * seed deg).
    """
    from pipeline.training import scenes, views
    from pipeline.training.data import procedural_texture

    surfaces = [procedural_texture(np.random.default_rng([seed, i]), 512) for i in range(2)]
    params = views.ViewParams(**{"angle": 10.0 * seed, "scale": 1.0, "quality": 90, **view})  # type: ignore[arg-type]
    return scenes.render_scene(np.random.default_rng(seed), surfaces, kind=kind, out_size=size, params=params)  # type: ignore[arg-type]
