"""`pmg summary`: the end of `make demo`, in 120 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg.cli import main
from pmg.config import load_params
from pmg.summary import summary

ROOT = Path(__file__).resolve().parents[1]


def _run(root: Path) -> None:
    (root / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: x\n  zoo_llm:\n    cmd: x\n  describe:\n    cmd: x\n  report:\n    cmd: x\n"
    )
    timings = root / "metrics" / "timings"
    (timings / "prepare").mkdir(parents=True)
    (timings / "prepare" / "clothing.json").write_text(json.dumps({"seconds": 12.34, "peak_rss_mib": 812.4}))
    (timings / "prepare" / "movies.json").write_text(json.dumps({"seconds": 30.0, "peak_rss_mib": 1024}))
    (timings / "zoo_llm.json").write_text(json.dumps({"seconds": 40.0, "peak_rss_mib": 2048.9}))
    report = root / "data" / "report"
    report.mkdir(parents=True)
    (report / "headline.md").write_text(
        "| scenario | PMG LPIPS ↓ | none | change |\n|---|---|---|---|\n| clothing | 0.52 | 0.55 | -5% " + "x" * 200 + "|\n"
    )
    (report / "index.html").write_text("<html></html>")


def test_summary_has_the_headline_timings_and_report_in_120_columns(tmp_path: Path) -> None:
    _run(tmp_path)
    text = summary(load_params(ROOT / "params.yaml"), tmp_path)
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines)
    assert "| clothing | 0.52 | 0.55 | -5% " in text and lines[lines.index("Headline (data/report/headline.md):") + 3].endswith("…")
    rows = {tuple(line.split()[:2]): line for line in lines if line.startswith(("prepare", "zoo_llm", "describe", "report", "total"))}
    assert rows[("prepare", "clothing")].split()[2:] == ["12.3", "812"]
    assert rows[("prepare", "movies")].split()[2:] == ["30.0", "1024"]
    assert rows[("zoo_llm", "-")].split()[2:] == ["40.0", "2049"]
    assert rows[("describe", "-")].endswith("no timing recorded")
    assert rows[("report", "-")].endswith("no timing recorded")
    assert rows[("total", "82.3")].startswith("total") and "1.4 min" in rows[("total", "82.3")]
    # Pipeline order, as in dvc.yaml.
    order = [line.split()[0] for line in lines if line.split()[:1] and line.split()[0] in {"prepare", "zoo_llm", "describe"}]
    assert order == ["prepare", "prepare", "zoo_llm", "describe"]
    assert lines[-1] == f"Report: {(tmp_path / 'data' / 'report' / 'index.html').resolve()}"


def test_summary_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(ROOT / "params.yaml"), "summary"]) == 0
    out = capsys.readouterr().out
    assert "no headline table: data/report/headline.md is missing" in out
    assert "no report:" in out and "Stage timings" in out
