"""The query lane's work: one query photo in, exactly one published answer out.

Publishing is the journal's sequence (`pipeline.daemon.journal`): intent
record, result JSON written atomically, error file, photo moved out of the
inbox, record dropped. A kill at any instant leaves either no answer (the
photo is still in the inbox and is answered after restart) or an answer
whose move `recover` finishes; never two answers.

Every answer is noted once (the history of checks and the metrics, through
`Engine.answered`) after its photo moved and before its record goes: a kill
in between leaves the record, and recovery notes it again through
`Engine.replayed`, which adds nothing when the first note was made (the
history's key comes from the answer itself).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import structlog

from pipeline.catalog import CatalogSnapshot
from pipeline.config import Config
from pipeline.daemon.budget import Failure, prepare_within
from pipeline.daemon.events import FileReady
from pipeline.daemon.folders import DropFolders, FailedFolder, now
from pipeline.daemon.journal import MAX_CRASHES, Intent, Journal, move_aside, unique_path
from pipeline.daemon.status import Tally
from pipeline.engine import Engine
from pipeline.fsutil import remove_stale_temps
from pipeline.prepare import Prepared
from pipeline.results import MatchResult, dumps, rejected, write_json_atomic

log = structlog.get_logger("teaprint.daemon")


@dataclass(frozen=True)
class Answered:
    """One answer, published (what `QueryAnswerer.answer` returns).

    Attributes
    ----------
    photo : Path
        Where the query photo was dropped.
    destination : Path
        Where it is now (`outbox/processed/`, or `inbox/failed/` when rejected).
    result_path : Path
        The result JSON in `outbox/`.
    text : str
        The result JSON as published.
    wall_ms : float
        Milliseconds from taking the photo to publishing.
    """

    photo: Path
    destination: Path
    result_path: Path
    text: str
    wall_ms: float

    @property
    def result(self) -> dict[str, Any]:
        """The published JSON's content, parsed on demand (1.5 ms a 45-candidate result: not on the answer's path)."""
        return json.loads(self.text)


class QueryAnswerer:
    """Answers query photos against the catalog snapshot `snapshot()` returns, exactly once each.

    Parameters
    ----------
    engine : Engine
    config : Config
    folders : DropFolders
    journal : Journal
    failed : FailedFolder
    tally : Tally
    snapshot : callable
        The catalog generation queries read now (the catalog lane's latest publication).
    """

    def __init__(self, engine: Engine, config: Config, folders: DropFolders, journal: Journal, failed: FailedFolder,
                 tally: Tally, snapshot: Callable[[], CatalogSnapshot]) -> None:
        self.engine = engine
        self.config = config
        self.folders = folders
        self.journal = journal
        self.failed = failed
        self.tally = tally
        self.snapshot = snapshot
        # Query files whose answer could not be published (e.g. disk full):
        # not retried in this run; the journal completes them on restart.
        self.stuck: set[Path] = set()

    # ------------------------------------------------------------- start
    def recover(self) -> list[Intent]:
        """Finish what a crash left: temp files go, answered photos leave the inbox, each answer is noted once."""
        stale = self.journal.clean_temp_files()
        # Answers (outbox) and reasons (failed folder) are written to a temp name and renamed in too; another process
        # may be writing there, so only the temp files of writers no longer running go.
        for folder, written in ((self.folders.outbox, ".json"), (self.folders.failed, ".error.json")):
            stale += remove_stale_temps(folder, only_dead_writers=True, of_names_ending=written)
        for path in stale:
            log.info("removed_stale_temp", file=path.name)
        done = self.journal.recover(answered=lambda intent: self.engine.replayed(Path(intent.result)))
        for intent in done:
            log.info("recovered", file=intent.photo, result=intent.result)
        return done

    # ------------------------------------------------------------- one query
    def answer(self, ready: FileReady) -> Answered | None:
        """Match one query, publish exactly one result, move the photo out.

        Whatever the file does (refused, over its time budget, a library
        error while matching) it gets one result and leaves the inbox; it
        costs that file only. A file that took the daemon down `MAX_CRASHES`
        times (the journal's attempt records) is moved aside untried.
        Returns None when the file is gone or its answer could not be published.
        """
        path = ready.path
        if not os.path.lexists(path) or path in self.stuck:
            return None
        t0 = time.perf_counter()
        crashes = self.journal.crashes(path)
        if crashes >= MAX_CRASHES:
            outcome: Prepared | Failure = Failure(
                "crashed_daemon", f"{path.name}: the daemon stopped {crashes} times while handling this file; moved aside untried")
        else:
            self.journal.begin_attempt(path)
            outcome = prepare_within(path, self.config, self.engine.encoder_input, self.folders.query)
        result = self.result_for(path, outcome)
        try:
            answered = self.publish(path, outcome, result, t0)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full; the journal finishes it on restart
            self.stuck.add(path)
            self.tally.error(path, "publish_failed", f"{type(exc).__name__}: {exc}")
            log.error("query_publish_failed", file=path.name, error=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self.journal.end_attempt(path)
        self.tally.count("answered")
        if result.status == "rejected":
            self.tally.count("failed")
            self.tally.error(path, result.error_code or "", result.error or "")
        log.info("query", file=path.name, result=answered.result_path.name, sha256=result.sha256, outcome=result.status,
                 label=result.label, confidence=result.confidence, code=result.error_code, ready=ready.reason,
                 generation=result.catalog.generation if result.catalog else None,
                 timings_ms={**result.timings_ms, "wall": answered.wall_ms})
        return answered

    def result_for(self, path: Path, outcome: Prepared | Failure) -> MatchResult:
        """The result object; a refusal, or an error while matching, is a `rejected` one."""
        if isinstance(outcome, Failure):
            # The hash is of the bytes intake read, never of a link's target outside the root.
            return rejected(path.name, outcome.reason, outcome.code, sha256=outcome.sha256, model=self.engine.model_info)
        try:
            return self.engine.match_prepared(outcome, path.name, snapshot=self.snapshot())
        except Exception as exc:  # noqa: BLE001 - odd features must not cost the daemon
            return rejected(path.name, f"{path.name}: matching failed: {type(exc).__name__}: {exc}", "processing_failed",
                            sha256=outcome.sha256, model=self.engine.model_info)

    def publish(self, path: Path, outcome: Prepared | Failure, result: MatchResult, t0: float) -> Answered:
        """Journal, result JSON, error file, move: the exactly-once sequence."""
        rejected_ = result.status == "rejected"
        with self.failed.lock if rejected_ else nullcontext():
            error_file: Path | None = None
            error_text: str | None = None
            if rejected_:
                destination, error_file = self.failed.destination(path)
                error_text = dumps({"file": path.name, "folder": "query", "code": result.error_code,
                                    "reason": result.error, "sha256": result.sha256, "at": now()}, indent=1)
            else:
                destination = unique_path(self.folders.processed, path.stem, path.suffix)
            result_path = unique_path(self.folders.outbox, path.stem, ".json", taken=self.journal.reserved())
            intent = Intent(str(path), result.sha256 or "", str(result_path), str(destination),
                            str(error_file) if error_file else None, error_text)
            record = self.journal.begin(intent)
            if self.config.daemon.explain_images and isinstance(outcome, Prepared) and not rejected_:
                self.explain(path, result, result_path.with_suffix(".jpg"), outcome.local)
            text = result.to_json(indent=2)
            write_json_atomic(result_path, text)
            if error_file and error_text:
                write_json_atomic(error_file, error_text)
            moved = move_aside(path, destination)
            self.engine.answered(result, "folder", result_path)  # before the record goes: a kill here is replayed
            self.journal.finish(record)
        wall_ms = round((time.perf_counter() - t0) * 1e3, 1)
        return Answered(path, moved, result_path, text, wall_ms=wall_ms)

    def explain(self, path: Path, result: MatchResult, out: Path, query_local: Any = None) -> None:
        """The picture beside the JSON; written first, so the JSON's arrival means both are there."""
        from pipeline.explain import render_explanation, write_explanation
        from pipeline.intake import IntakeError, read_photo

        try:
            pixels = read_photo(path, self.config.intake, root=self.folders.query).pixels
            entries = self.snapshot().by_id()
            write_explanation(out, render_explanation(pixels, result, entries, self.config, query_local=query_local))
        except (IntakeError, OSError, cv2.error) as exc:  # a picture must never cost an answer
            log.warning("explain_failed", file=path.name, reason=str(exc))
