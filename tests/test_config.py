from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config


def test_default_config_loads_with_seed_defaults() -> None:
    config = load_config()
    assert config.matcher.refine.svc_c == 100.0
    assert config.matcher.shortlist.fallback_threshold == 0.9
    assert config.lbp.points_radii == ((8, 1), (16, 2), (24, 3))


def test_every_default_key_has_a_comment() -> None:
    from pipeline.config import DEFAULT_CONFIG

    for line in DEFAULT_CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in stripped, f"setting without a comment: {line!r}"


def test_override_changes_only_named_keys(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("matcher:\n  shortlist:\n    top_k: 3\n")
    config = load_config(user)
    assert config.matcher.shortlist.top_k == 3
    assert config.matcher.refine.svc_c == 100.0


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("matcher:\n  shortlist:\n    topk: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(user)
    assert "matcher.shortlist.topk" in str(err.value)
    assert str(user) in str(err.value)


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("matcher:\n  shortlist:\n    top_k: ten\n")
    with pytest.raises(ConfigError, match="top_k"):
        load_config(user)


def test_bad_literal_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("daemon:\n  watch:\n    mode: magic\n")
    with pytest.raises(ConfigError, match="daemon.watch.mode"):
        load_config(user)


def test_defaults_live_only_in_the_shipped_yaml() -> None:
    """No config dataclass carries a default of its own: code and YAML cannot disagree."""
    import dataclasses

    from pipeline import config as cfg

    classes = [c for c in vars(cfg).values() if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == cfg.__name__]
    assert len(classes) >= 15
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f"{cls.__name__}.{f.name}"
    assert load_config().matcher.decide.accept_confidence == yaml_value("matcher", "decide", "accept_confidence")


def yaml_value(*keys: str) -> object:
    import yaml

    from pipeline.config import DEFAULT_CONFIG

    value = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for key in keys:
        value = value[key]
    return value


@pytest.mark.parametrize("text, words", [
    ("local:\n  enabled: false\n", ["matcher.verify.enabled", "local.enabled"]),
    ("matcher:\n  verify:\n    enabled: false\n", ["matcher.shortlist.vote_top_k", "matcher.verify.enabled"]),
    ("matcher:\n  decide:\n    accept_confidence: 1.5\n", ["matcher.decide.accept_confidence", "[0, 1]"]),
    ("daemon:\n  workers: 0\n", ["daemon.workers", ">= 1"]),
])
def test_contradicting_or_out_of_range_settings_are_refused(tmp_path: Path, text: str, words: list[str]) -> None:
    user = tmp_path / "user.yaml"
    user.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(user)
    for word in [str(user), *words]:
        assert word in str(err.value)


def test_verify_off_with_votes_off_is_a_valid_combination(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("local:\n  enabled: false\nmatcher:\n  shortlist:\n    vote_top_k: 0\n  verify:\n    enabled: false\n")
    config = load_config(user)
    assert not config.matcher.verify.enabled and not config.local.enabled


def test_a_key_missing_from_the_defaults_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import config as cfg

    broken = tmp_path / "default.yaml"
    broken.write_text(cfg.DEFAULT_CONFIG.read_text().replace("  batch_size: 32", ""))
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG", broken)
    with pytest.raises(ConfigError, match="model.batch_size"):
        cfg.load_config()
