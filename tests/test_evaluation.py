"""`teaprint eval`: the figures on hand-made cases, the variant registry, and a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Config, default_config
from pipeline.evaluation.metrics import (
    Outcome,
    compute_figures,
    false_accept_rate,
    far_recall_curve,
    precision,
    recall,
    recall_at_far,
    recall_at_k,
    top1,
)
from pipeline.evaluation.variants import VARIANTS, parse_stages
from conftest import rotated_view, source_photos, write_rgb

# (truth, predicted, status, confidence, shortlist labels); truth "" = not in the catalog
MIXED = [
    ("a", "a", "matched", 0.9, ("a", "b")),  # right, accepted
    ("b", "a", "matched", 0.8, ("a", "b")),  # wrong label, accepted; right label 2nd
    ("c", "c", "no_match", 0.4, ("c",)),  # right label, but below the accept threshold
    ("d", None, "no_match", 0.1, ()),  # nothing passed the shortlist
    ("", "a", "matched", 0.7, ("a",)),  # false accept
    ("", "b", "no_match", 0.3, ("b",)),  # correctly refused
]


# --------------------------------------------------------------------- metrics


def test_top1_counts_registered_best_labels_only() -> None:
    assert top1(MIXED) == pytest.approx(2 / 4)


def test_recall_at_k_looks_at_the_first_k_shortlisted() -> None:
    assert recall_at_k(MIXED, 1) == pytest.approx(2 / 4)
    assert recall_at_k(MIXED, 2) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        recall_at_k(MIXED, 0)


def test_precision_counts_a_matched_unregistered_query_as_wrong() -> None:
    assert precision(MIXED) == pytest.approx(1 / 3)


def test_recall_needs_matched_and_right_label() -> None:
    assert recall(MIXED) == pytest.approx(1 / 4)


def test_false_accept_rate_over_unregistered() -> None:
    assert false_accept_rate(MIXED) == pytest.approx(1 / 2)


def test_recall_at_far1_hand_made() -> None:
    unregistered = [("", "x", "no_match", i / 100, ("x",)) for i in range(100)]  # top score 0.99
    registered = [
        ("a", "a", "matched", 0.995, ("a",)),
        ("b", "b", "matched", 0.985, ("b",)),
        ("c", "c", "no_match", 0.5, ("c",)),
        ("d", "a", "matched", 0.999, ("a",)),  # accepted first, but wrong: no recall
    ]
    # 1% of 100 = one false accept allowed: the 0.99 one, not the 0.98 one.
    rec, threshold = recall_at_far(unregistered + registered)
    assert rec == pytest.approx(2 / 4)
    assert threshold == pytest.approx(0.985)
    assert compute_figures(unregistered + registered).recall_at_far1 == pytest.approx(0.5)


def test_recall_at_far1_when_the_best_unregistered_beats_everything() -> None:
    rows = [("", "x", "matched", 0.99, ("x",)), ("a", "a", "matched", 0.9, ("a",))]
    # One unregistered query: a single false accept is a 100% rate, so nothing may be accepted.
    assert recall_at_far(rows) == (0.0, math.inf)


def baseline_recall_at_far1(rows: list[tuple]) -> float:
    """shared/bench/baselines.py's protocol, restated: accept above the (1-1%) unregistered quantile."""
    score = np.array([r[3] if r[1] is not None else -np.inf for r in rows])
    reg = np.array([r[0] != "" for r in rows])
    correct = np.array([r[0] != "" and r[1] == r[0] for r in rows])
    unreg = np.sort(score[~reg])
    k = int(np.floor(0.01 * len(unreg)))
    thr = unreg[len(unreg) - 1 - k]
    return float((correct & (score > thr))[reg].mean())


