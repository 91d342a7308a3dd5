"""`teaprint calibrate BENCH_DIR...`: fit the fused decision on held-out benchmarks.

The full pipeline runs on each benchmark (temporary index, as `eval` does).
Every candidate label of every query becomes one example: the experts'
features (`pipeline.matcher.fuse.label_features`, the very function the
matcher scores with) and whether it is the query's right label. One logistic
regression per expert fits its weights; the accept threshold is then the
lowest confidence at which the false-accept rate on the benchmarks'
unregistered queries stays within the target. Both are printed as YAML and,
with `--write`, stored in a config file (comments kept), with the measured
rates in a comment, so the threshold carries a stated false-accept rate.

Calibrate on data the evaluation does not use: e.g. `bench/make_discs.py
--split calibration`, `bench/make_siblings.py --faces cake2_b,cake3_a,cake3_b`
(easy and `--hard`) and `bench/make_textures.py --seed 1 --objects 400`, never KTH-TIPS
(`bench/recalibrate.sh` builds and runs them all).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from pipeline.config import (AppearanceWeights, Config, EmbeddingWeights, FusionConfig, GeometricWeights, SurfaceWeights,
                             TextureWeights, default_config)
from pipeline.matcher.fuse import (APPEARANCE_FEATURES, APPEARANCE_SIGNS, EMBEDDING_COLUMNS, EMBEDDING_FEATURES, EMBEDDING_SIGNS,
                                   GEOMETRIC_COLUMNS, GEOMETRIC_FEATURES, GEOMETRIC_SIGNS, SURFACE_COLUMNS, SURFACE_FEATURES,
                                   SURFACE_SIGNS, TEXTURE_COLUMNS, TEXTURE_FEATURES, TEXTURE_SIGNS, combine, expert_probabilities,
                                   gather_answer, inlier_probability, label_features, rank_scores, surface_probability)
from pipeline.results import MatchEvidence, MatchResult


@dataclass(frozen=True)
class QueryEvidence:
    """All candidate labels of one query: the experts' features and the right label ('' = none)."""

    labels: tuple[str, ...]
    geometric: np.ndarray  # (L, 5): GEOMETRIC_FEATURES then SURFACE_FEATURES (`label_features`)
    appearance: np.ndarray  # (L, len(APPEARANCE_FEATURES))
    truth: str
    texture_counts: bool = True  # False: a cake was found in the query, the LBP evidence only ranks (`fuse.LabelScore`)
    tested: float = 1.0  # the answer's geometric odds were divided by this (`fuse.tested_ratio`: a second pass, the negative)


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
    """Per-label features of a full-pipeline result, built as the matcher builds them."""
    return _evidence_of(result.matches, truth, result.stages)


def _evidence_of(m: Sequence[MatchEvidence], truth: str, stages: dict[str, Any] | None) -> QueryEvidence:
    """The answer's evidence, with how it was decided: whether the texture expert counted (answers from before the
    flag: yes) and by how much the geometric odds were divided (`stages.decide.tested`; before it was reported: 1)."""
    evidence = gather_answer(m)
    geometric, appearance = label_features(evidence)
    decided = (stages or {}).get("decide") or {}
    return QueryEvidence(tuple(e.label for e in evidence), geometric, appearance, truth,
                         bool(decided.get("texture_counts", True)), float(decided.get("tested", 1.0)))


def _fit_expert(x: np.ndarray, y: np.ndarray, signs: Sequence[int]) -> tuple[float, np.ndarray]:
    """Logistic regression (L2, C = 1) whose weights keep the sign `signs` allows.

    Each weight is bounded to its side (+1: >= 0, -1: <= 0, 0: free): a
    feature that counts against a label on every kind of photo (an LBP
    distance) must not be learned as counting for it because the calibration
    mixes kinds of photo on which it scales differently. Unweighted classes:
    the output is a probability, so the experts are on one scale and
    taking their maximum is meaningful.
    """
    from scipy.optimize import minimize

    x, target = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] + x @ w[1:]
        residual = 1.0 / (1.0 + np.exp(-z)) - target
        value = float((np.logaddexp(0.0, z) - target * z).sum() + 0.5 * w[1:] @ w[1:])
        return value, np.concatenate([[residual.sum()], x.T @ residual + w[1:]])

    bounds = [(None, None)] + [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in signs]
    found = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return round(float(found.x[0]), 4), np.round(found.x[1:], 4) + 0.0  # + 0.0: no -0.0 in the YAML


