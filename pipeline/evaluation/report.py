"""What `teaprint eval` writes: the text table, JSON lines + summary, the HTML report.

Files
-----
``--json OUT``
    OUT: one JSON object per line and per (variant, query): the query's full
    `MatchResult` (as `teaprint match --json` prints it) plus ``variant``
    and ``truth`` ("" = not in the catalog). Note ``timings_ms.embed`` is ~0
    there: embeddings were computed beforehand, in batches, once for all
    variants (the shared time is in the summary).
    OUT with its suffix replaced by ``.summary.json`` (``res.jsonl`` ->
    ``res.summary.json``): the figures per variant, timings, counts, the
    model, and each variant's recall / false-accept curve.
``--report DIR``
    DIR/index.html, self-contained (inline CSS, inline SVG plot, thumbnails
    as base64 JPEG): the figures table, recall against false-accept rate per
    variant, and each variant's worst failures.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.config import IntakeConfig
from pipeline.evaluation.bench import EvalRun, VariantRun
from pipeline.evaluation.metrics import MAX_FAR
from pipeline.intake import IntakeError, read_photo
from pipeline.results import MatchEvidence, MatchResult

THUMB_SIDE = 150  # px, longer side of report thumbnails
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


# ------------------------------------------------------------------- text table


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table: fixed digits, "n/a" for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_rows(run: EvalRun) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the figures table, one row per variant."""
    k = run.variants[0].figures.k if run.variants else 0
    header = ["variant", "top1", f"recall@{k}", "precision", "recall", "FAR", "R@FAR1%", "prep ms/q", "stage ms/q", "ms/q"]
    rows = []
    for v in run.variants:
        f = v.figures
        rows.append(
            [
                v.variant.name,
                fmt(f.top1),
                fmt(f.recall_at_k),
                fmt(f.precision),
                fmt(f.recall),
                fmt(f.false_accept_rate),
                fmt(f.recall_at_far1),
                f"{v.prepare_ms_per_query:.1f}",
                f"{v.stage_ms_per_query:.1f}",
                f"{v.ms_per_query:.1f}",
            ]
        )
    return header, rows


def format_table(run: EvalRun) -> str:
    """The readable summary printed to stdout."""
    header, rows = table_rows(run)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    f0 = run.variants[0].figures if run.variants else None
    counts = f"{f0.queries} queries ({f0.registered} registered, {f0.unregistered} unregistered, {f0.rejected} unreadable)" if f0 else ""
    idx = run.index
    lines = [
        f"benchmark  {run.bench.root}",
        f"model      {run.model.id} ({run.model_path}), shortlist threshold {run.model.threshold:.3f} ({run.model.threshold_source})",
        f"catalog    {idx.images} photos, {len(run.catalog_by_label)} labels: "
        f"indexed in {idx.seconds:.1f} s = {idx.images_per_s:.1f} images/s"
        + (f", {len(idx.refused)} refused" if idx.refused else "")
        + (f", {idx.duplicates} duplicates" if idx.duplicates else ""),
        f"queries    {counts}",
        f"shared     {run.prepare_ms_per_query:.1f} ms/query, once per query for all variants: {_breakdown(run)}",
        "",
        line(header),
        line(["-" * w for w in widths]),
        *[line(r) for r in rows],
        "",
        "prep ms/q: the shared steps the variant uses (keypoints only if it verifies); stage ms/q: its matcher stages;",
        "ms/q: both. recall@K: the right label among the first K reported matches. n/a: empty denominator.",
    ]
    return "\n".join(lines)


def _breakdown(run: EvalRun) -> str:
    names = {"decode": "decode", "locate": "cake locator + rectification", "lbp": "LBP", "input": "encoder input", "local": "keypoints", "embed": "embedding (batched)"}
    return ", ".join(f"{names.get(k, k)} {v:.1f}" for k, v in run.shared_ms.items())


# ------------------------------------------------------------------------- JSON