@pytest.mark.parametrize("seed", range(5))
def test_recall_at_far1_agrees_with_the_baselines_protocol(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(400):
        truth = "" if i < 150 else "abc"[i % 3]
        pred = "abc"[rng.integers(3)] if rng.random() < 0.9 else None
        conf = round(float(rng.random()), 2)  # rounding makes ties
        rows.append((truth, pred, "matched" if conf >= 0.5 else "no_match", conf, (pred,) if pred else ()))
    assert recall_at_far(rows)[0] == pytest.approx(baseline_recall_at_far1(rows))


def test_curve_is_monotone_and_starts_with_nothing_accepted() -> None:
    curve = far_recall_curve(MIXED)
    assert curve[0].threshold == math.inf and curve[0].recall == 0 and curve[0].false_accept_rate == 0
    assert all(a.threshold > b.threshold for a, b in zip(curve, curve[1:]))
    assert all(a.recall <= b.recall and a.false_accept_rate <= b.false_accept_rate for a, b in zip(curve, curve[1:]))
    # The query with no predicted label is never accepted: recall tops out at 2/4.
    assert curve[-1].recall == pytest.approx(2 / 4)


def test_no_unregistered_queries_leave_far_figures_undefined() -> None:
    rows = [r for r in MIXED if r[0]]
    fig = compute_figures(rows, k=2)
    assert fig.unregistered == 0
    assert fig.false_accept_rate is None and fig.recall_at_far1 is None and fig.threshold_at_far1 is None
    assert fig.top1 == pytest.approx(0.5) and fig.recall_at_k == pytest.approx(0.75)
    assert fig.precision == pytest.approx(1 / 2)
    assert far_recall_curve(rows) == []


def test_no_registered_queries_leave_recall_figures_undefined() -> None:
    fig = compute_figures([r for r in MIXED if not r[0]])
    assert fig.top1 is None and fig.recall is None and fig.recall_at_k is None and fig.recall_at_far1 is None
    assert fig.false_accept_rate == pytest.approx(0.5) and fig.precision == 0.0


def test_all_rejected() -> None:
    rows = [("a", None, "rejected", 0.0, ()), ("b", None, "rejected", 0.0, ()), ("", None, "rejected", 0.0, ())]
    fig = compute_figures(rows)
    assert (fig.queries, fig.rejected, fig.matched) == (3, 3, 0)
    assert fig.top1 == 0 and fig.recall == 0 and fig.recall_at_k == 0 and fig.false_accept_rate == 0
    assert fig.precision is None  # nothing answered `matched`
    assert fig.recall_at_far1 == 0 and fig.threshold_at_far1 == math.inf
    assert fig.to_dict()["threshold_at_far1"] == "inf"
    json.dumps(fig.to_dict(), allow_nan=False)


def test_no_queries_at_all() -> None:
    fig = compute_figures([])
    assert fig.queries == 0 and fig.top1 is None and fig.precision is None and fig.false_accept_rate is None


def test_outcome_properties() -> None:
    assert Outcome("a", "a", "matched", 0.9).correct
    assert not Outcome("", None, "no_match", 0.1).correct
    assert not Outcome("", "", "matched", 0.9).correct  # an unregistered query is never right


# -------------------------------------------------------------------- variants


def test_variants_switch_stages_and_nothing_else() -> None:
    base = default_config()
    emb, lbp, full = (VARIANTS[n].derive(base) for n in ("embedding", "embedding+lbp", "embedding+lbp+verify"))
    assert (emb.matcher.shortlist.lbp_top_k, emb.matcher.refine.enabled, emb.matcher.verify.enabled) == (0, False, False)
    assert (lbp.matcher.shortlist.lbp_top_k > 0, lbp.matcher.refine.enabled, lbp.matcher.verify.enabled) == (True, True, False)
    assert full == base  # the default config is the full pipeline
    for derived in (emb, lbp):
        assert derived.lbp == base.lbp and derived.model == base.model and derived.local == base.local
        assert derived.matcher.shortlist.top_k == base.matcher.shortlist.top_k
    # Each name means the same stages whatever the user's config switched.
    assert VARIANTS["embedding+lbp+verify"].derive(emb) == base
    assert [v.needs_local(base) for v in VARIANTS.values()] == [False, False, True]


def test_parse_stages() -> None:
    assert [v.name for v in parse_stages(None)] == list(VARIANTS)
    assert [v.name for v in parse_stages("embedding+lbp, embedding")] == ["embedding+lbp", "embedding"]
    with pytest.raises(ValueError, match="unknown stage variant"):
        parse_stages("embedding,sift")


# ------------------------------------------------------------------ end to end

REGISTERED = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def make_bench(root: Path) -> Path:
    """catalog/<label>-1.jpg, two re-photographed queries per label, one object not in the catalog."""
    photos = source_photos()
    rows = ["query,label"]
    n = 0
    for label in REGISTERED:
        write_rgb(root / "catalog" / f"{label}-1.jpg", photos[label])
        for angle, gain in ((20, 1.15), (-35, 0.85)):
            n += 1
            write_rgb(root / "query" / f"q{n:03d}.jpg", rotated_view(photos[label], angle, gain), quality=80)
            rows.append(f"q{n:03d}.jpg,{label}")
    for name in ("brick", "gravel"):
        n += 1
        write_rgb(root / "query" / f"q{n:03d}.jpg", photos[name])
        rows.append(f"q{n:03d}.jpg,")
    (root / "query" / "q999.jpg").write_bytes(b"not a photo")  # an unreadable query: answered `rejected`
    rows.append("q999.jpg,coffee")
    (root / "truth.csv").write_text("\n".join(rows) + "\n")
    return root


def test_eval_end_to_end(tmp_path: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    bench = make_bench(tmp_path / "bench")
    root, out, rep = tmp_path / "root", tmp_path / "out" / "res.jsonl", tmp_path / "rep"
    root.mkdir()
    code = main(["--config", str(tiny_config_file), "--root", str(root), "eval", str(bench), "--json", str(out), "--report", str(rep)])
    printed = capsys.readouterr().out
    assert code == 0
    assert not (root / "index").exists()  # a temporary index, never the user's
    for name in VARIANTS:
        assert name in printed

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    n_queries = len(REGISTERED) * 2 + 3
    assert len(lines) == len(VARIANTS) * n_queries
    assert {line["variant"] for line in lines} == set(VARIANTS)
    assert sum(line["truth"] == "" for line in lines) == 2 * len(VARIANTS)
    assert all(0.0 <= line["confidence"] <= 1.0 for line in lines)
    assert {line["status"] for line in lines if line["query"] == "q999.jpg"} == {"rejected"}
    import jsonschema

    from pipeline.results import load_schema

    schema = load_schema()
    for line in lines:  # each line is a published result plus `variant` and `truth`
        jsonschema.validate({k: v for k, v in line.items() if k not in ("variant", "truth")}, schema)
    modes = {line["stages"]["refine"]["mode"] for line in lines if line["variant"] == "embedding" and line["status"] != "rejected"}
    assert modes <= {"disabled", "empty"}
    verified = {line["variant"]: line["stages"]["verify"]["enabled"] for line in lines if line["status"] != "rejected"}
    assert verified == {"embedding": False, "embedding+lbp": False, "embedding+lbp+verify": True}

    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["catalog"]["images"] == len(REGISTERED) and summary["catalog"]["images_per_s"] > 0
    assert [v["name"] for v in summary["variants"]] == list(VARIANTS)
    for v in summary["variants"]:
        fig = v["figures"]
        assert (fig["queries"], fig["registered"], fig["unregistered"], fig["rejected"]) == (n_queries, 11, 2, 1)
        for key in ("top1", "recall_at_k", "precision", "recall", "false_accept_rate", "recall_at_far1"):
            assert fig[key] is None or 0.0 <= fig[key] <= 1.0, key
        assert v["ms_per_query"] >= v["stage_ms_per_query"] > 0

    page = (rep / "index.html").read_text()
    assert "<svg" in page and "data:image/jpeg;base64," in page
    for name in VARIANTS:
        assert name in page


def test_eval_refuses_a_folder_without_truth(tmp_path: Path, tiny_config_file: Path) -> None:
    from pipeline.cli import main

    write_rgb(tmp_path / "bench" / "catalog" / "a-1.jpg", source_photos()["coffee"])
    assert main(["--config", str(tiny_config_file), "eval", str(tmp_path / "bench")]) == 2
    assert main(["--config", str(tiny_config_file), "eval", str(tmp_path / "bench"), "--stages", "nope"]) == 2


def test_outcome_takes_the_best_ranked_label_and_the_reported_order() -> None:
    from pipeline.evaluation.bench import outcome
    from pipeline.results import MatchEvidence, MatchResult

    def ev(label: str, sim: float) -> MatchEvidence:
        return MatchEvidence(f"/{label}{sim}.jpg", "id", label, sim, "b", 0.1)

    result = MatchResult("q.jpg", "matched", "b", 0.7, (ev("b", 0.93), ev("b", 0.91), ev("a", 0.95), ev("c", 0.92)))
    o = outcome(result, "a")
    assert o.predicted == "b" and not o.correct
    assert o.shortlist == ("b", "b", "a", "c")
    assert outcome(MatchResult("q.jpg", "no_match", None, 0.2), "").predicted is None


def test_eval_one_variant_in_process(tmp_path: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    bench = make_bench(tmp_path / "bench")
    argv = ["--config", str(tiny_config_file), "eval", str(bench), "--stages", "embedding", "--workers", "1", "--top-k", "1"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "recall@1" in table and "embedding " in table and "embedding+lbp" not in table


def test_diagnose_failures_says_where_each_query_stands(tmp_path: Path, tiny_config_file: Path) -> None:
    """bench/diagnose_failures.py on a real folder: every readable query gets its answer, and each registered one the
    right entry's rank in the cosine, LBP and keypoint-vote sources (it once imported a vote index that no longer exists)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diagnose_failures", Path(__file__).resolve().parent.parent / "bench" / "diagnose_failures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.diagnose(make_bench(tmp_path / "bench"), tiny_config_file)
    registered = [r for r in rows if r["truth"]]
    assert len(registered) == 10 and len(rows) == 12  # the unreadable query is left out
    kinds = {"ok", "threshold", "shortlist", "decision", "evidence"}
    for r in registered:
        assert r["kind"] in kinds and r["rank_cosine"] >= 0 and r["rank_lbp"] >= 0
        assert r["rank_votes"] is None or r["rank_votes"] >= 0
    # A rotated, relit view of a registered photo keeps its keypoints: the vote finds it first for most of them.
    assert sum(r["rank_votes"] == 0 for r in registered) >= 6
    assert {r["kind"] for r in rows if not r["truth"]} <= {"ok", "false_accept"}
