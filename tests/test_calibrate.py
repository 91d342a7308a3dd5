"""Fitting the fused decision: two experts, a threshold meeting the FAR target, stored in config."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DEFAULT_CONFIG, load_config
from pipeline.evaluation.calibrate import QueryEvidence, choose_threshold, decisions, fit, write_into
from pipeline.matcher.fuse import LabelEvidence, label_features


def synthetic_evidence(n: int = 400, seed: int = 0) -> list[QueryEvidence]:
    """Two kinds of photo: 'hard' ones whose right label has inliers but a lost
    embedding, 'texture' ones with no inliers whose right label has the best
    similarity; unregistered queries are sibling-like (high similarity, a few
    stray inliers)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        registered, hard = i % 4 != 0, i % 2 == 0
        evidence = []
        for k in range(5):
            right = registered and k == 0
            if right and hard:
                sim, inl = rng.normal(0.2, 0.15), int(rng.poisson(40))
            elif right:
                sim, inl = rng.normal(0.9, 0.03), 0
            else:
                sim, inl = rng.normal(0.6, 0.1), int(rng.poisson(3))
            dist = abs(rng.normal(0.05 if right else 0.12, 0.03))  # chi-square distances are >= 0
            evidence.append(LabelEvidence(f"L{i}" if right else f"N{i}-{k}", k, float(sim), float(right and rng.random() < 0.7), inl, float(dist)))
        geometric, appearance = label_features(evidence)
        out.append(QueryEvidence(tuple(e.label for e in evidence), geometric, appearance, f"L{i}" if registered else ""))
    return out


def test_fit_learns_sensible_signs_and_meets_the_far_target() -> None:
    cal = fit(synthetic_evidence(), target_far=0.01)
    g, a = cal.fusion.geometric, cal.fusion.appearance
    assert g.inliers + g.inlier_margin > 0 and a.similarity + a.similarity_margin > 0 and a.lbp_distance < 0
    assert cal.false_accept_rate <= 0.01
    assert cal.recall > 0.8  # both kinds are accepted: neither expert sinks the other
    best, right, registered = decisions(synthetic_evidence(seed=1), cal.fusion)
    accepted = best >= cal.accept_confidence
    assert (accepted & ~right).mean() < 0.05  # holds on fresh data too
    assert (accepted & right)[registered].mean() > 0.7


def test_the_threshold_keeps_the_false_accept_rate_on_every_calibration_benchmark_not_only_pooled() -> None:
    big = synthetic_evidence(n=1600)  # 400 strangers: each expert's operating point is then its second-strongest stranger
    # A small benchmark of 10 strangers, one of them with a cake's worth of inliers and a close embedding.
    small = []
    for i in range(10):
        strong = i == 0
        evidence = [LabelEvidence(f"X{i}", 0, 0.9 if strong else 0.5, 0.0, 30 if strong else 2, 0.1),
                    LabelEvidence(f"Y{i}", 1, 0.4, 0.0, 1, 0.2)]
        geometric, appearance = label_features(evidence)
        small.append(QueryEvidence(tuple(e.label for e in evidence), geometric, appearance, ""))
    pooled = fit(big + small, target_far=0.01)
    each = fit(big + small, target_far=0.01, groups=[big, small])
    best_small, _, _ = decisions(small, each.fusion)
    # The experts' weights do not depend on the grouping (the texture side's shift may: it keeps the target on each
    # group's bare strangers, test_the_bare_photo_shift_keeps_the_target_on_each_calibration_group).
    assert (pooled.fusion.geometric, pooled.fusion.embedding) == (each.fusion.geometric, each.fusion.embedding)
    assert (best_small >= pooled.accept_confidence).sum() == 1  # 1 of 410 strangers passes a pooled 1 %
    assert (best_small >= each.accept_confidence).sum() == 0 and each.accept_confidence > pooled.accept_confidence


