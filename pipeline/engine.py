"""The identification engine: photo in, descriptors, catalog, matcher, result out.

`pipeline.prepare.prepare` does the model-free work of a file (decode, LBP,
encoder input) and can run in a worker process; `Engine` holds the loaded model and the catalog and
does what needs them (embedding, committing, matching). The daemon, the CLI,
the evaluation and the server all go through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.catalog import CatalogIndex, NewEntry, label_from_path
from pipeline.config import REPO_ROOT, Config
from pipeline.features.embedding import Encoder
from pipeline.intake import IntakeError
from pipeline.matcher import decide, refine, shortlist
from pipeline.prepare import EncoderInput, Prepared, prepare
from pipeline.results import MatchEvidence, MatchResult, ModelInfo, rejected


@dataclass(frozen=True)
class IndexReport:
    added: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    failed: tuple[tuple[str, str, str], ...] = ()  # (path, code, reason)


def resolve_model_path(config: Config, root: Path) -> Path:
    """The model file: relative paths are tried under `root`, then the install."""
    path = Path(config.model.path)
    if path.is_absolute():
        return path
    candidate = root / path
    return candidate if candidate.exists() else REPO_ROOT / path


class Engine:
    """A loaded encoder and an open catalog, with the operations on them."""

    def __init__(self, config: Config, root: Path, encoder: Encoder, check_model: bool = True) -> None:
        self.config = config
        self.root = Path(root).resolve()
        self.encoder = encoder
        self.catalog = CatalogIndex(self.path("index"), model_id=encoder.info.model_id if check_model else None)
        self.shape = EncoderInput(encoder.info.input_size, encoder.info.channels, encoder.info.disc_mask)

    @classmethod
    def load(cls, config: Config, root: Path, check_model: bool = True) -> "Engine":
        return cls(config, root, Encoder.load(resolve_model_path(config, Path(root))), check_model=check_model)

    def path(self, name: str) -> Path:
        """A configured path (`paths.<name>`) resolved under the root."""
        return self.root / getattr(self.config.paths, name)

    @property
    def model_info(self) -> ModelInfo:
        configured = self.config.matcher.shortlist.threshold
        if configured is not None:
            return ModelInfo(self.encoder.info.model_id, configured, "config")
        if self.encoder.info.threshold is not None:
            return ModelInfo(self.encoder.info.model_id, float(self.encoder.info.threshold), "model")
        return ModelInfo(self.encoder.info.model_id, self.config.matcher.shortlist.fallback_threshold, "fallback")

    # ---------------------------------------------------------------- indexing
    def prepare(self, path: Path, root: Path | None = None) -> Prepared:
        return prepare(path, self.config, self.shape, root=root)

    def embed(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Embeddings (N, D) of prepared photos, in batches of `model.batch_size`."""
        if not prepared:
            return np.zeros((0, self.encoder.info.embedding_dim), np.float32)
        size = self.config.model.batch_size
        batches = [
            self.encoder.embed_prepared(np.stack([p.encoder_input for p in prepared[i : i + size]]))
            for i in range(0, len(prepared), size)
        ]
        return np.concatenate(batches)

    def new_entries(self, prepared: Sequence[Prepared], catalog_root: Path | None = None) -> list[NewEntry]:
        vectors = self.embed(prepared)
        return [
            NewEntry(p.sha256, str(Path(p.path).absolute()), label_from_path(p.path, catalog_root), v, p.lbp)
            for p, v in zip(prepared, vectors)
        ]

    def index_files(
        self,
        paths: Iterable[Path],
        catalog_root: Path | None = None,
        batch: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """Register photos, one catalog commit per `batch` files."""
        added: list[str] = []
        duplicates: list[str] = []
        failed: list[tuple[str, str, str]] = []
        pending: list[Prepared] = []

        def flush() -> None:
            if pending:
                result = self.catalog.commit(self.new_entries(pending, catalog_root))
                added.extend(result.added)
                duplicates.extend(result.duplicates)
                pending.clear()

        for path in paths:
            try:
                pending.append(self.prepare(Path(path)))
            except IntakeError as err:
                failed.append((str(path), err.code, str(err)))
            if progress:
                progress(1)
            if len(pending) >= batch:
                flush()
        flush()
        return IndexReport(tuple(added), tuple(duplicates), tuple(failed))

    # ---------------------------------------------------------------- matching
    def match_file(self, path: Path, root: Path | None = None) -> MatchResult:
        """Identify one photo file; a file that cannot be read gives `rejected`."""
        name = Path(path).name
        try:
            prepared = self.prepare(Path(path), root=root)
        except IntakeError as err:
            return rejected(name, str(err), err.code, model=self.model_info)
        return self.match_prepared(prepared, name)

    def match_prepared(self, prepared: Prepared, query_name: str, embedding: np.ndarray | None = None) -> MatchResult:
        """Run shortlist -> refine -> decide for one prepared photo."""
        timings = dict(prepared.timings_ms)
        t0 = time.perf_counter()
        query = self.embed([prepared])[0] if embedding is None else embedding
        t1 = time.perf_counter()
        self.catalog.refresh()
        entries = self.catalog.entries()
        embeddings, lbps = self.catalog.matrices()
        cfg = self.config.matcher
        info = self.model_info
        short = shortlist(query, embeddings, cfg.shortlist.top_k, info.threshold)
        t2 = time.perf_counter()
        labels = [entries[i].label for i in short.indices]
        refined = refine(
            prepared.lbp,
            lbps[short.indices] if len(short) else np.zeros((0, prepared.lbp.size), np.float32),
            labels,
            c=cfg.refine.svc_c,
            kernel=cfg.refine.kernel,
            enabled=cfg.refine.enabled,
        )
        t3 = time.perf_counter()
        decision = decide(short, refined, labels, cfg.decide.accept_confidence)
        t4 = time.perf_counter()
        matches = tuple(
            MatchEvidence(
                image=entries[short.indices[i]].path,
                id=entries[short.indices[i]].id,
                label=labels[i],
                similarity=round(float(short.similarities[i]), 6),
                svc_label=refined.label,
                lbp_distance=round(float(refined.lbp_distances[i]), 6),
            )
            for i in decision.order
        )
        timings.update(embed=(t1 - t0) * 1e3, shortlist=(t2 - t1) * 1e3, refine=(t3 - t2) * 1e3, decide=(t4 - t3) * 1e3)
        timings["total"] = sum(timings.values())
        stages = {
            "shortlist": {
                "candidates": len(self.catalog),
                "kept": len(short),
                "threshold": info.threshold,
                "top_k": cfg.shortlist.top_k,
                "best_rejected_similarity": short.best_rejected,
            },
            "refine": {"mode": refined.mode, "svc_label": refined.label, "votes": refined.votes, "kept": int(refined.kept.size)},
            "decide": {"agreed": list(decision.agreed), "accept_confidence": cfg.decide.accept_confidence},
        }
        return MatchResult(
            query=query_name,
            status=decision.status,
            label=decision.label,
            confidence=round(decision.confidence, 6),
            matches=matches,
            stages=stages,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            model=info,
            sha256=prepared.sha256,
        )
