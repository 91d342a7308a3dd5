"""A cake's record and the rules that turn raw sidecar values into it.

A record describes one label (one physical cake): display name, year, batch,
producer, weight and free notes, plus any extra fields a company keeps
(warehouse, price, buyer...). Raw values come from JSON sidecars and a CSV
sheet written by people, often in Chinese, so field names have Chinese
aliases (`年份` is `year`) and values are read leniently where the meaning is
unambiguous (`"2019年"` is 2019, `"357克"` is 357 g); anything else is a
`RecordProblem` for that field only, never for the whole record.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_TEXT_CHARS = 2000   # one field's text; a sidecar is a description, not a document
MAX_EXTRA_FIELDS = 64
MIN_YEAR, MAX_YEAR = 1900, 2100

# Canonical field -> the names people write for it (compared NFC-normalised, case-folded, stripped).
ALIASES: dict[str, tuple[str, ...]] = {
    "label": ("label", "标签", "编号", "標籤"),
    "display_name": ("display_name", "name", "名称", "品名", "名稱", "茶名"),
    "year": ("year", "年份", "年代", "生产年份"),
    "batch": ("batch", "批次", "批号", "批號"),
    "producer": ("producer", "factory", "生产商", "厂家", "茶厂", "生產商", "廠家"),
    "weight_g": ("weight_g", "weight", "重量", "净含量", "淨含量"),
    "notes": ("notes", "note", "备注", "備註", "说明"),
    "extra": ("extra",),
}
_CANONICAL = {unicodedata.normalize("NFC", a).casefold(): name for name, names in ALIASES.items() for a in names}
RECORD_FIELDS = ("display_name", "year", "batch", "producer", "weight_g", "notes")

_YEAR = re.compile(r"^\s*(\d{4})\s*年?\s*$")
_WEIGHT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(g|克|grams?|kg|千克|公斤|斤)?\s*$", re.IGNORECASE)
_WEIGHT_UNIT_G = {None: 1.0, "g": 1.0, "克": 1.0, "gram": 1.0, "grams": 1.0, "kg": 1000.0, "千克": 1000.0, "公斤": 1000.0, "斤": 500.0}


@dataclass(frozen=True)
class RecordProblem:
    """Why (part of) a sidecar was not taken; one line for the log, structured for status and `failed/`.

    Attributes
    ----------
    source : str
        The file, relative to the catalog folder (`cakes.csv`, `menghai/menghai.json`).
    code : str
        `not_utf8`, `invalid_json`, `not_an_object`, `bad_field`, `label_mismatch`,
        `no_label_column`, `missing_label`, `duplicate_label`, `bad_label`, `too_large`, `unreadable`.
    message : str
        One line in English, naming the file, line and field where known.
    label : str or None
        The cake it concerns, when known.
    line : int or None
        1-based line of a CSV row or of a JSON syntax error.
    field : str or None
        The field as written in the file.
    """

    source: str
    code: str
    message: str
    label: str | None = None
    line: int | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "code": self.code, "message": self.message,
                "label": self.label, "line": self.line, "field": self.field}


@dataclass(frozen=True)
class CakeRecord:
    """What a company knows about one cake (label); every field optional but the label.

    `weight_g` is in grams. `extra` holds the fields that are not one of the
    named ones, as written (key and value text kept exactly, NFC).
    `sources` lists the files the record was merged from, lowest precedence first.
    """

    label: str
    display_name: str | None = None
    year: int | None = None
    batch: str | None = None
    producer: str | None = None
    weight_g: float | None = None
    notes: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The `record` object of a result (schema/result.schema.json)."""
        return {"label": self.label, **{name: getattr(self, name) for name in RECORD_FIELDS},
                "extra": dict(self.extra), "sources": list(self.sources)}

    def fields(self) -> dict[str, Any]:
        """The set fields only, as a sidecar would hold them."""
        out = {name: getattr(self, name) for name in RECORD_FIELDS if getattr(self, name) is not None}
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def canonical_name(key: str) -> str | None:
    """The record field a written field name means (`"年份"` -> `"year"`), or None for an extra field."""
    return _CANONICAL.get(unicodedata.normalize("NFC", str(key)).strip().casefold())