def test_a_benchmarks_threshold_lies_just_above_its_strongest_stranger_not_at_its_weakest_right_answer() -> None:
    """Easy siblings: right answers near 1, strangers below 0.4. The lowest threshold that keeps their FAR is
    just above the strongest stranger; the weakest right answer (0.99999 there) would set the pooled accept point."""
    fusion = load_config(None).matcher.decide.fusion
    group = [q for q in synthetic_evidence(n=200, seed=3) if not q.truth or q.geometric[0, 0] > np.log1p(20)]
    best, _, registered = decisions(group, fusion)
    threshold, far, _, _ = choose_threshold(group, fusion, 0.0)
    strongest = best[~registered].max()
    assert far == 0.0 and strongest < threshold <= np.nextafter(strongest, 2.0)
    assert threshold < best[registered].min()  # the case the rule is for: every right answer lies above


def test_refit_fits_only_the_named_experts_and_the_embedding_expert_on_photos_with_a_cake() -> None:
    import dataclasses

    import pytest

    current = load_config(None).matcher.decide.fusion
    # Cake photos (texture_counts False) whose right label has the best cosine but a misleading LBP margin.
    evidence = []
    for q in synthetic_evidence():
        appearance = q.appearance.copy()
        right = np.array([label == q.truth for label in q.labels])
        appearance[right, 4] -= 2.0  # another label's histogram 7x closer (a glare spot)
        evidence.append(dataclasses.replace(q, appearance=appearance, texture_counts=False))
    cal = fit(evidence, target_far=0.01, refit=("embedding",), current=current)
    assert (cal.fusion.geometric, cal.fusion.appearance, cal.fusion.texture) == (current.geometric, current.appearance, current.texture)
    assert cal.fusion.embedding != current.embedding and cal.fusion.embedding.similarity_margin > 0
    # The right labels with no inlier are accepted on their cosine; scored with the LBP evidence, most would not be.
    no_inlier = np.array([bool(q.truth) and q.geometric[0, 0] == 0 for q in evidence])
    on_cake, right, _ = decisions(evidence, cal.fusion)
    as_bare, _, _ = decisions([dataclasses.replace(q, texture_counts=True) for q in evidence], cal.fusion)
    accepted_on_cake = (on_cake >= cal.accept_confidence)[no_inlier & right].mean()
    accepted_as_bare = (as_bare >= cal.accept_confidence)[no_inlier & right].mean()
    assert cal.false_accept_rate <= 0.01 and accepted_on_cake > 0.4 and accepted_as_bare < 0.2  # 0.54 and 0.11
    with pytest.raises(ValueError, match="refit"):
        fit(evidence, refit=("embedding",))  # the kept experts' weights are needed
    with pytest.raises(ValueError, match="refit"):
        fit(evidence, refit=("bogus",), current=current)


