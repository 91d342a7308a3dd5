"""`teaprint calibrate BENCH_DIR...`: fit the fused decision on held-out benchmarks.

The full pipeline runs on each benchmark (temporary index, as `eval` does).
Every candidate label of every query becomes one example: its four evidence
features (`pipeline.matcher.fuse.FEATURES`) and whether it is the query's
right label. A logistic regression fits the fusion weights; the accept
threshold is then the lowest confidence at which the false-accept rate on the
benchmarks' unregistered queries stays within the target. Both are printed
as YAML and, with `--write`, stored in a config file, with the measured rates
in a comment, so the threshold carries a stated false-accept rate.

Calibrate on data the evaluation does not use: e.g. `bench/make_discs.py
--split train` and `bench/make_textures.py --seed 1`, never KTH-TIPS.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.config import Config, FusionConfig
from pipeline.matcher.fuse import FEATURES
from pipeline.results import MatchResult


@dataclass(frozen=True)
class QueryEvidence:
    """All candidate labels of one query: features (L, 4) and which one is right."""

    labels: tuple[str, ...]
    features: np.ndarray
    truth: str


@dataclass(frozen=True)
class Calibration:
    fusion: FusionConfig
    accept_confidence: float
    false_accept_rate: float
    recall: float
    precision: float
    unregistered: int
    registered: int


def query_evidence(result: MatchResult, truth: str) -> QueryEvidence:
    """Per-label features of a full-pipeline result (as `fuse.gather` builds them)."""
    by_label: dict[str, list[float]] = {}
    for m in result.matches:
        inliers = m.inliers or 0
        row = by_label.get(m.label)
        if row is None:
            by_label[m.label] = [m.similarity, float(m.svc_label == m.label), inliers, m.lbp_distance]
        else:
            row[0], row[2], row[3] = max(row[0], m.similarity), max(row[2], inliers), min(row[3], m.lbp_distance)
    labels = tuple(by_label)
    feats = np.array([[s, v, math.log1p(i), d] for s, v, i, d in by_label.values()], dtype=np.float64).reshape(-1, len(FEATURES))
    return QueryEvidence(labels, feats, truth)


def fit(evidence: Sequence[QueryEvidence], target_far: float = 0.01) -> Calibration:
    """Fit fusion weights, then the accept threshold for `target_far`."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([e.features for e in evidence if len(e.labels)])
    y = np.concatenate([[label == e.truth for label in e.labels] for e in evidence if len(e.labels)])
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(x, y)
    weights = dict(zip(FEATURES, (round(float(w), 4) for w in model.coef_[0])))
    fusion = FusionConfig(bias=round(float(model.intercept_[0]), 4), **weights)
    threshold, far, recall, precision = choose_threshold(evidence, fusion, target_far)
    registered = sum(1 for e in evidence if e.truth)
    return Calibration(fusion, threshold, far, recall, precision, len(evidence) - registered, registered)


