"""Final stage with verification on: one calibrated decision from all evidence.

Each candidate label is described by four numbers: its best embedding cosine,
whether the LBP/SVC stage chose it, the most RANSAC inliers any of its entries
reached, and its smallest LBP chi-square distance. A logistic model turns them
into a probability-like score; its weights and the accept threshold are fitted
on held-out data (`pipeline.evaluation.calibrate`) and stored in config, so the
threshold carries a measured false-accept rate. With no inliers at all (bare
leaf textures) the texture and embedding terms still decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.config import FusionConfig
from pipeline.matcher.decide import Decision


@dataclass(frozen=True)
class LabelEvidence:
    """Evidence for one candidate label; `position` is its best candidate."""

    label: str
    position: int
    similarity: float
    svc_vote: float
    inliers: int
    lbp_distance: float

    def features(self) -> np.ndarray:
        """The fusion model's inputs, shape (4,), in `FEATURES` order."""
        return np.array([self.similarity, self.svc_vote, math.log1p(self.inliers), self.lbp_distance], dtype=np.float64)


FEATURES = ("similarity", "svc_vote", "inliers", "lbp_distance")


def gather(
    labels: Sequence[str],
    similarities: np.ndarray,
    lbp_distances: np.ndarray,
    inliers: Sequence[int],
    svc_label: str | None,
) -> list[LabelEvidence]:
    """Per-label evidence from per-candidate evidence (all in candidate order)."""
    out: dict[str, LabelEvidence] = {}
    for i, label in enumerate(labels):
        current = out.get(label)
        sim, dist, inl = float(similarities[i]), float(lbp_distances[i]), int(inliers[i])
        if current is None:
            out[label] = LabelEvidence(label, i, sim, float(label == svc_label), inl, dist)
            continue
        best_position = i if inl > current.inliers or (inl == current.inliers and sim > current.similarity) else current.position
        out[label] = LabelEvidence(label, best_position, max(sim, current.similarity), current.svc_vote,
                                   max(inl, current.inliers), min(dist, current.lbp_distance))
    return list(out.values())


def score(evidence: LabelEvidence, weights: FusionConfig) -> float:
    """Logistic score in (0, 1)."""
    w = np.array([getattr(weights, name) for name in FEATURES])
    z = weights.bias + float(w @ evidence.features())
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def fuse(
    evidence: list[LabelEvidence],
    labels: Sequence[str],
    weights: FusionConfig,
    accept_confidence: float,
    first_choices: dict[str, str | None],
) -> tuple[Decision, dict[str, float]]:
    """Pick the best-scoring label; order candidates by their label's score.

    Parameters
    ----------
    first_choices : dict
        Stage name -> the label that stage ranked first (None if it abstained),
        to report which stages agreed with the decision.

    Returns
    -------
    (Decision, scores by label)
    """
    if not evidence:
        return Decision("no_match", None, 0.0, np.zeros(0, np.int64), ()), {}
    scores = {e.label: score(e, weights) for e in evidence}
    best = max(evidence, key=lambda e: (scores[e.label], e.inliers, e.similarity))
    order = sorted(range(len(labels)), key=lambda i: (-scores[labels[i]], i != best.position if labels[i] == best.label else 0, i))
    confidence = scores[best.label]
    agreed = tuple(stage for stage, label in first_choices.items() if label == best.label)
    status = "matched" if confidence >= accept_confidence else "no_match"
    return Decision(status, best.label if status == "matched" else None, confidence, np.array(order, dtype=np.int64), agreed), scores