EXPERTS = ("geometric", "appearance", "texture", "embedding", "surface")


def surface_floor(unrelated_peaks: np.ndarray, default: float) -> float:
    """The relief's floor: the next half step above the sharpest peak an unrelated label reached (`default` when none).

    A peak at or below the floor is no evidence (`SurfaceWeights.floor`).
    The logistic alone gave unrelated peaks of 8.7-9.0 probabilities of
    0.27-0.36 on KTH-TIPS, strangers of another population than the
    calibration's (kth1 R@FAR1 0.414 -> 0.330 without a floor, bench/README.md,
    "The relief correlation"); no peak that calibration saw an unrelated pair
    reach counts.

    Parameters
    ----------
    unrelated_peaks : ndarray, shape (N,), dtype float
        Each measured unrelated label's sharpest peak (peak-to-sidelobe ratio, > 0).
    default : float
        The floor kept when nothing unrelated was measured.
    """
    if unrelated_peaks.size == 0:
        return float(default)
    return math.floor(float(unrelated_peaks.max()) * 2.0) / 2.0 + 0.5


def fit(evidence: Sequence[QueryEvidence], target_far: float = 0.01,
        groups: Sequence[Sequence[QueryEvidence]] = (), refit: Collection[str] = EXPERTS,
        current: FusionConfig | None = None) -> Calibration:
    """Fit the experts' weights, then the accept threshold for `target_far`.

    With `groups` (the queries of each calibration benchmark), the threshold
    keeps the false-accept rate within `target_far` on every group, not only
    on the pooled queries: pooled, one stranger accepted among 80 easy discs
    passed as 1 % of 400 (2026-12-06, README "Calibration").

    Only the experts named in `refit` are fitted and aligned; the others keep
    `current`'s weights (required unless every expert is refitted), and the
    later fits read them where they build on an earlier expert. For a
    calibration set that represents some kinds of photo and not others: the
    bare-texture experts refitted on today's synthetic relit textures let
    8 % of KTH-TIPS's strangers through (README "Calibration").
    """
    unknown = set(refit) - set(EXPERTS)
    if unknown or (current is None and set(refit) != set(EXPERTS)):
        raise ValueError(f"refit {sorted(refit)}: experts are {EXPERTS}, and the others' current weights are needed")

    def kept(name: str, fitted: Any) -> Any:
        return fitted if name in refit else getattr(current, name)

    used = [e for e in evidence if len(e.labels)]
    y = np.concatenate([[label == e.truth for label in e.labels] for e in used])
    geometric = np.concatenate([e.geometric for e in used])
    # The geometric expert answers for the photos it can see: a right label
    # that verification gave no inlier at all (a relit texture) is the other
    # expert's to find, and would only teach this one that inliers mean little.
    speaks = ~y | (geometric[:, 0] > 0)
    # The weights are fitted on each pair's own evidence; the division of the odds by the tests a query took
    # (`QueryEvidence.tested`) is no evidence but the matcher's correction for them, applied where the
    # accept point and the alignment are chosen (`decisions`, `align_experts`), as `fuse` applies it.
    gb, gw = _fit_expert(geometric[speaks][:, GEOMETRIC_COLUMNS], y[speaks], GEOMETRIC_SIGNS)
    geo = kept("geometric", GeometricWeights(gb, **{n: float(w) for n, w in zip(GEOMETRIC_FEATURES, gw)}))
    # The relief correlation is fitted where it was measured (photos with no cake found, the candidates whose
    # reliefs were correlated), right and unrelated peaks overlapping; its alignment counts the impostors over the floor.
    measured = geometric[:, SURFACE_COLUMNS[0]] > 0
    sb, sw = _fit_expert(geometric[measured][:, SURFACE_COLUMNS], y[measured], SURFACE_SIGNS) if (measured & y).any() \
        else (-50.0, np.zeros(len(SURFACE_FEATURES)))
    floor = surface_floor(geometric[measured & ~y, SURFACE_COLUMNS[0]],
                          (current if current is not None else default_config().matcher.decide.fusion).surface.floor)
    surf = kept("surface", SurfaceWeights(sb, **{n: float(w) for n, w in zip(SURFACE_FEATURES, sw)}, floor=floor))
    appearance = np.concatenate([e.appearance for e in used])
    # Likewise the appearance expert is fitted for the photos geometry does not
    # already confirm: a blurred, tilted re-shot whose embedding is lost would
    # only teach it that a clear texture match means little.
    unused = AppearanceWeights(**dict.fromkeys(("bias", *APPEARANCE_FEATURES), 0.0))  # only the geometric column is read
    unread = TextureWeights(**dict.fromkeys(("bias", *TEXTURE_FEATURES), 0.0))
    unseen = EmbeddingWeights(**dict.fromkeys(("bias", *EMBEDDING_FEATURES), 0.0))
    pg = expert_probabilities(geometric, appearance, FusionConfig(geo, unused, unread, unseen, surf))[0]
    residual = ~y | (pg < 0.5)
    ab, aw = _fit_expert(appearance[residual], y[residual], APPEARANCE_SIGNS)
    app = kept("appearance", AppearanceWeights(ab, **{n: float(w) for n, w in zip(APPEARANCE_FEATURES, aw)}))
    # The embedding expert is the appearance expert of photos with a cake
    # (`fuse`: there the LBP evidence is no confidence): fitted on the same
    # rows of those photos only, when the calibration has any.
    on_cake = np.concatenate([np.full(len(e.labels), not e.texture_counts) for e in used])
    rows = residual & on_cake if (residual & on_cake & y).any() else residual
    eb, ew = _fit_expert(appearance[rows][:, EMBEDDING_COLUMNS], y[rows], EMBEDDING_SIGNS)
    emb = kept("embedding", EmbeddingWeights(eb, **{n: float(w) for n, w in zip(EMBEDDING_FEATURES, ew)}))
    # The texture expert is fitted for what neither other expert confirms
    # (relit bare textures): there the LBP match is the evidence left, and the
    # cosine that every relit texture shares would only drown it. It is fitted
    # on every such label and then speaks only for the appearance expert's
    # first choice (`texture_speaks`); its bias is set by `align_experts`.
    pa = expert_probabilities(geometric, appearance, FusionConfig(geo, app, unread, emb, surf))[1]
    left = ~y | ((pg < 0.5) & (pa < 0.5))
    tb, tw = _fit_expert(appearance[left][:, TEXTURE_COLUMNS], y[left], TEXTURE_SIGNS)
    tex = kept("texture", TextureWeights(tb, **{n: float(w) for n, w in zip(TEXTURE_FEATURES, tw)}))
    fusion = align_experts(used, FusionConfig(geo, app, tex, emb, surf), target_far, refit, groups)
    # The config stores 4 decimals: round the threshold UP, never below an
    # impostor it was chosen to refuse, and state the rates at the stored value.
    threshold = max([choose_threshold(evidence, fusion, target_far)[0]] + [choose_threshold(g, fusion, target_far)[0] for g in groups])
    threshold = math.ceil(threshold * 1e4) / 1e4
    far, recall, precision = rates_at(evidence, fusion, threshold)
    registered = sum(1 for e in evidence if e.truth)
    return Calibration(fusion, threshold, far, recall, precision, len(evidence) - registered, registered)


