"""Matcher stages one by one, on plain arrays."""

from __future__ import annotations

import numpy as np

from pipeline.matcher import decide, refine, shortlist
from pipeline.matcher.decide import similarity_confidence


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


CATALOG = np.stack([unit([1, 0, 0]), unit([0.9, 0.1, 0]), unit([0, 1, 0]), unit([0.8, 0, 0.2])])


def test_shortlist_keeps_top_k_above_threshold_best_first() -> None:
    short = shortlist(unit([1, 0, 0]), CATALOG, top_k=2, threshold=0.9)
    assert short.indices.tolist() == [0, 1]
    assert short.similarities[0] >= short.similarities[1] >= 0.9
    assert short.best_rejected is not None and short.best_rejected < 0.9


def test_shortlist_threshold_can_leave_it_empty() -> None:
    short = shortlist(unit([0, 0, 1]), CATALOG, top_k=5, threshold=0.99)
    assert len(short) == 0
    assert short.best_rejected is not None


def test_shortlist_of_empty_catalog() -> None:
    short = shortlist(unit([1, 0, 0]), np.zeros((0, 3), np.float32), top_k=5, threshold=0.5)
    assert len(short) == 0 and short.best_rejected is None


def hist(peak: int, n: int = 10, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    h = np.full(n, 0.02, np.float32) + np.random.default_rng(seed).random(n).astype(np.float32) * noise
    h[peak] += 1.0
    return h / h.sum()


def test_refine_svc_picks_the_texture_label() -> None:
    lbps = np.stack([hist(1, seed=1, noise=0.05), hist(1, seed=2, noise=0.05), hist(7, seed=3, noise=0.05), hist(7, seed=4, noise=0.05)])
    labels = ["a", "a", "b", "b"]
    result = refine(hist(7, seed=9, noise=0.05), lbps, labels)
    assert result.mode == "svc" and result.label == "b"
    assert result.kept.tolist() == [2, 3]
    assert result.lbp_distances.shape == (4,)
    assert result.lbp_distances[2] < result.lbp_distances[0]


def test_refine_one_sample_per_label() -> None:
    result = refine(hist(2), np.stack([hist(2), hist(8)]), ["a", "b"])
    assert result.mode == "svc" and result.label == "a"


def test_refine_single_label_needs_no_classifier() -> None:
    result = refine(hist(2), np.stack([hist(2), hist(8)]), ["a", "a"])
    assert result.mode == "single_label" and result.label == "a" and result.kept.tolist() == [0, 1]


def test_refine_empty_shortlist() -> None:
    result = refine(hist(2), np.zeros((0, 10), np.float32), [])
    assert result.mode == "empty" and result.label is None


def test_decide_matched_when_stages_agree() -> None:
    short = shortlist(unit([1, 0, 0]), CATALOG, top_k=3, threshold=0.8)
    labels = ["a", "a", "b"][: len(short)]
    refined = refine(hist(1), np.stack([hist(1), hist(1), hist(5)])[: len(short)], labels)
    decision = decide(short, refined, labels)
    assert decision.status == "matched" and decision.label == "a"
    assert 0.5 <= decision.confidence <= 1.0
    assert decision.agreed == ("shortlist", "refine")


def test_decide_no_match_below_threshold_with_graded_confidence() -> None:
    near = decide(shortlist(unit([0.7, 0.7, 0]), CATALOG, 3, 0.99), refine(hist(1), np.zeros((0, 10), np.float32), []), [])
    far = decide(shortlist(unit([0, 0, 1]), CATALOG, 3, 0.99), refine(hist(1), np.zeros((0, 10), np.float32), []), [])
    assert near.status == far.status == "no_match" and near.label is None
    assert 0.0 <= far.confidence < near.confidence < 0.5


def test_similarity_confidence_is_monotonic_with_threshold_at_half() -> None:
    values = [similarity_confidence(s, 0.8) for s in np.linspace(-1, 1, 41)]
    assert values == sorted(values)
    assert similarity_confidence(0.8, 0.8) == 0.5 and similarity_confidence(1.0, 0.8) == 1.0
