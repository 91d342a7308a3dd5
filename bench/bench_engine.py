#!/usr/bin/env python3
"""Engine benchmark: catalog indexing throughput, match latency, peak RSS.

    .venv/bin/python bench/bench_engine.py [--quick]

Prints a table and, last, one JSON line with every figure. Speeds are also
given as ratios to a baseline measured in the same run (plain `cv2.imread` of
the same files), because the machine is shared and absolute numbers drift.

1. Indexing: ~16 synthetic 12-megapixel JPEGs (4000x3000, quality 90) go
   through `Engine.index_files` into a temp index; the same files are decoded
   with plain `cv2.imread` as the baseline. Passes alternate (decode, index,
   decode, index, ...) and the medians are compared. The engine decodes large
   JPEGs reduced (IMREAD_REDUCED_*, `intake.work_side`), so it can beat a full
   decode: a ratio above 1 is expected and is the point.
2. Matching: catalogs of 1k and 100k entries with synthetic unit-norm
   embeddings and LBP histograms (some clustered around the real query
   embeddings, 3 labels per cluster, so shortlists are full and the SVC runs;
   the shortlist threshold is set by config override so that about `top_k`
   entries pass). ~50 real prepared query photos are matched with
   `Engine.match_prepared`; the whole call and its search part
   (shortlist + refine, from `timings_ms`) are reported, p50 and p95, with the
   query embedding time.
3. Peak RSS of this process (`ru_maxrss`).

Helpers here (`choose_model`, `make_photo`, ...) are also used by
`bench_daemon.py`; nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# ----------------------------------------------------------------- shared helpers


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def choose_model(tmp: Path) -> tuple[Path, str]:
    """The default config's model if it exists, else an untrained stand-in saved under `tmp`.

    Returns (model path, description). The stand-in is built in a subprocess
    so the caller does not need to import TensorFlow for it.
    """
    from pipeline.config import load_config
    from pipeline.engine import resolve_model_path

    default = resolve_model_path(load_config(), REPO)
    if default.is_file() and default.with_suffix(".json").is_file():
        return default.resolve(), f"trained model {default}"
    path = tmp / "bench.keras"
    code = (
        "from pathlib import Path; from pipeline.training.model import build_encoder, save_encoder; "
        f"save_encoder(build_encoder(96, 3, 128, 32), Path({str(path)!r}), {{'threshold': None}})"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(REPO), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the stand-in model failed:\n{done.stderr[-3000:]}")
    return path, f"untrained stand-in build_encoder(96, 3, 128, 32) ({default} not found)"


def write_config(path: Path, model: Path, extra: str = "") -> Path:
    path.write_text(f"model:\n  path: {model}\n{extra}", encoding="utf-8")
    return path


def source_photos() -> list[np.ndarray]:
    """scikit-image's bundled photos, RGB uint8."""
    from skimage import data

    grey = [data.camera(), data.brick(), data.grass(), data.gravel()]
    out = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out += [np.repeat(g[..., None], 3, axis=2) for g in grey]
    return [np.ascontiguousarray(p) for p in out]


SOURCE_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel")


class PhotoMaker:
    """Distinct photo-like RGB images of any size from the bundled photos.

    Each image is a random rotation, crop, flip and gain of a source,
    upscaled, plus film grain from a shared noise tile at a random offset (so
    large images keep photo-like detail and every file has distinct bytes).
    Image `i` of seed `s` is the same on every run.
    """

    def __init__(self) -> None:
        self.sources = source_photos()
        self.tile = np.random.default_rng(12345).normal(0, 4.0, (1024, 1024, 3)).astype(np.int16)

    def make(self, width: int, height: int, seed: int, i: int, source: int | None = None) -> tuple[int, np.ndarray]:
        rng = np.random.default_rng((seed, i))
        k = int(rng.integers(len(self.sources))) if source is None else source % len(self.sources)
        src = self.sources[k]
        h, w = src.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-12, 12)), 1.0)
        img = cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        frac = float(rng.uniform(0.7, 1.0))
        ch, cw = int(h * frac), int(w * frac)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = cv2.convertScaleAbs(np.ascontiguousarray(img), alpha=float(rng.uniform(0.85, 1.15)))
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        grain = np.roll(self.tile, (int(rng.integers(0, 1024)), int(rng.integers(0, 1024))), axis=(0, 1))
        for ty in range(0, height, 1024):  # add the grain block by block (no full-size noise array)
            for tx in range(0, width, 1024):
                th, tw = min(1024, height - ty), min(1024, width - tx)
                img[ty : ty + th, tx : tx + tw] += grain[:th, :tw]
        np.clip(img, 0, 255, out=img)
        return k, img.astype(np.uint8)

    def jpeg(self, width: int, height: int, seed: int, i: int, quality: int = 90, source: int | None = None) -> tuple[int, bytes]:
        k, rgb = self.make(width, height, seed, i, source)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return k, buf.tobytes()


