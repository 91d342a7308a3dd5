"""Stage 1: the shortlist, from the embedding and widened by other sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pipeline.features.lbp import chi2_distance


@dataclass(frozen=True)
class Shortlist:
    """Catalog rows that pass the embedding stage, best first.

    Attributes
    ----------
    indices : ndarray, shape (K,), dtype int64
        Rows of the catalog matrices, at most `top_k`, similarity >= threshold.
    similarities : ndarray, shape (K,), dtype float32
        Cosine similarity of each row to the query, in [-1, 1].
    threshold : float
    best_rejected : float or None
        Highest similarity that fell below the threshold (how close a miss was).
    sources : tuple of str
        Per entry: "embedding" (above the threshold), "widened" (below it, let
        in to reach `min_candidates`), "lbp" (nearest texture), "votes",
        "both", or "deepened" (added by the matcher's second verification pass).
    """

    indices: np.ndarray
    similarities: np.ndarray
    threshold: float
    best_rejected: float | None
    sources: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.indices.size)


def shortlist(
    query: np.ndarray, embeddings: np.ndarray, top_k: int, threshold: float, min_candidates: int = 0, floor: float = -1.0,
    alive: np.ndarray | None = None,
) -> Shortlist:
    """Keep the `top_k` catalog entries most similar to `query`, at or above `threshold`.

    When fewer than `min_candidates` pass, the next most similar entries at or
    above `floor` fill in (source "widened"): the threshold is calibrated for
    a final answer, and used as a gate it dropped the right entry for 4 in 10
    re-photographed cakes that verification would have confirmed.

    Parameters
    ----------
    query : ndarray, shape (D,), dtype float32, unit norm
    embeddings : ndarray, shape (N, D), dtype float32, rows unit norm
    top_k : int
    threshold : float
        Cosine similarity in [-1, 1].
    min_candidates : int
        Widen to at least this many entries (at most `top_k`).
    floor : float
        Never widen below this similarity.
    alive : ndarray, shape (N,), dtype bool, optional
        Rows that may be returned (a catalog snapshot's live rows); all when None.
    """
    if alive is not None and not alive.any() or embeddings.shape[0] == 0:
        return Shortlist(np.zeros(0, np.int64), np.zeros(0, np.float32), threshold, None)
    sims = (embeddings @ query).astype(np.float32)
    if alive is not None:
        sims[~alive] = -np.inf  # dead rows sort last and never pass any threshold or floor
    k = min(top_k, sims.size)
    # Partition first: a full sort of 100k similarities cost more than the rest of the search.
    top = np.argpartition(-sims, k - 1)[:k] if 0 < k < sims.size else np.arange(sims.size)
    top = top[np.lexsort((top, -sims[top]))]  # ties by row (registration order), as every search backend orders them
    top = top[np.isfinite(sims[top])]
    below = (sims < threshold) & np.isfinite(sims)
    best_rejected = float(sims[below].max()) if below.any() else None
    return shortlist_of(top, sims[top], top_k, threshold, min_candidates, floor, best_rejected)


def shortlist_of(
    rows: np.ndarray, sims: np.ndarray, top_k: int, threshold: float, min_candidates: int = 0, floor: float = -1.0,
    best_rejected: float | None = None,
) -> Shortlist:
    """`shortlist` from the nearest rows a search found (any backend), most similar first.

    Parameters
    ----------
    rows : ndarray, shape (K,), dtype int64
        Live catalog rows, at least `top_k` of them when the catalog has as many.
    sims : ndarray, shape (K,), dtype float32
        Their cosine similarity to the query, descending.
    best_rejected : float or None
        The highest similarity below `threshold` over the catalog; None: the
        best below it among `rows`.
    """
    if best_rejected is None:
        under = sims[sims < threshold]
        best_rejected = float(under.max()) if under.size else None
    rows, sims = np.asarray(rows, np.int64)[:top_k], np.asarray(sims, np.float32)[:top_k]
    passing = rows[sims >= threshold]
    sources = ["embedding"] * int(passing.size)
    wanted = min(min_candidates, top_k) - passing.size
    if wanted > 0:
        extra = rows[(sims < threshold) & (sims >= floor)][:wanted]
        passing = np.concatenate([passing, extra])
        sources += ["widened"] * int(extra.size)
    lookup = dict(zip(rows.tolist(), sims.tolist()))
    return Shortlist(passing.astype(np.int64), np.array([lookup[r] for r in passing.tolist()], np.float32), threshold,
                     best_rejected, tuple(sources))


LBP_PREFILTER = 4096
"""Rows nearest in Hellinger distance that the LBP source ranks by chi-square in a large catalog."""


def lbp_nearest(query_lbp: np.ndarray, lbps: np.ndarray, top_k: int, alive: np.ndarray | None = None,
                lbps_sqrt: np.ndarray | None = None, exact_up_to: int = LBP_PREFILTER,
                candidates: np.ndarray | None = None) -> np.ndarray:
    """Rows of the `top_k` LBP histograms nearest the query's (chi-square), nearest first.

    Up to `exact_up_to` rows every chi-square distance is computed. Above it
    (chi-square over 1M histograms cost ~0.3 s), the `exact_up_to` rows
    nearest in Hellinger distance (one matrix product with `lbps_sqrt`) are
    ranked by chi-square: the two distances agree closely on histograms.

    Parameters
    ----------
    query_lbp : ndarray, shape (B,), dtype float32
    lbps : ndarray, shape (N, B), dtype float32
    alive : ndarray, shape (N,), dtype bool, optional
        Rows that may be returned; all when None.
    lbps_sqrt : ndarray, shape (N, B), dtype float32, optional
        `sqrt(lbps)`, needed for the prefilter above `exact_up_to` rows.
    candidates : ndarray, shape (M,), dtype int64, optional
        Live rows an index found nearest in Hellinger distance
        (`pipeline.search.ann.AnnIndex` on `lbps_sqrt`): ranked instead of
        the prefilter's product over every row.

    Returns
    -------
    ndarray, shape (<= top_k,), dtype int64
    """
    if candidates is not None:
        rows = np.sort(np.asarray(candidates, np.int64))
    else:
        rows = np.arange(lbps.shape[0]) if alive is None else np.flatnonzero(alive)
    if top_k <= 0 or rows.size == 0:
        return np.zeros(0, np.int64)
    if candidates is None and rows.size > exact_up_to and lbps_sqrt is not None:
        closeness = lbps_sqrt @ np.sqrt(np.maximum(query_lbp, 0)).astype(np.float32)
        if alive is not None:
            closeness[~alive] = -np.inf
        rows = np.sort(np.argpartition(-closeness, exact_up_to)[:exact_up_to])
    distances = chi2_distance(query_lbp, lbps[rows])
    return rows[np.argsort(distances, kind="stable")[:top_k]].astype(np.int64)


def widen(short: Shortlist, extras: Sequence[tuple[str, np.ndarray]], query: np.ndarray, embeddings: np.ndarray) -> Shortlist:
    """Merge other sources' rows into the shortlist, taking from each source in turn.

    The embedding can miss the right entry (bare textures, heavy tilt), and the
    later stages only see what the shortlist passes on; taking turns keeps the
    best of every source near the front, where verification looks. An entry
    proposed by more than one source is marked "both".

    Parameters
    ----------
    extras : sequence of (source name, rows best first)
    """
    lists = [list(zip(short.indices.tolist(), list(short.sources) or ["embedding"] * len(short)))]
    lists += [[(int(r), name) for r in rows] for name, rows in extras if rows.size]
    if len(lists) == 1:
        return short
    order: list[int] = []
    sources: dict[int, str] = {}
    for k in range(max(len(items) for items in lists)):
        for items in lists:
            if k >= len(items):
                continue
            row, source = items[k]
            if row in sources:
                if sources[row] != source:
                    sources[row] = "both"
                continue
            sources[row] = source
            order.append(row)
    indices = np.array(order, dtype=np.int64)
    sims = (embeddings[indices] @ query).astype(np.float32)
    return Shortlist(indices, sims, short.threshold, short.best_rejected, tuple(sources[r] for r in order))


@dataclass(frozen=True)
class Candidates:
    """The shortlist stage's result: the embedding shortlist and what the other sources added.

    Attributes
    ----------
    searched : int
        Catalog entries searched.
    embedding : Shortlist
        The embedding stage alone (`shortlist`).
    widened : Shortlist
        After `widen`: the candidates every later stage sees, in this order.
    top_k, lbp_top_k, vote_top_k : int
        How many each source could propose (0: source off).
    """

    searched: int
    embedding: Shortlist
    widened: Shortlist
    top_k: int
    lbp_top_k: int
    vote_top_k: int

    def report(self) -> dict[str, Any]:
        """The stage's evidence for `stages.shortlist` of the result."""
        return {
            "candidates": self.searched,
            "kept": len(self.embedding),
            "widened_to": len(self.widened),
            "threshold": self.embedding.threshold,
            "top_k": self.top_k,
            "lbp_top_k": self.lbp_top_k,
            "vote_top_k": self.vote_top_k,
            "best_rejected_similarity": self.embedding.best_rejected,
        }
