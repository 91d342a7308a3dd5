"""Reading the two kinds of record source: `<label>.json` sidecars and the `cakes.csv` sheet.

Each reader returns what it could take and a list of `RecordProblem`s; it
never raises for a bad file. A sidecar that is not UTF-8 JSON object text is
skipped whole; a bad field is skipped alone. Files are opened with the
project's safe open (regular files inside the catalog folder, size-capped),
so a link out of the folder or a FIFO named `cakes.csv` is a problem, not a hang.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.fsutil import UnsafeFile, read_regular
from pipeline.records.fields import RecordProblem, canonical_name, parse_fields

MAX_SIDECAR_BYTES = 256 * 1024
MAX_CSV_BYTES = 16 * 1024 * 1024
CSV_NAME = "cakes.csv"


@dataclass(frozen=True)
class SidecarRead:
    """One JSON sidecar: the fields it sets (None when unusable) and its problems."""

    fields: dict[str, Any] | None
    problems: tuple[RecordProblem, ...]


@dataclass(frozen=True)
class SheetRead:
    """`cakes.csv`: label -> (line, fields), and the problems of the rows or the whole sheet."""

    rows: dict[str, tuple[int, dict[str, Any]]]
    problems: tuple[RecordProblem, ...]


def read_text(path: Path, catalog_dir: Path, source: str, max_bytes: int) -> tuple[str | None, RecordProblem | None]:
    """The file's UTF-8 text (a BOM is allowed), or why not."""
    try:
        data = read_regular(path, max_bytes=max_bytes, root=catalog_dir)
    except UnsafeFile as err:
        code = "too_large" if err.kind == "too_large" else "unreadable"
        return None, RecordProblem(source, code, f"{source}: {err.kind.replace('_', ' ')}: {err}")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        hint = ""
        try:
            data.decode("gb18030")
            hint = " (it reads as GBK/GB18030: save it as UTF-8)"
        except UnicodeDecodeError:
            pass
        return None, RecordProblem(source, "not_utf8", f"{source}:{line}: not UTF-8 text{hint}", line=line)


def read_sidecar(path: Path, catalog_dir: Path, label: str) -> SidecarRead:
    """The fields a `<label>.json` sidecar sets, and its problems.

    The sidecar's name gives the label; a `label` key inside must agree (it is
    otherwise ignored).
    """
    source = relative(path, catalog_dir)
    text, problem = read_text(path, catalog_dir, source, MAX_SIDECAR_BYTES)
    if problem is not None:
        return SidecarRead(None, (_with_label(problem, label),))
    try:
        raw = json.loads(text or "")
    except json.JSONDecodeError as err:
        message = f"{source}:{err.lineno}: invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        return SidecarRead(None, (RecordProblem(source, "invalid_json", message, label, err.lineno),))
    if not isinstance(raw, dict):
        message = f"{source}: must be a JSON object {{\"year\": 2019, ...}}, got {type(raw).__name__}"
        return SidecarRead(None, (RecordProblem(source, "not_an_object", message, label),))
    problems: list[RecordProblem] = []
    for key, value in raw.items():
        if canonical_name(key) == "label" and unicodedata.normalize("NFC", str(value)).strip() != label:
            problems.append(RecordProblem(source, "label_mismatch",
                                          f"{source}: says label {value!r} but its name gives {label!r}; the name wins", label, field=key))
    fields, field_problems = parse_fields(raw, source, label)
    return SidecarRead(fields, (*problems, *field_problems))


def read_sheet(path: Path, catalog_dir: Path) -> SheetRead:
    """Rows of `cakes.csv` by label: a header row naming a label column, then one cake per row.

    Comma, semicolon or tab separated (Excel's CSV, or a sheet saved as
    tab-separated text). A row without a label, with a label seen before
    (the first row wins) or with more cells than the header is a problem.
    """
    source = relative(path, catalog_dir)
    text, problem = read_text(path, catalog_dir, source, MAX_CSV_BYTES)
    if problem is not None:
        return SheetRead({}, (problem,))
    reader = csv.reader(io.StringIO(text or "", newline=""), dialect=_dialect(text or ""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return SheetRead({}, (RecordProblem(source, "no_label_column", f"{source}: empty; the first row must name the columns"),))
    names = [unicodedata.normalize("NFC", h).strip() for h in header]
    label_columns = [i for i, name in enumerate(names) if canonical_name(name) == "label"]
    if not label_columns:
        message = f"{source}:1: no label column (one of: label, 标签, 编号) among {', '.join(names)}"
        return SheetRead({}, (RecordProblem(source, "no_label_column", message, line=1),))
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    problems: list[RecordProblem] = []
    try:
        for cells in reader:
            line = reader.line_num
            _read_row(cells, names, label_columns[0], source, line, rows, problems)
    except csv.Error as err:
        problems.append(RecordProblem(source, "bad_field", f"{source}:{reader.line_num}: {err}; rows after it are not read", line=reader.line_num))
    return SheetRead(rows, tuple(problems))


def _read_row(cells: list[str], names: list[str], label_column: int, source: str, line: int,
              rows: dict[str, tuple[int, dict[str, Any]]], problems: list[RecordProblem]) -> None:
    if not any(c.strip() for c in cells):
        return  # blank line
    label = unicodedata.normalize("NFC", cells[label_column]).strip() if label_column < len(cells) else ""
    if not label:
        problems.append(RecordProblem(source, "missing_label", f"{source}:{line}: row without a label", line=line))
        return
    if label in rows:
        first = rows[label][0]
        problems.append(RecordProblem(source, "duplicate_label", f"{source}:{line}: label {label!r} already on line {first}; the first row wins",
                                      label, line))
        return
    if len(cells) > len(names):
        problems.append(RecordProblem(source, "bad_field", f"{source}:{line}: {len(cells)} cells but {len(names)} columns; the extra cells are ignored",
                                      label, line))
    raw = {name: cell for name, cell in zip(names, cells) if name}
    fields, field_problems = parse_fields(raw, source, label, line)
    rows[label] = (line, fields)
    problems.extend(field_problems)


def _dialect(text: str) -> type[csv.Dialect]:
    """Excel's CSV dialect with the separator the header row uses most (',' when none)."""
    first = text.split("\n", 1)[0]
    separator = max(",;\t", key=first.count) if any(s in first for s in ",;\t") else ","

    class Sheet(csv.excel):
        delimiter = separator

    return Sheet


def relative(path: Path, catalog_dir: Path) -> str:
    """`path` relative to the catalog folder, with '/' (how problems name files)."""
    try:
        return Path(path).relative_to(catalog_dir).as_posix()
    except ValueError:
        return str(path)


def _with_label(problem: RecordProblem, label: str) -> RecordProblem:
    return RecordProblem(problem.source, problem.code, problem.message, label, problem.line, problem.field)
