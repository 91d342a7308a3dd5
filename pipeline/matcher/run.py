"""The matcher as one pure sequence: shortlist sources -> refine -> verify -> decide.

`run` takes a query's descriptors and one catalog generation's searchable
data and returns every stage's result; each result reports its own evidence
(`report`), and `Outcome.stages` gathers them for the result's `stages`. It
reads no file and keeps no state: the caller (`pipeline.engine.Engine`)
fetches the data (the catalog snapshot, the vote index) and times the stages
through `lap`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence

import numpy as np

from pipeline.config import MatcherConfig
from pipeline.features.local import LocalFeatures, light_inverted
from pipeline.features.surface import SurfaceSpectrum, spectrum
from pipeline.matcher.decide import Decision, decide
from pipeline.matcher.fuse import LabelScore, fuse, gather, tested_ratio
from pipeline.matcher.refine import Refinement, refine
from pipeline.matcher.shortlist import LBP_PREFILTER, Candidates, Shortlist, lbp_nearest, shortlist, shortlist_of, widen
from pipeline.matcher.verify import VERIFY_OFF, Verified, correlate_reliefs, verify


class Searchable(Protocol):
    """What the matcher reads of a catalog generation (`pipeline.catalog.CatalogSnapshot` is one).

    `embeddings` (N, D) float32 unit rows, `lbps` (N, B) float32, its
    element-wise square roots `lbps_sqrt`, `labels` (N,) and `alive` (N,) bool
    are row-aligned; only live rows are candidates. `keypoints(rows)` gives
    those rows' local features (None where an entry has none).
    """

    @property
    def embeddings(self) -> np.ndarray: ...

    @property
    def lbps(self) -> np.ndarray: ...

    @property
    def lbps_sqrt(self) -> Any: ...  # sqrt(lbps) rows when indexed: an array, or `catalog.snapshot.SquareRoots`

    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def alive(self) -> np.ndarray: ...

    def keypoints(self, rows: Sequence[int]) -> list[LocalFeatures | None]: ...


class VoteSource(Protocol):
    """The catalog-wide keypoint vote (`pipeline.search.votes.VoteStore` is one)."""

    def vote(self, query: LocalFeatures | None, catalog: Any, top_k: int, share: float = 1.0) -> np.ndarray: ...


class NearestSource(Protocol):
    """A search for the embedding shortlist other than the exact scan (`pipeline.search.milvus.MilvusEmbeddings` is one)."""

    def nearest(self, query: np.ndarray, catalog: Any, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Query:
    """A query photo's descriptors.

    Attributes
    ----------
    embedding : ndarray, shape (D,), dtype float32, unit norm
    lbp : ndarray, shape (B,), dtype float32
    local : LocalFeatures or None
    cake_found : bool or None
        Whether the locator found a cake in the photo (None: not looked).
        On a cake the texture expert ranks but gives no confidence
        (`matcher.decide.texture_needs_bare_photo`).
    """

    embedding: np.ndarray
    lbp: np.ndarray
    local: LocalFeatures | None
    cake_found: bool | None = None


@dataclass(frozen=True)
class Decided:
    """The decide stage's result.

    Attributes
    ----------
    decision : Decision
    scores : dict
        Label -> its experts' probabilities (empty without fusion).
    method : {"fusion", "similarity"}
        Fused experts (verification on) or the similarity rule (off).
    accept_confidence : float
        The confidence `matched` needed.
    best_label : str or None
        The label of the first candidate in decision order.
    texture_counts : bool
        Whether the LBP evidence (appearance and texture experts) counted toward the
        confidence; False: the embedding expert's did (a cake was found).
    cake_found : bool or None
        Whether the locator found a cake in the query (None: not looked).
    tested : float
        Candidates verified over the first pass's: the geometric odds were divided by it (`fuse.tested_ratio`).
    """

    decision: Decision
    scores: dict[str, LabelScore]
    method: Literal["fusion", "similarity"]
    accept_confidence: float
    best_label: str | None
    texture_counts: bool = True
    cake_found: bool | None = None
    tested: float = 1.0

    def report(self) -> dict[str, Any]:
        """The stage's evidence for `stages.decide`: agreement, rule, the best label's experts, whether texture counted."""
        out: dict[str, Any] = {"agreed": list(self.decision.agreed), "accept_confidence": self.accept_confidence, "method": self.method}
        if self.method == "fusion":
            out.update(texture_counts=self.texture_counts, cake_found=self.cake_found, tested=round(self.tested, 4))
        best = self.scores.get(self.best_label) if self.best_label is not None else None
        if best is not None:
            out.update(geometric=round(best.geometric, 6), appearance=round(best.appearance, 6), texture=round(best.texture, 6),
                       embedding=round(best.embedding, 6))
        return out


@dataclass(frozen=True)
class Ranked:
    """One candidate as offered in the answer, with each stage's evidence.

    `row` is its catalog row, `position` its place in the widened shortlist;
    `inliers`, `ratio_matches` (the verification's ratio-test matches),
    `rotation_deg` and `scale` are None when it was not verified
    (rotation and scale also when it got no inlier), `surface_peak` when its
    relief was not correlated with the query's; `score` is its label's
    fused confidence (None without fusion).
    """

    row: int
    position: int
    label: str
    similarity: float
    source: str
    svc_label: str | None
    lbp_distance: float
    inliers: int | None
    ratio_matches: int | None
    rotation_deg: float | None
    scale: float | None
    score: float | None
    surface_peak: float | None = None


@dataclass(frozen=True)
class Outcome:
    """Every stage's result for one query, and the candidates in decision order."""

    candidates: Candidates
    refined: Refinement
    verified: Verified | None
    decided: Decided
    ranked: tuple[Ranked, ...]

    @property
    def decision(self) -> Decision:
        return self.decided.decision

    def stages(self) -> dict[str, dict[str, Any]]:
        """The result's `stages`: each stage's own report."""
        return {
            "shortlist": self.candidates.report(),
            "refine": self.refined.report(),
            "verify": self.verified.report() if self.verified is not None else dict(VERIFY_OFF),
            "decide": self.decided.report(),
        }


def run(
    query: Query,
    catalog: Searchable,
    settings: MatcherConfig,
    threshold: float,
    votes: VoteSource | None = None,
    nearest: NearestSource | None = None,
    lap: Callable[[str], None] = lambda stage: None,
    texture: NearestSource | None = None,
) -> Outcome:
    """Identify `query` among `catalog`'s entries.

    Parameters
    ----------
    query : Query
    catalog : Searchable
        One catalog generation.
    settings : MatcherConfig
    threshold : float
        The embedding shortlist's cosine threshold (the model's or the config's).
    votes : VoteSource or None
        The catalog-wide keypoint vote, following `catalog`; needed when
        `settings.shortlist.vote_top_k` > 0.
    nearest : NearestSource or None
        Where the embedding shortlist searches; None: an exact scan of `catalog.embeddings`.
    lap : callable
        Called with each stage's name as it ends ("shortlist", "refine",
        "verify" when on, "deepen" when a second verification pass ran, "correlate" when a bare photo's relief was
        correlated with the rest of the candidates, "decide"), for the caller's timings.
    texture : NearestSource or None
        Where the LBP source finds the rows nearest in Hellinger distance
        (a search of `catalog.lbps_sqrt`); None: a product over every row.
    """
    inverted = _light_inverted(query, settings)
    candidates, reserve = _shortlist(query, catalog, settings, threshold, votes, nearest, texture, inverted)
    lap("shortlist")
    refined, labels = _refine(query, catalog, candidates.widened, settings)
    lap("refine")
    verified = None
    surface = _surface(query) if settings.verify.enabled else None  # every pass correlates it; built once
    if settings.verify.enabled:
        v = settings.verify
        rows = candidates.widened.indices[:v.max_candidates]  # only these are verified: read no other keypoints
        verified = verify(query.local, catalog.keypoints(rows), v.max_candidates, v.ratio, v.ransac_px, v.min_matches, v.guided_ratio,
                          inverted=inverted, surface=surface)
        lap("verify")
    decided = _decide(candidates.widened, refined, labels, verified, settings, query.cake_found)
    if verified is not None and settings.verify.deepen > 0 and decided.decision.status != "matched" and verified.query_keypoints:
        candidates, verified = _deepen(query, catalog, settings, candidates, reserve, verified, inverted, surface)
        refined, labels = _refine(query, catalog, candidates.widened, settings)
        lap("deepen")
        decided = _decide(candidates.widened, refined, labels, verified, settings, query.cake_found)
    if verified is not None and surface is not None and settings.verify.correlate_rest > 0 and decided.decision.status != "matched":
        verified = _correlate_rest(catalog, settings, candidates.widened, verified, surface)
        lap("correlate")
        decided = _decide(candidates.widened, refined, labels, verified, settings, query.cake_found)
    lap("decide")
    ranked = tuple(_ranked(i, candidates.widened, labels, refined, verified, decided) for i in decided.decision.order)
    return Outcome(candidates, refined, verified, decided, ranked)


def _surface(query: Query) -> SurfaceSpectrum | None:
    """The query's relief ready to correlate, when it kept one (a photo with no cake found, `local.surface`).

    Every pass correlates it with its candidates' reliefs (~2 ms each): among
    400 relit surfaces the right one is among the first pass's candidates
    for 34 % of the queries, the second pass's for 29 % (bench/README.md,
    "The relief correlation"), and often offered past both (`_correlate_rest`);
    a query accepted early never pays the later passes'.
    """
    if query.local is None or query.local.surface is None or query.cake_found:
        return None
    return spectrum(query.local.surface)


def _light_inverted(query: Query, settings: MatcherConfig) -> LocalFeatures | None:
    """The query's keypoints as if lit from the opposite side, for a photo with no cake found (`verify.invert_light`).

    On a bare relief the light's side decides the shading, and a re-shot lit
    from the other side shares few descriptors with its registration photo;
    on a found cake the leaves' own colours carry the keypoints and the
    negative would only add chances for a stranger.
    """
    if not (settings.verify.enabled and settings.verify.invert_light) or query.cake_found or query.local is None:
        return None
    return light_inverted(query.local)


def _shortlist(query: Query, catalog: Searchable, settings: MatcherConfig, threshold: float, votes: VoteSource | None,
               nearest: NearestSource | None, texture: NearestSource | None,
               inverted: LocalFeatures | None = None) -> tuple[Candidates, np.ndarray]:
    """The embedding shortlist, widened in turn by the LBP and keypoint-vote sources; and the embedding's reserve.

    The reserve is the rows ranked just past `top_k` by the embedding (up to
    `verify.deepen` of them, at or above the floor), which `_deepen` verifies
    when the first pass does not accept. With `inverted` (`_light_inverted`)
    the vote also asks with those keypoints, and their rows follow the
    photo's own ranking: taking turns with it pushed a photo-vote candidate
    out of the first pass (a bare hard disc refused; bench/README.md, "The
    photo's negative").
    """
    sl = settings.shortlist
    depth = sl.top_k + (settings.verify.deepen if settings.verify.enabled else 0)
    embeddings = catalog.embeddings
    if nearest is None:
        deep = shortlist(query.embedding, embeddings, depth, threshold, depth, sl.floor, catalog.alive)
        rows, sims, best_rejected = deep.indices, deep.similarities, deep.best_rejected
    else:
        rows, sims = nearest.nearest(query.embedding, catalog, depth + 1)
        rows, sims, best_rejected = np.asarray(rows, np.int64), np.asarray(sims, np.float32), None
    short = shortlist_of(rows, sims, sl.top_k, threshold, sl.min_candidates, sl.floor, best_rejected)
    reserve = rows[sl.top_k:depth][sims[sl.top_k:depth] >= sl.floor]
    near_texture = None
    if texture is not None and sl.lbp_top_k > 0:
        near_texture = texture.nearest(np.sqrt(np.maximum(query.lbp, 0)).astype(np.float32), catalog, LBP_PREFILTER)[0]
    extras = [("lbp", lbp_nearest(query.lbp, catalog.lbps, sl.lbp_top_k, catalog.alive, catalog.lbps_sqrt, candidates=near_texture))]
    if sl.vote_top_k > 0:
        if votes is None:
            raise ValueError("matcher.shortlist.vote_top_k > 0 needs the catalog's vote source")
        # Asked twice, the two votes share one vote's budget of postings: at 1M the budget binds, and a second full
        # vote made a bare photo's query 1.5-1.7x as slow; halved, the same answers (bench/README.md, stop 39).
        share = 0.5 if inverted is not None else 1.0
        voted = votes.vote(query.local, catalog, sl.vote_top_k, share)
        if inverted is not None:
            more = votes.vote(inverted, catalog, sl.vote_top_k, share)
            voted = np.concatenate([voted, more[~np.isin(more, voted)]]).astype(np.int64)
        extras.append(("votes", voted))
    widened = widen(short, extras, query.embedding, embeddings)
    return Candidates(int(np.count_nonzero(catalog.alive)), short, widened, sl.top_k, sl.lbp_top_k, sl.vote_top_k), reserve


def _refine(query: Query, catalog: Searchable, candidates: Shortlist, settings: MatcherConfig) -> tuple[Refinement, list[str]]:
    """The LBP/SVC stage on the candidates, and their labels."""
    rows = candidates.indices
    labels = [catalog.labels[i] for i in rows]
    lbps = catalog.lbps[rows] if len(rows) else np.zeros((0, query.lbp.size), np.float32)
    return refine(query.lbp, lbps, labels, c=settings.refine.svc_c, kernel=settings.refine.kernel, enabled=settings.refine.enabled), labels


def _deepen(query: Query, catalog: Searchable, settings: MatcherConfig, candidates: Candidates, reserve: np.ndarray,
            verified: Verified, inverted: LocalFeatures | None = None,
            surface: SurfaceSpectrum | None = None) -> tuple[Candidates, Verified]:
    """A second verification pass when the first did not accept: up to `verify.deepen` more candidates.

    First the shortlist's candidates past `max_candidates` (the sources take
    turns, so the embedding's own ranks 4-9 can sit there), then the
    embedding's reserve. A hard re-shot whose embedding ranks the right cake
    just past the verified few is found here, at the cost of a few
    verifications for the queries that are not accepted at once (strangers
    mostly); an accepted query never pays it.
    """
    v = settings.verify
    widened = candidates.widened
    known = set(widened.indices.tolist())
    added = [int(r) for r in reserve.tolist() if int(r) not in known]
    if added:
        rows = np.concatenate([widened.indices, np.asarray(added, np.int64)])
        sims = (catalog.embeddings[rows] @ query.embedding).astype(np.float32)
        widened = Shortlist(rows, sims, widened.threshold, widened.best_rejected,
                            tuple(widened.sources) + ("deepened",) * len(added))
    start = min(v.max_candidates, len(widened))
    stop = min(start + v.deepen, len(widened))
    more = verify(query.local, catalog.keypoints(widened.indices[start:stop]), stop - start, v.ratio, v.ransac_px, v.min_matches,
                  v.guided_ratio, first_position=start, inverted=inverted, surface=surface)
    return dataclasses.replace(candidates, widened=widened), verified.extended(more)


def _correlate_rest(catalog: Searchable, settings: MatcherConfig, candidates: Shortlist, verified: Verified,
                    surface: SurfaceSpectrum) -> Verified:
    """A third pass for a bare photo neither verification pass accepted: the reliefs of up to `verify.correlate_rest`
    offered candidates past the verified ones, correlated alone.

    Among 400 relit surfaces the right one is often offered (by the LBP or
    the keypoint vote) past the 30 verified positions, where it keeps no
    keypoint anyway; its relief still correlates (tex2-400: 136 right
    answers gained this way, recall 0.447 -> 0.559, bench/README.md stop 42).
    No keypoints are matched, so the geometric odds' division by the
    candidates tested (`fuse.tested_ratio`) does not grow: the relief's
    floor, fitted on calibration answers that include these correlations,
    bounds a stranger's chances.
    """
    start = max(verified.positions, default=-1) + 1
    stop = min(start + settings.verify.correlate_rest, len(candidates))
    if stop <= start:
        return verified
    return verified.with_correlated(correlate_reliefs(surface, catalog.keypoints(candidates.indices[start:stop]), start))


def _decide(candidates: Shortlist, refined: Refinement, labels: list[str], verified: Verified | None, settings: MatcherConfig,
            cake_found: bool | None = None) -> Decided:
    """The fused decision when verification ran; the similarity rule otherwise."""
    cfg = settings.decide
    if verified is None:
        decision = decide(candidates, refined, labels, cfg.similarity_accept)
        return Decided(decision, {}, "similarity", cfg.similarity_accept, _first_label(decision, labels))
    checks = [verified.result_at(i) for i in range(len(labels))]
    inliers = [c.inliers if c is not None else 0 for c in checks]
    ratio_matches = [c.matches if c is not None else 0 for c in checks]
    peaks = [verified.peak_at(i) or 0.0 for i in range(len(labels))]
    evidence = gather(labels, candidates.similarities, refined.lbp_distances, inliers, refined.label, ratio_matches, peaks)
    embedding_first = labels[0] if labels and candidates.sources and candidates.sources[0] in ("embedding", "both") else None
    best_verified = max(range(len(labels)), key=lambda i: inliers[i], default=None)
    first_choices = {
        "shortlist": embedding_first,
        "refine": refined.label if refined.mode == "svc" else None,
        "verify": labels[best_verified] if best_verified is not None and inliers[best_verified] > 0 else None,
    }
    texture_counts = not (cfg.texture_needs_bare_photo and cake_found)
    tested = tested_ratio(len(verified.positions), verified.deepened, verified.tries)
    decision, scores = fuse(evidence, labels, cfg.fusion, cfg.accept_confidence, first_choices, texture_counts, tested)
    return Decided(decision, scores, "fusion", cfg.accept_confidence, _first_label(decision, labels), texture_counts, cake_found,
                   tested)


def _first_label(decision: Decision, labels: Sequence[str]) -> str | None:
    return labels[int(decision.order[0])] if len(decision.order) else None


def _ranked(position: int, candidates: Shortlist, labels: list[str], refined: Refinement, verified: Verified | None,
            decided: Decided) -> Ranked:
    check = verified.result_at(position) if verified is not None else None
    label = labels[position]
    moved = check is not None and bool(check.inliers)
    return Ranked(
        row=int(candidates.indices[position]),
        position=int(position),
        label=label,
        similarity=float(candidates.similarities[position]),
        source=candidates.sources[position] if candidates.sources else "embedding",
        svc_label=refined.label,
        lbp_distance=float(refined.lbp_distances[position]),
        inliers=check.inliers if check is not None else None,
        ratio_matches=check.matches if check is not None else None,
        rotation_deg=check.rotation_deg if moved and check.rotation_deg is not None else None,
        scale=check.scale if moved and check.scale is not None else None,
        score=decided.scores[label].confidence if label in decided.scores else None,
        surface_peak=verified.peak_at(position) if verified is not None else None,
    )
