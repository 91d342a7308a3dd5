#!/usr/bin/env python3
"""teaprint against the plain peers on the same benchmark folders: one table.

    python bench/quality_table.py OUT_DIR BENCH_DIR... [--config FILE] [--peers lbp,sift] [--no-peers] [--reuse | --redecide]

For each folder, runs `teaprint eval --stages embedding+lbp+verify --json`
(the product's own answers, with the configured accept point) and
`../shared/bench/baselines.py` (the peers), then prints a markdown table:
top1, recall at 1% FAR (swept on the result's `confidence`), the configured
decision's recall, precision and FAR, and ms per query for each, plus the
lead over the best peer. Everything run on the same machine in one go, so
the ms columns compare within the run. Per-folder outputs stay in OUT_DIR
(`<bench>.jsonl`, `<bench>.summary.json`, `<bench>.peers.jsonl`) and the
table's rows as JSON lines in OUT_DIR/table.jsonl.
"""

from __future__ import annotations

import argparse
import json
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BASELINES = REPO.parent / "shared" / "bench" / "baselines.py"


def run_product(bench: Path, out: Path, config: Path | None, reuse: bool = False) -> dict:
    target = out / f"{bench.name}.jsonl"
    if reuse and target.with_suffix(".summary.json").exists():
        return json.loads(target.with_suffix(".summary.json").read_text())["variants"][0]
    cmd = [sys.executable, "-m", "pipeline", *(["--config", str(config)] if config else []), "eval", str(bench),
           "--stages", "embedding+lbp+verify", "--json", str(target)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    summary = json.loads(target.with_suffix(".summary.json").read_text())
    return summary["variants"][0]


def redecide(bench: Path, out: Path, config: Path | None) -> dict:
    """The product's figures from its saved answers (OUT/<bench>.jsonl) under `config`'s decision.

    Every candidate's evidence (cosine, LBP distance, inliers, the SVC's
    label) is computed before `matcher.decide` and does not depend on it, so
    applying another accept point and other fusion weights to the saved
    evidence gives the answers a rerun would give (`pipeline.matcher.fuse`,
    the matcher's own code). The answers must come from the same encoder and
    evidence settings; ms per query are the saved run's.
    """
    from pipeline.config import load_config
    from pipeline.evaluation.metrics import Outcome, compute_figures
    from pipeline.matcher.fuse import fuse, gather_answer, tested_ratio
    from pipeline.results import MatchEvidence

    decide = load_config(config).matcher.decide
    saved = out / f"{bench.name}.jsonl"
    outcomes = []
    for line in saved.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("variant", "embedding+lbp+verify") != "embedding+lbp+verify":
            continue
        matches = sorted((MatchEvidence(**m) for m in row["matches"]), key=lambda m: m.rank)  # candidate order
        labels = [m.label for m in matches]
        if row["status"] == "rejected" or not matches:
            outcomes.append(Outcome(row["truth"] or "", None, row["status"], 0.0, tuple(labels)))
            continue
        evidence = gather_answer(matches)
        texture_counts = not (decide.texture_needs_bare_photo and row["stages"].get("decide", {}).get("cake_found"))
        verify = row["stages"].get("verify") or {}
        tested = tested_ratio(int(verify.get("verified", 0)), int(verify.get("deepened", 0)),
                              int(verify.get("tries_per_candidate", 1)))
        decision, _ = fuse(evidence, labels, decide.fusion, decide.accept_confidence, {}, texture_counts, tested)
        best = labels[int(decision.order[0])]
        outcomes.append(Outcome(row["truth"] or "", best, decision.status, float(decision.confidence), tuple(labels)))
    summary = json.loads(saved.with_suffix(".summary.json").read_text())["variants"][0]
    return {"figures": dataclasses.asdict(compute_figures(outcomes)), "ms_per_query": summary["ms_per_query"]}


def run_peers(bench: Path, out: Path, peers: str, baselines: Path = BASELINES) -> list[dict]:
    text = subprocess.run([sys.executable, str(baselines), str(bench), "--methods", peers], check=True,
                          capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    (out / f"{bench.name}.peers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("benches", type=Path, nargs="+")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--peers", default="lbp,sift")
    ap.add_argument("--baselines", type=Path, default=BASELINES, help=f"the peers' script (default {BASELINES})")
    ap.add_argument("--no-peers", action="store_true", help="reuse OUT_DIR/<bench>.peers.jsonl from an earlier run (run the peers where there is none)")
    ap.add_argument("--reuse", action="store_true", help="reuse OUT_DIR/<bench>.summary.json from an earlier run of the same config")
    ap.add_argument("--redecide", action="store_true",
                    help="apply --config's decision (matcher.decide) to the answers saved in OUT_DIR/<bench>.jsonl by an earlier run "
                         "with the same encoder and evidence settings, instead of rerunning the pipeline (after a recalibration)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("| bench | teaprint top1 | R@FAR1 | recall | precision | FAR | ms/q | best peer top1 | best peer R@FAR1 | peer ms/q | lead top1 / R@FAR1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for bench in args.benches:
        product = redecide(bench, args.out, args.config) if args.redecide else run_product(bench, args.out, args.config, args.reuse)
        peers_file = args.out / f"{bench.name}.peers.jsonl"
        peers = ([json.loads(l) for l in peers_file.read_text().splitlines()] if args.no_peers and peers_file.exists()
                 else run_peers(bench, args.out, args.peers, args.baselines))
        f = product["figures"]
        best_top1 = max(peers, key=lambda p: p["top1"])
        best_far = max(peers, key=lambda p: p["recall_at_far1"])
        row = {"bench": bench.name, "top1": f["top1"], "recall_at_far1": f["recall_at_far1"], "recall": f["recall"],
               "precision": f["precision"], "false_accept_rate": f["false_accept_rate"], "ms_per_query": product["ms_per_query"],
               "peer_top1": best_top1["top1"], "peer_top1_method": best_top1["method"],
               "peer_recall_at_far1": best_far["recall_at_far1"], "peer_far_method": best_far["method"],
               "peer_ms": {p["method"]: p["ms_per_query"] for p in peers}}
        rows.append(row)
        peer_ms = ", ".join(f"{p['method']} {p['ms_per_query']:.0f}" for p in peers)
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {bench.name} | {fmt(f['top1'])} | {fmt(f['recall_at_far1'])} | {fmt(f['recall'])} | {fmt(f['precision'])} | "
              f"{fmt(f['false_accept_rate'])} | {product['ms_per_query']:.0f} | {best_top1['top1']:.3f} ({best_top1['method']}) | "
              f"{best_far['recall_at_far1']:.3f} ({best_far['method']}) | "
              f"{peer_ms} | "
              f"{f['top1'] - best_top1['top1']:+.3f} / {f['recall_at_far1'] - best_far['recall_at_far1']:+.3f} |", flush=True)
    (args.out / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
