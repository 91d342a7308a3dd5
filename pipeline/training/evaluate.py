"""Quick nearest-neighbour evaluation of an encoder on a BENCHMARK.md folder.

Used to guide training choices (KTH-TIPS is evaluation only) and by the
shipped model's report. ``python -m pipeline.training.evaluate MODEL BENCH
[--pool 1 4 8]`` prints top1 of cosine nearest neighbour, catalog vs
registered queries, and the embedding time per query. `embedding_figures`
gives the embedding-only figures of BENCHMARK.md (top1, recall@K of the
cosine shortlist, recall at 1% FAR swept on the best cosine);
``bench/compare_encoders.py`` tables them for several models.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.features.embedding import Encoder, EncoderInfo


def load_bench(bench: Path, unregistered: bool = False) -> tuple[list[np.ndarray], list[str], list[np.ndarray], list[str]]:
    """Catalog images + labels, registered query images + labels (RGB or grey uint8).

    With `unregistered`, queries whose object is not in the catalog come too, labelled "".
    """
    bench = Path(bench)

    def read(p: Path) -> np.ndarray:
        im = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if im is None:
            raise OSError(f"cannot read {p}")
        return im if im.ndim == 2 else cv2.cvtColor(im[..., :3], cv2.COLOR_BGR2RGB)

    cat_paths = sorted((bench / "catalog").iterdir())
    cat = [read(p) for p in cat_paths]
    cat_labels = [p.name.split("-")[0] for p in cat_paths]
    queries, q_labels = [], []
    with open(bench / "truth.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] or unregistered:
                queries.append(read(bench / "query" / row["query"]))
                q_labels.append(row["label"])
    return cat, cat_labels, queries, q_labels


def with_pool(encoder: Encoder, pool: int, disc_mask: bool | None = None) -> Encoder:
    """The same weights with another rotation pool (and optionally disc mask)."""
    info: EncoderInfo = dataclasses.replace(
        encoder.info, rotation_pool=pool, disc_mask=encoder.info.disc_mask if disc_mask is None else disc_mask
    )
    return Encoder(encoder.run, info)


def nn_top1(encoder: Encoder, bench_data: tuple[Any, ...]) -> dict[str, float]:
    """top1 of cosine nearest neighbour, and embedding ms per query (batched)."""
    cat, cat_labels, queries, q_labels = bench_data
    c = encoder.embed(cat)
    t0 = time.perf_counter()
    q = encoder.embed(queries)
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(queries))
    best = np.argmax(q @ c.T, axis=1)
    top1 = float(np.mean([cat_labels[b] == lab for b, lab in zip(best, q_labels)]))
    return {"top1": round(top1, 4), "ms_per_query": round(ms, 2), "queries": len(queries)}


def embedding_figures(
    query_vectors: np.ndarray, q_labels: Sequence[str], cat_vectors: np.ndarray, cat_labels: Sequence[str], k: int = 10
) -> dict[str, float | None]:
    """Embedding-only figures: the cosine shortlist and the cosine as the confidence.

    Parameters
    ----------
    query_vectors : ndarray, shape (Q, D), unit rows
    q_labels : sequence of str
        Right label per query; "" = not in the catalog.
    cat_vectors : ndarray, shape (N, D), unit rows
    cat_labels : sequence of str
    k : int
        Shortlist length for recall@K (labels in order of their best entry).

    Returns
    -------
    dict
        top1, recall_at_k, recall_at_far1 (BENCHMARK.md definitions, the best
        cosine as confidence), genuine_median (the right label's cosine,
        registered queries), registered, unregistered.
    """
    from pipeline.evaluation.metrics import Outcome, recall_at_far, recall_at_k, top1

    sims = query_vectors @ cat_vectors.T
    outcomes = []
    genuine = []
    for row, truth in zip(sims, q_labels):
        order = np.argsort(-row, kind="stable")
        labels: list[str] = []
        for i in order:
            if cat_labels[i] not in labels:
                labels.append(cat_labels[i])
            if len(labels) == k:
                break
        outcomes.append(Outcome(truth, labels[0], "no_match", float(row[order[0]]), tuple(labels)))
        if truth:
            genuine.append(max(float(row[i]) for i in range(len(cat_labels)) if cat_labels[i] == truth))
    far_recall, _ = recall_at_far(outcomes)
    return {"top1": top1(outcomes), "recall_at_k": recall_at_k(outcomes, k), "recall_at_far1": far_recall,
            "genuine_median": float(np.median(genuine)) if genuine else None,
            "registered": sum(bool(t) for t in q_labels), "unregistered": sum(not t for t in q_labels)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("bench", type=Path, nargs="+")
    parser.add_argument("--pool", type=int, nargs="+", default=None, help="rotation pools to try (default: metadata's)")
    parser.add_argument("--untrained", action="store_true", help="same architecture, random initial weights")
    args = parser.parse_args(argv)
    enc = Encoder.load(args.model)
    if args.untrained:
        from pipeline.training.model import build_encoder

        meta = enc.info.metadata
        arch = meta.get("architecture", {})
        model = build_encoder(enc.info.input_size, enc.info.channels, enc.info.embedding_dim, int(arch.get("width", 32)), int(meta.get("training", {}).get("seed", 0)))
        enc = Encoder.from_keras(model, enc.info)
    for bench in args.bench:
        data = load_bench(bench)
        for pool in args.pool or [enc.info.rotation_pool]:
            print(bench.name, f"pool={pool}", nn_top1(with_pool(enc, pool), data), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
