"""Run a benchmark folder through the engine, once per stage variant.

Layout (BENCHMARK.md)::

    BENCH/catalog/<label>-<n>.<ext>   registered photos (or catalog/<label>/<file>)
    BENCH/query/<name>.<ext>          photos to identify
    BENCH/truth.csv                   query,label[,source]; label "" = not in the catalog

What is measured, and what is shared
------------------------------------
1. The catalog is registered into a fresh temporary index (never the user's),
   timed end to end (decode, LBP, embedding, HDF5 commit): images per second.
   The encoder is called once on a dummy batch first, so one-off start-up
   costs are not charged to indexing.
2. Every query is prepared ONCE: decoded, its LBP histogram, its keypoints
   (only when a selected variant verifies) and its embedding computed
   (embeddings in batches of ``model.batch_size``). This time is shared by
   all variants and reported separately, step by step (`shared_ms`).
3. Each variant then runs its matcher stages on the same prepared data
   (`Engine.match_prepared` with the embedding given): its own
   `stage_ms_per_query`. A single query served with that variant costs about
   its `ms_per_query`: the shared steps it uses (keypoints only if it
   verifies) plus its stages. The embedding step is cheaper batched than it
   is for one photo at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pipeline.config import Config
from pipeline.engine import Engine, resolve_model_path
from pipeline.evaluation.metrics import CurvePoint, Figures, Outcome, compute_figures, far_recall_curve
from pipeline.evaluation.variants import Variant
from pipeline.features.embedding import Encoder
from pipeline.photos import photo_files
from pipeline.prepare import Prepared, prepare_or_error
from pipeline.results import MatchResult, ModelInfo, rejected


class BenchmarkError(ValueError):
    """A benchmark folder that does not follow the layout; the message says how."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark folder, read.

    Attributes
    ----------
    root : Path
    catalog : tuple of Path
        Registered photos, sorted.
    queries : tuple of Path
        Query photos in truth.csv order.
    truth : tuple of str
        Right label of each query; "" when its object is not in the catalog.
    """

    root: Path
    catalog: tuple[Path, ...]
    queries: tuple[Path, ...]
    truth: tuple[str, ...]


def load_benchmark(root: Path, config: Config) -> Benchmark:
    """Read a benchmark folder's catalog listing and truth.csv.

    A query named in truth.csv but missing on disk is kept: it is answered
    `rejected` (and so counted wrong), as the product would answer it.

    Raises
    ------
    BenchmarkError
        When catalog/ or truth.csv is missing, empty or malformed.
    """
    root = Path(root).absolute()
    catalog_dir = root / "catalog"
    if not catalog_dir.is_dir():
        raise BenchmarkError(f"{root}: no catalog/ folder (see BENCHMARK.md for the layout)")
    catalog = tuple(photo_files(catalog_dir, config, recursive=True))
    if not catalog:
        raise BenchmarkError(f"{catalog_dir}: no photos")
    names, labels = read_truth(root / "truth.csv")
    return Benchmark(root, catalog, tuple(root / "query" / n for n in names), tuple(labels))


def read_truth(path: Path) -> tuple[list[str], list[str]]:
    """(query file names, labels) from a truth.csv with columns query,label[,source]."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: missing (columns: query,label[,source])") from None
    if not rows:
        raise BenchmarkError(f"{path}: no queries")
    if "query" not in rows[0] or "label" not in rows[0]:
        raise BenchmarkError(f"{path}: needs columns 'query' and 'label', has {', '.join(rows[0])}")
    return [r["query"] for r in rows], [(r["label"] or "").strip() for r in rows]


# --------------------------------------------------------------------- results


@dataclass(frozen=True)
class IndexTiming:
    """How registering the benchmark's catalog went."""

    images: int
    added: int
    duplicates: int
    refused: tuple[tuple[str, str], ...]  # (path, reason)
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class PreparedQuery:
    """A query's shared work: its prepared photo and embedding, or why it failed."""

    name: str
    truth: str
    prepared: Prepared | None
    embedding: np.ndarray | None
    error: tuple[str, str] | None = None  # (code, reason)


@dataclass(frozen=True)
class VariantRun:
    """One variant's answers to every query, and its figures.

    Attributes
    ----------
    prepare_ms_per_query : float
        The shared preparation steps this variant uses (all but keypoint
        extraction when it does not verify), mean ms per query.
    stage_seconds : float
        Wall time of its matcher stages over all queries.
    """

    variant: Variant
    results: tuple[MatchResult, ...]
    figures: Figures
    curve: tuple[CurvePoint, ...]
    stage_seconds: float
    prepare_ms_per_query: float

    @property
    def stage_ms_per_query(self) -> float:
        """Its matcher stages only (shortlist .. decide), per query."""
        return 1e3 * self.stage_seconds / max(len(self.results), 1)

    @property
    def ms_per_query(self) -> float:
        """The shared steps it uses + its stages, per query."""
        return self.prepare_ms_per_query + self.stage_ms_per_query