def align_experts(evidence: Sequence[QueryEvidence], fusion: FusionConfig, far: float,
                  experts: Collection[str] = EXPERTS, groups: Sequence[Sequence[QueryEvidence]] = ()) -> FusionConfig:
    """Shift the experts' biases so that one accept point of 0.5 meets `far` on every kind of photo.

    Each expert's probabilities are honest on the data it was fitted for, but
    they see different impostors: a relit texture's right answer rarely
    reaches the confidence of forty inliers. The geometric expert's own
    false-accept point (`far / 3` alone) is put at 0.5 on every impostor (its
    inlier model and its relief correlation each so, the latter on the
    impostors it was measured on), the
    embedding expert's on those of photos with a cake (only there is it a
    confidence, `fuse.combine`): the union of the two that count on a cake
    stays within `far`. The texture side (appearance and texture experts,
    a confidence on bare photos only) is shifted by ONE amount, the largest at
    which the bare photos' impostors accepted at 0.5 by the combined
    confidence (the geometric expert's included) stay within `far`
    (`_texture_side_shift`). Aligned one by one at `far / 3` each, they let 2
    of the 400 relit calibration strangers through (FAR 0.5 %), and KTH-TIPS's
    recall at the accept point was 0.27-0.29 instead of 0.35-0.38 (README
    "Accuracy"). Only `experts` are shifted.

    With `groups` (each calibration benchmark's queries) the texture side's
    shift keeps `far` on the bare strangers of every group that has any, as
    the accept point does (`fit`): the relit textures' false accepts depend on
    the catalog's size (the LBP margin over the best other label is wider
    among few surfaces), and a shift set on 300 registered surfaces let 16 %
    of the strangers of 8-surface catalogs through (bench/README.md, "The
    bare-photo false-accept rate against catalog size").
    """
    registered = np.array([bool(e.truth) for e in evidence])
    best = np.array([[p.max(initial=0.0) for p in (inlier_probability(e.geometric, fusion.geometric, e.tested),
                                                    *expert_probabilities(e.geometric, e.appearance, fusion, e.tested)[1:],
                                                    surface_probability(e.geometric, fusion.surface))] for e in evidence])
    measured = np.array([bool((e.geometric[:, SURFACE_COLUMNS[0]] > 0).any()) for e in evidence])
    counts = np.array([[True, e.texture_counts, e.texture_counts, not e.texture_counts, m] for e, m in zip(evidence, measured)])
    shifts = {}
    for column, name in ((0, "geometric"), (3, "embedding"), (4, "surface")):
        impostors = np.sort(best[~registered & counts[:, column], column])
        if name not in experts or not impostors.size:
            continue
        point = float(impostors[len(impostors) - 1 - int(np.floor(far / 3 * len(impostors)))])
        if point == 0.0:  # every impostor scored nothing (the relief's floor): no point to align on, left as fitted
            continue
        point = min(max(point, 1e-6), 1 - 1e-6)
        shifts[name] = -float(np.log(point / (1 - point)))
    fusion = _shifted(fusion, shifts)
    side = tuple(name for name in ("appearance", "texture") if name in experts)
    sets = [s for s in map(_bare_strangers, [evidence, *groups]) if s]
    if side and sets:
        shift = min(_texture_side_shift(s, fusion, far, side) for s in sets)
        fusion = _shifted(fusion, dict.fromkeys(side, shift))
    return fusion


