"""The identification engine: photo in, descriptors, catalog, matcher, result out.

`pipeline.prepare.prepare` does the model-free work of a file (decode, LBP,
encoder input) and can run in a worker process; `Engine` holds the loaded model and the catalog and
does what needs them (embedding, committing, matching). The daemon, the CLI,
the evaluation and the server all go through here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.catalog import CatalogIndex, NewEntry, label_from_path
from pipeline.config import REPO_ROOT, Config
from pipeline.features.embedding import Encoder
from pipeline.intake import IntakeError
from pipeline.matcher import Decision, Refinement, Shortlist, Verified, decide, fuse, gather, lbp_nearest, refine, shortlist, verify, widen
from pipeline.matcher.fuse import LabelScore
from pipeline.matcher.votes import VoteIndex, vote, build_vote_index
from pipeline.prepare import EncoderInput, Prepared, feature_settings, prepare
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


@dataclass(frozen=True)
class CatalogView:
    """One catalog generation as a match reads it: entries, their matrices, the vote index.

    Taken together under the engine's lock, so a concurrent refresh can never
    pair one generation's entries with another's matrices; the objects are
    never mutated afterwards (a refresh builds new ones).
    """

    entries: list
    embeddings: np.ndarray
    lbps: np.ndarray
    votes: VoteIndex | None


class Engine:
    """A loaded encoder and an open catalog, with the operations on them.

    `match_prepared` and `embed` may be called from many threads at once (the
    HTTP server does): the catalog is read through `catalog_view` and the
    encoder is thread-safe; the stages after it are pure functions.
    """

    def __init__(self, config: Config, root: Path, encoder: Encoder, check_model: bool = True) -> None:
        self.config = config
        self.root = Path(root).resolve()
        self.encoder = encoder
        self.catalog = CatalogIndex(self.path("index"), model_id=encoder.info.model_id if check_model else None,
                                    features=feature_settings(config) if check_model else None)
        self.shape = EncoderInput(encoder.info.input_size, encoder.info.channels, encoder.info.disc_mask)
        self._votes: VoteIndex | None = None
        self._view_lock = threading.Lock()

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
    def prepare(self, path: Path, root: Path | None = None, for_catalog: bool = False) -> Prepared:
        return prepare(path, self.config, self.shape, root=root, for_catalog=for_catalog)

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
            NewEntry(p.sha256, str(Path(p.path).absolute()), label_from_path(p.path, catalog_root), v, p.lbp, p.local)
            for p, v in zip(prepared, vectors)
        ]

    def index_files(
        self,
        paths: Iterable[Path],
        catalog_root: Path | None = None,
        batch: int = 64,
        progress: Callable[[int], None] | None = None,
        root: Path | None = None,
    ) -> IndexReport:
        """Register photos, one catalog commit per `batch` files.

        A file that cannot be taken, or fails in any way while prepared, is
        reported in `failed` (code, reason) and the others go on. With `root`,
        links must stay inside it (a folder walked by `teaprint index`).
        """
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
                pending.append(self.prepare(Path(path), root=root, for_catalog=True))
            except IntakeError as err:
                failed.append((str(path), err.code, str(err)))
            except Exception as exc:  # noqa: BLE001 - one odd file must not cost the others
                failed.append((str(path), "processing_failed", f"{path}: processing failed: {type(exc).__name__}: {exc}"))
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
            return rejected(name, str(err), err.code, sha256=err.sha256, model=self.model_info)
        except Exception as exc:  # noqa: BLE001 - one odd file gives one rejected result, not a crash
            return rejected(name, f"{path}: processing failed: {type(exc).__name__}: {exc}", "processing_failed", model=self.model_info)
        try:
            return self.match_prepared(prepared, name)
        except Exception as exc:  # noqa: BLE001
            return rejected(name, f"{path}: matching failed: {type(exc).__name__}: {exc}", "processing_failed",
                            sha256=prepared.sha256, model=self.model_info)

    def match_prepared(self, prepared: Prepared, query_name: str, embedding: np.ndarray | None = None) -> MatchResult:
        """Run shortlist -> refine -> verify -> decide for one prepared photo."""
        clock = _Clock(prepared.timings_ms)
        query = self.embed([prepared])[0] if embedding is None else embedding
        clock.lap("embed")
        cfg = self.config.matcher
        view = self.catalog_view(with_votes=cfg.shortlist.vote_top_k > 0 and cfg.verify.enabled)
        entries, embeddings, lbps = view.entries, view.embeddings, view.lbps
        info = self.model_info
        sl = cfg.shortlist
        short = shortlist(query, embeddings, sl.top_k, info.threshold, sl.min_candidates, sl.floor)
        extras = [("lbp", lbp_nearest(prepared.lbp, lbps, sl.lbp_top_k))]
        if sl.vote_top_k > 0 and cfg.verify.enabled:
            extras.append(("votes", vote(view.votes, prepared.local, sl.vote_top_k, cfg.verify.ratio)))
        candidates = widen(short, extras, query, embeddings)
        clock.lap("shortlist")
        rows = candidates.indices
        labels = [entries[i].label for i in rows]
        refined = refine(
            prepared.lbp,
            lbps[rows] if len(rows) else np.zeros((0, prepared.lbp.size), np.float32),
            labels,
            c=cfg.refine.svc_c,
            kernel=cfg.refine.kernel,
            enabled=cfg.refine.enabled,
        )
        clock.lap("refine")
        verified = None
        if cfg.verify.enabled:
            v = cfg.verify
            verified = verify(prepared.local, [entries[i].local for i in rows], v.max_candidates, v.ratio, v.ransac_px, v.min_matches)
            clock.lap("verify")
        decision, scores = self._decide(candidates, refined, labels, verified)
        clock.lap("decide")
        matches = tuple(self._evidence(entries[rows[i]], i, candidates, refined, verified, scores) for i in decision.order)
        stages = {
            "shortlist": {
                "candidates": len(entries),
                "kept": len(short),
                "widened_to": len(candidates),
                "threshold": info.threshold,
                "top_k": cfg.shortlist.top_k,
                "lbp_top_k": cfg.shortlist.lbp_top_k,
                "vote_top_k": cfg.shortlist.vote_top_k if cfg.verify.enabled else 0,
                "best_rejected_similarity": short.best_rejected,
            },
            "refine": {"mode": refined.mode, "svc_label": refined.label, "votes": refined.votes, "kept": int(refined.kept.size)},
            "verify": {
                "enabled": verified is not None,
                "query_keypoints": verified.query_keypoints if verified else 0,
                "verified": len(verified.positions) if verified else 0,
                "max_inliers": max((r.inliers for r in verified.results), default=0) if verified else 0,
            },
            "decide": {"agreed": list(decision.agreed),
                       "accept_confidence": cfg.decide.accept_confidence if verified is not None else cfg.decide.similarity_accept,
                       "method": "fusion" if verified is not None else "similarity",
                       **_expert_report(scores, matches)},
        }
        return MatchResult(
            query=query_name,
            status=decision.status,
            label=decision.label,
            confidence=round(decision.confidence, 6),
            matches=matches,
            stages=stages,
            timings_ms=clock.totals(),
            model=info,
            sha256=prepared.sha256,
            cake=prepared.cake,
        )

    def catalog_view(self, with_votes: bool = True) -> CatalogView:
        """The catalog's latest committed generation, refreshed and read as one consistent view."""
        with self._view_lock:
            self.catalog.refresh()
            entries = self.catalog.entries()
            embeddings, lbps = self.catalog.matrices()
            return CatalogView(entries, embeddings, lbps, self._vote_index(entries) if with_votes else None)

    def _vote_index(self, entries: list) -> VoteIndex:
        """The catalog-wide keypoint index, rebuilt only when the catalog changed."""
        generation = self.catalog.generation
        if self._votes is None or self._votes.generation != generation:
            per_entry = self.config.matcher.shortlist.vote_keypoints
            self._votes = build_vote_index([e.local for e in entries], per_entry, generation)
        return self._votes

    def _decide(self, candidates: Shortlist, refined: Refinement, labels: list[str], verified: Verified | None) -> tuple[Decision, dict[str, LabelScore]]:
        cfg = self.config.matcher.decide
        if verified is None:
            return decide(candidates, refined, labels, cfg.similarity_accept), {}
        inliers = [verified.inliers_at(i) for i in range(len(labels))]
        evidence = gather(labels, candidates.similarities, refined.lbp_distances, inliers, refined.label)
        embedding_first = labels[0] if labels and candidates.sources and candidates.sources[0] in ("embedding", "both") else None
        best_verified = max(range(len(labels)), key=lambda i: inliers[i], default=None)
        first_choices = {
            "shortlist": embedding_first,
            "refine": refined.label if refined.mode == "svc" else None,
            "verify": labels[best_verified] if best_verified is not None and inliers[best_verified] > 0 else None,
        }
        return fuse(evidence, labels, cfg.fusion, cfg.accept_confidence, first_choices)

    @staticmethod
    def _evidence(entry, position: int, candidates: Shortlist, refined: Refinement, verified: Verified | None, scores: dict[str, LabelScore]) -> MatchEvidence:
        check = verified.result_at(position) if verified else None
        return MatchEvidence(
            image=entry.path,
            id=entry.id,
            label=entry.label,
            similarity=round(float(candidates.similarities[position]), 6),
            svc_label=refined.label,
            lbp_distance=round(float(refined.lbp_distances[position]), 6),
            source=candidates.sources[position] if candidates.sources else "embedding",
            rank=int(position),
            inliers=check.inliers if check else None,
            rotation_deg=round(check.rotation_deg, 2) if check and check.rotation_deg is not None and check.inliers else None,
            scale=round(check.scale, 4) if check and check.scale is not None and check.inliers else None,
            score=round(scores[entry.label].confidence, 6) if entry.label in scores else None,
        )


def _expert_report(scores: dict[str, LabelScore], matches: Sequence[MatchEvidence]) -> dict[str, float]:
    """The fused decision's two expert probabilities for the best label (empty without fusion)."""
    if not scores or not matches or matches[0].label not in scores:
        return {}
    best = scores[matches[0].label]
    return {"geometric": round(best.geometric, 6), "appearance": round(best.appearance, 6)}


class _Clock:
    """Stage timings in ms, lap by lap, on top of the preparation's."""

    def __init__(self, start: dict[str, float]) -> None:
        self.timings = dict(start)
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = (now - self.last) * 1e3
        self.last = now

    def totals(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.timings.items()}
        out["total"] = round(sum(self.timings.values()), 3)
        return out
