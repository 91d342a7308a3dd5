"""Settings: frozen dataclasses loaded from YAML, strict about keys.

`config/default.yaml` holds every setting; a user file given with `--config`
overrides only the keys it names. An unknown or mistyped key is an error that
names the key and the file, because a silently ignored setting is worse than a
refused one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "default.yaml"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class PathsConfig:
    inbox_catalog: str = "inbox/catalog"
    inbox_query: str = "inbox/query"
    outbox: str = "outbox"
    processed: str = "outbox/processed"
    failed: str = "inbox/failed"
    index: str = "index"
    state: str = ".teaprint"


@dataclass(frozen=True)
class ModelConfig:
    path: str = "models/teaprint-encoder.keras"
    batch_size: int = 32


@dataclass(frozen=True)
class IntakeConfig:
    max_megapixels: float = 80.0
    max_file_mb: float = 100.0
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
    work_side: int = 640


@dataclass(frozen=True)
class LbpConfig:
    points_radii: tuple[tuple[int, int], ...] = ((8, 1), (16, 2), (24, 3))
    size: int = 256


@dataclass(frozen=True)
class LocalConfig:
    enabled: bool = True
    method: Literal["sift", "orb"] = "sift"
    max_keypoints: int = 400
    side: int = 640
    contrast_threshold: float = 0.01


@dataclass(frozen=True)
class LocateConfig:
    """The cake locator (`pipeline.features.locate`) in front of every descriptor."""

    enabled: bool = True
    size: int = 512
    margin: float = 0.04
    min_confidence: float = 0.7


@dataclass(frozen=True)
class ShortlistConfig:
    top_k: int = 10
    threshold: float | None = None
    fallback_threshold: float = 0.9
    min_candidates: int = 10
    floor: float = 0.0
    lbp_top_k: int = 5
    vote_top_k: int = 5
    vote_keypoints: int = 150


@dataclass(frozen=True)
class RefineConfig:
    enabled: bool = True
    svc_c: float = 100.0
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"


@dataclass(frozen=True)
class VerifyConfig:
    enabled: bool = True
    max_candidates: int = 10
    ratio: float = 0.8
    ransac_px: float = 8.0
    min_matches: int = 8


@dataclass(frozen=True)
class GeometricWeights:
    """Logistic weights of the geometric expert (`pipeline.matcher.fuse`)."""

    bias: float = -6.0
    inliers: float = 1.5
    inlier_margin: float = 1.5


@dataclass(frozen=True)
class AppearanceWeights:
    """Logistic weights of the appearance expert (`pipeline.matcher.fuse`)."""

    bias: float = -8.0
    similarity: float = 6.0
    similarity_margin: float = 6.0
    svc_vote: float = 0.5
    lbp_distance: float = -2.0
    lbp_margin: float = 1.0


@dataclass(frozen=True)
class FusionConfig:
    geometric: GeometricWeights = field(default_factory=GeometricWeights)
    appearance: AppearanceWeights = field(default_factory=AppearanceWeights)


@dataclass(frozen=True)
class DecideConfig:
    accept_confidence: float = 0.5
    similarity_accept: float = 0.5
    fusion: FusionConfig = field(default_factory=FusionConfig)


@dataclass(frozen=True)
class MatcherConfig:
    shortlist: ShortlistConfig = field(default_factory=ShortlistConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    decide: DecideConfig = field(default_factory=DecideConfig)


@dataclass(frozen=True)
class WatchConfig:
    mode: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval_s: float = 1.0
    stable_after_s: float = 1.0
    reconcile_interval_s: float = 30.0
    ignore_patterns: tuple[str, ...] = ("*.part", "*.tmp", "*~", ".*", "*.crdownload")


@dataclass(frozen=True)
class DaemonConfig:
    watch: WatchConfig = field(default_factory=WatchConfig)
    catalog_batch_size: int = 32
    catalog_batch_wait_s: float = 0.5
    workers: int = 2
    explain_images: bool = False
    file_budget_s: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_upload_mb: float = 50.0
    max_files: int = 32
    page_size: int = 50
    thumbnail_px: int = 480


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)
    lbp: LbpConfig = field(default_factory=LbpConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http: HttpConfig = field(default_factory=HttpConfig)


def load_config(path: Path | None = None) -> Config:
    """Load `config/default.yaml`, then overlay the user file at `path` if given.

    Raises
    ------
    ConfigError
        On unreadable YAML, an unknown key, or a value of the wrong type.
    """
    merged = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        merged = _deep_merge(merged, _read_yaml(Path(path)), source=Path(path))
    return _build(Config, merged, prefix="", source=path or DEFAULT_CONFIG)


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
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], data[name], f"{prefix}{name}", source) for name in fields if name in data}
    return cls(**kwargs)


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
