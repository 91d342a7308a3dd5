"""Settings: frozen dataclasses loaded from YAML, strict about keys.

`pipeline/data/default.yaml` (shipped inside the package) holds every setting
and is the ONLY place a default lives: the dataclasses below have none, so
code and YAML cannot disagree, and a key missing from the defaults is an
error. A user file given with `--config` overrides only the keys it names. An
unknown or mistyped key is an error that names the key and the file, because
a silently ignored setting is worse than a refused one; so is a value out of
its range, or a combination of keys that cannot work (`validate`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from pipeline.data import DEFAULT_CONFIG


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class PathsConfig:
    inbox_catalog: str
    inbox_query: str
    outbox: str
    processed: str
    failed: str
    index: str
    state: str


@dataclass(frozen=True)
class ModelConfig:
    path: str
    batch_size: int


@dataclass(frozen=True)
class IntakeConfig:
    max_megapixels: float
    max_file_mb: float
    extensions: tuple[str, ...]
    work_side: int


@dataclass(frozen=True)
class LbpConfig:
    points_radii: tuple[tuple[int, int], ...]
    size: int


@dataclass(frozen=True)
class LocalConfig:
    enabled: bool
    method: Literal["sift", "orb"]
    max_keypoints: int
    side: int
    contrast_threshold: float
    surface: bool


@dataclass(frozen=True)
class LocateConfig:
    """The cake locator (`pipeline.features.locate`) in front of every descriptor."""

    enabled: bool
    size: int
    margin: float
    min_confidence: float


@dataclass(frozen=True)
class ShortlistConfig:
    top_k: int
    threshold: float | None
    fallback_threshold: float
    min_candidates: int
    floor: float
    lbp_top_k: int
    vote_top_k: int
    vote_keypoints: int


@dataclass(frozen=True)
class RefineConfig:
    enabled: bool
    svc_c: float
    kernel: Literal["rbf", "linear", "poly", "sigmoid"]


@dataclass(frozen=True)
class VerifyConfig:
    enabled: bool
    max_candidates: int
    ratio: float
    ransac_px: float
    min_matches: int
    guided_ratio: float
    deepen: int
    invert_light: bool
    correlate_rest: int


@dataclass(frozen=True)
class GeometricWeights:
    """Logistic weights of the geometric expert (`pipeline.matcher.fuse`)."""

    bias: float
    inliers: float
    inlier_margin: float
    inlier_share: float


@dataclass(frozen=True)
class AppearanceWeights:
    """Logistic weights of the appearance expert (`pipeline.matcher.fuse`)."""

    bias: float
    similarity: float
    similarity_margin: float
    svc_vote: float
    lbp_distance: float
    lbp_margin: float


@dataclass(frozen=True)
class TextureWeights:
    """Logistic weights of the texture expert (`pipeline.matcher.fuse`): the LBP evidence alone."""

    bias: float
    svc_vote: float
    lbp_distance: float
    lbp_margin: float


@dataclass(frozen=True)
class EmbeddingWeights:
    """Logistic weights of the embedding expert (`pipeline.matcher.fuse`): the cosine evidence alone, a photo with a cake's confidence."""

    bias: float
    similarity: float
    similarity_margin: float


@dataclass(frozen=True)
class SurfaceWeights:
    """Logistic weights of the relief correlation, the geometric expert's second kind of evidence (`pipeline.matcher.fuse`).

    `floor` is no weight: a peak at or below it is no evidence (probability 0), whatever the logistic says.
    """

    bias: float
    surface_peak: float
    surface_margin: float
    floor: float


@dataclass(frozen=True)
class FusionConfig:
    geometric: GeometricWeights
    appearance: AppearanceWeights
    texture: TextureWeights
    embedding: EmbeddingWeights
    surface: SurfaceWeights


@dataclass(frozen=True)
class DecideConfig:
    accept_confidence: float
    similarity_accept: float
    texture_needs_bare_photo: bool
    fusion: FusionConfig


@dataclass(frozen=True)
class MatcherConfig:
    shortlist: ShortlistConfig
    refine: RefineConfig
    verify: VerifyConfig
    decide: DecideConfig


@dataclass(frozen=True)
class WatchConfig:
    mode: Literal["auto", "inotify", "polling"]
    poll_interval_s: float
    stable_after_s: float
    reconcile_interval_s: float
    ignore_patterns: tuple[str, ...]


