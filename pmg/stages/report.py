"""DVC stage `report`: one self-contained HTML report over all scenarios, a headline table, a PNG grid."""

from __future__ import annotations

from collections.abc import Callable

from pmg.config import Params


def run(params: Params, *, log: Callable[[str], object] = print) -> dict:
    """Write the report (`pmg.evaluate.report.run_report`); return its path, the headline and the metrics."""
    from pmg.evaluate.report import HEADLINE_FILE, run_report
    from pmg.evaluate.stage import summarize_scenarios

    path = run_report(params)
    summary = summarize_scenarios(params)
    headline = (path.parent / HEADLINE_FILE).read_text(encoding="utf-8")
    log(f"report: {path.resolve()}")
    return {"report_path": str(path.resolve()), "headline": headline, **summary}
