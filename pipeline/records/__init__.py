"""Cake records: what a company knows about each cake, read from sidecars beside its photos.

See `pipeline.records.store` for where records come from and their precedence.
"""

from __future__ import annotations

from typing import Any, Mapping

from pipeline.records.fields import ALIASES, RECORD_FIELDS, CakeRecord, RecordProblem
from pipeline.records.sources import CSV_NAME
from pipeline.records.store import MAX_LABEL_CHARS, RecordError, RecordScan, RecordStore, label_problem

__all__ = ["ALIASES", "CSV_NAME", "MAX_LABEL_CHARS", "RECORD_FIELDS", "CakeRecord", "RecordError", "RecordProblem", "RecordScan",
           "RecordStore", "label_problem", "result_record"]


def result_record(record: CakeRecord | None, checks: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The `record` object of a matched result: the cake's record and how often it was checked before.

    `checks` is `History.label_checks(label).to_dict()` taken before this
    answer is appended (count, first_at, last_at); None leaves it out.
    """
    if record is None:
        return None
    out = record.to_dict()
    if checks is not None:
        out["checks"] = dict(checks)
    return out
