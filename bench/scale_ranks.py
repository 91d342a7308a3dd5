#!/usr/bin/env python3
"""Where does the right cake rank at scale? Each source's rank of it, per query, on a bench_scale catalog.

    python bench/scale_ranks.py WORK [--config FILE] [--out OUT.jsonl] [--deep N]

WORK is a folder built by `bench/bench_scale.py --work WORK` (its
`measure.json` names the config, the catalog root and the scored queries).
For every registered query this opens the catalog once, as the measuring
process does, and reports what limits top1 among many distractors:

* ``rank_embedding``: the best rank of any entry with the right label in
  an exact cosine scan of the whole catalog (0 = first; None = not among
  the first 5,000);
* ``rank_search``: its rank in the embedding search the matcher really uses
  (the IVF index from `search.ann.min_rows` rows, top_k + verify.deepen
  deep; None = not found there), and ``search_has_nearest``: whether that
  search returned the exact scan's first row. Both None when the catalog is
  small enough to be scanned exactly;
* ``rank_votes``: its rank in the catalog-wide keypoint vote (top `--deep`;
  None = not among them);
* ``answer`` / ``right``: the product's own answer (`Engine.match_prepared`)
  and whether its label is the truth;
* ``reach``: whether the right entry lies within what the matcher verifies
  (its rank in the search < top_k + verify.deepen, or vote rank < vote_top_k).

Prints one summary JSON line (counts of queries by reach and by answer);
`--out` keeps every query's line. A diagnostic, not a benchmark of speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _best_rank(order_labels: np.ndarray, truth: str) -> int | None:
    hits = np.flatnonzero(order_labels == truth)
    return int(hits[0]) if hits.size else None


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import load_config
    from pipeline.engine import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--config", type=Path, help="config (default: the one in WORK/measure.json)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--deep", type=int, default=200, help="vote ranks looked at")
    args = parser.parse_args(argv)

    spec = json.loads((args.work / "measure.json").read_text(encoding="utf-8"))
    config = load_config(args.config or Path(spec["config"]))
    engine = Engine.load(config, Path(spec["root"]))
    snap = engine.serving_snapshot()
    labels = snap.labels
    alive = snap.alive
    m = config.matcher
    reach_embedding = m.shortlist.top_k + (m.verify.deepen if m.verify.enabled else 0)
    votes = engine._votes(snap)  # the engine's own vote source, caught up with the snapshot
    search = engine._nearest_for(snap)  # the engine's own embedding search (None: an exact scan)

    lines = []
    for query_path, truth in spec["queries"]:
        if not truth:
            continue
        prepared = engine.prepare(Path(query_path))
        vector = engine.embed([prepared])[0]
        sims = snap.embeddings @ vector
        sims[~alive] = -np.inf
        order = np.argsort(-sims, kind="stable")[: max(5000, reach_embedding)]
        rank_embedding = _best_rank(labels[order], truth)
        rank_search = has_nearest = None
        if search is not None:
            found, _ = search.nearest(vector, snap, reach_embedding)
            found = np.asarray(found, np.int64)
            rank_search, has_nearest = _best_rank(labels[found], truth), bool(np.isin(order[0], found))
        rank_reached = rank_embedding if search is None else rank_search
        voted = votes.vote(prepared.local, snap, args.deep) if votes is not None and prepared.local is not None else np.zeros(0, np.int64)
        rank_votes = _best_rank(labels[np.asarray(voted, np.int64)], truth) if len(voted) else None
        result = engine.match_prepared(prepared, Path(query_path).name, embedding=vector, snapshot=snap)
        right = result.label == truth
        reach = (rank_reached is not None and rank_reached < reach_embedding) or (
            rank_votes is not None and rank_votes < m.shortlist.vote_top_k)
        lines.append({"query": Path(query_path).name, "truth": truth, "rank_embedding": rank_embedding, "rank_votes": rank_votes,
                      "rank_search": rank_search, "search_has_nearest": has_nearest,
                      "cosine_right": float(sims[order[rank_embedding]]) if rank_embedding is not None else None,
                      "answer": result.label, "status": result.status, "confidence": result.confidence, "right": right,
                      "reach": reach})
    counts = {"queries": len(lines), "right": sum(q["right"] for q in lines), "in_reach": sum(q["reach"] for q in lines),
              "wrong_in_reach": sum(q["reach"] and not q["right"] for q in lines), "out_of_reach": sum(not q["reach"] for q in lines),
              # right cakes the exact scan ranks within reach but the search does not return, and exact first rows it misses
              "search_lost": sum(q["rank_search"] is None and q["rank_embedding"] is not None and q["rank_embedding"] < reach_embedding
                                 for q in lines if search is not None),
              "search_missed_nearest": sum(q["search_has_nearest"] is False for q in lines)}
    if args.out:
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    print(json.dumps({"entries": len(snap), "reach_embedding": reach_embedding, "vote_top_k": m.shortlist.vote_top_k, **counts}))
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
