"""Benchmark figures from per-query outcomes (definitions: BENCHMARK.md).

Everything here is a pure function of a sequence of `Outcome` tuples, one per
query, so the figures can be checked on hand-made cases. A plain tuple
``(truth, predicted, status, confidence, shortlist)`` is accepted wherever an
`Outcome` is.

Conventions
-----------
* ``truth == ""`` marks a query whose object is not in the catalog
  ("unregistered"); any other value is a registered query's label.
* ``predicted`` is the label of the best-ranked match (the first entry of the
  result's ``matches``), whatever the status; None when nothing passed the
  shortlist or the photo was unreadable.
* A figure whose denominator is empty is None (JSON null, "n/a" in tables),
  never 0 or 1: no unregistered queries means no false-accept rate, and no
  `matched` answer means no precision.
* The threshold sweep (`far_recall_curve`, `recall_at_far`) scores each query
  by its final confidence with its predicted label: at threshold t a query is
  accepted when it has a predicted label and ``confidence >= t``. A query with
  no predicted label is never accepted. The false-accept rate is over
  unregistered queries, the recall over registered ones (accepted with the
  right label). This is the same protocol as ``shared/bench/baselines.py``
  (accept only scores above the (1 - 1%) quantile of the unregistered scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

MAX_FAR = 0.01  # the false-accept rate that `recall_at_far1` allows


class Outcome(NamedTuple):
    """What the pipeline answered for one query, next to the truth.

    Attributes
    ----------
    truth : str
        The right label; "" when the object is not in the catalog.
    predicted : str or None
        Label of the best-ranked match (None: no match passed, or unreadable).
    status : str
        "matched", "no_match" or "rejected".
    confidence : float
        Final confidence in [0, 1].
    shortlist : tuple of str
        Labels of the entries the shortlist passed on, in the order the
        result reports them (`MatchResult.matches`).
    """

    truth: str
    predicted: str | None
    status: str
    confidence: float
    shortlist: tuple[str, ...] = ()

    @property
    def registered(self) -> bool:
        """Whether the query's object is in the catalog."""
        return self.truth != ""

    @property
    def correct(self) -> bool:
        """Registered and the best-ranked label is right."""
        return self.registered and self.predicted == self.truth

    @property
    def accepted(self) -> bool:
        """Answered `matched` with the configured thresholds."""
        return self.status == "matched"


@dataclass(frozen=True)
class Figures:
    """The benchmark figures of one run (None: empty denominator).

    Attributes
    ----------
    queries, registered, unregistered, rejected : int
        Counts; `rejected` are unreadable query files (counted as wrong).
    matched : int
        Queries answered `matched`.
    top1 : float or None
        Registered queries whose best-ranked match has the right label.
    k : int
        The K of `recall_at_k`.
    recall_at_k : float or None
        Registered queries with the right label among the first K matches.
    precision : float or None
        `matched` answers whose label is right (over all `matched` answers).
    recall : float or None
        Registered queries answered `matched` with the right label.
    false_accept_rate : float or None
        Unregistered queries answered `matched`.
    recall_at_far1 : float or None
        Best recall over confidence thresholds whose false-accept rate <= 1%.
    threshold_at_far1 : float or None
        The highest confidence threshold that reaches it (inf: accept nothing).
    """

    queries: int
    registered: int
    unregistered: int
    rejected: int
    matched: int
    top1: float | None
    k: int
    recall_at_k: float | None
    precision: float | None
    recall: float | None
    false_accept_rate: float | None
    recall_at_far1: float | None
    threshold_at_far1: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; an infinite threshold becomes the string "inf" (valid JSON)."""
        data = asdict(self)
        if data["threshold_at_far1"] is not None and not np.isfinite(data["threshold_at_far1"]):
            data["threshold_at_far1"] = "inf"
        return data


@dataclass(frozen=True)
class CurvePoint:
    """One confidence threshold of the sweep and what it gives."""

    threshold: float
    false_accept_rate: float
    recall: float


def as_outcomes(rows: Iterable[Sequence[Any]]) -> list[Outcome]:
    """Coerce tuples (or `Outcome`s) to `Outcome`s, shortlist as a tuple."""
    out = []
    for row in rows:
        o = row if isinstance(row, Outcome) else Outcome(*row)
        out.append(o._replace(shortlist=tuple(o.shortlist), confidence=float(o.confidence)))
    return out


def ratio(hits: int, total: int) -> float | None:
    """`hits / total`, or None when `total` is 0."""
    return hits / total if total else None


def top1(outcomes: Sequence[Outcome]) -> float | None:
    """Fraction of registered queries whose best-ranked label is right."""
    reg = [o for o in as_outcomes(outcomes) if o.registered]
    return ratio(sum(o.correct for o in reg), len(reg))


def recall_at_k(outcomes: Sequence[Outcome], k: int) -> float | None:
    """Fraction of registered queries with the right label among the first `k` shortlisted."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    reg = [o for o in as_outcomes(outcomes) if o.registered]
    return ratio(sum(o.truth in o.shortlist[:k] for o in reg), len(reg))


