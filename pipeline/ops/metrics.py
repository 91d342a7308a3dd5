"""Prometheus metrics: what a front-end answered, how long each stage took, what waits.

Each process (the drop-folder daemon, the HTTP server) owns one `Metrics`, a
registry of its own (no global registry: two in one test process do not
mix), every sample labelled with its `component`. The daemon writes its
exposition to `<state>/metrics.prom` with its status file (the format
node_exporter's textfile collector reads); the server's `GET /metrics` answers
`merge_expositions(server.render(), that file)`, so one scrape sees both.
`summary` turns an exposition into the few numbers `teaprint status` prints.

Metric families (all prefixed `teaprint_`):

- `queries_total{component,source,status}`: answered queries;
- `stage_seconds{component,stage}`: histogram of each stage of a query
  (the result's `timings_ms` keys: decode, lbp, local, embed, shortlist,
  refine, verify, decide, total);
- `catalog_photos{component}`, `catalog_labels{component}`: catalog size;
- `ingest_backlog{component,folder}`: files waiting in a drop folder;
- `failed_files_total{component,folder,code}`: files moved to `failed/`;
- `history_pending{component}`: checks waiting for the history database;
- `record_problems{component}`: problems in the cake-record files.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One component's metrics; thread-safe (prometheus_client's own locks)."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._queries = Counter("teaprint_queries", "Answered queries.", ["component", "source", "status"], registry=r)
        self._stages = Histogram("teaprint_stage_seconds", "Time one query spent in each stage, in s.", ["component", "stage"],
                                 buckets=STAGE_BUCKETS_S, registry=r)
        self._photos = Gauge("teaprint_catalog_photos", "Photos in the catalog.", ["component"], registry=r)
        self._labels = Gauge("teaprint_catalog_labels", "Cakes (labels) in the catalog.", ["component"], registry=r)
        self._backlog = Gauge("teaprint_ingest_backlog", "Files waiting in a drop folder.", ["component", "folder"], registry=r)
        self._failed = Counter("teaprint_failed_files", "Files moved to failed/.", ["component", "folder", "code"], registry=r)
        self._history_pending = Gauge("teaprint_history_pending", "Checks waiting for the history database.", ["component"], registry=r)
        self._record_problems = Gauge("teaprint_record_problems", "Problems in the cake-record files.", ["component"], registry=r)

    def observe_result(self, result: Any, source: str) -> None:
        """Count one answer (a `MatchResult` or its `to_dict()`) and its stage timings."""
        status = result["status"] if isinstance(result, Mapping) else result.status
        timings = result.get("timings_ms") if isinstance(result, Mapping) else result.timings_ms
        self._queries.labels(self.component, source, str(status)).inc()
        for stage, ms in (timings or {}).items():
            self._stages.labels(self.component, stage).observe(max(0.0, float(ms)) / 1e3)

    def failed_file(self, folder: str, code: str) -> None:
        self._failed.labels(self.component, folder, code or "unknown").inc()

    def set_catalog(self, photos: int, labels: int) -> None:
        self._photos.labels(self.component).set(photos)
        self._labels.labels(self.component).set(labels)

    def set_backlog(self, catalog: int, query: int) -> None:
        self._backlog.labels(self.component, "catalog").set(catalog)
        self._backlog.labels(self.component, "query").set(query)

    def set_history_pending(self, count: int) -> None:
        self._history_pending.labels(self.component).set(count)

    def set_record_problems(self, count: int) -> None:
        self._record_problems.labels(self.component).set(count)

    def render(self) -> str:
        """The Prometheus text exposition."""
        return generate_latest(self.registry).decode("utf-8")

    def write(self, path: Path) -> None:
        """Write the exposition atomically (a node_exporter textfile, and what `GET /metrics` merges in)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)


class _Families:
    """A collector that yields already-built families (what `merge_expositions` renders)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(*texts: str) -> str:
    """One exposition from several (server + daemon file): each family once, the samples of all.

    Samples stay apart by their `component` label. Unparsable input raises
    `ValueError` (the caller logs it and serves its own part).
    """
    merged: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            into.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged.values()))  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")


def summary(text: str) -> dict[str, Any]:
    """The numbers `teaprint status` shows, from an exposition.

    Returns
    -------
    dict
        `queries` (status -> count), `failed_files` (folder -> count),
        `backlog` (folder -> files), `catalog` (photos, labels),
        `stage_ms` (stage -> {count, mean_ms, p95_ms}; p95 is the upper bound
        of the histogram bucket holding the 95th percentile), summed over components.
    """
    queries: dict[str, float] = defaultdict(float)
    failed: dict[str, float] = defaultdict(float)
    backlog: dict[str, float] = defaultdict(float)
    catalog: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "teaprint_queries_total":
                queries[labels["status"]] += value
            elif name == "teaprint_failed_files_total":
                failed[labels["folder"]] += value
            elif name == "teaprint_ingest_backlog":
                backlog[labels["folder"]] += value
            elif name in ("teaprint_catalog_photos", "teaprint_catalog_labels"):
                catalog[name.rsplit("_", 1)[1]] = max(catalog.get(name.rsplit("_", 1)[1], 0.0), value)
            elif name == "teaprint_stage_seconds_bucket":
                buckets[labels["stage"]][float(labels["le"])] += value
            elif name == "teaprint_stage_seconds_sum":
                sums[labels["stage"]] += value
            elif name == "teaprint_stage_seconds_count":
                counts[labels["stage"]] += value
    stages = {stage: _stage_summary(counts[stage], sums[stage], buckets[stage]) for stage in counts if counts[stage]}
    as_int = lambda d: {k: int(v) for k, v in sorted(d.items())}  # noqa: E731
    return {"queries": as_int(queries), "failed_files": as_int(failed), "backlog": as_int(backlog),
            "catalog": as_int(catalog), "stage_ms": stages}


def _stage_summary(count: float, total_s: float, cumulative: Mapping[float, float]) -> dict[str, Any]:
    target = 0.95 * count
    p95 = next((le for le, seen in sorted(cumulative.items()) if seen >= target), float("inf"))
    return {"count": int(count), "mean_ms": round(total_s / count * 1e3, 1), "p95_ms": None if p95 == float("inf") else round(p95 * 1e3, 1)}


def summary_lines(data: Mapping[str, Any]) -> list[str]:
    """`summary` as the lines `teaprint status` prints."""
    queries = ", ".join(f"{n} {status}" for status, n in data["queries"].items()) or "none"
    lines = [f"answered  {queries}"]
    if data["failed_files"]:
        lines.append("failed    " + ", ".join(f"{n} {folder}" for folder, n in data["failed_files"].items()))
    for stage, s in data["stage_ms"].items():
        p95 = f"{s['p95_ms']:g}" if s["p95_ms"] is not None else f"> {STAGE_BUCKETS_S[-1] * 1e3:g}"
        lines.append(f"  {stage:<10} mean {s['mean_ms']:g} ms, p95 <= {p95} ms ({s['count']} queries)")
    return lines