@dataclass(frozen=True)
class DaemonConfig:
    watch: WatchConfig
    catalog_batch_size: int
    catalog_batch_max: int
    catalog_batch_wait_s: float
    workers: int
    explain_images: bool
    file_budget_s: float


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"]
    format: Literal["auto", "json", "console"]


@dataclass(frozen=True)
class HttpConfig:
    host: str
    port: int
    token: str | None
    max_upload_mb: float
    max_files: int
    page_size: int
    thumbnail_px: int


@dataclass(frozen=True)
class HistoryConfig:
    path: str
    busy_timeout_s: float


@dataclass(frozen=True)
class DoctorConfig:
    min_free_mb: float
    inotify_max_user_watches: int | None


@dataclass(frozen=True)
class MilvusConfig:
    uri: str
    collection: str
    token: str
    index: Literal["FLAT", "IVF_FLAT", "HNSW"]
    lists: int
    probes: int
    hnsw_m: int
    hnsw_ef: int


@dataclass(frozen=True)
class AnnConfig:
    min_rows: int
    lists: int
    probes: int
    save_every: int


@dataclass(frozen=True)
class SearchConfig:
    backend: Literal["embedded", "milvus"]
    ann: AnnConfig
    milvus: MilvusConfig


@dataclass(frozen=True)
class Config:
    paths: PathsConfig
    model: ModelConfig
    intake: IntakeConfig
    locate: LocateConfig
    lbp: LbpConfig
    local: LocalConfig
    matcher: MatcherConfig
    search: SearchConfig
    daemon: DaemonConfig
    logging: LoggingConfig
    http: HttpConfig
    history: HistoryConfig
    doctor: DoctorConfig


def load_config(path: Path | None = None) -> Config:
    """Load the shipped defaults, then overlay the user file at `path` if given.

    Raises
    ------
    ConfigError
        On unreadable YAML, an unknown or missing key, a value of the wrong
        type or out of range, or keys that contradict each other.
    """
    merged = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        merged = _deep_merge(merged, _read_yaml(Path(path)), source=Path(path))
    source = Path(path) if path is not None else DEFAULT_CONFIG
    return validate(_build(Config, merged, prefix="", source=source), source)


@functools.lru_cache(maxsize=1)
def default_config() -> Config:
    """The shipped defaults (`load_config()`, read once)."""
    return load_config()