def summary_path(json_out: Path) -> Path:
    """Where the summary of `--json OUT` goes: OUT with suffix ``.summary.json``."""
    return Path(json_out).with_suffix(".summary.json")


def write_jsonl(run: EvalRun, path: Path) -> None:
    """One line per (variant, query): the full result plus `variant` and `truth`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for v in run.variants:
            for result, truth in zip(v.results, run.bench.truth):
                data = result.to_dict()
                data["variant"] = v.variant.name
                data["truth"] = truth
                fh.write(json.dumps(data, ensure_ascii=False) + "\n")


def summary(run: EvalRun) -> dict[str, Any]:
    """Figures, timings and counts of a run as a JSON-ready dict."""
    idx = run.index
    return {
        "bench": str(run.bench.root),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "id": run.model.id,
            "path": run.model_path,
            "threshold": run.model.threshold,
            "threshold_source": run.model.threshold_source,
        },
        "catalog": {
            "images": idx.images,
            "labels": len(run.catalog_by_label),
            "added": idx.added,
            "duplicates": idx.duplicates,
            "refused": [{"path": p, "reason": r} for p, r in idx.refused],
            "seconds": round(idx.seconds, 3),
            "images_per_s": round(idx.images_per_s, 2),
        },
        "shared": {
            "prepare_ms_per_query": round(run.prepare_ms_per_query, 3),
            "steps_ms_per_query": {k: round(v, 3) for k, v in run.shared_ms.items()},
            "what": "decode, LBP, encoder input, keypoints (if a variant verifies), embedding (batched): once per query for all variants",
        },
        "variants": [_variant_summary(v) for v in run.variants],
    }


def _variant_summary(v: VariantRun) -> dict[str, Any]:
    return {
        "name": v.variant.name,
        "description": v.variant.description,
        "figures": v.figures.to_dict(),
        "prepare_ms_per_query": round(v.prepare_ms_per_query, 3),
        "stage_ms_per_query": round(v.stage_ms_per_query, 3),
        "ms_per_query": round(v.ms_per_query, 3),
        "curve": {
            "columns": ["threshold", "false_accept_rate", "recall"],
            "points": [[p.threshold if math.isfinite(p.threshold) else "inf", p.false_accept_rate, p.recall] for p in v.curve],
        },
    }


def write_summary(run: EvalRun, path: Path) -> None:
    Path(path).write_text(json.dumps(summary(run), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------- failures


@dataclass(frozen=True)
class Failure:
    """A query answered wrongly, with what to show beside it.

    Attributes
    ----------
    result : MatchResult
    truth : str
    query_path : Path
    wrong : MatchEvidence or None
        The best-ranked match (whose label is wrong), if any.
    right : str or None
        Path of a catalog photo of the right label (None for unregistered).
    right_similarity : float or None
        Its similarity when the shortlist passed it, else None.
    """

    result: MatchResult
    truth: str
    query_path: Path
    wrong: MatchEvidence | None
    right: str | None
    right_similarity: float | None


def worst_failures(run: EvalRun, variant: VariantRun, limit: int = 8) -> list[Failure]:
    """The most confident wrong answers of a variant, most confident first.

    Wrong: a registered query whose best-ranked label is not its own, or an
    unregistered query answered `matched` (a false accept).
    """
    found = []
    for result, truth, path in zip(variant.results, run.bench.truth, run.bench.queries):
        best = result.matches[0] if result.matches else None
        wrong = (truth != "" and (best is None or best.label != truth)) or (truth == "" and result.status == "matched")
        if wrong:
            found.append(_failure(run, result, truth, path, best))
    found.sort(key=lambda f: (f.result.status != "matched", -f.result.confidence))
    return found[:limit]


def _failure(run: EvalRun, result: MatchResult, truth: str, path: Path, best: MatchEvidence | None) -> Failure:
    if not truth:
        return Failure(result, truth, path, best, None, None)
    passed = [m for m in result.matches if m.label == truth]
    if passed:
        closest = max(passed, key=lambda m: m.similarity)
        return Failure(result, truth, path, best, closest.image, closest.similarity)
    entries = run.catalog_by_label.get(truth, ())
    return Failure(result, truth, path, best, entries[0] if entries else None, None)


# -------------------------------------------------------------------------- HTML


def thumbnail(path: str | Path | None, intake: IntakeConfig, side: int = THUMB_SIDE) -> str:
    """A ``data:`` URI of a small JPEG of the photo, or "" when it cannot be read."""
    if path is None:
        return ""
    try:
        pixels = read_photo(Path(path), intake).pixels
    except IntakeError:
        return ""
    scale = side / max(pixels.shape[:2])
    if scale < 1:
        pixels = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def curve_svg(variants: Sequence[VariantRun], far_max: float = 1.0, width: int = 560, height: int = 360) -> str:
    """Inline SVG: recall (y) against false-accept rate (x, 0 to `far_max`), one step line per variant."""
    left, right, top, bottom = 50, 190, 15, 45
    pw, ph = width - left - right, height - top - bottom
    x = lambda far: left + min(far / far_max, 1.0) * pw  # noqa: E731
    y = lambda rec: top + (1 - rec) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for t in np.linspace(0, 1, 6):
        parts.append(f'<line x1="{x(t * far_max):.1f}" y1="{top + ph}" x2="{x(t * far_max):.1f}" y2="{top + ph + 4}" stroke="#888"/>')
        parts.append(f'<text x="{x(t * far_max):.1f}" y="{top + ph + 16}" text-anchor="middle">{t * far_max:.2g}</text>')
        parts.append(f'<line x1="{left - 4}" y1="{y(t):.1f}" x2="{left}" y2="{y(t):.1f}" stroke="#888"/>')
        parts.append(f'<text x="{left - 7}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    parts.append(f'<line x1="{x(MAX_FAR):.1f}" y1="{top}" x2="{x(MAX_FAR):.1f}" y2="{top + ph}" stroke="#aaa" stroke-dasharray="3,3"/>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">false-accept rate (unregistered queries)</text>')
    mid = top + ph / 2
    parts.append(f'<text x="12" y="{mid}" text-anchor="middle" transform="rotate(-90 12 {mid})">recall (registered)</text>')
    for i, v in enumerate(variants):
        colour = COLOURS[i % len(COLOURS)]
        if v.curve:
            points = " ".join(_step_points(v, x, y, far_max))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 12 + 16 * i
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 28}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 32}" y="{ly}">{html.escape(v.variant.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _step_points(v: VariantRun, x: Any, y: Any, far_max: float) -> list[str]:
    """Polyline vertices of the step curve up to `far_max`, repeated vertices dropped."""
    out: list[str] = []
    prev_rec = 0.0
    for p in v.curve:
        if p.false_accept_rate > far_max:
            break
        for vertex in (f"{x(p.false_accept_rate):.1f},{y(prev_rec):.1f}", f"{x(p.false_accept_rate):.1f},{y(p.recall):.1f}"):
            if not out or out[-1] != vertex:
                out.append(vertex)
        prev_rec = p.recall
    out.append(f"{x(far_max):.1f},{y(prev_rec):.1f}")
    return out


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f2f2f2}
.meta{color:#555;font-size:.9em}
.fail{display:flex;gap:14px;align-items:flex-start;border-top:1px solid #ddd;padding:8px 0}
.fail figure{margin:0;text-align:center;font-size:.8em;width:160px}
.fail img{max-width:150px;max-height:150px;display:block;margin:auto}
.missing{width:150px;height:100px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
.info{font-size:.85em}
"""