def decisions(evidence: Sequence[QueryEvidence], fusion: FusionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best score, best label is right, query is registered) per query."""
    w = np.array([getattr(fusion, f) for f in FEATURES])
    best, right, registered = [], [], []
    for e in evidence:
        if not len(e.labels):
            best.append(0.0)
            right.append(False)
        else:
            scores = 1.0 / (1.0 + np.exp(-(fusion.bias + e.features @ w)))
            k = int(np.argmax(scores))
            best.append(float(scores[k]))
            right.append(e.labels[k] == e.truth)
        registered.append(bool(e.truth))
    return np.array(best), np.array(right), np.array(registered)


def choose_threshold(evidence: Sequence[QueryEvidence], fusion: FusionConfig, target_far: float) -> tuple[float, float, float, float]:
    """Lowest threshold whose false-accept rate is within `target_far`.

    False-accept rate as BENCHMARK.md defines it: the share of unregistered
    queries answered `matched`. Returns (threshold, far, recall, precision);
    precision also counts registered queries matched to the wrong label.
    """
    best, right, registered = decisions(evidence, fusion)
    unregistered = ~registered
    for t in np.unique(np.concatenate([best, [1.0]])):
        accepted = best >= t
        far = (accepted & unregistered).sum() / max(unregistered.sum(), 1)
        if far <= target_far:
            recall = (accepted & right & registered).sum() / max(registered.sum(), 1)
            precision = (accepted & right).sum() / max(accepted.sum(), 1)
            return float(t), float(far), float(recall), float(precision)
    return 1.0, 0.0, 0.0, 1.0


def format_yaml(cal: Calibration, benches: Sequence[Path], target_far: float) -> str:
    f = cal.fusion
    return (
        f"# calibrated on {', '.join(b.name for b in benches)}: {cal.registered} registered and {cal.unregistered} "
        f"unregistered queries; false accepts {cal.false_accept_rate:.4f} (target {target_far}), "
        f"recall {cal.recall:.3f}, precision {cal.precision:.3f}\n"
        f"accept_confidence: {cal.accept_confidence:.4f}\n"
        f"fusion: {{bias: {f.bias}, similarity: {f.similarity}, svc_vote: {f.svc_vote}, inliers: {f.inliers}, lbp_distance: {f.lbp_distance}}}\n"
    )


def write_into(config_file: Path, cal: Calibration, benches: Sequence[Path], target_far: float) -> None:
    """Replace `matcher.decide`'s accept_confidence and fusion weights in `config_file`, keeping comments."""
    text = config_file.read_text(encoding="utf-8")
    f = cal.fusion
    note = (
        f"# answer `matched` when confidence >= this; calibrated by `teaprint calibrate` on "
        f"{', '.join(b.name for b in benches)}: FAR {cal.false_accept_rate:.4f} (target {target_far}), recall {cal.recall:.3f}"
    )
    text, n = re.subn(
        r"(\n    accept_confidence: )([-0-9.e]+)( *)#[^\n]*", lambda m: _keep_column(m, f"{cal.accept_confidence:.4f}") + note, text
    )
    for name in ("bias", *FEATURES):
        text, k = re.subn(rf"(\n      {name}: )([-0-9.e]+)( *)", lambda m: _keep_column(m, str(getattr(f, name))), text)
        n += k
    if n != 1 + 1 + len(FEATURES):
        raise ValueError(f"{config_file}: could not find matcher.decide.accept_confidence and every fusion weight")
    config_file.write_text(text, encoding="utf-8")


def _keep_column(match: re.Match[str], value: str) -> str:
    """`prefix value` padded so that the comment after it stays in its column."""
    width = len(match.group(2)) + len(match.group(3))
    return f"{match.group(1)}{value}{' ' * max(1, width - len(value))}"


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benches", type=Path, nargs="+", metavar="BENCH_DIR", help="held-out benchmark folders (not the evaluation ones)")
    parser.add_argument("--target-far", type=float, default=0.01, help="false-accept rate the threshold must meet (default 0.01)")
    parser.add_argument("--write", type=Path, default=None, metavar="CONFIG", help="store the result in this YAML config file")


def run_calibrate(args: argparse.Namespace, config: Config) -> int:
    from pipeline.evaluation.bench import load_benchmark, run_benchmark
    from pipeline.evaluation.variants import VARIANTS

    full = VARIANTS["embedding+lbp+verify"]
    evidence: list[QueryEvidence] = []
    for bench_dir in args.benches:
        run = run_benchmark(load_benchmark(bench_dir, config), config, args.root, [full])
        evidence += [query_evidence(r, t) for r, t in zip(run.variants[0].results, run.bench.truth) if r.status != "rejected"]
    cal = fit(evidence, args.target_far)
    print(format_yaml(cal, args.benches, args.target_far), end="")
    if args.write is not None:
        write_into(args.write, cal, args.benches, args.target_far)
        print(f"written to {args.write}")
    return 0
