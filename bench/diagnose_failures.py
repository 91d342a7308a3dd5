#!/usr/bin/env python3
"""Why does a query fail? Every registered query's evidence, stage by stage.

    python bench/diagnose_failures.py BENCH_DIR [--config FILE] [--out OUT.jsonl]

The catalog is indexed into a temporary index and every query matched with
the configured pipeline (as `teaprint eval` does). Besides the product's
answer, each query gets what the pipeline could have known:

* ``query_keypoints``: keypoints extracted from the query;
* ``rank_cosine`` / ``rank_lbp`` / ``rank_votes``: the right entry's rank in
  each shortlist source over the WHOLE catalog (0 = first; None = no vote);
* ``shortlisted``: whether the right entry reached the verified candidates;
* ``right_inliers`` / ``right_matches``: verification of the query against
  the right entry, whether or not it was shortlisted;
* ``wrong_inliers``: the most inliers of any other label, over the whole
  catalog (brute force);
* ``cosine``: the right entry's embedding cosine.

A failure (top1 wrong, or right but not accepted) is then one of:
``shortlist`` (the right entry never reached verification, yet verification
would have put it first), ``decision`` (verification put it first but the
fused decision did not), ``evidence`` (even brute-force verification does not
put it first), or ``threshold`` (ranked first, confidence below the accept
point). Prints one summary JSON line; `--out` keeps every query's line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.engine import Engine, resolve_model_path  # noqa: E402
from pipeline.evaluation.bench import index_catalog, load_benchmark, prepare_queries, shared_config  # noqa: E402
from pipeline.evaluation.variants import VARIANTS  # noqa: E402
from pipeline.features.embedding import Encoder  # noqa: E402
from pipeline.features.lbp import chi2_distance  # noqa: E402
from pipeline.features.local import verify_pair  # noqa: E402
from pipeline.search.vocabulary import Vocabulary  # noqa: E402
from pipeline.search.votes import VoteStore  # noqa: E402


def vote_rank(store: VoteStore, query, snap, rows: np.ndarray) -> int | None:
    """Rank (0 = best) of the best of `rows` in the catalog-wide keypoint vote (`VoteStore.vote` over the whole
    catalog, before the shortlist's top-k cut); None when none of them got a vote."""
    ranked = store.vote(query, snap, top_k=len(snap))
    where = np.flatnonzero(np.isin(ranked, rows))
    return int(where[0]) if where.size else None


def rank_of(scores: np.ndarray, rows: np.ndarray) -> int:
    """Rank (0 = best) of the best of `rows` when sorting `scores` descending."""
    best = scores[rows].max()
    return int((scores > best).sum())


def diagnose(bench_dir: Path, config_file: Path | None) -> list[dict]:
    config = load_config(config_file)
    full = VARIANTS["embedding+lbp+verify"]
    base = shared_config(config, [full])
    bench = load_benchmark(bench_dir, base)
    encoder = Encoder.load(resolve_model_path(config, Path(".")))
    out = []
    with tempfile.TemporaryDirectory(prefix="teaprint-diag-") as tmp:
        config = full.derive(base)
        engine = Engine(config, Path(tmp), encoder)
        engine.warm_up()
        index_catalog(engine, bench, progress=False)
        queries, _ = prepare_queries(engine, config, bench, progress=False)
        snap = engine.snapshot()
        labels = np.array(snap.labels)
        keypoints = snap.keypoints(range(len(snap)))
        v = config.matcher.verify
        votes = VoteStore(Path(tmp) / "diagnose-votes", Vocabulary.load(), config.matcher.shortlist.vote_keypoints)
        votes.follow(snap, persist=False)
        for q in queries:
            if q.prepared is None:
                continue
            result = engine.match_prepared(q.prepared, q.name, embedding=q.embedding)
            local = q.prepared.local
            checks = [verify_pair(local, k, v.ratio, v.ransac_px, v.min_matches, guided_ratio=v.guided_ratio) for k in keypoints]
            inliers = np.array([c.inliers for c in checks])
            cos = snap.embeddings @ q.embedding
            row = {"query": q.name, "truth": q.truth, "status": result.status, "label": result.label,
                   "best": result.matches[0].label if result.matches else None, "confidence": result.confidence,
                   "accept": result.stages["decide"]["accept_confidence"],
                   "geometric": result.stages["decide"].get("geometric"), "appearance": result.stages["decide"].get("appearance"),
                   "query_keypoints": len(local) if local is not None else 0}
            if q.truth:
                right = np.flatnonzero(labels == q.truth)
                wrong = np.flatnonzero(labels != q.truth)
                lbp = -chi2_distance(q.prepared.lbp, snap.lbps)
                row.update({
                    "rank_cosine": rank_of(cos, right), "rank_lbp": rank_of(lbp, right),
                    "rank_votes": vote_rank(votes, local, snap, right),
                    "shortlisted": any(m.label == q.truth for m in result.matches),
                    "verified_right": any(m.label == q.truth and m.inliers is not None for m in result.matches),
                    "right_inliers": int(inliers[right].max()), "right_matches": int(max(checks[i].matches for i in right)),
                    "wrong_inliers": int(inliers[wrong].max()) if wrong.size else 0,
                    "cosine": round(float(cos[right].max()), 4),
                    "best_wrong_cosine": round(float(cos[wrong].max()), 4) if wrong.size else None,
                })
                row["kind"] = failure_kind(row)
            else:
                row["wrong_inliers"] = int(inliers.max()) if inliers.size else 0
                row["kind"] = "false_accept" if result.status == "matched" else "ok"
            out.append(row)
    return out


def failure_kind(row: dict) -> str:
    if row["best"] == row["truth"]:
        return "ok" if row["status"] == "matched" else "threshold"
    if row["right_inliers"] <= row["wrong_inliers"]:
        return "evidence"
    if not row["verified_right"]:
        return "shortlist"
    return "decision"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = diagnose(args.bench, args.config)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reg = [r for r in rows if r["truth"]]
    kinds = Counter(r["kind"] for r in reg)
    bad = [r for r in reg if r["kind"] != "ok"]
    print(json.dumps({"bench": args.bench.name, "registered": len(reg), "kinds": dict(kinds),
                      "false_accepts": sum(r["kind"] == "false_accept" for r in rows),
                      "median_query_keypoints_failing": float(np.median([r["query_keypoints"] for r in bad])) if bad else None,
                      "median_query_keypoints_ok": float(np.median([r["query_keypoints"] for r in reg if r["kind"] == "ok"])),
                      }))


if __name__ == "__main__":
    main()
