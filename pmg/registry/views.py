"""Registry listings as text tables that fit a 120-column terminal.

`pmg registry list` and `pmg registry status` print these. Every column has a
maximum width (longer cells end in `…`), and metrics are limited to the gated
ones (`--json` prints everything), so a row never wraps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pmg.registry.registry import AliasStatus, VersionInfo

#: The widest line these tables print.
MAX_WIDTH = 120


@dataclass(frozen=True)
class Column:
    """A column: header, widest cell, and whether it is right-aligned (numbers)."""

    header: str
    width: int
    right: bool = False


def _cell(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def format_table(columns: Sequence[Column], rows: Iterable[Sequence[str]], max_width: int = MAX_WIDTH) -> str:
    """Rows under a header, each cell cut to its column's width, each line cut to `max_width`.

    Columns are as wide as their widest cell (at most `Column.width`) and
    two spaces apart.
    """
    rows = [[_cell(str(value), column.width) for value, column in zip(row, columns, strict=True)] for row in rows]
    widths = [
        max([len(column.header), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)
    ]
    lines = []
    for row in [[c.header for c in columns], *rows]:
        cells = [
            value.rjust(width) if column.right else value.ljust(width)
            for value, width, column in zip(row, widths, columns, strict=True)
        ]
        lines.append(_cell("  ".join(cells).rstrip(), max_width))
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _when(stamp: str | None) -> str:
    """`2026-11-29T05:12:03Z` -> `2026-11-29 05:12` (UTC)."""
    return "-" if not stamp else stamp.replace("T", " ")[:16]


def _metric_columns(metrics: Sequence[str]) -> list[Column]:
    return [Column(name, max(len(name), 7), right=True) for name in metrics[:3]]


def versions_table(versions: Sequence[VersionInfo], metrics: Sequence[str]) -> str:
    """`pmg registry list`: one line per version (number, when, git, who, aliases, gated metrics).

    `git` ends in `*` when the work tree was dirty at push time; `pairs` says
    whether the version carries the per-pair table the paired gates need.
    """
    columns = [
        Column("ver", 5, right=True),
        Column("created (UTC)", 16),
        Column("git", 9),
        Column("by", 18),
        Column("aliases", 18),
        Column("pairs", 5),
        *_metric_columns(metrics),
    ]
    rows = []
    for info in versions:
        m = info.manifest
        rows.append(
            [
                str(m.version),
                _when(m.created_at),
                m.git_revision[:8] + ("*" if m.git_dirty else ""),
                m.created_by,
                ",".join(info.aliases) or "-",
                "yes" if "pairs.parquet" in m.evaluation else "no",
                *(_number(m.metrics.get(name)) for name in metrics[:3]),
            ]
        )
    return format_table(columns, rows)


def status_table(statuses: Sequence[AliasStatus], metrics: Sequence[str]) -> str:
    """`pmg registry status`: one line per scenario and alias (version, since, by, last move, metrics)."""
    columns = [
        Column("scenario", 8),
        Column("alias", 10),
        Column("version", 7, right=True),
        Column("since (UTC)", 16),
        Column("by", 16),
        Column("last move", 16),
        *_metric_columns(metrics),
    ]
    rows = []
    for status in statuses:
        action = (status.action or "-") + (" (forced)" if status.forced else "")
        rows.append(
            [
                status.scenario,
                status.alias,
                "-" if status.version is None else str(status.version),
                _when(status.at),
                status.by or "-",
                action,
                *(_number(status.metrics.get(name)) for name in metrics[:3]),
            ]
        )
    return format_table(columns, rows)
