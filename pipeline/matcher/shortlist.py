"""Stage 1: embedding cosine shortlist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """

    indices: np.ndarray
    similarities: np.ndarray
    threshold: float
    best_rejected: float | None

    def __len__(self) -> int:
        return int(self.indices.size)


def shortlist(query: np.ndarray, embeddings: np.ndarray, top_k: int, threshold: float) -> Shortlist:
    """Keep the `top_k` catalog entries most similar to `query`, at or above `threshold`.

    Parameters
    ----------
    query : ndarray, shape (D,), dtype float32, unit norm
    embeddings : ndarray, shape (N, D), dtype float32, rows unit norm
    top_k : int
    threshold : float
        Cosine similarity in [-1, 1].
    """
    if embeddings.shape[0] == 0:
        return Shortlist(np.zeros(0, np.int64), np.zeros(0, np.float32), threshold, None)
    sims = (embeddings @ query).astype(np.float32)
    order = np.argsort(-sims, kind="stable")
    passing = order[sims[order] >= threshold][:top_k]
    failing = order[sims[order] < threshold]
    best_rejected = float(sims[failing[0]]) if failing.size else None
    return Shortlist(passing.astype(np.int64), sims[passing], threshold, best_rejected)
