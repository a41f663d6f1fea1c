"""The real params.yaml parses; bad keys are rejected with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pmg.config import Params, load_params, parse_params
from pmg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_real_params_yaml_parses() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.base.profile == "mini"
    assert set(params.base.scenarios) == {"clothing", "movies", "emoji"}
    assert params.prepare.movies.min_rating == 4.0
    assert params.prepare.movies.history_len == 3
    assert params.prepare.clothing.history_len == 5
    # Both profiles exist and name every model kind.
    for name in ("mini", "full"):
        profile = params.profiles[name]
        assert profile.llm.path and profile.generator.path and profile.scorer.path


def test_profile_switch_changes_models_not_code() -> None:
    mini = load_params(ROOT / "params.yaml")
    full = load_params(ROOT / "params.yaml", {"base.profile": "full"})
    assert mini.profile.generator.kind == full.profile.generator.kind == "diffusers"
    assert mini.profile.generator.path != full.profile.generator.path


def test_config_is_frozen() -> None:
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(Exception):
        params.base.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prepare.movies.histroy_len": 3}, "unknown key 'prepare.movies.histroy_len'"),
        ({"base.colour": "red"}, "unknown key 'base.colour'"),
        ({"profiles.mini.llm.weights": "x"}, "unknown key 'profiles.mini.llm.weights'"),
        ({"base.profile": "huge"}, "base.profile is 'huge'"),
        ({"prepare.clothing.preference_strength": 2}, "prepare.clothing.preference_strength"),
        ({"base.scenarios": ["movies", "movies"]}, "without repeats"),
        ({"prepare.movies.source": "ml-100k"}, "needs 'path'"),
    ],
)
def test_bad_keys_are_named(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", override)
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_parse_requires_profiles() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["profiles"]
    with pytest.raises(ConfigError, match="missing key 'profiles'"):
        parse_params(raw)
    assert isinstance(parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())), Params)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `pmg argv`; return its one error line (exit status 2, no traceback)."""
    from pmg.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pmg: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("base.seed=[1", "not valid YAML"),
        ("base.seed=" + "[" * 3000 + "]" * 3000, "nested too deeply"),
        ("base.seed=" + "[" * 400 + "]" * 400, "valid integer"),  # parses, then a short message
        ("base.seed=-1", "base.seed"),
        (f"base.seed={2**31}", "base.seed"),
        ("train_soft.lr=.inf", "train_soft.lr"),
        ("select.alpha=.nan", "select.alpha"),
        ("zoo.sd.lr=-.inf", "zoo.sd"),
    ],
)
def test_bad_overrides_are_one_line_errors(setting: str, message: str, capsys) -> None:
    err = _cli_error(["--params", str(ROOT / "params.yaml"), "--set", setting, "config"], capsys)
    assert message in err and len(err) < 400


def test_unreadable_params_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("base:\n  profile: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in _cli_error(["--params", str(latin1), "config"], capsys)
    assert "is a folder" in _cli_error(["--params", str(tmp_path), "config"], capsys)
    deep = tmp_path / "deep.yaml"
    deep.write_text("base: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in _cli_error(["--params", str(deep), "config"], capsys)