def bare_textures(n: int = 2000, seed: int = 0, others: float = -2.0, relief: bool = False) -> list[QueryEvidence]:
    """Relit bare textures: no inliers, every cosine alike, the right label's LBP histogram a little closer
    than the others (log distance around -3 against `others`); a fifth of the photos unregistered. With
    `relief`, the relief correlation measured on each candidate: the right label's peak mostly far above the 6-9
    of unrelated surfaces, a stranger's candidates all in that range."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        registered = i % 5 != 0
        evidence = []
        for k in range(5):
            right = registered and k == 0
            dist = float(np.exp(rng.normal(-3.0 if right else others, 0.45)))
            peak = float(rng.normal(16.0, 5.0) if right and rng.random() < 0.8 else rng.normal(7.0, 0.6)) if relief else 0.0
            evidence.append(LabelEvidence(f"T{i}" if right else f"U{i}-{k}", k, float(rng.normal(0.8, 0.05)), 0.0, 0, dist, 0,
                                          max(peak, 0.1) if relief else 0.0))
        geometric, appearance = label_features(evidence)
        out.append(QueryEvidence(tuple(e.label for e in evidence), geometric, appearance, f"T{i}" if registered else ""))
    return out


def test_the_bare_photo_experts_are_shifted_together_to_the_one_percent_point_of_bare_strangers() -> None:
    """Aligned one by one at a third of the target each, the appearance and texture experts put 0.5 above all but
    the strongest of 400 relit calibration textures, and an accept point held near 0.5 by the cake benchmarks' own
    strangers then refused what the textures' 1 % point accepts. Shifted together on their combined confidence,
    0.5 IS that point: exactly 4 of 400 strangers reach it, with the recall the 1 % point gives."""
    current = load_config(None).matcher.decide.fusion
    textures = bare_textures()
    fusion = fit(textures, target_far=0.01, groups=[textures], refit=("appearance", "texture"), current=current).fusion
    best, right, registered = decisions(textures, fusion)
    strangers = np.sort(best[~registered])[::-1]
    assert (~registered).sum() == 400 and (strangers >= 0.5).sum() == 4
    assert (right & (best >= 0.5))[registered].mean() == (right & (best > strangers[4]))[registered].mean() > 0.15
    # Cake photos keep their own operating point: the same strangers seen as cakes are scored without the texture side.
    on_cake, _, _ = decisions([dataclasses.replace(q, texture_counts=False) for q in textures], fusion)
    assert on_cake.max() < 0.01


def test_the_relief_correlation_is_fitted_and_aligned_on_the_strangers_it_was_measured_on() -> None:
    """Refitting `surface` alone: positive weights; 0.5 sits at a third of the target on the strangers' own peaks
    (here 200 strangers: none above); the right labels with a sharp peak are accepted through the geometric
    expert, the other experts' weights untouched; photos without a measured peak get nothing from it."""
    current = load_config(None).matcher.decide.fusion
    textures = bare_textures(1000, relief=True)
    cal = fit(textures, target_far=0.01, groups=[textures], refit=("surface",), current=current)
    s = cal.fusion.surface
    assert s.surface_peak > 0 and s.surface_margin >= 0
    unrelated = max(float(q.geometric[i, 3]) for q in textures for i, label in enumerate(q.labels) if label != q.truth)
    assert unrelated < s.floor <= unrelated + 0.5 and s.floor % 0.5 == 0  # no unrelated peak seen counts
    assert fit(textures, target_far=0.01, groups=[textures], refit=("texture",), current=current).fusion.surface == current.surface
    assert (cal.fusion.geometric, cal.fusion.appearance, cal.fusion.texture) == (current.geometric, current.appearance, current.texture)
    best, right, registered = decisions(textures, cal.fusion)
    assert cal.false_accept_rate <= 0.01 and (best[~registered] >= 0.5).sum() <= 1
    assert (right & (best >= cal.accept_confidence))[registered].mean() > 0.7  # 0.8 of them have a sharp peak
    unmeasured = [dataclasses.replace(q, geometric=np.concatenate([q.geometric[:, :3], np.zeros((len(q.labels), 2))], axis=1))
                  for q in textures]
    assert (decisions(unmeasured, cal.fusion)[0] >= cal.accept_confidence)[registered].mean() < 0.3


def test_the_bare_photo_shift_keeps_the_target_on_each_calibration_group() -> None:
    """Relit surfaces in a small catalog: a stranger's nearest label stands farther out from the rest (a wider LBP
    margin) than among 300 alike. Pooled with 400 strangers of a large catalog, 100 such strangers could pass at 5 %
    while the pool stays within 1 %; aligned per group, each group's bare strangers stay within the target."""
    current = load_config(None).matcher.decide.fusion
    large, small = bare_textures(), bare_textures(500, seed=1, others=-1.2)
    for groups, within in (([large, small], True), ([large + small], False)):
        fusion = fit(large + small, target_far=0.01, groups=groups, refit=("texture",), current=current).fusion
        rates = []
        for group in (large, small):
            best, _, registered = decisions(group, fusion)
            rates.append(float((best[~registered] >= 0.5).mean()))
        assert (max(rates) <= 0.01) == within, rates


def test_fit_keeps_each_weight_on_its_side_when_the_data_confound_it() -> None:
    """Right labels given LARGER LBP distances (two kinds of photo mixed, as cakes and textures are)
    must not teach the appearance expert that a farther texture counts for a label."""
    evidence = []
    for q in synthetic_evidence():
        appearance = q.appearance.copy()
        right = np.array([label == q.truth for label in q.labels])
        appearance[right, 3] += 0.2  # the right label's texture is the farthest
        evidence.append(QueryEvidence(q.labels, q.geometric, appearance, q.truth))
    a = fit(evidence, target_far=0.01).fusion.appearance
    assert a.lbp_distance == 0.0  # bounded at 0, not learned as positive
    assert a.similarity > 0 and a.similarity_margin >= 0 and a.lbp_margin >= 0 and a.svc_vote >= 0


