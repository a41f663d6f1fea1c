"""Beside the HTML report: the README's PNG grid and the headline table (PMG vs no personalisation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import build_world, catalogue, headline, make_params, run_report, write_main_run
from PIL import Image

from pmg.evaluate.gallery_png import CHOSEN_COLOUR, row_height
from pmg.stages.catalogue import HEADLINE as HEADLINE_FILE


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _has_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((pixels.reshape(-1, 3) == np.array(colour)).all(axis=1).any())


def test_grid_has_a_row_per_scenario_and_frames_the_chosen_candidate(tmp_path: Path) -> None:
    # emoji has nothing prepared: its row says "no pairs" instead of failing.
    params = make_params(tmp_path, base={"scenarios": ["clothing", "emoji"]})
    write_main_run(build_world(tmp_path / "prepared"), params)
    run_report(params, tmp_path)
    grid = Path(params.report.grid_png)
    pixels = _pixels(grid)
    tile = params.report.grid_tile
    assert pixels.shape[0] == 2 * row_height(tile)
    assert grid.stat().st_size < 300_000
    # First clothing pair in the gallery's order: u1, history g1 g2 g9 + target + 3 candidates.
    assert pixels.shape[1] >= 7 * tile
    clothing, emoji = pixels[: row_height(tile)], pixels[row_height(tile) :]
    assert _has_colour(clothing, CHOSEN_COLOUR) and not _has_colour(emoji, CHOSEN_COLOUR)
    # u1's chosen candidate (k = 2: the highest z of write_main_run) drawn at tile size, nearest-neighbour.
    assert _has_colour(clothing, (120, 0, 200))


def test_grid_of_a_run_without_pairs(tmp_path: Path) -> None:
    params = make_params(tmp_path, report={"grid_tile": 48})
    build_world(tmp_path / "prepared")
    run_report(params, tmp_path)
    pixels = _pixels(Path(params.report.grid_png))
    assert pixels.shape[0] == row_height(48) and not _has_colour(pixels, CHOSEN_COLOUR)


def _ablation_metrics(root: Path, scenario: str, by_variant: dict) -> None:
    path = catalogue(make_params(root), root).ablation_metrics(scenario)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({scenario: by_variant}))


def _rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]  # header left out
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def test_headline_compares_pmg_with_no_personalisation(tmp_path: Path) -> None:
    params = make_params(
        tmp_path,
        base={"scenarios": ["clothing", "emoji", "movies"]},
        train_soft={"scenarios": ["clothing", "movies"]},
    )
    none = {"lpips_alex_history": 0.5, "lpips_alex_target": 0.3, "ssim_history": 0.1, "n_pairs": 8}
    _ablation_metrics(
        tmp_path,
        "clothing",
        {
            "none": none,
            "keywords": {"lpips_alex_history": 0.48, "lpips_alex_target": 0.31, "n_pairs": 8},
            "soft+keywords": {
                "lpips_alex_history": 0.46,
                "lpips_alex_target": 0.32,
                "ssim_history": 0.25,
                "ssim_target": 0.4,
                "n_pairs": 8,
                "lpips_alex_history_diff_vs_none": -0.04,
                "lpips_alex_history_diff_vs_none_lo": -0.07,
                "lpips_alex_history_diff_vs_none_hi": -0.01,
                "gap_lpips_alex": 0.03,
                "gap_lpips_alex_p": 0.012,
                "gap_lpips_alex_diff_vs_none": 0.02,
                "gap_lpips_alex_diff_vs_none_lo": 0.001,
                "gap_lpips_alex_diff_vs_none_hi": 0.04,
            },
        },
    )
    # emoji trains no adapter: PMG is the keywords variant.
    _ablation_metrics(
        tmp_path,
        "emoji",
        {
            "none": {**none, "lpips_alex_history": 0.4},
            "keywords": {
                "lpips_alex_history": 0.41,
                "lpips_alex_target": 0.2,
                "ssim_target": 0.5,
                "n_pairs": 5,
            },
        },
    )
    # movies: no ablation metrics at all.
    run_report(params, tmp_path)
    text = (Path(params.report.out) / HEADLINE_FILE).read_text()
    assert text == headline(params, tmp_path)
    rows = _rows(text)
    assert list(rows) == ["clothing", "emoji", "movies"]
    # (0.46 - 0.5) / 0.5 = -8 %; (0.41 - 0.4) / 0.4 = +2.5 %
    # The paired difference with its interval, the mismatched-user gap with its p-value (absent: "—").
    clothing = [
        *["soft+keywords", "0.5000", "0.4600", "-8.0%", "-0.0400 [-0.0700, -0.0100]", "+0.0300 (p=0.012)"],
        *["+0.0200 [+0.0010, +0.0400]", "0.3000", "0.3200", "0.2500", "0.4000", "8"],
    ]
    emoji = ["keywords", "0.4000", "0.4100", "+2.5%", "—", "—", "—", "0.3000", "0.2000", "—", "0.5000", "5"]
    assert rows["clothing"] == clothing and rows["emoji"] == emoji
    assert rows["movies"][:2] == ["soft+keywords", "not run"]


@pytest.mark.parametrize("present", [{}, {"soft+keywords": {"lpips_alex_history": 0.4}}])
def test_headline_says_not_run_without_the_baseline(tmp_path: Path, present: dict) -> None:
    params = make_params(tmp_path)
    if present:
        _ablation_metrics(tmp_path, "clothing", present)
    rows = _rows(headline(params, tmp_path))
    assert rows["clothing"][1] == "not run"


@pytest.mark.slow  # the session's tiny pipeline run
def test_headline_and_grid_of_a_pipeline_run(pipeline_run) -> None:
    params = pipeline_run.params
    run_report(params, pipeline_run.root)
    rows = _rows((Path(params.report.out) / HEADLINE_FILE).read_text())
    pmg, none = (pipeline_run.ablations["clothing"][name] for name in ("soft+keywords", "none"))
    change = 100 * (pmg["lpips_alex_history"] - none["lpips_alex_history"]) / none["lpips_alex_history"]
    assert rows["clothing"][:5] == [
        "soft+keywords",
        f"{none['lpips_alex_history']:.4f}",
        f"{pmg['lpips_alex_history']:.4f}",
        f"{change:+.1f}%",
        f"{pmg['lpips_alex_history_diff_vs_none']:+.4f} [{pmg['lpips_alex_history_diff_vs_none_lo']:+.4f}, "
        f"{pmg['lpips_alex_history_diff_vs_none_hi']:+.4f}]",
    ]
    assert rows["clothing"][5].startswith(f"{pmg['gap_lpips_alex']:+.4f} (p=")
    assert rows["clothing"][7] == f"{none['lpips_alex_target']:.4f}"
    assert rows["clothing"][-1] == str(pmg["n_pairs"])
    pixels = _pixels(Path(params.report.grid_png))
    assert pixels.shape[0] == row_height(params.report.grid_tile) and _has_colour(pixels, CHOSEN_COLOUR)