_MAKER: PhotoMaker | None = None


def _write_one(spec: tuple) -> int:
    global _MAKER
    if _MAKER is None:
        _MAKER = PhotoMaker()
    path, width, height, seed, i, quality, source = spec
    k, data = _MAKER.jpeg(width, height, seed, i, quality, source)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return k


def write_jpegs(specs: list[tuple], workers: int = 2) -> list[int]:
    """Write JPEGs for specs (path, width, height, seed, i, quality, source or None) in a
    fork pool, so neither the time nor the memory lands on the measured process.
    Returns the source index used for each. Call before TensorFlow is imported.
    """
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_write_one, specs, chunksize=max(1, len(specs) // (8 * workers)))


def decode_only_rate(paths: list[Path]) -> float:
    """Images per second of plain full `cv2.imread` of `paths`, one process."""
    t0 = time.perf_counter()
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        assert img is not None, p
    return len(paths) / (time.perf_counter() - t0)


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\n== {title}")
    for name, value, note in rows:
        print(f"  {name:<{w0}}  {value:>{w1}}  {note}")
    sys.stdout.flush()


# ----------------------------------------------------------------- synthetic catalog


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _lbp_blocks(raw: np.ndarray, points_radii) -> np.ndarray:
    """Make each (P, R) block of each row a histogram summing to 1."""
    out = np.maximum(raw, 1e-6).astype(np.float32)
    start = 0
    for p, _ in points_radii:
        block = out[:, start : start + p + 2]
        block /= block.sum(axis=1, keepdims=True)
        start += p + 2
    return out


def synthetic_entries(n: int, query_emb: np.ndarray, query_lbp: np.ndarray, top_k: int, points_radii, seed: int):
    """(embeddings, lbps, labels) for `n` entries; the first ones cluster around each query.

    Each query gets `top_k + 2` neighbours at cosine 0.80-0.97 in 3 labels,
    with LBP histograms near the query's (one offset per label); the rest are
    random unit vectors with random histograms in labels of ~20 entries.
    """
    rng = np.random.default_rng(seed)
    q, d = query_emb.shape
    b = query_lbp.shape[1]
    per = top_k + 2
    n_cluster = min(n, q * per)
    emb = np.empty((n, d), np.float32)
    lbp = np.empty((n, b), np.float32)
    labels: list[str] = []
    for i in range(n_cluster):
        j, m = divmod(i, per)
        u = rng.normal(size=d)
        u -= u.dot(query_emb[j]) * query_emb[j]
        u = u / np.linalg.norm(u)
        c = rng.uniform(0.80, 0.97)
        emb[i] = c * query_emb[j] + np.sqrt(1 - c * c) * u
        lab = m % 3
        offset = np.random.default_rng((seed, j, lab)).normal(0, 0.01, b)
        lbp[i] = query_lbp[j] + offset + rng.normal(0, 0.002, b)
        labels.append(f"cake{j:03d}{'abc'[lab]}")
    rest = n - n_cluster
    if rest:
        emb[n_cluster:] = _unit(rng.normal(size=(rest, d)).astype(np.float32))
        lbp[n_cluster:] = rng.gamma(1.0, 1.0, (rest, b)).astype(np.float32)
        labels += [f"bg{i // 20:05d}" for i in range(rest)]
    return _unit(emb), _lbp_blocks(lbp, points_radii), labels


def threshold_for(emb: np.ndarray, query_emb: np.ndarray, top_k: int) -> float:
    """Median over queries of their `top_k`-th best similarity: about top_k pass."""
    sims = emb @ query_emb.T  # (N, Q)
    kth = -np.partition(-sims, top_k - 1, axis=0)[top_k - 1]
    return round(float(np.floor(float(np.median(kth)) * 1e4) / 1e4), 4)


# ----------------------------------------------------------------- the benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    args = parser.parse_args()
    quick = args.quick
    n_big_files = 4 if quick else 16
    index_passes = 2 if quick else 3
    n_queries = 10 if quick else 50
    query_repeats = 1 if quick else 2
    catalog_sizes = (1_000, 10_000) if quick else (1_000, 100_000)

    figures: dict = {"bench": "engine", "quick": quick}
    tmp = Path(tempfile.mkdtemp(prefix="teaprint-bench-engine-"))
    try:
        t_start = time.perf_counter()
        model_path, model_desc = choose_model(tmp)
        print(f"model: {model_desc}")
        figures["model"] = model_desc

        # Photos first, in a fork pool, before TensorFlow is imported here.
        big_dir, qdir = tmp / "big", tmp / "queries"
        big = [big_dir / f"{SOURCE_NAMES[i % 8]}-{i:03d}.jpg" for i in range(n_big_files)]
        qpaths = [qdir / f"q{i:03d}.jpg" for i in range(n_queries)]
        t0 = time.perf_counter()
        write_jpegs([(p, 4000, 3000, 1, i, 90, i) for i, p in enumerate(big)]
                    + [(p, 1600, 1200, 2, i, 90, None) for i, p in enumerate(qpaths)])
        gen_s = time.perf_counter() - t0
        mean_mb = statistics.mean(p.stat().st_size for p in big) / 1e6
        print(f"made {len(big)} 4000x3000 JPEGs (q90, mean {mean_mb:.1f} MB) and {len(qpaths)} 1600x1200 queries in {gen_s:.1f}s")

        from pipeline.config import load_config
        from pipeline.engine import Engine, resolve_model_path
        from pipeline.features.embedding import Encoder
        from pipeline.features.lbp import lbp_length

        cfg_path = write_config(tmp / "bench.yaml", model_path)
        config = load_config(cfg_path)
        encoder = Encoder.load(resolve_model_path(config, tmp))
        engine = Engine(config, tmp / "root-index", encoder)
        info = encoder.info
        print(f"encoder: id {info.model_id}, input {info.input_size}px x{info.channels}, dim {info.embedding_dim}, "
              f"rotation_pool {info.rotation_pool}; batch_size {config.model.batch_size}; work_side {config.intake.work_side}")
        # Warm up the encoder (its first call sets it up) so no timing pays for it.
        t0 = time.perf_counter()
        engine.warm_up()
        figures["first_embed_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        figures["rss_after_model_load_mb"] = round(peak_rss_mb(), 1)

        # ---------------------------------------------------------- 1. indexing
        decode_rates, index_rates = [], []
        for rep in range(index_passes):
            decode_rates.append(decode_only_rate(big))
            e = Engine(config, tmp / f"root-index-{rep}", encoder)
            t0 = time.perf_counter()
            report = e.index_files(big)
            index_rates.append(len(big) / (time.perf_counter() - t0))
            assert len(report.added) == len(big) and not report.failed, report
            assert len(e.snapshot()) == len(big)
            shutil.rmtree(tmp / f"root-index-{rep}")
        decode_rate = statistics.median(decode_rates)
        index_rate = statistics.median(index_rates)
        figures.update(
            index_files=len(big), index_file_mb=round(mean_mb, 2), index_passes=index_passes,
            index_imgs_per_s=round(index_rate, 3), decode_only_imgs_per_s=round(decode_rate, 3),
            index_to_decode_ratio=round(index_rate / decode_rate, 3),
            index_imgs_per_s_passes=[round(r, 3) for r in index_rates],
            decode_only_imgs_per_s_passes=[round(r, 3) for r in decode_rates],
            rss_after_index_mb=round(peak_rss_mb(), 1),
        )
        print_table(
            f"1. catalog indexing, {len(big)} x 12 MP JPEG (4000x3000, q90), median of {index_passes} alternating passes",
            [
                ("Engine.index_files", f"{index_rate:.2f} img/s", f"passes {[round(r, 2) for r in index_rates]}"),
                ("cv2.imread (full decode only)", f"{decode_rate:.2f} img/s", f"passes {[round(r, 2) for r in decode_rates]}"),
                ("ratio index / decode-only", f"{index_rate / decode_rate:.2f}x",
                 "engine decodes JPEGs reduced (IMREAD_REDUCED_*, work_side) so >1 is possible and is the point"),
            ],
        )

        # ---------------------------------------------------------- 2. matching
        queries = [engine.prepare(p) for p in qpaths]
        query_emb = engine.embed(queries)
        query_lbp = np.stack([p.lbp for p in queries])
        assert query_lbp.shape[1] == lbp_length(config.lbp.points_radii)
        top_k = config.matcher.shortlist.top_k

        from pipeline.catalog import CatalogIndex, CatalogWriter, NewEntry

        match_rows = []
        figures["match"] = {}
        for n in catalog_sizes:
            emb, lbp, labels = synthetic_entries(n, query_emb, query_lbp, top_k, config.lbp.points_radii, seed=n)
            threshold = threshold_for(emb, query_emb, top_k)
            root = tmp / f"root-{n}"
            cfg_n = load_config(write_config(tmp / f"bench-{n}.yaml", model_path,
                                             f"matcher:\n  shortlist:\n    threshold: {threshold}\n"))
            e = Engine(cfg_n, root, encoder)
            # Synthetic entries carry no keypoints: written through a writer told not to require them.
            writer = CatalogWriter(CatalogIndex(root / "index", model_id=info.model_id), info.model_id, require_local=False)
            entries = [
                NewEntry(hashlib.sha256(f"{n}/{i}".encode()).hexdigest(), f"/catalog/{labels[i]}/{i:06d}.jpg", labels[i], emb[i], lbp[i])
                for i in range(n)
            ]
            t0 = time.perf_counter()
            writer.register(entries)
            commit_all_s = time.perf_counter() - t0
            del entries
            t0 = time.perf_counter()
            reopened = CatalogIndex(root / "index", model_id=info.model_id)
            open_s = time.perf_counter() - t0
            assert len(reopened) == n
            del reopened
            for p in queries[:3]:  # warm-up: first call stacks the catalog matrices
                e.match_prepared(p, "warm")
            whole, search, embed_ms, kept, modes = [], [], [], [], []
            for _ in range(query_repeats):
                for i, p in enumerate(queries):
                    t0 = time.perf_counter()
                    r = e.match_prepared(p, f"q{i}")
                    whole.append((time.perf_counter() - t0) * 1e3)
                    search.append(r.timings_ms["shortlist"] + r.timings_ms["refine"])
                    embed_ms.append(r.timings_ms["embed"])
                    kept.append(r.stages["shortlist"]["kept"])
                    modes.append(r.stages["refine"]["mode"])
            # A daemon adding photos to this catalog: one commit of a 32-photo batch,
            # then the first match (which re-reads the index and re-stacks the matrices).
            extra = [NewEntry(hashlib.sha256(f"x{n}/{i}".encode()).hexdigest(), f"/catalog/x/{i}.jpg", "x", emb[i], lbp[i]) for i in range(32)]
            t0 = time.perf_counter()
            writer.register(extra)
            commit32_ms = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            e.match_prepared(queries[0], "after-commit")
            after_commit_ms = (time.perf_counter() - t0) * 1e3
            svc_frac = modes.count("svc") / len(modes)
            fig = {
                "entries": n, "threshold": threshold, "samples": len(whole),
                "match_p50_ms": round(pct(whole, 50), 2), "match_p95_ms": round(pct(whole, 95), 2),
                "search_p50_ms": round(pct(search, 50), 2), "search_p95_ms": round(pct(search, 95), 2),
                "embed_p50_ms": round(pct(embed_ms, 50), 2), "embed_p95_ms": round(pct(embed_ms, 95), 2),
                "kept_median": float(np.median(kept)), "svc_fraction": round(svc_frac, 3),
                "commit_all_s": round(commit_all_s, 2), "open_index_s": round(open_s, 3),
                "commit_32_ms": round(commit32_ms, 1), "first_match_after_commit_ms": round(after_commit_ms, 1),
                "rss_mb": round(peak_rss_mb(), 1),
            }
            figures["match"][str(n)] = fig
            label = f"{n:,} entries"
            match_rows += [
                (f"{label}: match_prepared p50 / p95", f"{fig['match_p50_ms']:.1f} / {fig['match_p95_ms']:.1f} ms",
                 f"whole call, {len(whole)} samples ({len(queries)} queries x{query_repeats})"),
                (f"{label}: search p50 / p95", f"{fig['search_p50_ms']:.1f} / {fig['search_p95_ms']:.1f} ms",
                 f"shortlist+refine; threshold {threshold}, kept median {fig['kept_median']:.0f}, SVC ran {svc_frac:.0%}"),
                (f"{label}: query embed p50 / p95", f"{fig['embed_p50_ms']:.1f} / {fig['embed_p95_ms']:.1f} ms", "one query, inside match_prepared"),
                (f"{label}: commit all / reopen index", f"{commit_all_s:.2f} / {open_s:.2f} s", "one commit of every entry; fresh CatalogIndex load"),
                (f"{label}: commit 32 more / next match", f"{commit32_ms:.0f} / {after_commit_ms:.0f} ms",
                 "a daemon batch into this catalog, then the first match after it"),
            ]
            del e, emb, lbp, labels
            shutil.rmtree(root)
        print_table(f"2. matching ({len(queries)} real 1600x1200 query photos, synthetic catalogs, top_k {top_k})", match_rows)

        # ---------------------------------------------------------- 3. memory
        figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
        figures["wall_s"] = round(time.perf_counter() - t_start, 1)
        print_table("3. memory", [
            ("peak RSS after model load", f"{figures['rss_after_model_load_mb']:.0f} MB", "TensorFlow + encoder, before any photo"),
            ("peak RSS after indexing", f"{figures['rss_after_index_mb']:.0f} MB", "ru_maxrss (includes TensorFlow + model)"),
            *[(f"peak RSS after {int(k):,}-entry catalog", f"{v['rss_mb']:.0f} MB", "") for k, v in figures["match"].items()],
            ("peak RSS (whole run)", f"{figures['peak_rss_mb']:.0f} MB", f"run took {figures['wall_s']:.0f}s"),
        ])
        print(json.dumps(figures, separators=(",", ":")))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