def _bare_strangers(queries: Sequence[QueryEvidence]) -> list[QueryEvidence]:
    """The unregistered queries with candidates whose confidence the texture side counts toward (bare photos)."""
    return [e for e in queries if e.texture_counts and not e.truth and len(e.labels)]


def _shifted(fusion: FusionConfig, shifts: dict[str, float]) -> FusionConfig:
    """`fusion` with `shifts[name]` added to those experts' biases (4 decimals, as the config stores them)."""
    return dataclasses.replace(fusion, **{name: dataclasses.replace(getattr(fusion, name), bias=round(getattr(fusion, name).bias + shift, 4))
                                          for name, shift in shifts.items()})


def _texture_side_shift(impostors: Sequence[QueryEvidence], fusion: FusionConfig, far: float,
                        side: Sequence[str]) -> float:
    """The largest shift of the `side` experts' biases at which at most `far` of these bare-photo impostors reach 0.5.

    Found by bisection on the impostors' confidences as `decisions` computes them (labels ranked as `fuse`
    ranks, so a shift that changes which label a photo offers is counted as it is answered); the accepted
    count only grows with the shift. Strangers that the other experts accept whatever the shift (a cake's
    worth of inliers) are no reason to silence the texture side: it may then add none. Within 1e-4 (logit),
    rounded down.
    """

    def accepted(shift: float) -> int:
        best, _, _ = decisions(impostors, _shifted(fusion, dict.fromkeys(side, shift)))
        return int((best >= 0.5).sum())

    low, high = -20.0, 20.0
    allowed = max(int(np.floor(far * len(impostors))), accepted(low))
    while high - low > 1e-4:
        mid = (low + high) / 2
        low, high = (mid, high) if accepted(mid) <= allowed else (low, mid)
    return math.floor(low * 1e4) / 1e4


