"""The end-of-demo summary: the headline table, the per-stage timings, where the report is.

`make demo` ends with `pmg summary` instead of `dvc metrics show`, whose table
of every metric of every stage is ~900 columns wide. This prints, in at most
`width` columns (120 by default):

- the headline table the report stage wrote (`Catalogue.report()/headline.md`);
- one line per stage run of the stage table (`pmg.stages.table.STAGES`, in
  pipeline order; per-scenario stages once per scenario of `base.scenarios`,
  stages of other profiles left out), with the wall time, CPU time and peak
  memory `run_stage` recorded (`Catalogue.timings`), or "no timing recorded";
- the path of the HTML report.

Nothing here runs a stage: it only reads what the last run left.

The README's result tables are made here too, from the committed metrics
(`metrics/ablations/`), between `<!-- metrics:NAME -->` and
`<!-- /metrics:NAME -->` markers: `python -m pmg.stages.summary --readme
README.md` rewrites them after a run, and a test fails when they differ from
what the metrics say (:func:`readme_blocks`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from pmg.config import Params
from pmg.stages.catalogue import HEADLINE, REPORT_INDEX, Catalogue
from pmg.stages.table import STAGES

#: One timing row: (stage, scenario or "-", the timing file's object or None).
TimingRow = tuple[str, str, dict[str, Any] | None]


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _read_timing(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def timings(params: Params, catalogue: Catalogue) -> list[TimingRow]:
    """`(stage, scenario or "-", timing or None)` per stage run, in pipeline order."""
    rows: list[TimingRow] = []
    for spec in STAGES:
        if spec.profiles is not None and params.base.profile not in spec.profiles:
            continue
        if spec.per_scenario:
            rows += [
                (spec.name, scenario, _read_timing(catalogue.timings(spec.name, scenario)))
                for scenario in params.base.scenarios
            ]
        else:
            rows.append((spec.name, "-", _read_timing(catalogue.timings(spec.name))))
    return rows


def _number(value: Any, fmt: str) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(float(value), fmt)
    return None


def timing_lines(rows: list[TimingRow]) -> list[str]:
    """The timing table: stage, scenario, wall and CPU seconds, peak RSS; a total of the wall times."""
    lines = [f"{'stage':24}  {'scenario':10}  {'wall s':>9}  {'CPU s':>9}  {'peak RSS (MiB)':>14}"]
    total = 0.0
    for stage, scenario, timing in rows:
        wall = _number((timing or {}).get("wall_seconds"), "9.1f")
        if timing is None or wall is None:
            lines.append(f"{stage[:24]:24}  {scenario[:10]:10}  no timing recorded")
            continue
        total += float(timing["wall_seconds"])
        cpu = _number(timing.get("cpu_seconds"), "9.1f") or f"{'-':>9}"
        peak = _number(timing.get("peak_rss_mib"), "14.0f") or f"{'-':>14}"
        lines.append(f"{stage[:24]:24}  {scenario[:10]:10}  {wall}  {cpu}  {peak}")
    if total:
        lines.append(f"{'total':24}  {'':10}  {total:9.1f}  ({total / 60:.1f} min of wall time, stages one after another)")
    return lines


def summary(params: Params, catalogue: Catalogue | None = None, *, width: int = 120) -> str:
    """The summary text (see the module docstring), every line at most `width` columns."""
    catalogue = catalogue or Catalogue(params)
    headline = catalogue.report() / HEADLINE
    lines = ["PMG: summary of the last run", ""]
    if headline.is_file():
        lines.append(f"Headline ({headline}):")
        lines += headline.read_text(encoding="utf-8").rstrip("\n").splitlines()
    else:
        lines.append(f"no headline table: {headline} is missing (run the report stage)")
    lines += ["", "Stage timings (each stage's last run):"]
    lines += timing_lines(timings(params, catalogue))
    index = (catalogue.report() / REPORT_INDEX).resolve()
    lines += ["", f"Report: {index}" if index.is_file() else f"no report: {index} is missing"]
    return "\n".join(_cut(line, width) for line in lines)


# ------------------------------------------------------------------ README

#: A marked block of the README: `<!-- metrics:NAME -->` ... `<!-- /metrics:NAME -->`.
README_BLOCK = re.compile(
    r"(<!-- metrics:(?P<name>[\w:-]+) -->\n)(?P<body>.*?)(<!-- /metrics:(?P=name) -->)", re.S
)
#: What the committed metrics cannot say: why a variant was skipped (the run's report.json, not in git).
SKIPPED = "see the ablation stage's report"


def readme_blocks(params: Params, catalogue: Catalogue | None = None) -> dict[str, str]:
    """The README's result tables from the metrics files: `headline`, `ablations:<scenario>`.

    A variant of `evaluate.ablations` with no metrics is shown as skipped
    with the reason :data:`SKIPPED` (the reason itself is in the run's
    report, outside git).
    """
    from pmg.evaluate.ablations import ablation_markdown, variants
    from pmg.evaluate.report import headline_markdown

    catalogue = catalogue or Catalogue(params)
    metrics, blocks = {}, {}
    for scenario in params.base.scenarios:
        metrics[scenario] = _read_scenario(catalogue.ablation_metrics(scenario), scenario)
        ground_truth = _read_scenario(catalogue.ablation_ground_truth(scenario), scenario)
        variant_list = variants(params)
        skipped = {v.name: SKIPPED for v in variant_list if v.name not in metrics[scenario]}
        blocks[f"ablations:{scenario}"] = ablation_markdown(
            scenario, metrics[scenario], variant_list, skipped, ground_truth or None
        )
    blocks["headline"] = headline_markdown(params, metrics)
    return blocks


def _read_scenario(path: Path, scenario: str) -> dict:
    doc = _read_timing(path)  # a JSON object or None
    return dict((doc or {}).get(scenario) or {})


def fill_readme(text: str, blocks: dict[str, str]) -> str:
    """`text` with every marked block replaced by `blocks[name]` (an unknown name is left as it is)."""

    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            return match[0]
        return match[1] + blocks[name].rstrip("\n") + "\n" + match[4]

    return README_BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    """`python -m pmg.stages.summary [--readme FILE]`: print the summary, or refresh FILE's tables."""
    from pmg.config import load_params

    parser = argparse.ArgumentParser(prog="python -m pmg.stages.summary", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--readme", help="rewrite this file's marked metrics blocks from metrics/")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.readme is None:
        print(summary(params))
        return 0
    path = Path(args.readme)
    path.write_text(fill_readme(path.read_text(encoding="utf-8"), readme_blocks(params)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