def test_decisions_count_the_texture_expert_only_where_no_cake_was_found() -> None:
    """The calibration scores saved answers as the matcher does (`fuse`): on a cake photo the texture expert
    ranks the labels but its probability is not the confidence, and its own operating point is set on bare photos."""
    import dataclasses

    fusion = load_config(None).matcher.decide.fusion
    # No inliers, an unsure embedding, a clear LBP match: only the texture expert is confident.
    evidence = [LabelEvidence("t1", 0, 0.9, 1.0, 0, 0.002), LabelEvidence("t2", 1, 0.88, 0.0, 0, 0.2)]
    geometric, appearance = label_features(evidence)
    bare = QueryEvidence(("t1", "t2"), geometric, appearance, "t1")
    on_cake = dataclasses.replace(bare, texture_counts=False)
    (bare_best,), (bare_right,), _ = decisions([bare], fusion)
    (cake_best,), (cake_right,), _ = decisions([on_cake], fusion)
    assert bare_right and cake_right  # the same label either way
    assert bare_best > 0.5 > cake_best


def test_write_into_keeps_the_config_loadable_and_its_comments(tmp_path: Path) -> None:
    target = tmp_path / "default.yaml"
    shutil.copy(DEFAULT_CONFIG, target)
    cal = fit(synthetic_evidence(), target_far=0.01)
    write_into(target, cal, [Path("/bench/cal1")], 0.01)
    config = load_config(target)
    assert config.matcher.decide.fusion == cal.fusion
    assert abs(config.matcher.decide.accept_confidence - cal.accept_confidence) < 1e-4
    text = target.read_text()
    assert "calibrated by `teaprint calibrate` on cal1" in text
    assert "# weight of log(1 + the label's inliers)" in text  # the other comments survive
    assert "# drop folder for photos to register" in text


def test_write_into_states_per_benchmark_rates_once(tmp_path: Path) -> None:
    target = tmp_path / "default.yaml"
    shutil.copy(DEFAULT_CONFIG, target)
    cal = fit(synthetic_evidence(), target_far=0.01)
    for rates in (["cal1: FAR 0.0100", "cal2: FAR 0.0000"], ["cal1: FAR 0.0050", "cal2: FAR 0.0000"]):
        write_into(target, cal, [Path("/bench/cal1"), Path("/bench/cal2")], 0.01, rates)
    text = target.read_text()
    assert text.count("per calibration benchmark at that accept point:") == 1
    assert "cal1: FAR 0.0050" in text and "cal1: FAR 0.0100" not in text
    assert load_config(target).matcher.decide.fusion == cal.fusion


def test_calibration_decides_saved_answers_with_the_odds_division_the_matcher_applied(tmp_path: Path) -> None:
    """A bare stranger verified twice (the photo and its negative) and in a second pass: its geometric odds were
    divided by the tests taken (`stages.decide.tested`); calibration must place the accept point on that confidence,
    not on the undivided one."""
    import json

    from pipeline.evaluation.calibrate import results_evidence
    from pipeline.matcher.fuse import fuse, gather_answer
    from pipeline.results import MatchEvidence

    matches = [MatchEvidence(f"/c/{label}-1.png", f"id{label}", label, sim, label, dist, "both", rank, inl, ratio)
               for rank, (label, sim, dist, inl, ratio) in enumerate([("a", 0.71, 0.2, 11, 14), ("b", 0.70, 0.25, 0, 2)])]
    tested = 4.0
    row = {"query": "q.jpg", "status": "no_match", "truth": None, "variant": "embedding+lbp+verify",
           "matches": [dataclasses.asdict(m) for m in matches],
           "stages": {"decide": {"texture_counts": True, "cake_found": False, "tested": tested}}}
    saved = tmp_path / "answers.jsonl"
    saved.write_text(json.dumps(row) + "\n", encoding="utf-8")
    fusion = load_config(DEFAULT_CONFIG).matcher.decide.fusion

    best, _, registered = decisions(results_evidence(saved), fusion)

    labels = [m.label for m in matches]
    as_answered = fuse(gather_answer(matches), labels, fusion, 0.5, {}, True, tested)[0].confidence
    undivided = fuse(gather_answer(matches), labels, fusion, 0.5, {}, True, 1.0)[0].confidence
    assert not registered[0]
    assert best[0] == pytest.approx(as_answered, abs=1e-9)
    assert undivided > as_answered + 0.05  # the division matters for this stranger