# (key, check, what the value must be): one line per bounded setting.
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("model.batch_size", lambda v: v >= 1, ">= 1"),
    ("intake.max_megapixels", lambda v: v > 0, "> 0"),
    ("intake.max_file_mb", lambda v: v > 0, "> 0"),
    ("intake.work_side", lambda v: v >= 1, ">= 1"),
    ("locate.size", lambda v: v >= 64, ">= 64 (the rim and keypoints need room)"),
    ("locate.margin", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("locate.min_confidence", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("lbp.size", lambda v: v >= 16, ">= 16"),
    ("local.max_keypoints", lambda v: v >= 1, ">= 1"),
    ("local.side", lambda v: v >= 16, ">= 16"),
    ("matcher.shortlist.top_k", lambda v: v >= 1, ">= 1"),
    ("matcher.shortlist.threshold", lambda v: v is None or -1.0 <= v <= 1.0, "null or in [-1, 1]"),
    ("matcher.shortlist.fallback_threshold", lambda v: -1.0 <= v <= 1.0, "in [-1, 1]"),
    ("matcher.shortlist.floor", lambda v: -1.0 <= v <= 1.0, "in [-1, 1]"),
    ("matcher.shortlist.min_candidates", lambda v: v >= 0, ">= 0"),
    ("matcher.shortlist.lbp_top_k", lambda v: v >= 0, ">= 0"),
    ("matcher.shortlist.vote_top_k", lambda v: v >= 0, ">= 0"),
    ("matcher.shortlist.vote_keypoints", lambda v: v >= 1, ">= 1"),
    ("search.ann.min_rows", lambda v: v >= 1, ">= 1"),
    ("search.ann.lists", lambda v: v >= 1, ">= 1"),
    ("search.ann.probes", lambda v: v >= 1, ">= 1"),
    ("search.ann.save_every", lambda v: v >= 1, ">= 1"),
    ("search.milvus.lists", lambda v: 1 <= v <= 65536, "1-65536"),
    ("search.milvus.probes", lambda v: 1 <= v <= 65536, "1-65536"),
    ("search.milvus.hnsw_m", lambda v: 2 <= v <= 2048, "2-2048"),
    ("search.milvus.hnsw_ef", lambda v: 1 <= v <= 32768, "1-32768"),
    ("matcher.refine.svc_c", lambda v: v > 0, "> 0"),
    ("matcher.verify.max_candidates", lambda v: v >= 1, ">= 1"),
    ("matcher.verify.ratio", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    ("matcher.verify.ransac_px", lambda v: v > 0, "> 0"),
    ("matcher.verify.min_matches", lambda v: v >= 4, ">= 4 (a homography needs 4 points)"),
    ("matcher.verify.guided_ratio", lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0 = no guided matching)"),
    ("matcher.verify.deepen", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("matcher.verify.correlate_rest", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("matcher.decide.accept_confidence", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("matcher.decide.similarity_accept", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("daemon.watch.poll_interval_s", lambda v: v > 0, "> 0"),
    ("daemon.watch.stable_after_s", lambda v: v >= 0, ">= 0"),
    ("daemon.watch.reconcile_interval_s", lambda v: v > 0, "> 0"),
    ("daemon.catalog_batch_size", lambda v: v >= 1, ">= 1"),
    ("daemon.catalog_batch_max", lambda v: v >= 1, ">= 1"),
    ("daemon.catalog_batch_wait_s", lambda v: v >= 0, ">= 0"),
    ("daemon.workers", lambda v: v >= 1, ">= 1"),
    ("daemon.file_budget_s", lambda v: v >= 0, ">= 0 (0 = no budget)"),
    ("http.port", lambda v: 0 <= v <= 65535, "in 0-65535"),
    ("http.max_upload_mb", lambda v: v > 0, "> 0"),
    ("http.max_files", lambda v: v >= 1, ">= 1"),
    ("http.page_size", lambda v: 1 <= v <= 500, "in 1-500"),
    ("http.thumbnail_px", lambda v: v >= 16, ">= 16"),
    ("history.busy_timeout_s", lambda v: v >= 0, ">= 0"),
    ("doctor.min_free_mb", lambda v: v >= 0, ">= 0"),
    ("doctor.inotify_max_user_watches", lambda v: v is None or v >= 0, "null or >= 0"),
)


def validate(config: Config, source: Path | str = "config") -> Config:
    """`config` itself when every value is in range and the keys agree with each other.

    Cross-key rules: geometric verification matches keypoints, which exist
    only with `local.enabled`; the keypoint-vote shortlist source counts
    those matches, so it needs verification (otherwise both silently do
    nothing).

    Raises
    ------
    ConfigError
        Naming every offending key and `source`.
    """
    problems = [f"'{key}' must be {what}, got {_get(config, key)!r}" for key, ok, what in _RANGES if not ok(_get(config, key))]
    m = config.matcher
    if m.verify.enabled and not config.local.enabled:
        problems.append("'matcher.verify.enabled' is true but 'local.enabled' is false: verification matches keypoints, "
                        "which are extracted only with local.enabled (enable it, or set matcher.verify.enabled: false)")
    if m.shortlist.vote_top_k > 0 and not m.verify.enabled:
        problems.append(f"'matcher.shortlist.vote_top_k' is {m.shortlist.vote_top_k} but 'matcher.verify.enabled' is false: "
                        "keypoint votes need verification's keypoints (set vote_top_k: 0, or enable verify)")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def _get(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any], source: Path, prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}'")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = _deep_merge(base[key], value, source, prefix=f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def _build(cls: type, data: Any, prefix: str, source: Path) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}'")
    missing = [name for name in fields if name not in data]
    if missing:
        # Defaults live only in the shipped YAML; a key it lacks is a packaging error.
        raise ConfigError(f"{DEFAULT_CONFIG}: missing config key(s) {', '.join(prefix + m for m in missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(hints[name], data[name], f"{prefix}{name}", source) for name in fields})


def _coerce(tp: Any, value: Any, key: str, source: Path) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.", source=source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{source}: '{key}' must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{source}: '{key}' must have {len(item_types)} items, got {value!r}")
        return tuple(_coerce(t, v, f"{key}[{i}]", source) for i, (t, v) in enumerate(zip(item_types, value)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp in (int, bool, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: '{key}' must be {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}': unsupported setting type {tp}")  # pragma: no cover
