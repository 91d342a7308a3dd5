"""Match results: the JSON object written to `outbox/` and printed by `match --json`.

The published contract is `pipeline/data/result.schema.json`; tests validate real
outputs against it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pipeline.data import RESULT_SCHEMA
from pipeline.fsutil import atomic_write_bytes

SCHEMA_PATH = RESULT_SCHEMA
SCHEMA_VERSION = "teaprint-result/1"

Status = Literal["matched", "no_match", "rejected"]


@dataclass(frozen=True)
class MatchEvidence:
    """One catalog entry offered as a match, with each stage's evidence."""

    image: str
    id: str
    label: str
    similarity: float
    svc_label: str | None
    lbp_distance: float
    source: str = "embedding"
    rank: int = 0
    inliers: int | None = None
    ratio_matches: int | None = None
    rotation_deg: float | None = None
    scale: float | None = None
    score: float | None = None
    surface_peak: float | None = None


@dataclass(frozen=True)
class Outline:
    """One cake's outline in the original photo's pixels (EXIF orientation applied, full resolution).

    Attributes
    ----------
    shape : {"disc", "brick"}
    centre : (x, y)
        Ellipse (or quadrilateral) centre, px.
    axes : (a, b)
        Semi-axes, a >= b, px (a brick: half its mean side lengths).
    angle_deg : float
        Direction of the major axis, degrees in [0, 180), image y down.
    polygon : tuple of (x, y)
        The closed outline: a brick's 4 corners, or points around a disc's rim.
    confidence : float
        The locator's score, 0-1.
    """

    shape: Literal["disc", "brick"]
    centre: tuple[float, float]
    axes: tuple[float, float]
    angle_deg: float
    polygon: tuple[tuple[float, float], ...]
    confidence: float


@dataclass(frozen=True)
class Rectification:
    """How the canonical image every descriptor was computed on was made.

    `homography` maps original-photo pixels (x, y, 1) to canonical-image
    pixels; its inverse brings a keypoint of the canonical image back onto
    the photo.
    """

    homography: tuple[tuple[float, float, float], ...]
    size: int
    margin: float


@dataclass(frozen=True)
class Cake:
    """What the locator found, and what was described.

    Attributes
    ----------
    fallback : bool
        True when no cake was found with confidence: the whole photo was described.
    shape : {"disc", "brick", "none"}
        "none" on fallback.
    confidence : float
        The largest cake's score (on fallback: the best score seen).
    outline : Outline or None
        The largest cake (the one described); None on fallback.
    others : tuple of Outline
        Further cakes in the photo, largest first (a query answers for `outline` only).
    rectification : Rectification or None
        None on fallback.
    photo_size : (width, height)
        Of the original photo, px, EXIF orientation applied.
    locator : str
        The locator's version.
    """

    fallback: bool
    shape: Literal["disc", "brick", "none"]
    confidence: float
    outline: Outline | None
    others: tuple[Outline, ...]
    rectification: Rectification | None
    photo_size: tuple[int, int]
    locator: str

    @property
    def count(self) -> int:
        """Cakes found (0 on fallback)."""
        return 0 if self.fallback else 1 + len(self.others)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    threshold: float
    threshold_source: Literal["config", "model", "fallback"]


@dataclass(frozen=True)
class CatalogRef:
    """The catalog generation a query was matched against, and its size."""

    generation: int
    entries: int


@dataclass(frozen=True)
class MatchResult:
    query: str
    status: Status
    label: str | None
    confidence: float
    matches: tuple[MatchEvidence, ...] = ()
    stages: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    model: ModelInfo | None = None
    error: str | None = None
    error_code: str | None = None
    sha256: str | None = None
    catalog: CatalogRef | None = None
    cake: Cake | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    record: dict[str, Any] | None = None  # the matched cake's record (pipeline.records.result_record)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        data["matches"] = list(data["matches"])
        if data["record"] is None:
            del data["record"]  # results without a record keep exactly their old fields
        return data

    def to_json(self, indent: int | None = None) -> str:
        return dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(data: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """JSON text, UTF-8 safe, that keeps any file name exactly.

    Text is written as is (`ensure_ascii=False`), except lone surrogates:
    `os.fsdecode` turns each byte of a name that is not UTF-8 into one
    (b"\\xff" -> "\\udcff"), and they cannot be encoded as UTF-8. They are
    written as JSON escapes (`\\udcff`), so `os.fsencode(json.loads(text)[...])`
    gives back the name's original bytes.
    """
    # Surrogates can only occur inside JSON strings, where an escape is valid.
    return escape_surrogates(json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys))


def escape_surrogates(text: str) -> str:
    """`text` with each lone surrogate (a non-UTF-8 name byte, from `os.fsdecode`) as its `\\udcXX` escape: encodable as UTF-8."""
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def rejected(query: str, reason: str, code: str, sha256: str | None = None, model: ModelInfo | None = None) -> MatchResult:
    """The result for a query file that could not be read."""
    return MatchResult(query=query, status="rejected", label=None, confidence=0.0, error=reason, error_code=code, sha256=sha256, model=model)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def write_json_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader sees the old file, or the whole new one."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))
