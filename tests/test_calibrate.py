"""Fitting the fused decision: weights, a threshold meeting the FAR target, stored in config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.config import DEFAULT_CONFIG, load_config
from pipeline.evaluation.calibrate import QueryEvidence, decisions, fit, write_into


def synthetic_evidence(n: int = 300, seed: int = 0) -> list[QueryEvidence]:
    """Right labels have higher similarity, more inliers, smaller LBP distance."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        registered = i % 4 != 0
        rows, labels = [], []
        for k in range(4):
            right = registered and k == 0
            rows.append([rng.normal(0.8 if right else 0.6, 0.08), float(right and rng.random() < 0.8),
                         np.log1p(rng.poisson(30) if right and rng.random() < 0.6 else rng.poisson(1)), rng.normal(0.05 if right else 0.15, 0.04)])
            labels.append(f"L{i}" if right else f"N{i}-{k}")
        out.append(QueryEvidence(tuple(labels), np.array(rows), f"L{i}" if registered else ""))
    return out


def test_fit_learns_sensible_signs_and_meets_the_far_target() -> None:
    cal = fit(synthetic_evidence(), target_far=0.01)
    assert cal.fusion.similarity > 0 and cal.fusion.inliers > 0 and cal.fusion.lbp_distance < 0
    assert cal.false_accept_rate <= 0.01
    assert cal.recall > 0.5
    best, right, _ = decisions(synthetic_evidence(seed=1), cal.fusion)
    accepted = best >= cal.accept_confidence
    assert (accepted & ~right).mean() < 0.05  # holds on fresh data too


def test_write_into_keeps_the_config_loadable(tmp_path: Path) -> None:
    target = tmp_path / "default.yaml"
    shutil.copy(DEFAULT_CONFIG, target)
    cal = fit(synthetic_evidence(), target_far=0.01)
    write_into(target, cal, [Path("/bench/cal1")], 0.01)
    config = load_config(target)
    assert config.matcher.decide.fusion == cal.fusion
    assert abs(config.matcher.decide.accept_confidence - cal.accept_confidence) < 1e-4
    assert "calibrated by `teaprint calibrate` on cal1" in target.read_text()
