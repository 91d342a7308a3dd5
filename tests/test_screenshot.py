"""docs/screenshot.py runs: the shipped model identifies a rendered cake on the real page, in Chinese and English."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from daemon_support import QUIET
from pipeline.features.embedding import file_model_id

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pipeline" / "data" / "models" / "teaprint-encoder.keras"


def test_the_screenshot_script_shows_the_shipped_models_true_answer(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "docs" / "screenshot.py"), "--out-dir", str(tmp_path), "--expect-record"],
                         capture_output=True, text=True, env={**os.environ, **QUIET}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "matched" and summary["label"] == "menghai-7542-2019" and summary["record_shown"] is True
    assert summary["model"] == file_model_id(SHIPPED)  # the shipped model, not a test one
    assert min(summary["similarities"]) < 0.95  # real similarities, not a test model's 0.99 everywhere
    for name in ("web-page.png", "web-page.zh-CN.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width == 390 and image.height >= 800
    with Image.open(tmp_path / "web-page.png") as en, Image.open(tmp_path / "web-page.zh-CN.png") as zh:
        assert en.convert("RGB").tobytes() != zh.convert("RGB").tobytes()
