"""`pmg summary`: the end of `make demo`, in 120 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg.cli import main
from pmg.config import load_params
from pmg.stages.catalogue import Catalogue
from pmg.stages.summary import summary
from pmg.stages.table import STAGES

ROOT = Path(__file__).resolve().parents[2]


def _timing(wall: float, cpu: float, peak: float) -> str:
    return json.dumps({"wall_seconds": wall, "cpu_seconds": cpu, "peak_rss_mib": peak})


def _last_run(catalogue: Catalogue) -> None:
    """What run_stage and the report stage leave: a few timing files, the headline, the report."""
    for path, text in (
        (catalogue.timings("prepare", "clothing"), _timing(12.34, 10.0, 812.4)),
        (catalogue.timings("prepare", "movies"), _timing(30.0, 29.5, 1024)),
        (catalogue.timings("zoo_llm"), _timing(40.0, 38.0, 2048.9)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    report = catalogue.report()
    report.mkdir(parents=True)
    (report / "headline.md").write_text(
        "| scenario | PMG LPIPS ↓ | none | change |\n|---|---|---|---|\n| clothing | 0.52 | 0.55 | -5% " + "x" * 200 + "|\n"
    )
    (report / "index.html").write_text("<html></html>")


def test_summary_has_the_headline_timings_and_report_in_120_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    catalogue = Catalogue(params)
    _last_run(catalogue)
    text = summary(params, catalogue)
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines)
    headline = lines.index(f"Headline ({catalogue.report() / 'headline.md'}):")
    assert lines[headline + 3].startswith("| clothing | 0.52 | 0.55 | -5% ") and lines[headline + 3].endswith("…")
    rows = {tuple(line.split()[:2]): line for line in lines if line.split()[:1] and line.split()[0] in {s.name for s in STAGES} | {"total"}}
    assert rows[("prepare", "clothing")].split()[2:] == ["12.3", "10.0", "812"]
    assert rows[("prepare", "movies")].split()[2:] == ["30.0", "29.5", "1024"]
    assert rows[("prepare", "emoji")].endswith("no timing recorded")
    assert rows[("zoo_llm", "-")].split()[2:] == ["40.0", "38.0", "2049"]
    assert rows[("describe", "clothing")].endswith("no timing recorded")
    assert rows[("report", "-")].endswith("no timing recorded")
    assert rows[("total", "82.3")].startswith("total") and "1.4 min" in rows[("total", "82.3")]
    # Every stage run of the mini profile, in the stage table's (pipeline) order.
    order = [line.split()[0] for line in lines if line.split()[:1] and line.split()[0] in {s.name for s in STAGES}]
    profile = params.base.profile  # stages of other profiles (rehearsal_models) are left out
    expected = [
        s.name
        for s in STAGES
        if s.profiles is None or profile in s.profiles
        for _ in (params.base.scenarios if s.per_scenario else ["-"])
    ]
    assert order == expected
    assert lines[-1] == f"Report: {(tmp_path / catalogue.report() / 'index.html').resolve()}"


def test_summary_leaves_out_stages_of_other_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml", {"base.profile": "full"})
    names = {line.split()[0] for line in summary(params).splitlines() if line.split()[:1]}
    assert "zoo_llm" not in names and "zoo_sd" not in names and "train_soft" in names


def test_summary_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(ROOT / "params.yaml"), "summary"]) == 0
    out = capsys.readouterr().out
    assert "no headline table: data/report/headline.md is missing" in out
    assert "no report:" in out and "Stage timings" in out