@dataclass(frozen=True)
class EvalRun:
    """Everything `teaprint eval` measured on one benchmark."""

    bench: Benchmark
    model: ModelInfo
    model_path: str
    index: IndexTiming
    catalog_by_label: dict[str, tuple[str, ...]]
    prepare_seconds: float
    shared_ms: dict[str, float]
    variants: tuple[VariantRun, ...]

    @property
    def prepare_ms_per_query(self) -> float:
        """Wall time of the shared preparation, per query."""
        return 1e3 * self.prepare_seconds / max(len(self.bench.queries), 1)


def outcome(result: MatchResult, truth: str) -> Outcome:
    """The metrics' view of one result.

    The predicted label is the best-ranked match's; the shortlist labels are
    those of ``result.matches`` in shortlist order (each match's `rank`: the
    embedding and LBP sources interleaved), so recall@K measures what the
    shortlist passed on, before any later stage reordered it.
    """
    in_shortlist_order = sorted(result.matches, key=lambda m: m.rank)
    shortlisted = tuple(m.label for m in in_shortlist_order)
    best = result.matches[0].label if result.matches else None
    return Outcome(truth, best, result.status, float(result.confidence), shortlisted)


# ------------------------------------------------------------------------- run


def run_benchmark(
    bench: Benchmark,
    config: Config,
    model_root: Path,
    variants: Sequence[Variant],
    k: int = 5,
    progress: bool = True,
    workers: int = 1,
) -> EvalRun:
    """Index `bench`'s catalog into a temporary index and run every variant on its queries.

    Parameters
    ----------
    bench : Benchmark
    config : Config
        The user's config; each variant derives its own from it. Its index
        path is ignored: a temporary directory is used and removed afterwards.
    model_root : Path
        Where a relative `model.path` is looked up first (the `--root`).
    variants : sequence of Variant
    k : int
        The K of recall@K.
    progress : bool
        Show progress bars on stderr (only when it is a terminal).
    workers : int
        Processes for the queries' model-free preparation (1: in this one).
    """
    encoder = Encoder.load(resolve_model_path(config, Path(model_root)))
    base = shared_config(config, variants)
    with tempfile.TemporaryDirectory(prefix="teaprint-eval-") as tmp:
        engine = Engine(base, Path(tmp), encoder, serving=False)  # answers no one: no records, no history
        engine.warm_up()  # so that start-up costs are not timed
        index = index_catalog(engine, bench, progress)
        catalog_by_label = _catalog_by_label(engine)
        started = time.perf_counter()
        queries, embed_seconds = prepare_queries(engine, base, bench, progress, workers)
        prepare_seconds = time.perf_counter() - started
        shared = shared_breakdown(queries, embed_seconds)
        runs = tuple(
            run_variant(Engine(v.derive(base), Path(tmp), encoder, serving=False), v, queries, k, _uses(shared, v, base), progress)
            for v in variants
        )
        return EvalRun(bench, engine.model_info, encoder.info.path, index, catalog_by_label, prepare_seconds, shared, runs)


def shared_config(config: Config, variants: Sequence[Variant]) -> Config:
    """The config that indexes and prepares for all `variants`.

    A temporary index directory replaces the user's, and keypoints are
    extracted exactly when some variant verifies (whatever `local.enabled` says).
    """
    paths = dataclasses.replace(config.paths, index="index")
    local = dataclasses.replace(config.local, enabled=any(v.needs_local(config) for v in variants))
    return dataclasses.replace(config, paths=paths, local=local)


def _uses(shared: dict[str, float], variant: Variant, config: Config) -> float:
    """Mean ms per query of the shared steps `variant` uses."""
    return sum(ms for step, ms in shared.items() if step != "local" or variant.needs_local(config))


def index_catalog(engine: Engine, bench: Benchmark, progress: bool = True) -> IndexTiming:
    """Register the catalog photos, timed."""
    with _bar(len(bench.catalog), "index", progress) as bar:
        started = time.perf_counter()
        report = engine.index_files(bench.catalog, catalog_root=bench.root / "catalog", progress=bar.update)
        seconds = time.perf_counter() - started
    if not report.added:
        raise BenchmarkError(f"{bench.root / 'catalog'}: no photo could be registered")
    refused = tuple((p, reason) for p, _, reason in report.failed)
    return IndexTiming(len(bench.catalog), len(report.added), len(report.duplicates), refused, seconds)


def _catalog_by_label(engine: Engine) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for entry in engine.snapshot().entries:
        out.setdefault(entry.label, []).append(entry.path)
    return {label: tuple(paths) for label, paths in out.items()}


