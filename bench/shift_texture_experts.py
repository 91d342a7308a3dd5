#!/usr/bin/env python3
"""Where would the bare-photo decision sit if the texture side's experts were shifted? A diagnostic.

    .venv/bin/python bench/shift_texture_experts.py RESULTS.jsonl... [--config FILE] [--shifts 0,0.1,0.2,0.3,0.4,0.5]

RESULTS are `teaprint eval --stages embedding+lbp+verify --json` files (or
`quality_table.py`'s OUT/<bench>.jsonl). On a photo in which the locator
finds no cake (a bare texture) the confidence is the largest of the
geometric, appearance and texture experts' probabilities
(`pipeline.matcher.fuse.combine`); `teaprint calibrate` shifts the appearance
and texture experts together so that the calibration textures' 1 % point of
that confidence lies at 0.5 (`align_experts`). This adds one shift to the
appearance and texture experts' biases together (a uniform shift keeps the
order of every bare photo's confidence, so recall at 1% FAR does not move)
and re-decides the saved answers at the configured accept point, per file:

* the bare-photo strangers' strongest texture-side logits, and the logit
  of their 1% point (the shift that would put that point at 0.5);
* for each shift: the false-accept rate and the recall at the accept point.

Read it to see how far a calibration set's strangers lie from an
evaluation set's: the shift a calibration file asks for (its 1% point)
against the shift at which an evaluation file's recall reaches 0.9 x its
recall at 1% FAR. Choosing a shift from evaluation files is tuning on the
test; this only measures the gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import FusionConfig, load_config
    from pipeline.evaluation.calibrate import decisions, results_evidence
    from pipeline.matcher.fuse import expert_probabilities

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--config", type=Path, default=None, help="teaprint config (default: the shipped one)")
    ap.add_argument("--shifts", default="0,0.1,0.2,0.3,0.4,0.5", help="comma-separated bias shifts (logit units)")
    args = ap.parse_args(argv)
    decide = load_config(args.config).matcher.decide
    fusion, accept = decide.fusion, decide.accept_confidence
    shifts = [float(s) for s in args.shifts.split(",")]

    def shifted(s: float) -> FusionConfig:
        return dataclasses.replace(fusion, appearance=dataclasses.replace(fusion.appearance, bias=fusion.appearance.bias + s),
                                   texture=dataclasses.replace(fusion.texture, bias=fusion.texture.bias + s))

    for path in args.results:
        evidence = results_evidence(path)
        strangers = []
        for e in evidence:
            if e.truth or not e.texture_counts or not len(e.labels):
                continue
            _, appearance, texture, _ = expert_probabilities(e.geometric, e.appearance, fusion)
            strangers.append(float(_logit(np.maximum(appearance, texture)).max()))
        top = np.sort(strangers)[::-1]
        point = float(top[int(np.floor(0.01 * top.size))]) if top.size else float("nan")
        print(f"{path}: {top.size} bare strangers, strongest texture-side logits {np.round(top[:5], 3).tolist()}, "
              f"1% point {point:.3f} (shift to put it at 0.5: {-point:+.3f})")
        for s in shifts:
            best, right, registered = decisions(evidence, shifted(s))
            accepted = best >= accept
            far = (accepted & ~registered).sum() / max(int((~registered).sum()), 1)
            recall = (accepted & right & registered).sum() / max(int(registered.sum()), 1)
            print(f"  shift {s:+.2f}: FAR {far:.4f}  recall {recall:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