def write_html(run: EvalRun, directory: Path, intake: IntakeConfig, limit: int = 8) -> Path:
    """Write DIR/index.html; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(run)
    body = [
        "<h1>teaprint evaluation</h1>",
        f'<p class="meta">{_meta(run)}</p>',
        "<h2>Figures</h2>",
        _html_table(header, rows),
        '<p class="meta">Definitions: BENCHMARK.md. Shared preparation, once per query for all variants: '
        f"{run.prepare_ms_per_query:.1f} ms/query wall ({html.escape(_breakdown(run))}). "
        "prep ms/q: the shared steps a variant uses (keypoints only if it verifies); stage ms/q: its matcher stages; "
        "ms/q: both. recall@K: the right label among the first K reported matches (every entry the shortlist passed on, "
        "in the final order). n/a: empty denominator.</p>",
        _html_table(["variant", "stages"], [[v.variant.name, v.variant.description] for v in run.variants]),
        "<h2>Recall against false-accept rate</h2>",
        '<p class="meta">Threshold swept on the final confidence; dashed line: 1% false accepts. '
        "Left: the whole range; right: false-accept rates up to 10%.</p>",
        curve_svg(run.variants),
        curve_svg(run.variants, far_max=0.1),
    ]
    for v in run.variants:
        body.append(f"<h2>Worst failures: {html.escape(v.variant.name)}</h2>")
        fails = worst_failures(run, v, limit)
        body.append("".join(_failure_html(f, intake) for f in fails) or "<p>None.</p>")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>teaprint eval</title>'
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    out = directory / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


def _meta(run: EvalRun) -> str:
    idx = run.index
    f0 = run.variants[0].figures if run.variants else None
    parts = [
        f"benchmark {html.escape(str(run.bench.root))}",
        f"model {html.escape(run.model.id)}, shortlist threshold {run.model.threshold:.3f} ({run.model.threshold_source})",
        f"catalog {idx.images} photos, {len(run.catalog_by_label)} labels, {idx.images_per_s:.1f} images/s indexed",
    ]
    if f0:
        parts.append(f"{f0.queries} queries: {f0.registered} registered, {f0.unregistered} unregistered, {f0.rejected} unreadable")
    return "<br>".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(uri: str, caption: str) -> str:
    img = f'<img src="{uri}" alt="">' if uri else '<div class="missing">no image</div>'
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def _evidence(m: MatchEvidence) -> str:
    """Similarity, and RANSAC inliers when the entry was verified."""
    text = f"sim {m.similarity:.3f}"
    return text + (f", {m.inliers} inliers" if m.inliers is not None else "")


def _failure_html(f: Failure, intake: IntakeConfig) -> str:
    r = f.result
    truth = html.escape(f.truth) if f.truth else "<i>not in catalog</i>"
    query = _figure(thumbnail(f.query_path, intake), f"query {html.escape(r.query)}<br>truth: {truth}")
    if f.wrong is not None:
        caption = f"best match: {html.escape(f.wrong.label)}<br>{_evidence(f.wrong)}"
        wrong = _figure(thumbnail(f.wrong.image, intake), caption)
    else:
        wrong = _figure("", "nothing passed the shortlist")
    cells = [query, wrong]
    if f.truth:
        sim = f"similarity {f.right_similarity:.3f}" if f.right_similarity is not None else "not shortlisted"
        cells.append(_figure(thumbnail(f.right, intake), f"right entry: {html.escape(f.truth)}<br>{sim}"))
    refine = r.stages.get("refine", {}) if r.stages else {}
    info = (
        f'<div class="info">status <b>{html.escape(r.status)}</b>, label {html.escape(str(r.label))}, '
        f"confidence {r.confidence:.3f}<br>refine: {html.escape(str(refine.get('mode', '-')))}, "
        f"svc label {html.escape(str(refine.get('svc_label', '-')))}<br>"
        f"matches: {'; '.join(html.escape(m.label) + ' ' + _evidence(m) for m in r.matches[:5])}</div>"
    )
    return f'<div class="fail">{"".join(cells)}{info}</div>'
