"""The identification engine: the one face every front-end (CLI, daemon, server, evaluation) uses.

`pipeline.prepare.prepare` does the model-free work of a file (decode, LBP,
keypoints, encoder input) and can run in a worker process. `Engine` holds the
loaded encoder and the catalog and offers what front-ends need: warm-up,
embedding, matching, registering / renaming / removing / re-embedding through
the catalog's one writer, the model's identity and one status document.

It also owns what follows an answer: a matched result carries the cake's
record (`pipeline.records`, with how often the cake was identified before),
and every answer a front-end gives is noted once (`answered`) in the history
of checks (`pipeline.history`) and the metrics (`pipeline.ops.metrics`).
Front-ends say when they answered; they never write either themselves.

Thread-safety: every read goes through `snapshot()`, one immutable catalog
generation, and the encoder is thread-safe, so `match_prepared`, `embed` and
`status` may run in many threads at once; writes go through the writer,
which serialises them. Front-ends keep no catalog objects or locks of their
own.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import structlog

from pipeline.catalog import CatalogEntry, CatalogIndex, CatalogSnapshot, CatalogWriter, NewEntry, Registered, features_agree, label_from_path
from pipeline.config import Config
from pipeline.data import shipped
from pipeline.features.embedding import Encoder
from pipeline.history import Filters, History, HistoryPage, check_from_result, check_from_result_file, history_at
from pipeline.intake import IntakeError
from pipeline.matcher import Query, Ranked, run
from pipeline.matcher.refine import load_classifier
from pipeline.search.vocabulary import Vocabulary
from pipeline.search.ann import AnnIndex, AnnSettings
from pipeline.search.milvus import IndexSpec, MilvusEmbeddings, resolve_uri
from pipeline.search.votes import FILE as VOTES_FILE
from pipeline.search.votes import VoteStore
from pipeline.ops.metrics import Metrics, merge_expositions, summary
from pipeline.prepare import EncoderInput, Prepared, feature_settings, prepare
from pipeline.records import RecordScan, RecordStore, result_record
from pipeline.results import CatalogRef, MatchEvidence, MatchResult, ModelInfo, rejected
from pipeline.state import daemon_state, metrics_path, write_status
from pipeline.threads import limit_blas_threads

log = structlog.get_logger("teaprint.engine")

STATUS_PROBLEMS = 20  # record problems listed in status (all are counted)
RECORD_SCAN_MAX_AGE_S = 30.0  # status shows record problems at most this old: a scan stats every sidecar


@dataclass(frozen=True)
class IndexReport:
    added: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    failed: tuple[tuple[str, str, str], ...] = ()  # (path, code, reason)


@dataclass(frozen=True)
class ReembedReport:
    """What `Engine.reembed` did: `count` entries re-described with `model_id`, or nothing when some were `unreadable`."""

    count: int
    model_id: str
    unreadable: tuple[str, ...] = ()


def resolve_model_path(config: Config, root: Path) -> Path:
    """The model file: relative paths are tried under `root`, then among the package's shipped files."""
    path = Path(config.model.path)
    if path.is_absolute():
        return path
    candidate = root / path
    return candidate if candidate.exists() else shipped(*path.parts)


