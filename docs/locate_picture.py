#!/usr/bin/env python3
"""Draw docs/locate.png: a rendered tilted cake on a cluttered table, its found outline, its rectified crop.

    .venv/bin/python docs/locate_picture.py [OUT.png]

The cake surface is a procedural leaf texture (no photo from ../shared/data is
drawn into the repository). Left: the photo with the true outline (green) and
the found one (red); right: the canonical image every descriptor is computed
on (`pipeline.prepare.locate_view`, the shipped `locate:` settings).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.prepare import locate_view  # noqa: E402
from pipeline.training import scenes, views  # noqa: E402
from pipeline.training.data import procedural_texture  # noqa: E402


def main(out: Path) -> None:
    sources = [procedural_texture(np.random.default_rng([7, i]), 512) for i in range(3, 6)]
    params = views.ViewParams(angle=40.0, tilt=32.0, tilt_axis=20.0, scale=0.75, shift=(0.06, -0.04), quality=85)
    scene = scenes.render_scene(np.random.default_rng(3), sources, kind="disc", out_size=512, params=params, thumb=True, glare=True)
    settings = dataclasses.replace(load_config().locate, enabled=True)
    r = locate_view(scene.image, settings)  # what `prepare` describes, with the shipped `locate:` settings
    o = r.outline
    left = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
    cv2.polylines(left, [np.round(scene.outlines[0]).astype(np.int32)], True, (0, 200, 0), 2, cv2.LINE_AA)
    cv2.polylines(left, [np.round(o.polygon()).astype(np.int32)], True, (0, 0, 255), 2, cv2.LINE_AA)
    cv2.putText(left, f"found: {o.shape}, confidence {o.confidence:.2f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    right = cv2.cvtColor(r.image, cv2.COLOR_RGB2BGR)
    right = cv2.resize(right, (512, 512), interpolation=cv2.INTER_AREA)
    cv2.putText(right, f"rectified {settings.size} px, masked", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    cv2.imwrite(str(out), np.hstack([left, np.full((512, 8, 3), 255, np.uint8), right]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "locate.png")