def decisions(evidence: Sequence[QueryEvidence], fusion: FusionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best confidence, best label is right, query is registered) per query."""
    best, right, registered = [], [], []
    for e in evidence:
        if not len(e.labels):
            best.append(0.0)
            right.append(False)
        else:
            experts = expert_probabilities(e.geometric, e.appearance, fusion, e.tested)  # as `fuse` decided
            k = int(np.argmax(rank_scores(*experts[:3], e.texture_counts)))  # ranked as `fuse` ranks
            best.append(float(combine(*experts, e.texture_counts)[k]))
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
    # Between two impostors' confidences the false-accept rate holds and recall
    # only falls as the threshold rises, so the lowest feasible threshold lies
    # just above an impostor (or at 0). A right answer's confidence is no
    # candidate: per benchmark, the lowest right answer above its strongest
    # impostor is far above what that benchmark needs (0.99999 on easy siblings).
    for t in np.unique(np.concatenate([[0.0], np.nextafter(best[unregistered], 2.0), [1.0]])):
        accepted = best >= t
        far = (accepted & unregistered).sum() / max(unregistered.sum(), 1)
        if far <= target_far:
            recall = (accepted & right & registered).sum() / max(registered.sum(), 1)
            precision = (accepted & right).sum() / max(accepted.sum(), 1)
            return float(t), float(far), float(recall), float(precision)
    return 1.0, 0.0, 0.0, 1.0


def _weights_dict(fusion: FusionConfig) -> dict[str, dict[str, float]]:
    return {
        "geometric": {n: getattr(fusion.geometric, n) for n in ("bias", *GEOMETRIC_FEATURES)},
        "appearance": {n: getattr(fusion.appearance, n) for n in ("bias", *APPEARANCE_FEATURES)},
        "texture": {n: getattr(fusion.texture, n) for n in ("bias", *TEXTURE_FEATURES)},
        "embedding": {n: getattr(fusion.embedding, n) for n in ("bias", *EMBEDDING_FEATURES)},
        "surface": {n: getattr(fusion.surface, n) for n in ("bias", *SURFACE_FEATURES, "floor")},
    }


def rates_at(evidence: Sequence[QueryEvidence], fusion: FusionConfig, threshold: float) -> tuple[float, float, float]:
    """(false-accept rate, recall, precision) of the decision accepting confidence >= `threshold`."""
    best, right, registered = decisions(evidence, fusion)
    accepted = best >= threshold
    far = (accepted & ~registered).sum() / max((~registered).sum(), 1)
    recall = (accepted & right & registered).sum() / max(registered.sum(), 1)
    precision = (accepted & right).sum() / max(accepted.sum(), 1)
    return float(far), float(recall), float(precision)


def per_bench_rates(by_bench: dict[str, list[QueryEvidence]], cal: Calibration) -> list[str]:
    """One line per calibration benchmark: its FAR, recall and precision at the fitted accept point."""
    lines = []
    for name, evidence in by_bench.items():
        registered = np.array([bool(e.truth) for e in evidence])
        far, recall, precision = rates_at(evidence, cal.fusion, cal.accept_confidence)
        lines.append(f"{name}: FAR {far:.4f} ({(~registered).sum()} unregistered), recall {recall:.3f} "
                     f"({registered.sum()} registered), precision {precision:.3f}")
    return lines


def summary(cal: Calibration, benches: Sequence[Path], target_far: float) -> str:
    return (f"calibrated by `teaprint calibrate` on {', '.join(b.name for b in benches)}: {cal.registered} registered and "
            f"{cal.unregistered} unregistered queries; FAR {cal.false_accept_rate:.4f} (target {target_far} on each), "
            f"recall {cal.recall:.3f}, precision {cal.precision:.3f}")


def format_yaml(cal: Calibration, benches: Sequence[Path], target_far: float) -> str:
    w = _weights_dict(cal.fusion)
    flow = lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"  # noqa: E731
    return (
        f"# {summary(cal, benches, target_far)}\n"
        f"accept_confidence: {cal.accept_confidence:.4f}\n"
        f"fusion:\n  geometric: {flow(w['geometric'])}\n  appearance: {flow(w['appearance'])}\n  texture: {flow(w['texture'])}\n"
        f"  embedding: {flow(w['embedding'])}\n  surface: {flow(w['surface'])}\n"
    )


def write_into(config_file: Path, cal: Calibration, benches: Sequence[Path], target_far: float, rates: Sequence[str] = ()) -> None:
    """Replace `matcher.decide`'s accept_confidence and fusion weights in `config_file`, keeping its comments."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, order and layout survive
    yaml.width = 4096
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(_without_rates_block(config_file.read_text(encoding="utf-8")))
    try:
        decide = data["matcher"]["decide"]
        fusion = decide["fusion"]
    except (KeyError, TypeError):
        raise ValueError(f"{config_file}: has no matcher.decide.fusion section to write into") from None
    decide["accept_confidence"] = round(cal.accept_confidence, 4)
    note = f"# answer `matched` when confidence >= this; {summary(cal, benches, target_far)}"
    decide.yaml_add_eol_comment(note, "accept_confidence", column=35)
    _add_comment_block(data["matcher"], "decide", [RATES_HEADER, *rates] if rates else [])
    for expert, weights in _weights_dict(cal.fusion).items():
        for name, value in weights.items():
            fusion[expert][name] = float(value)
    with config_file.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