class Engine:
    """A loaded encoder and an open catalog, with the operations on them.

    Parameters
    ----------
    config : Config
    root : Path
        The folder holding the index (`paths.index`) and the drop folders.
    encoder : Encoder
    check_model : bool
        Refuse a catalog built with another encoder (`ModelMismatchError`);
        False only for `status` and `reembed`.
    component : str
        Who answers through this engine (`daemon`, `server`, `cli`): the
        `component` label of its metrics.
    serving : bool
        Answers go to people: matched results carry cake records and answers
        are kept in the history of checks. False for evaluation and
        benchmarks, which answer no one (no records, no history file).
    """

    def __init__(self, config: Config, root: Path, encoder: Encoder, check_model: bool = True,
                 component: str = "engine", serving: bool = True) -> None:
        self._config = config
        self.root = Path(root).resolve()
        self._encoder = encoder
        info = encoder.info
        features = feature_settings(config)
        self._record = CatalogIndex(self.index_dir, model_id=info.model_id if check_model else None,
                                    features=features if check_model else None)
        self._writer = CatalogWriter(self._record, info.model_id, require_local=config.local.enabled, features=features)
        self.encoder_input = EncoderInput(info.input_size, info.channels, info.disc_mask)
        paths = config.paths
        self._records = RecordStore(self.root / paths.inbox_catalog, self.root / paths.failed) if serving else None
        self._history = history_at(self.root, config) if serving else None
        self._metrics = Metrics(component)
        self._record_scan: tuple[float, RecordScan] | None = None
        shortlist = config.matcher.shortlist
        self._vote_store = VoteStore(self.index_dir, Vocabulary.load(), shortlist.vote_keypoints) if shortlist.vote_top_k > 0 else None
        self._nearest = _nearest_source(config, self.index_dir)
        self._texture = _ann(config, self.index_dir, "lbps_sqrt")  # the LBP source's prefilter, whatever the backend

    @classmethod
    def load(cls, config: Config, root: Path, check_model: bool = True, component: str = "engine") -> "Engine":
        """The engine of `root` with the configured encoder; BLAS runs on one thread from now on (`pipeline.threads`)."""
        limit_blas_threads()
        return cls(config, root, Encoder.load(resolve_model_path(config, Path(root))), check_model=check_model, component=component)

    @property
    def index_dir(self) -> Path:
        return self.root / self._config.paths.index

    @property
    def model_info(self) -> ModelInfo:
        """The encoder's id and the shortlist threshold in force, with where it came from."""
        configured = self._config.matcher.shortlist.threshold
        if configured is not None:
            return ModelInfo(self._encoder.info.model_id, configured, "config")
        if self._encoder.info.threshold is not None:
            return ModelInfo(self._encoder.info.model_id, float(self._encoder.info.threshold), "model")
        return ModelInfo(self._encoder.info.model_id, self._config.matcher.shortlist.fallback_threshold, "fallback")

    def warm_up(self) -> None:
        """Run the encoder once now, so the first photo does not pay for its set-up."""
        shape = self.encoder_input
        self._encoder.embed_prepared(np.zeros((1, shape.size, shape.size, shape.channels), np.float32))

    @staticmethod
    def warm_up_matcher() -> None:
        """Load what the matcher loads on first use (the texture classifier's library, seconds on a loaded machine).

        Needs no loaded engine: the daemon runs it on a thread beside
        `Engine.load`; the server in the background once it is up (a query
        that comes first waits for the same import, never does it twice).
        """
        load_classifier()

    # ---------------------------------------------------------------- descriptors
    def prepare(self, path: Path, root: Path | None = None, for_catalog: bool = False) -> Prepared:
        """Model-free work on one file (`pipeline.prepare.prepare`); `for_catalog` refuses a photo of several cakes."""
        return prepare(path, self._config, self.encoder_input, root=root, for_catalog=for_catalog)

    def embed(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Embeddings (N, D) of prepared photos, in batches of `model.batch_size`."""
        if not prepared:
            return np.zeros((0, self._encoder.info.embedding_dim), np.float32)
        size = self._config.model.batch_size
        batches = [
            self._encoder.embed_prepared(np.stack([p.encoder_input for p in prepared[i : i + size]]))
            for i in range(0, len(prepared), size)
        ]
        return np.concatenate(batches)

    # ---------------------------------------------------------------- the catalog
    def snapshot(self) -> CatalogSnapshot:
        """The catalog's latest committed generation (immutable; safe to keep while others write)."""
        return self._record.snapshot()

    def describe(self, prepared: Sequence[Prepared], catalog_root: Path | None = None,
                 labels: Sequence[str] | None = None) -> list[NewEntry]:
        """Catalog entries for prepared photos: embedded, labelled, ready for `register`.

        Parameters
        ----------
        catalog_root : Path, optional
            Labels come from the subfolder under it, else from the file name.
        labels : sequence of str, optional
            One label per photo, instead of deriving them from the paths.
        """
        vectors = self.embed(prepared)
        return [
            NewEntry(sha256=p.sha256, path=str(Path(p.path).absolute()), embedding=v, lbp=p.lbp, local=p.local,
                     label=labels[i] if labels is not None else label_from_path(p.path, catalog_root))
            for i, (p, v) in enumerate(zip(prepared, vectors))
        ]

    def register(self, entries: Sequence[NewEntry], place: Callable[[NewEntry], NewEntry] | None = None) -> Registered:
        """Store new entries through the catalog's writer, in one commit (see `CatalogWriter.register`)."""
        return self._writer.register(entries, place=place)

    def index_files(
        self,
        paths: Iterable[Path],
        catalog_root: Path | None = None,
        batch: int = 64,
        progress: Callable[[int], None] | None = None,
        root: Path | None = None,
    ) -> IndexReport:
        """Register photo files, one catalog commit per `batch` files.

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
                result = self.register(self.describe(pending, catalog_root))
                added.extend(e.sha256 for e in result.added)
                duplicates.extend(e.sha256 for e in result.duplicates)
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

    def rename(self, src: Path, dest: Path, catalog_root: Path | None = None) -> CatalogEntry | None:
        """The entry registered at `src` now lives at `dest` (label from `dest`); None when `src` was not registered."""
        entry = self.snapshot().by_path(str(src))
        if entry is None:
            return None
        return self._writer.rename(entry, str(dest), label_from_path(dest, catalog_root))

    def remove(self, entries: Sequence[CatalogEntry]) -> tuple[str, ...]:
        """Remove entries; returns the sha256 of those that were still registered."""
        return self._writer.remove(entries)

    def reembed(self) -> ReembedReport:
        """Re-describe every entry from its photo with the loaded encoder, in one step.

        All or nothing: when a photo is missing, unreadable or no longer holds
        the registered bytes, the catalog is left as it was and the report
        names each such photo.
        """
        model_id = self._encoder.info.model_id
        self._record.refresh_unchecked()
        readable: list[tuple[CatalogEntry, Prepared]] = []
        unreadable: list[str] = []
        for entry in self._record.entries():
            try:
                prepared = self.prepare(Path(entry.path), for_catalog=True)
            except IntakeError as err:
                unreadable.append(f"{entry.path}: {err}")
                continue
            if prepared.sha256 != entry.sha256:
                unreadable.append(f"{entry.path}: the file no longer holds the registered photo (sha256 changed)")
                continue
            readable.append((entry, prepared))
        if unreadable:
            return ReembedReport(0, model_id, tuple(unreadable))
        vectors = self.embed([p for _, p in readable])
        fresh = [replace(entry, embedding=v, lbp=p.lbp, local=p.local) for (entry, p), v in zip(readable, vectors)]
        self._writer.reembed(fresh, model_id)
        return ReembedReport(len(fresh), model_id)

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

    def match_prepared(self, prepared: Prepared, query_name: str, embedding: np.ndarray | None = None,
                       snapshot: CatalogSnapshot | None = None) -> MatchResult:
        """Run the matcher on one prepared photo against `snapshot` (default: the latest catalog generation).

        The result names the generation it was matched against (`catalog`).
        """
        clock = _Clock(prepared.timings_ms)
        vector = self.embed([prepared])[0] if embedding is None else embedding
        clock.lap("embed")
        snap = self.snapshot() if snapshot is None else snapshot
        info = self.model_info
        outcome = run(Query(vector, prepared.lbp, prepared.local, prepared.cake_found), snap, self._config.matcher, info.threshold, self._votes(snap),
                      self._nearest_for(snap), clock.lap, self._texture_for(snap))
        decision = outcome.decision
        record = self._result_record(decision.label) if decision.status == "matched" and decision.label else None
        return MatchResult(
            query=query_name,
            status=decision.status,
            label=decision.label,
            confidence=round(decision.confidence, 6),
            matches=tuple(_evidence(snap.entry(r.row), r) for r in outcome.ranked),
            stages=outcome.stages(),
            timings_ms=clock.totals(),
            model=info,
            sha256=prepared.sha256,
            catalog=CatalogRef(snap.generation, len(snap)),
            cake=prepared.cake,
            record=record,
        )

    def serving_snapshot(self, persist: bool = True) -> CatalogSnapshot:
        """The latest generation with everything the matcher derives from it already built.

        A match against it pays nothing for the generation (the keypoint vote
        store reads the keypoints of the entries new since it last caught up);
        the daemon's catalog lane calls this before it publishes a generation
        to the query lane, with `persist` False, and `persist_search` after:
        the search structures' saves that fall due (a merge of vote runs, an
        IVF file) then never delay a publication.
        """
        snap = self.snapshot()
        self._votes(snap, persist)
        self._nearest_for(snap, persist)
        self._texture_for(snap, persist)
        return snap

    def persist_search(self) -> None:
        """Save what the search structures took in since their last save, where a save is due."""
        for structure in (self._vote_store, self._nearest, self._texture):
            if structure is not None:
                structure.persist()

    def close(self) -> None:
        """Release what outlives a call: the Milvus connection (milvus-lite lets one process at a time open its file), an ANN index never saved."""
        if self._nearest is not None:
            self._nearest.close()
            self._nearest = None
        self._texture.close()

    def _nearest_for(self, snap: CatalogSnapshot, persist: bool = True) -> MilvusEmbeddings | AnnIndex | None:
        """The embedding search caught up with `snap`; None: the shortlist scans the snapshot exactly (a small embedded catalog)."""
        if self._nearest is None:
            return None
        self._nearest.follow(snap, persist)
        return self._nearest if self._nearest.ready(snap) else None

    def _texture_for(self, snap: CatalogSnapshot, persist: bool = True) -> AnnIndex | None:
        """The LBP prefilter's index caught up with `snap`; None: a small catalog, scanned."""
        self._texture.follow(snap, persist)
        return self._texture if self._texture.ready(snap) else None

    def reindex(self, backend: str | None = None) -> dict[str, Any]:
        """Rebuild the search structures derived from the HDF5 record (the vote store; the Milvus collection with that backend)."""
        snap = self.snapshot()
        done: dict[str, Any] = {"entries": len(snap), "generation": snap.generation}
        if self._vote_store is not None:
            (self.index_dir / VOTES_FILE).unlink(missing_ok=True)
            self._vote_store = VoteStore(self.index_dir, self._vote_store.vocabulary, self._vote_store.per_entry)
            self._vote_store.follow(snap)
            self._vote_store.save()
            done["votes"] = str(self.index_dir / VOTES_FILE)
        self._texture.rebuild(snap)
        if (backend or self._config.search.backend) == "embedded":
            ann = self._nearest if isinstance(self._nearest, AnnIndex) else _ann(self._config, self.index_dir)
            ann.rebuild(snap)
            done["ann"] = [str(a.path) for a in (ann, self._texture) if a.ready(snap)]
        if (backend or self._config.search.backend) == "milvus":
            target = self._nearest if isinstance(self._nearest, MilvusEmbeddings) else _milvus(self._config, self.index_dir)
            target.rebuild(snap)
            done["milvus"] = {"uri": resolve_uri(self._config.search.milvus, self.index_dir), "collection": target.collection,
                              "index": target.index.kind, "rows": int(np.count_nonzero(snap.alive))}
        return done

    def _votes(self, snap: CatalogSnapshot, persist: bool = True) -> VoteStore | None:
        """The catalog-wide keypoint vote, caught up with `snap` (None when the source is off).

        Catching up costs O(entries new since the last call): their keypoints
        are read from the segments and their words appended.
        """
        if self._vote_store is None:
            return None
        self._vote_store.follow(snap, persist)
        return self._vote_store

    # ---------------------------------------------------------------- records
    def record(self, label: str) -> dict[str, Any] | None:
        """The `record` object of a result for `label` (its cake record, and `checks`: how often and
        when it was identified, from the history); None when no record names it."""
        if self._records is None:
            return None
        found = self._records.get(label)
        if found is None:
            return None
        checks = self._history.label_checks(label) if self._history is not None else None
        return result_record(found, checks.to_dict() if checks is not None else None)

    def set_record(self, label: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Replace `label`'s own sidecar (`<catalog>/<label>/<label>.json`) with `values`; the merged record.

        Raises
        ------
        RecordError
            A label that cannot name a folder, or fields that cannot be taken (nothing is written).
        """
        if self._records is None:
            raise RuntimeError("this engine keeps no cake records (serving=False)")
        self._records.set(label, values)
        self._record_scan = None  # status must show the new record now, not after RECORD_SCAN_MAX_AGE_S
        record = self.record(label)
        assert record is not None  # just written
        return record

    def _result_record(self, label: str) -> dict[str, Any] | None:
        """`record(label)` for a result: a record that cannot be read never costs the answer."""
        try:
            return self.record(label)
        except Exception as exc:  # noqa: BLE001 - the answer matters more than its record
            log.error("record_failed", label=label, error=f"{type(exc).__name__}: {exc}")
            return None

    def record_scan(self, max_age_s: float = RECORD_SCAN_MAX_AGE_S) -> RecordScan:
        """Every record and every record-file problem, rescanned when older than `max_age_s`."""
        if self._records is None:
            return RecordScan({}, ())
        now = time.monotonic()
        if self._record_scan is None or now - self._record_scan[0] >= max_age_s:
            self._record_scan = (now, self._records.scan())
        return self._record_scan[1]

    # ---------------------------------------------------------------- answers given
    def answered(self, result: MatchResult, source: str, result_path: Path | None = None) -> None:
        """Note one answer given to someone: its row in the history of checks, and the metrics. Never raises.

        Parameters
        ----------
        source : {"folder", "cli", "http"}
            Where the query came from. A rejected drop-folder query is also
            counted as a failed file (the daemon moves it to `failed/`).
        result_path : Path, optional
            The result file (the drop folder's). The history row's key then
            comes from the answer itself, so noting it again after a restart
            (`replayed`) adds nothing; without it, every call is a new check.
        """
        try:
            self._metrics.observe_result(result, source)
            if source == "folder" and result.status == "rejected":
                self._metrics.failed_file("query", result.error_code or "")
            if self._history is not None:
                key = None if result_path is not None else uuid.uuid4().hex
                self._history.append(check_from_result(result.to_dict(), source, result_path, key=key))
        except Exception as exc:  # noqa: BLE001 - bookkeeping never costs an answer
            log.error("answer_not_noted", query=result.query, error=f"{type(exc).__name__}: {exc}")

    def replayed(self, result_path: Path) -> None:
        """A drop-folder answer found already written after a restart (journal recovery): its history row, once.

        The row's key is the one `answered` gave it, so an answer noted before
        the kill is not noted twice. Never raises.
        """
        if self._history is None:
            return
        try:
            self._history.append(check_from_result_file(Path(result_path)))
        except Exception as exc:  # noqa: BLE001 - e.g. a result file edited by hand
            log.error("answer_not_noted", result=str(result_path), error=f"{type(exc).__name__}: {exc}")

    def failed_file(self, folder: str, code: str) -> None:
        """Count a file moved to `failed/` (folder `catalog` or `query`) in the metrics."""
        self._metrics.failed_file(folder, code)

    def history_page(self, filters: Filters = Filters(), offset: int = 0, limit: int = 50) -> HistoryPage:
        """One page of the history of checks, newest first (raises `HistoryError` when it cannot be read now)."""
        if self._history is None:
            raise RuntimeError("this engine keeps no history (serving=False)")
        return self._history.page(filters, offset, limit)

    # ---------------------------------------------------------------- metrics
    def metrics_text(self, with_daemon: bool = True) -> str:
        """The Prometheus exposition of this engine's metrics, its gauges refreshed now.

        With `with_daemon` (every front-end but the daemon itself), the
        daemon's metrics file on this root is merged in, so one scrape sees both.
        """
        snap = self.snapshot()
        self._metrics.set_catalog(len(snap), snap.label_count)
        self._metrics.set_record_problems(len(self.record_scan().problems))
        if self._history is not None:
            self._metrics.set_history_pending(self._history.pending)
        own = self._metrics.render()
        if not with_daemon:
            return own
        try:
            daemon = metrics_path(self.root, self._config).read_text(encoding="utf-8")
        except OSError:
            return own
        try:
            return merge_expositions(own, daemon)
        except ValueError as err:  # a torn or foreign file: serve our own part
            log.warning("daemon_metrics_unreadable", error=str(err))
            return own

    def publish_status(self, daemon: dict[str, Any]) -> None:
        """The daemon's state files: `status.json` (`status` with its live `daemon` section) and `metrics.prom`.

        The section's `queue` (photos waiting per folder) sets the backlog
        gauges; checks waiting for the history database are retried first.
        """
        if self._history is not None:
            self._history.flush()
        queue = daemon.get("queue") or {}
        self._metrics.set_backlog(catalog=int(queue.get("catalog", 0)), query=int(queue.get("query", 0)))
        status = self.status(daemon=daemon)
        write_status(self.root, self._config, status, self.metrics_text(with_daemon=False))

    # ---------------------------------------------------------------- status
    def status(self, daemon: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
        """The one status document: catalog, model, daemon, records, history, metrics, and any front-end's own `sections`.

        `teaprint status` prints it, the daemon stores it (with its live
        `daemon` section) in its status file, and the server answers it at
        `/status` (with a `server` section). Without `daemon`, the daemon's
        state is read from the root's state files, and its metrics are
        merged into `metrics` (a summary of the Prometheus exposition).
        """
        snap = self.snapshot()
        info = self.model_info
        encoder = self._encoder.info
        metrics = summary(self.metrics_text(with_daemon=daemon is None))
        if daemon is None:
            daemon = daemon_state(self.root, self._config, snap.paths)
        scan = self.record_scan()
        return {
            "root": str(self.root),
            "entries": len(snap),
            "labels": snap.label_count,
            "index": {"path": str(self.index_dir), "generation": snap.generation, "size_bytes": self._record.size_bytes(),
                      "model_id": snap.model_id},
            "model": {"id": info.id, "path": encoder.path, "runtime": encoder.runtime, "threshold": info.threshold,
                      "threshold_source": info.threshold_source},
            "model_matches_index": snap.model_id in (None, info.id),
            "features_match_index": not len(snap) or features_agree(self._record.index_features, feature_settings(self._config)),
            "daemon": daemon,
            "records": {"cakes": len(scan.records), "problem_count": len(scan.problems),
                        "problems": [p.to_dict() for p in scan.problems[:STATUS_PROBLEMS]]},
            "history": self._history.health() if self._history is not None else None,
            "metrics": metrics,
            **sections,
        }


def _milvus(config: Config, index_dir: Path) -> MilvusEmbeddings:
    m = config.search.milvus
    return MilvusEmbeddings(resolve_uri(m, index_dir), m.collection, IndexSpec.of(m), m.token)


def _ann(config: Config, index_dir: Path, column: str = "embeddings") -> AnnIndex:
    a = config.search.ann
    return AnnIndex(index_dir, AnnSettings(a.min_rows, a.lists, a.probes, a.save_every), column)


def _nearest_source(config: Config, index_dir: Path) -> MilvusEmbeddings | AnnIndex:
    """The embedding shortlist's search: the Milvus collection, or the embedded ANN index (exact scan while the catalog is small)."""
    return _milvus(config, index_dir) if config.search.backend == "milvus" else _ann(config, index_dir)


def _evidence(entry: CatalogEntry, ranked: Ranked) -> MatchEvidence:
    """One offered match as the result contract writes it (values rounded for JSON)."""
    return MatchEvidence(
        image=entry.path,
        id=entry.id,
        label=entry.label,
        similarity=round(ranked.similarity, 6),
        svc_label=ranked.svc_label,
        lbp_distance=round(ranked.lbp_distance, 6),
        source=ranked.source,
        rank=ranked.position,
        inliers=ranked.inliers,
        ratio_matches=ranked.ratio_matches,
        rotation_deg=round(ranked.rotation_deg, 2) if ranked.rotation_deg is not None else None,
        scale=round(ranked.scale, 4) if ranked.scale is not None else None,
        score=round(ranked.score, 6) if ranked.score is not None else None,
        surface_peak=round(ranked.surface_peak, 3) if ranked.surface_peak is not None else None,
    )


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