def prepare_queries(
    engine: Engine, config: Config, bench: Benchmark, progress: bool = True, workers: int = 1
) -> tuple[list[PreparedQuery], float]:
    """Decode, LBP, keypoints and embed every query once, embeddings in batches of `model.batch_size`.

    The model-free work runs in `workers` processes (spawned, as the daemon
    does) when `workers` > 1; embedding runs here. The encoder input arrays
    are dropped once embedded, so memory per query stays small whatever the
    encoder's input size.

    Returns
    -------
    (queries, embed_seconds)
        One `PreparedQuery` per query in truth.csv order, and the wall time
        spent in the encoder.
    """
    out: list[PreparedQuery] = []
    embed_seconds = 0.0
    size = config.model.batch_size
    with _mapper(workers) as mapper, _bar(len(bench.queries), "prepare", progress) as bar:
        # No thread beside the keypoints (`prepare`'s `beside`): the per-query cost reported is the sum of the steps.
        done = mapper(functools.partial(prepare_or_error, beside=False), bench.queries, repeat(config),
                      repeat(engine.encoder_input))
        pending: list[PreparedQuery] = []
        for path, truth, prepared in zip(bench.queries, bench.truth, done):
            pending.append(_prepared_query(path, truth, prepared))
            if len(pending) == size:
                embed_seconds += _embed_into(engine, pending)
                out.extend(pending)
                bar.update(len(pending))
                pending = []
        embed_seconds += _embed_into(engine, pending)
        out.extend(pending)
    return out, embed_seconds


def shared_breakdown(queries: Sequence[PreparedQuery], embed_seconds: float) -> dict[str, float]:
    """Mean ms per query of each shared step.

    Steps: decode, locate (cake locator and rectification; when
    `locate.enabled`), lbp, input (encoder input), local (keypoints; only
    when extracted), embed (batched).
    """
    n = max(len(queries), 1)
    names = {"decode": "decode", "locate": "locate", "lbp": "lbp", "prepare": "input", "local": "local"}
    steps: dict[str, float] = {}
    for q in queries:
        if q.prepared is not None:
            for key, step in names.items():
                if key in q.prepared.timings_ms:
                    steps[step] = steps.get(step, 0.0) + q.prepared.timings_ms[key]
    shared = {name: total / n for name, total in steps.items()}
    shared["embed"] = 1e3 * embed_seconds / n
    return shared


def _prepared_query(path: Path, truth: str, prepared: Prepared | tuple[str, str]) -> PreparedQuery:
    if isinstance(prepared, tuple):  # (code, reason) from prepare_or_error
        return PreparedQuery(path.name, truth, None, None, prepared)
    return PreparedQuery(path.name, truth, prepared, None)


def _embed_into(engine: Engine, queries: list[PreparedQuery]) -> float:
    """Embed `queries` in place (slimming their prepared data); returns the seconds spent."""
    ok = [i for i, q in enumerate(queries) if q.prepared is not None]
    started = time.perf_counter()
    vectors = engine.embed([queries[i].prepared for i in ok])  # type: ignore[misc]
    seconds = time.perf_counter() - started
    for i, vector in zip(ok, vectors):
        slim = dataclasses.replace(queries[i].prepared, encoder_input=np.zeros(0, np.float32))  # type: ignore[arg-type]
        queries[i] = dataclasses.replace(queries[i], prepared=slim, embedding=vector)
    return seconds


@contextmanager
def _mapper(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """`map`, or an ordered process-pool map when `workers` > 1."""
    if workers <= 1:
        yield map
        return
    context = multiprocessing.get_context("spawn")  # TensorFlow's threads don't survive fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield functools.partial(pool.map, chunksize=4)


def run_variant(
    engine: Engine, variant: Variant, queries: Sequence[PreparedQuery], k: int, prepare_ms: float, progress: bool = True
) -> VariantRun:
    """Match every prepared query with `engine` (configured for `variant`), timed."""
    results: list[MatchResult] = []
    stage_seconds = 0.0
    with _bar(len(queries), variant.name, progress) as bar:
        for q in queries:
            started = time.perf_counter()
            results.append(_match(engine, q))
            stage_seconds += time.perf_counter() - started
            bar.update(1)
    outcomes = [outcome(r, q.truth) for r, q in zip(results, queries)]
    figures = compute_figures(outcomes, k=k)
    curve = tuple(far_recall_curve(outcomes))
    return VariantRun(variant, tuple(results), figures, curve, stage_seconds, prepare_ms)


def _match(engine: Engine, query: PreparedQuery) -> MatchResult:
    if query.prepared is None:
        code, reason = query.error or ("unreadable", "not prepared")
        return rejected(query.name, reason, code, model=engine.model_info)
    return engine.match_prepared(query.prepared, query.name, embedding=query.embedding)


@contextmanager
def _bar(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar on stderr, shown only when stderr is a terminal and `enabled`."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None if enabled else True, leave=False) as bar:
        yield bar
