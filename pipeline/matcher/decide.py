"""Stage 3: one decision from the stages' evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.matcher.refine import Refinement
from pipeline.matcher.shortlist import Shortlist


@dataclass(frozen=True)
class Decision:
    """The answer: status, label, confidence, and the shortlist order to report.

    Attributes
    ----------
    status : {"matched", "no_match"}
    label : str or None
    confidence : float in [0, 1]
        By `decide` (verification off): the cosine of the chosen label's first
        shortlisted entry mapped so that the shortlist threshold gives 0.5 and
        a perfect match 1, discounted by up to a quarter when the texture stage
        overruled the embedding's first choice. By `fuse` (verification on):
        the chosen label's fused score.
    order : ndarray of int64
        Positions within the shortlist, best first: the entries of the chosen
        label, then the rest.
    agreed : tuple of str
        Stages whose first choice is the final label.
    """

    status: Literal["matched", "no_match"]
    label: str | None
    confidence: float
    order: np.ndarray
    agreed: tuple[str, ...]


def similarity_confidence(similarity: float, threshold: float) -> float:
    """Map a cosine similarity onto [0, 1] with the threshold at 0.5."""
    if similarity >= threshold:
        return 0.5 + 0.5 * (similarity - threshold) / max(1.0 - threshold, 1e-6)
    return 0.5 * max(similarity, 0.0) / max(threshold, 1e-6)


def decide(short: Shortlist, refined: Refinement, labels: list[str], accept_confidence: float = 0.5) -> Decision:
    """Combine the shortlist and refinement into one answer.

    Parameters
    ----------
    short : Shortlist
    refined : Refinement
    labels : list of str
        Labels of the shortlisted entries, in shortlist order.
    accept_confidence : float
        `matched` when the confidence reaches this.
    """
    if len(short) == 0 or refined.label is None:
        near = short.best_rejected if short.best_rejected is not None else 0.0
        return Decision("no_match", None, similarity_confidence(near, short.threshold), np.zeros(0, np.int64), ())
    best = int(refined.kept[0])
    base = similarity_confidence(float(short.similarities[best]), short.threshold)
    top_agrees = labels[0] == refined.label
    agreement = 1.0 if top_agrees else refined.votes.get(refined.label, 0.0)
    confidence = float(np.clip(base * (0.75 + 0.25 * agreement), 0.0, 1.0))
    kept = set(refined.kept.tolist())
    rest = np.array([i for i in range(len(short)) if i not in kept], dtype=np.int64)
    order = np.concatenate([refined.kept, rest])
    agreed = ("shortlist", "refine") if top_agrees else ("refine",)
    status = "matched" if confidence >= accept_confidence else "no_match"
    return Decision(status, refined.label if status == "matched" else None, confidence, order, agreed)
