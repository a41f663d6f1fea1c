"""End to end: `pmg prepare` on a shrunken config into tmp_path, all three scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg.cli import main
from pmg.data.store import read_scenario

ROOT = Path(__file__).resolve().parents[2]


def _argv(tmp_path: Path, assets: Path, *extra: str) -> list[str]:
    return [
        "--params", str(ROOT / "params.yaml"),
        "--set", f"assets.folder={assets}",
        "--set", f"prepare.out={tmp_path / 'prepared'}",
        "--set", "prepare.image_size=32",
        "--set", "prepare.clothing.n_items=60",
        "--set", "prepare.clothing.n_users=12",
        "--set", "prepare.emoji.n_users=10",
        "--set", "prepare.movies.max_users=25",
        *extra,
    ]


@pytest.mark.slow
def test_prepare_all_scenarios_end_to_end(tmp_path: Path, packaged_data_assets: Path) -> None:
    status = main(_argv(tmp_path, packaged_data_assets, "--metrics-root", str(tmp_path / "metrics"), "prepare"))
    metrics_dir = tmp_path / "metrics" / "prepare"
    assert status == 0
    for scenario, users in (("clothing", 12), ("movies", 25), ("emoji", 10)):
        prepared = read_scenario(tmp_path / "prepared" / scenario)
        assert prepared.scenario == scenario
        assert len(prepared.splits) == users
        # Every image a split names exists and has the configured size.
        first = prepared.splits.iloc[0]
        for item in [*json.loads(first["history_items"]), first["target_item"], first["supervision_item"]]:
            image = prepared.image_file(item)
            assert image is not None and image.is_file()
        metrics = json.loads((metrics_dir / f"{scenario}.json").read_text())
        assert metrics["kept"]["users_split"] == users
        assert (prepared.ground_truth is not None) == (scenario != "movies")
    # MovieLens keeps real users: 25 of them kept, the rest counted as over the cap.
    movie_metrics = json.loads((metrics_dir / "movies.json").read_text())
    assert movie_metrics["kept"]["interactions"] == 100000
    assert movie_metrics["skipped"]["users_over_max_users"] == 938 - 25
    # Every stage run records its timing.
    timing = json.loads((tmp_path / "metrics" / "timings" / "prepare" / "emoji.json").read_text())
    assert timing["stage"] == "prepare" and timing["scenario"] == "emoji" and timing["wall_seconds"] > 0
    assert timing["peak_rss_mib"] > 0
    # No staging folders are left behind.
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["clothing", "emoji", "movies"]


@pytest.mark.slow
def test_failed_prepare_leaves_previous_output_intact(tmp_path: Path, packaged_data_assets: Path) -> None:
    args = _argv(tmp_path, packaged_data_assets)
    assert main([*args, "--metrics-root", str(tmp_path / "m"), "prepare", "--scenario", "emoji"]) == 0
    before = sorted(p.name for p in (tmp_path / "prepared" / "emoji").iterdir())
    # A missing font is an asset error: reported, exit status 2, old output kept.
    (packaged_data_assets / "noto-emoji" / "NotoColorEmoji.ttf").rename(tmp_path / "font.ttf")
    try:
        assert main([*args, "--metrics-root", str(tmp_path / "m"), "prepare", "--scenario", "emoji"]) == 2
    finally:
        (tmp_path / "font.ttf").rename(packaged_data_assets / "noto-emoji" / "NotoColorEmoji.ttf")
    assert sorted(p.name for p in (tmp_path / "prepared" / "emoji").iterdir()) == before
    assert not any(p.name.startswith(".") for p in (tmp_path / "prepared").iterdir())


def test_unknown_scenario_and_bad_override_are_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(ROOT / "params.yaml"), "--set", "prepare.emoji.colour=1", "prepare"]) == 2
    assert "unknown key 'prepare.emoji.colour'" in capsys.readouterr().err
    assert main(["--params", str(ROOT / "params.yaml"), "--set", "base.scenarios=[movies]", "prepare",
                 "--scenario", "emoji"]) == 2
    assert "not in base.scenarios" in capsys.readouterr().err
