"""The safe open, fitted names, no-replace moves and the per-file budget, on real files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from imagefiles import write_image
from pipeline.config import load_config
from pipeline.daemon.budget import Failure, prepare_within
from pipeline.daemon.journal import move_aside, unique_path
from pipeline.fsutil import NAME_MAX, UnsafeFile, fit_name, read_regular
from pipeline.prepare import EncoderInput


def test_fifo_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.jpg")
    os.symlink("/dev/zero", tmp_path / "z.jpg")
    os.symlink("/etc/passwd", tmp_path / "p.jpg")
    done = threading.Event()

    def attempt() -> None:
        for name in ("f.jpg", "z.jpg"):
            with pytest.raises(UnsafeFile) as err:
                read_regular(tmp_path / name, 1000)
            assert err.value.kind == "not_a_file"
        with pytest.raises(UnsafeFile) as err:
            read_regular(tmp_path / "p.jpg", root=tmp_path)
        assert err.value.kind == "outside_root" and "passwd" not in str(err.value)
        done.set()

    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(10), "a FIFO or a device blocked the open"


def test_fit_name_fits_and_keeps_names_apart() -> None:
    long_a, long_b = "茶" * 90 + "a", "茶" * 90 + "b"
    fa, fb = fit_name(long_a, ".json"), fit_name(long_b, ".json")
    assert fa != fb and fa.endswith(".json")
    assert len(os.fsencode(fa)) <= NAME_MAX and len(os.fsencode(fb)) <= NAME_MAX
    odd = os.fsdecode(b"\xff" * 254)
    assert len(os.fsencode(fit_name(odd, ".error.json"))) <= NAME_MAX
    assert fit_name("short", ".json") == "short.json"


def test_same_named_dangling_links_both_survive(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    moved = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        link = tmp_path / folder / "x.jpg"
        os.symlink(f"/nonexistent/{folder}", link)
        moved.append(move_aside(link, unique_path(failed, "x", ".jpg")))
    assert sorted(os.readlink(p) for p in moved) == ["/nonexistent/a", "/nonexistent/b"]
    # A taken name given directly is not replaced either.
    (tmp_path / "c").mkdir()
    os.symlink("/nonexistent/c", tmp_path / "c/x.jpg")
    third = move_aside(tmp_path / "c/x.jpg", failed / "x.jpg")
    assert third != failed / "x.jpg" and os.readlink(third) == "/nonexistent/c"
    assert len(os.listdir(failed)) == 3


def test_budget_moves_a_slow_file_aside(tmp_path: Path) -> None:
    config_file = tmp_path / "budget.yaml"
    config_file.write_text("daemon:\n  file_budget_s: 0.001\n")
    config = load_config(config_file)
    rng = np.random.default_rng(0)
    path = write_image(tmp_path / "noise.png", rng.integers(0, 255, (2000, 2000, 3), dtype=np.uint8), "PNG")
    t0 = time.monotonic()
    outcome = prepare_within(path, config, EncoderInput(32, 3, False), tmp_path)
    assert isinstance(outcome, Failure) and outcome.code == "timeout", outcome
    assert time.monotonic() - t0 < 5
    with pytest.raises(Exception):
        load_config(_write(tmp_path / "bad.yaml", "daemon:\n  file_budget: 3\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
