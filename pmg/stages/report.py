"""DVC stage `report`: one self-contained HTML report over all scenarios."""

from __future__ import annotations

from collections.abc import Callable

from pmg.config import Params


def run(params: Params, *, log: Callable[[str], object] = print) -> dict:
    """Write `<report.out>/index.html`; return where it is and the headline metrics."""
    from pmg.evaluate.report import run_report
    from pmg.evaluate.stage import summarize_scenarios

    path = run_report(params)
    summary = summarize_scenarios(params)
    log(f"report: {path.resolve()}")
    return {"report_path": str(path.resolve()), **summary}
