"""The end-of-demo summary: the headline table, the per-stage timings, where the report is.

`make demo` ends with `pmg summary` instead of `dvc metrics show`, whose table
of every metric of every stage is ~900 columns wide. This prints, in at most
`width` columns (120 by default):

- the headline table the report stage wrote (`<report.out>/headline.md`);
- one line per stage of `dvc.yaml`, in pipeline order, with its wall time and
  peak memory from the stage runner's timing files
  (`metrics/timings/<stage>/<scenario>.json` or `metrics/timings/<stage>.json`,
  each `{"seconds": ..., "peak_rss_mib": ...}`), or "no timing recorded";
- the path of the HTML report.

Nothing here runs a stage: it only reads what the last run left.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pmg.config import Params

HEADLINE_FILE = "headline.md"
TIMINGS = Path("metrics") / "timings"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def pipeline_stages(root: Path) -> list[str]:
    """Stage names of `dvc.yaml`, in file order (empty if there is none or it does not parse)."""
    try:
        doc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    stages = doc.get("stages") if isinstance(doc, dict) else None
    return list(stages) if isinstance(stages, dict) else []


def _read_timing(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def timings(root: Path, stages: list[str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """`(stage, scenario or "-", timing or None)` per stage and scenario, in pipeline order.

    Stages with timing files that `dvc.yaml` does not name come last, by name.
    """
    folder = root / TIMINGS
    names = list(stages)
    if folder.is_dir():
        found = sorted({p.stem if p.is_file() else p.name for p in folder.iterdir()})
        names += [name for name in found if name not in names]
    rows: list[tuple[str, str, dict[str, Any] | None]] = []
    for stage in names:
        per_scenario = folder / stage
        if per_scenario.is_dir():
            files = sorted(per_scenario.glob("*.json"))
            rows += [(stage, path.stem, _read_timing(path)) for path in files] or [(stage, "-", None)]
        else:
            rows.append((stage, "-", _read_timing(folder / f"{stage}.json")))
    return rows


def _number(value: Any, fmt: str) -> str:
    return format(float(value), fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def timing_lines(rows: list[tuple[str, str, dict[str, Any] | None]]) -> list[str]:
    """The timing table: stage, scenario, seconds, peak RSS; a total when any time was recorded."""
    lines = [f"{'stage':24}  {'scenario':10}  {'seconds':>9}  {'peak RSS (MiB)':>14}"]
    total = 0.0
    for stage, scenario, timing in rows:
        if timing is None:
            lines.append(f"{stage[:24]:24}  {scenario[:10]:10}  no timing recorded")
            continue
        seconds = timing.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            total += float(seconds)
        lines.append(
            f"{stage[:24]:24}  {scenario[:10]:10}  {_number(seconds, '9.1f')}  "
            f"{_number(timing.get('peak_rss_mib'), '14.0f')}"
        )
    if total:
        lines.append(f"{'total':24}  {'':10}  {total:9.1f}  ({total / 60:.1f} min, stages run one after another)")
    return lines


def summary(params: Params, root: Path = Path("."), *, width: int = 120) -> str:
    """The summary text (see the module docstring), every line at most `width` columns."""
    report_dir = root / params.report.out
    headline = report_dir / HEADLINE_FILE
    shown = Path(params.report.out) / HEADLINE_FILE  # as params.yaml names it
    lines = ["PMG: summary of the last run", ""]
    if headline.is_file():
        lines.append(f"Headline ({shown}):")
        lines += headline.read_text(encoding="utf-8").rstrip("\n").splitlines()
    else:
        lines.append(f"no headline table: {shown} is missing (run the report stage)")
    lines += ["", f"Stage timings ({TIMINGS}/):"]
    lines += timing_lines(timings(root, pipeline_stages(root)))
    index = (report_dir / "index.html").resolve()
    lines += ["", f"Report: {index}" if index.is_file() else f"no report: {index} is missing"]
    return "\n".join(_cut(line, width) for line in lines)
