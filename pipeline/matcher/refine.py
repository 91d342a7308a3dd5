"""Stage 2: an SVC on the shortlisted entries' LBP histograms."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from sklearn.svm import SVC

from pipeline.features.lbp import chi2_distance

RefineMode = Literal["svc", "single_label", "empty", "disabled"]


@dataclass(frozen=True)
class Refinement:
    """What the texture stage concluded about a shortlist.

    Attributes
    ----------
    label : str or None
        The SVC's predicted label (None when the shortlist was empty).
    kept : ndarray, shape (M,), dtype int64
        Positions within the shortlist (not catalog rows) whose label is
        `label`, in shortlist order.
    lbp_distances : ndarray, shape (K,), dtype float32
        Chi-square distance of the query's LBP histogram to every shortlisted
        entry's, in shortlist order.
    mode : {"svc", "single_label", "empty", "disabled"}
        How the label was reached: a fitted SVC; the only label present (no
        classifier can be fitted on one class); nothing to refine; stage off.
    votes : dict
        Label -> fraction of shortlisted entries carrying it.
    """

    label: str | None
    kept: np.ndarray
    lbp_distances: np.ndarray
    mode: RefineMode
    votes: dict[str, float]

    def report(self) -> dict[str, Any]:
        """The stage's evidence for `stages.refine` of the result."""
        return {"mode": self.mode, "svc_label": self.label, "votes": self.votes, "kept": int(self.kept.size)}


def refine(
    query_lbp: np.ndarray,
    lbps: np.ndarray,
    labels: Sequence[str],
    c: float = 100.0,
    kernel: str = "rbf",
    enabled: bool = True,
) -> Refinement:
    """Predict the query's label from the shortlisted entries' textures.

    Parameters
    ----------
    query_lbp : ndarray, shape (B,), dtype float32
    lbps : ndarray, shape (K, B), dtype float32
        LBP histograms of the shortlisted entries, best first.
    labels : sequence of str, length K
    c : float
        SVC regularisation (seed default 100).
    kernel : str
    enabled : bool
        When False, the label is the first shortlisted entry's, and only
        distances are reported.
    """
    k = len(labels)
    distances = chi2_distance(query_lbp, lbps) if k else np.zeros(0, np.float32)
    votes = {lab: labels.count(lab) / k for lab in dict.fromkeys(labels)} if k else {}
    if k == 0:
        return Refinement(None, np.zeros(0, np.int64), distances, "empty", votes)
    if not enabled:
        label, mode = labels[0], "disabled"
    elif len(votes) == 1:
        label, mode = labels[0], "single_label"
    else:
        classifier = SVC(C=c, kernel=kernel, gamma="scale")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            classifier.fit(lbps, list(labels))
        label, mode = str(classifier.predict(query_lbp[None])[0]), "svc"
    kept = np.array([i for i, lab in enumerate(labels) if lab == label], dtype=np.int64)
    return Refinement(label, kept, distances, mode, votes)