def parse_fields(raw: Mapping[str, Any], source: str, label: str | None, line: int | None = None) -> tuple[dict[str, Any], list[RecordProblem]]:
    """Raw key/values -> the record fields they set, and the problems of the ones refused.

    Empty values (None, "", whitespace) set nothing. Unknown keys become
    `extra` fields; a nested `extra` object is merged into them.
    """
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    problems: list[RecordProblem] = []

    def refuse(key: str, why: str) -> None:
        where = f"{source}:{line}" if line else source
        problems.append(RecordProblem(source, "bad_field", f"{where}: field {key!r} {why}", label, line, key))

    for key, value in raw.items():
        name = canonical_name(key)
        if name == "label" or _empty(value):
            continue
        if name == "extra":
            if not isinstance(value, Mapping):
                refuse(key, f"must be an object of extra fields, got {type(value).__name__}")
                continue
            for k, v in value.items():
                _take_extra(extra, str(k), v, refuse)
            continue
        if name is None:
            _take_extra(extra, str(key), value, refuse)
            continue
        try:
            values[name] = _PARSERS[name](value)
        except ValueError as err:
            refuse(key, str(err))
    if extra:
        values["extra"] = extra
    return values, problems


def merge(label: str, layers: list[tuple[str, dict[str, Any]]]) -> CakeRecord:
    """One record from (source, fields) layers, lowest precedence first: later fields win one by one.

    `extra` merges key by key the same way.
    """
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for _, values in layers:
        extra.update(values.get("extra", {}))
        merged.update({k: v for k, v in values.items() if k != "extra"})
    return CakeRecord(label=label, **merged, extra=extra, sources=tuple(source for source, _ in layers))


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _take_extra(extra: dict[str, Any], key: str, value: Any, refuse: Any) -> None:
    key = unicodedata.normalize("NFC", key).strip()
    if not key or len(key) > 100:
        refuse(key[:100], "is not a usable field name (empty or over 100 characters)")
    elif len(extra) >= MAX_EXTRA_FIELDS:
        refuse(key, f"is one extra field too many (at most {MAX_EXTRA_FIELDS})")
    elif isinstance(value, bool) or isinstance(value, (int, float)):
        extra[key] = value
    elif isinstance(value, str):
        try:
            extra[key] = _text(value)
        except ValueError as err:
            refuse(key, str(err))
    elif not _empty(value):
        refuse(key, f"must be text, a number or true/false, got {type(value).__name__}")


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be text, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", str(value)).strip()
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"is longer than {MAX_TEXT_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise ValueError("contains control characters")
    return text


def _year(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a year like 2019")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        year = value
    else:
        match = _YEAR.match(unicodedata.normalize("NFKC", str(value)))
        if not match:
            raise ValueError(f"must be a year like 2019, got {value!r}")
        year = int(match.group(1))
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"must be a year between {MIN_YEAR} and {MAX_YEAR}, got {year}")
    return year


def _weight_g(value: Any) -> float:
    """Grams from 357, "357", "357g", "357 克", "0.357kg", "1斤" (500 g)."""
    if isinstance(value, bool):
        raise ValueError("must be a weight like 357 or \"357g\"")
    if isinstance(value, (int, float)):
        grams = float(value)
    else:
        match = _WEIGHT.match(unicodedata.normalize("NFKC", str(value)))
        if not match:
            raise ValueError(f"must be a weight like 357, \"357g\", \"357克\" or \"0.357kg\", got {value!r}")
        unit = match.group(2).lower() if match.group(2) else None
        grams = float(match.group(1)) * _WEIGHT_UNIT_G[unit]
    if not 0 < grams <= 100_000:
        raise ValueError(f"must be above 0 and at most 100 kg, got {grams:g} g")
    return round(grams, 3)


_PARSERS = {
    "display_name": _text,
    "year": _year,
    "batch": _text,
    "producer": _text,
    "weight_g": _weight_g,
    "notes": _text,
}