def precision(outcomes: Sequence[Outcome]) -> float | None:
    """Fraction of `matched` answers with the right label (unregistered: always wrong)."""
    acc = [o for o in as_outcomes(outcomes) if o.accepted]
    return ratio(sum(o.correct for o in acc), len(acc))


def recall(outcomes: Sequence[Outcome]) -> float | None:
    """Fraction of registered queries answered `matched` with the right label."""
    reg = [o for o in as_outcomes(outcomes) if o.registered]
    return ratio(sum(o.accepted and o.correct for o in reg), len(reg))


def false_accept_rate(outcomes: Sequence[Outcome]) -> float | None:
    """Fraction of unregistered queries answered `matched`."""
    unreg = [o for o in as_outcomes(outcomes) if not o.registered]
    return ratio(sum(o.accepted for o in unreg), len(unreg))


def _scores(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, registered, correct) arrays; no predicted label scores -inf."""
    score = np.array([o.confidence if o.predicted is not None else -np.inf for o in outcomes], dtype=np.float64)
    registered = np.array([o.registered for o in outcomes], dtype=bool)
    correct = np.array([o.correct for o in outcomes], dtype=bool)
    return score, registered, correct


def far_recall_curve(outcomes: Sequence[Outcome]) -> list[CurvePoint]:
    """Recall and false-accept rate at every distinct confidence threshold.

    Returns
    -------
    list of CurvePoint
        Highest threshold first, starting with ``inf`` (nothing accepted),
        so false-accept rate and recall never decrease along the list. Empty
        when there are no registered or no unregistered queries.
    """
    items = as_outcomes(outcomes)
    score, registered, correct = _scores(items)
    n_reg, n_unreg = int(registered.sum()), int((~registered).sum())
    if not n_reg or not n_unreg:
        return []
    finite = np.unique(score[np.isfinite(score)])[::-1]
    thresholds = np.concatenate([[np.inf], finite])
    accepted = score[None, :] >= thresholds[:, None]
    far = (accepted & ~registered).sum(1) / n_unreg
    rec = (accepted & correct).sum(1) / n_reg
    return [CurvePoint(float(t), float(f), float(r)) for t, f, r in zip(thresholds, far, rec)]


def recall_at_far(outcomes: Sequence[Outcome], max_far: float = MAX_FAR) -> tuple[float | None, float | None]:
    """The best recall whose false-accept rate is <= `max_far`, and its threshold.

    Returns
    -------
    (recall, threshold) : tuple of float or None
        None, None when there are no registered or no unregistered queries.
        The threshold is the highest one reaching that recall (so the fewest
        false accepts at that recall); ``inf`` when the recall is 0.
    """
    curve = far_recall_curve(outcomes)
    allowed = [p for p in curve if p.false_accept_rate <= max_far + 1e-12]
    if not allowed:
        return None, None
    best = max(allowed, key=lambda p: (p.recall, p.threshold))
    return best.recall, best.threshold


def compute_figures(outcomes: Iterable[Sequence[Any]], k: int = 5, max_far: float = MAX_FAR) -> Figures:
    """All figures of BENCHMARK.md (except timings) for one run.

    Parameters
    ----------
    outcomes : iterable of Outcome or tuple
        One per query: (truth, predicted, status, confidence, shortlist).
    k : int
        The K of recall@K.
    max_far : float
        False-accept rate allowed for `recall_at_far1`.
    """
    items = as_outcomes(outcomes)
    r_far, t_far = recall_at_far(items, max_far)
    return Figures(
        queries=len(items),
        registered=sum(o.registered for o in items),
        unregistered=sum(not o.registered for o in items),
        rejected=sum(o.status == "rejected" for o in items),
        matched=sum(o.accepted for o in items),
        top1=top1(items),
        k=k,
        recall_at_k=recall_at_k(items, k),
        precision=precision(items),
        recall=recall(items),
        false_accept_rate=false_accept_rate(items),
        recall_at_far1=r_far,
        threshold_at_far1=t_far,
    )