RATES_HEADER = "per calibration benchmark at that accept point:"


def _without_rates_block(text: str) -> str:
    """`text` less a rates block an earlier `--write` left (the header and its comment lines)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == f"# {RATES_HEADER}":
            skipping = True
            continue
        if skipping and line.lstrip().startswith("#"):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def _add_comment_block(parent: Any, key: str, lines: Sequence[str]) -> None:
    """Put `lines` as a comment block right above `key`."""
    if lines:
        parent.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=2)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benches", type=Path, nargs="+", metavar="BENCH_DIR",
                        help="held-out benchmark folders (not the evaluation ones), or `teaprint eval --json` result files of them")
    parser.add_argument("--target-far", type=float, default=0.01, help="false-accept rate the threshold must meet (default 0.01)")
    parser.add_argument("--write", type=Path, default=None, metavar="CONFIG", help="store the result in this YAML config file")
    parser.add_argument("--refit", default=",".join(EXPERTS), metavar="EXPERT,...",
                        help=f"experts to fit (default all: {','.join(EXPERTS)}); the others keep the config's weights")


def results_evidence(path: Path) -> list[QueryEvidence]:
    """Evidence from `teaprint eval --json` output (full-pipeline lines only).

    Fitting from saved answers skips re-running the pipeline; the answers
    must come from the same features and matcher settings as the config the
    fit is written into.
    """
    import json

    full = "embedding+lbp+verify"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("variant", full) == full and row["status"] != "rejected":
            out.append(_evidence_of([MatchEvidence(**m) for m in row["matches"]], row["truth"] or "", row.get("stages")))
    if not out:
        raise ValueError(f"{path}: no full-pipeline results (run `teaprint eval --stages embedding+lbp+verify --json`)")
    return out


def run_calibrate(args: argparse.Namespace, config: Config) -> int:
    from pipeline.evaluation.bench import load_benchmark, run_benchmark
    from pipeline.evaluation.variants import VARIANTS

    full = VARIANTS["embedding+lbp+verify"]
    by_bench: dict[str, list[QueryEvidence]] = {}
    for source in args.benches:
        if source.is_file():
            by_bench[source.stem] = results_evidence(source)
            continue
        run = run_benchmark(load_benchmark(source, config), config, args.root, [full])
        by_bench[source.name] = [query_evidence(r, t) for r, t in zip(run.variants[0].results, run.bench.truth) if r.status != "rejected"]
    refit = tuple(n.strip() for n in args.refit.split(",") if n.strip())
    cal = fit([e for group in by_bench.values() for e in group], args.target_far, groups=list(by_bench.values()),
              refit=refit, current=config.matcher.decide.fusion)
    rates = per_bench_rates(by_bench, cal)
    print(format_yaml(cal, args.benches, args.target_far), end="")
    print("".join(f"#   {line}\n" for line in rates), end="")
    if args.write is not None:
        write_into(args.write, cal, args.benches, args.target_far, rates)
        print(f"written to {args.write}")
    return 0
