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
