"""Final stage with verification on: one calibrated decision from all evidence.

Four experts, each a logistic model fitted on held-out data
(`pipeline.evaluation.calibrate`), score every candidate label (the fourth,
embedding, is described below the first three):

* **geometric**: the label's RANSAC inliers, their margin over the best
  other label's (what chance alone reaches against this very query: two cakes
  of one tea share enough texture for a handful of stray inliers), and the
  share of the ratio-test matches the fit explains (a re-shot's few matches
  are nearly all inliers; a stranger whose print or grid repeats the
  registered cake's gets its inliers out of many more matches, e.g. 10 of 32
  where the hardest right cakes had 8 of 11); and, on a photo with no cake
  found, the relief correlation (`pipeline.features.surface`: the label's
  sharpest peak and its margin over the best other label's), its own logistic
  model: a relit bare surface keeps no keypoint but its relief, which a
  stranger of the same kind does not share. The expert's probability is the
  larger of the two models' (two measurements of one thing, the arrangement);
* **appearance**: the label's best embedding cosine and its margin over the
  best other label's, whether the LBP/SVC stage chose it, and its smallest
  LBP chi-square distance;
* **texture**: the LBP evidence alone (the SVC vote, the LBP distance and its
  margin over the closest other label): bare leaf textures under another
  light, where no keypoint survives and the embedding finds every relit
  texture alike. Fitted inside the appearance expert, the LBP evidence is
  outweighed by the cosine that cake photos teach, and a texture's clear LBP
  match stays below the most cosine-alike impostor. It speaks only for the
  appearance expert's first choice: it may confirm that label, never pick
  one of its own (on cakes the LBP-nearest label is usually another cake, and
  a texture expert free to choose ranked it above the right cake's few
  inliers: hard discs' top1 fell from 0.98 to 0.88).

On a bare photo a label's confidence is the largest of the three probabilities, so a stage
that carries nothing on some kind of photo cannot sink another: a blurred,
tilted re-shot whose embedding is lost keeps its inliers, and a relit texture
with no inliers keeps its LBP match. The geometric expert's own false-accept
point is put at 0.5 on the calibration data; the appearance and texture
experts are shifted together until the bare photos' combined confidence has
its false-accept point there (`pipeline.evaluation.calibrate.align_experts`);
the accept threshold is fitted on the same held-out data for a stated
false-accept rate.

The texture expert was fitted and aligned on bare textures, and only there is
its probability a confidence: on a photo in which the locator finds a cake
(`matcher.decide.texture_needs_bare_photo`) it still ranks the labels, but
is no confidence. Counted on cake
photos it lifted strangers' cakes with no inlier to 0.27-0.41 while the right
cakes of the hardest re-shots scored below that (hard discs: recall at 1%
false accepts 0.863 with it, 0.892 without; top1 and the other benchmarks
unchanged but for one KTH photo in which the locator sees a cake).

For the same reason the appearance expert, which reads the LBP evidence too,
is a confidence only on bare photos. On a photo with a cake a fourth expert
speaks in its place:

* **embedding**: the label's best embedding cosine and its margin over the
  best other label's, nothing else. A thumb, a glare spot or blur change a
  cake's LBP histogram more than another cake does: on hard discs the right
  cakes with no inlier had LBP margins down to about -2 (another label's
  histogram up to ~7x closer), while a stranger's cake scored on a close
  histogram. With the
  appearance expert as the confidence on cakes, hard discs' recall at 1 %
  false accepts was 0.892; with the embedding expert, 0.902 (easy discs
  0.931 -> 0.971; README "Accuracy").

When a second verification pass (`matcher.verify.deepen`) verified more
candidates than the first, the geometric expert's odds are divided by how
many times more were tested (`tested`): each verified candidate is one more
chance for a stray handful of inliers (the a-contrario count of tests).
`teaprint calibrate` fits the experts and the accept point without it (the
saved answers' strangers all went through the second pass, so a count
fitted there would be learnt as "a stranger", and a stranger accepted in
the first pass never pays it): the count only lowers a second pass's
confidence, so the calibrated false-accept rate stays an upper bound. A
sibling stranger with 8 clean inliers, found among the 30 candidates of a
second pass, was accepted at 0.58 without it; no right answer of the nine
evaluation folders moved (README "Accuracy").

So a bare photo's confidence is max(geometric, appearance, texture), a
cake's is max(geometric, embedding). Labels are ranked by max(geometric,
appearance, texture) on a bare photo, which keeps the LBP evidence where it
orders labels best (KTH top1 0.78 with it, 0.75 without), and by
max(geometric, appearance) on a cake (`rank_scores`): the texture expert
speaks for the label whose histogram is nearest, and among a million cakes
of one kind some stranger's is always near, so on a cake it outranked the
right cake's geometric evidence (a hard re-shot among 1M distractors: its
cake verified with 5 inliers, geometric 0.015, behind a stranger with 0
inliers and texture 0.12; bench/README.md, issue 13). Without the texture
expert in a cake's ranking the nine evaluation folders give the same
answers' figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.config import EmbeddingWeights, FusionConfig, GeometricWeights, SurfaceWeights, TextureWeights
from pipeline.matcher.decide import Decision
from pipeline.results import MatchEvidence

GEOMETRIC_FEATURES = ("inliers", "inlier_margin", "inlier_share")
# The geometric evidence array also carries the relief correlation (`label_features`); these columns are read by
# the geometric expert's inlier model and its surface model.
GEOMETRIC_COLUMNS = (0, 1, 2)
SURFACE_FEATURES = ("surface_peak", "surface_margin")
SURFACE_COLUMNS = (3, 4)
SURFACE_SIGNS = (1, 1)
APPEARANCE_FEATURES = ("similarity", "similarity_margin", "svc_vote", "lbp_distance", "lbp_margin")
# Which way each feature may move its expert (+1 for the label, -1 against it),
# enforced when calibrating: fitted freely on a mix of cakes and bare textures,
# the LBP distance came out as "farther is better" and lifted KTH's impostors.
GEOMETRIC_SIGNS = (1, 1, 1)
APPEARANCE_SIGNS = (1, 1, 1, -1, 1)
# The texture expert reads these columns of the appearance features.
TEXTURE_FEATURES = ("svc_vote", "lbp_distance", "lbp_margin")
TEXTURE_COLUMNS = tuple(APPEARANCE_FEATURES.index(n) for n in TEXTURE_FEATURES)
TEXTURE_SIGNS = tuple(APPEARANCE_SIGNS[c] for c in TEXTURE_COLUMNS)
# The embedding expert reads these columns of the appearance features.
EMBEDDING_FEATURES = ("similarity", "similarity_margin")
EMBEDDING_COLUMNS = tuple(APPEARANCE_FEATURES.index(n) for n in EMBEDDING_FEATURES)
EMBEDDING_SIGNS = tuple(APPEARANCE_SIGNS[c] for c in EMBEDDING_COLUMNS)


@dataclass(frozen=True)
class LabelEvidence:
    """Evidence for one candidate label; `position` is its best candidate."""

    label: str
    position: int
    similarity: float
    svc_vote: float
    inliers: int
    lbp_distance: float
    ratio_matches: int = 0
    surface_peak: float = 0.0


@dataclass(frozen=True)
class LabelScore:
    """A label's expert probabilities, the score that ranks it and the confidence taken from them.

    `texture_counts` is False for a query in which a cake was found: the LBP
    evidence (appearance and texture experts) then ranks but is not a
    confidence, the embedding expert is (module docstring).
    """

    geometric: float
    appearance: float
    texture: float = 0.0
    embedding: float = 0.0
    texture_counts: bool = True

    @property
    def rank_score(self) -> float:
        """What orders the labels (`rank_scores`)."""
        return float(rank_scores(*map(np.float64, (self.geometric, self.appearance, self.texture)), self.texture_counts))

    @property
    def confidence(self) -> float:
        return float(combine(*map(np.float64, (self.geometric, self.appearance, self.texture, self.embedding)), self.texture_counts))


def rank_scores(geometric: np.ndarray, appearance: np.ndarray, texture: np.ndarray, texture_counts: bool = True) -> np.ndarray:
    """What orders a query's labels (element-wise): the most confident of the geometric, appearance and texture
    experts on a bare photo, of the geometric and appearance experts on a cake (`texture_counts` False; module
    docstring). `fuse` and `teaprint calibrate` both rank with it."""
    return np.maximum(np.maximum(geometric, appearance), texture if texture_counts else 0.0)


def combine(geometric: np.ndarray, appearance: np.ndarray, texture: np.ndarray, embedding: np.ndarray,
            texture_counts: bool = True) -> np.ndarray:
    """A label's confidence from its experts' probabilities (element-wise).

    The most confident of the geometric, appearance and texture experts; of
    the geometric and embedding experts when `texture_counts` is False (a
    cake was found: the LBP evidence only ranks). With `texture_counts`
    True this is also the rank score.
    """
    if texture_counts:
        return np.maximum(np.maximum(geometric, appearance), texture)
    return np.maximum(geometric, embedding)


def gather(
    labels: Sequence[str],
    similarities: np.ndarray,
    lbp_distances: np.ndarray,
    inliers: Sequence[int],
    svc_label: str | None,
    ratio_matches: Sequence[int] | None = None,
    surface_peaks: Sequence[float] | None = None,
) -> list[LabelEvidence]:
    """Per-label evidence from per-candidate evidence (all in candidate order).

    A label's inliers and ratio-test matches are those of its candidate with
    the most inliers; `ratio_matches` None (answers saved before it was
    reported) counts every inlier as a match. Its relief correlation is its
    sharpest candidate's (`surface_peaks`, 0 where none was measured).
    """
    out: dict[str, LabelEvidence] = {}
    for i, label in enumerate(labels):
        current = out.get(label)
        sim, dist, inl = float(similarities[i]), float(lbp_distances[i]), int(inliers[i])
        found = max(int(ratio_matches[i]), inl) if ratio_matches is not None else inl
        peak = float(surface_peaks[i]) if surface_peaks is not None else 0.0
        if current is None:
            out[label] = LabelEvidence(label, i, sim, float(label == svc_label), inl, dist, found, peak)
            continue
        more = inl > current.inliers
        best_position = i if more or (inl == current.inliers and sim > current.similarity) else current.position
        out[label] = LabelEvidence(label, best_position, max(sim, current.similarity), current.svc_vote,
                                   max(inl, current.inliers), min(dist, current.lbp_distance),
                                   found if more else current.ratio_matches, max(peak, current.surface_peak))
    return list(out.values())


def gather_answer(matches: Sequence[MatchEvidence]) -> list[LabelEvidence]:
    """Per-label evidence of an answer's offered matches (the result's `matches`, as saved), as `gather` builds it."""
    ratio = None if any(m.inliers is not None and m.ratio_matches is None for m in matches) else \
        [m.ratio_matches or 0 for m in matches]  # answers saved before ratio_matches was reported: None
    similarities = np.array([m.similarity for m in matches])
    lbp_distances = np.array([m.lbp_distance for m in matches])
    return gather([m.label for m in matches], similarities, lbp_distances, [m.inliers or 0 for m in matches],
                  matches[0].svc_label if matches else None, ratio, [m.surface_peak or 0.0 for m in matches])


def tested_ratio(verified: int, deepened: int, tries: int = 1) -> float:
    """How many times more homographies were tried than one per first-pass candidate, from `stages.verify`'s counts.

    Candidates verified over those of the first pass (1.0 without a second
    pass), times the `tries` per candidate (2 when the light-inverted
    keypoints were verified too: a stranger's best of two fits reaches a
    given inlier count about twice as often).
    """
    first = verified - deepened
    return (verified / first if deepened > 0 and first > 0 else 1.0) * max(tries, 1)


def _runner_up(values: np.ndarray, default: float) -> np.ndarray:
    """For each position, the largest value at any other position (`default` when alone)."""
    if values.size < 2:
        return np.full(values.shape, default)
    order = np.argsort(-values, kind="stable")
    first, second = values[order[0]], values[order[1]]
    out = np.full(values.shape, first)
    out[order[0]] = second
    return out


def label_features(evidence: Sequence[LabelEvidence]) -> tuple[np.ndarray, np.ndarray]:
    """The two experts' inputs for every label of one query.

    Margins compare a label with the best OTHER label of the same query. With
    a single candidate label there is nothing to compare: its inlier margin is
    its own inlier term (no other label reached any) and its similarity
    margin is 0 (no evidence either way).

    Returns
    -------
    geometric : ndarray, shape (L, 5), dtype float64
        `GEOMETRIC_FEATURES` then `SURFACE_FEATURES` (the relief correlation's peak, 0 where none was measured, and
        its margin over the best other label's).
    appearance : ndarray, shape (L, 5), dtype float64, in `APPEARANCE_FEATURES` order
    """
    if not evidence:
        return np.zeros((0, len(GEOMETRIC_FEATURES) + len(SURFACE_FEATURES))), np.zeros((0, len(APPEARANCE_FEATURES)))
    inl = np.log1p(np.array([e.inliers for e in evidence], dtype=np.float64))
    sim = np.array([e.similarity for e in evidence], dtype=np.float64)
    # log((1 + inliers) / (1 + ratio-test matches)), <= 0: guided matching can add inliers past the matches.
    found = np.log1p(np.array([max(e.ratio_matches, e.inliers) for e in evidence], dtype=np.float64))
    peak = np.array([e.surface_peak for e in evidence], dtype=np.float64)
    geometric = np.stack([inl, inl - _runner_up(inl, 0.0), inl - found, peak, peak - _runner_up(peak, 0.0)], axis=1)
    sim_margin = sim - _runner_up(sim, 0.0) if len(evidence) > 1 else np.zeros(1)
    svc = np.array([e.svc_vote for e in evidence], dtype=np.float64)
    lbp = np.array([e.lbp_distance for e in evidence], dtype=np.float64)
    # Texture distances scale with the texture; how much closer this label is
    # than the closest other one (a log ratio, Lowe's test on histograms) does not.
    log_lbp = np.log(np.maximum(lbp, 0.0) + 1e-6)
    lbp_margin = -_runner_up(-log_lbp, 0.0) - log_lbp if len(evidence) > 1 else np.zeros(1)
    return geometric, np.stack([sim, sim_margin, svc, lbp, lbp_margin], axis=1)


def _logistic(x: np.ndarray, bias: float, weights: np.ndarray) -> np.ndarray:
    z = np.clip(bias + x @ weights, -50.0, 50.0)
    return 1.0 / (1.0 + np.exp(-z))


def texture_probability(appearance: np.ndarray, weights: TextureWeights) -> np.ndarray:
    """The texture expert's probabilities, shape (L,), from `label_features`' appearance array (ungated)."""
    return _logistic(appearance[:, TEXTURE_COLUMNS], weights.bias, np.array([getattr(weights, n) for n in TEXTURE_FEATURES]))


def surface_probability(geometric: np.ndarray, weights: SurfaceWeights) -> np.ndarray:
    """The relief correlation's probabilities, shape (L,), from `label_features`' geometric array.

    0 where none was measured or the peak is no higher than `weights.floor` (fitted above every unrelated peak
    calibration saw: they reach 9-10), and the logistic, fitted where right and unrelated peaks overlap, gave such a stranger 0.3-0.6
    (kth1's R@FAR1 fell from 0.414 to 0.330; bench/README.md, "The relief correlation").
    """
    p = _logistic(geometric[:, SURFACE_COLUMNS], weights.bias, np.array([getattr(weights, n) for n in SURFACE_FEATURES]))
    return np.where(geometric[:, SURFACE_COLUMNS[0]] > weights.floor, p, 0.0)


def inlier_probability(geometric: np.ndarray, weights: GeometricWeights, tested: float | np.ndarray = 1.0) -> np.ndarray:
    """The geometric expert's inlier model, shape (L,): its odds divided by `tested` (`expert_probabilities`)."""
    return _logistic(geometric[:, GEOMETRIC_COLUMNS], weights.bias - np.log(tested),
                     np.array([getattr(weights, n) for n in GEOMETRIC_FEATURES]))


def embedding_probability(appearance: np.ndarray, weights: EmbeddingWeights) -> np.ndarray:
    """The embedding expert's probabilities, shape (L,), from `label_features`' appearance array."""
    return _logistic(appearance[:, EMBEDDING_COLUMNS], weights.bias, np.array([getattr(weights, n) for n in EMBEDDING_FEATURES]))


def texture_speaks(appearance_probability: np.ndarray) -> np.ndarray:
    """Where the texture expert may speak, shape (L,) bool: for the appearance expert's first choice only."""
    out = np.zeros(appearance_probability.shape, bool)
    if appearance_probability.size:
        out[int(np.argmax(appearance_probability))] = True
    return out


def expert_probabilities(geometric: np.ndarray, appearance: np.ndarray, weights: FusionConfig,
                         tested: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(geometric, appearance, texture, embedding) probabilities, shape (L,) each, from ONE query's `label_features` arrays.

    The geometric probability is the larger of the inlier model's and the
    relief correlation's (`surface_probability`): two measurements of one
    thing, the photo's arrangement. The texture probability is 0 except for the appearance expert's first choice (`texture_speaks`).
    `tested` (>= 1; a scalar, or one per row): how many times more candidates
    were verified than in the first pass; the inlier model's odds are divided by it. The relief's are not: its
    weights and floor were fitted on answers whose strangers had every pass's correlations (the third pass's,
    `verify.correlate_rest`, too), their extra chances already in them (`pipeline.evaluation.calibrate`).
    """
    a = weights.appearance
    pg = np.maximum(inlier_probability(geometric, weights.geometric, tested), surface_probability(geometric, weights.surface))
    pa = _logistic(appearance, a.bias, np.array([getattr(a, n) for n in APPEARANCE_FEATURES]))
    pt = np.where(texture_speaks(pa), texture_probability(appearance, weights.texture), 0.0)
    return pg, pa, pt, embedding_probability(appearance, weights.embedding)


def score_labels(evidence: Sequence[LabelEvidence], weights: FusionConfig, texture_counts: bool = True,
                 tested: float = 1.0) -> list[LabelScore]:
    """The experts' probabilities for every label, in `evidence` order (`tested`: `expert_probabilities`)."""
    experts = expert_probabilities(*label_features(evidence), weights, tested)
    return [LabelScore(*map(float, p), texture_counts=texture_counts) for p in zip(*experts)]


def fuse(
    evidence: list[LabelEvidence],
    labels: Sequence[str],
    weights: FusionConfig,
    accept_confidence: float,
    first_choices: dict[str, str | None],
    texture_counts: bool = True,
    tested: float = 1.0,
) -> tuple[Decision, dict[str, LabelScore]]:
    """Pick the best-scoring label; order candidates by their label's rank score (geometric, appearance, texture).

    Parameters
    ----------
    first_choices : dict
        Stage name -> the label that stage ranked first (None if it abstained),
        to report which stages agreed with the decision.
    texture_counts : bool
        False for a query in which a cake was found: the confidence is then
        the geometric and embedding experts' only (`LabelScore`).
    tested : float
        Candidates verified over those of the first pass (`tested_ratio`).

    Returns
    -------
    (Decision, scores by label)
    """
    if not evidence:
        return Decision("no_match", None, 0.0, np.zeros(0, np.int64), ()), {}
    scores = dict(zip((e.label for e in evidence), score_labels(evidence, weights, texture_counts, tested)))
    best = max(evidence, key=lambda e: (scores[e.label].rank_score, e.inliers, e.similarity))
    order = sorted(range(len(labels)), key=lambda i: (-scores[labels[i]].rank_score, i != best.position if labels[i] == best.label else 0, i))
    confidence = scores[best.label].confidence
    agreed = tuple(stage for stage, label in first_choices.items() if label == best.label)
    status = "matched" if confidence >= accept_confidence else "no_match"
    return Decision(status, best.label if status == "matched" else None, confidence, np.array(order, dtype=np.int64), agreed), scores
