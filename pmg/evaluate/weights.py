"""The weight case study (PMG §4.4, RQ2): d_p, d_t and z across w_p:w_t.

For a few fixed (user, target) pairs — the first `n` by user id (natural
order) that have at least two candidates — the `Scores` table gives, per
weight pair, the preference score `d_p`, the accuracy score `d_t` and `z`.
Raising `w_p` should raise `d_p` and lower `d_t`; the chosen candidate sits
where `z` peaks.

Outputs:

* a long-format table (`pair, user_id, target_item, w_p, w_t, metric,
  value, chosen`) as CSV text (`case_study_csv`; the `evaluate` stage writes
  it under `plots/`) — DVC renders it with `x: w_p, y: value` (one line per
  `pair` and `metric`);
* a small self-drawn SVG (no plotting library): one panel per metric, one
  line per pair, the chosen candidate ringed. Hand-drawn SVG keeps the
  report self-contained and needs no extra dependency.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import pandas as pd

from pmg.text import natural_key

METRICS = ("d_p", "d_t", "z")
METRIC_TITLES = {"d_p": "preference score d_p", "d_t": "accuracy score d_t", "z": "z (selection score)"}
LONG_COLUMNS = ["pair", "user_id", "target_item", "w_p", "w_t", "metric", "value", "chosen"]
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def case_study(scores: pd.DataFrame, *, pairs: int = 3) -> pd.DataFrame:
    """The long-format case-study table of the first `pairs` pairs.

    Args:
        scores: a `Scores` table (one scenario).
        pairs: how many (user, target) pairs.

    Returns:
        Columns `LONG_COLUMNS`, sorted by pair, metric, w_p; `pair` is
        `"<user> → <target>"`.
    """
    if scores.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    sizes = scores.groupby(["user_id", "target_item"], sort=False).size()
    keys = sorted((k for k, n in sizes.items() if n >= 2), key=lambda k: (natural_key(k[0]), natural_key(k[1])))[
        :pairs
    ]
    rows = []
    for user, target in keys:
        part = scores[(scores["user_id"] == user) & (scores["target_item"] == target)]
        for record in part.itertuples(index=False):
            for metric in METRICS:
                rows.append(
                    {
                        "pair": f"{user} → {target}",
                        "user_id": str(user),
                        "target_item": str(target),
                        "w_p": float(record.w_p),
                        "w_t": float(record.w_t),
                        "metric": metric,
                        "value": float(getattr(record, metric)),
                        "chosen": bool(record.chosen),
                    }
                )
    frame = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return frame.sort_values(["pair", "metric", "w_p"], kind="stable").reset_index(drop=True)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _linear(d0: float, d1: float, r0: float, r1: float):
    """The linear map of [d0, d1] onto [r0, r1] (the middle of the range when d0 == d1)."""
    span = d1 - d0
    return lambda v: (r0 + r1) / 2 if span == 0 else r0 + (r1 - r0) * (v - d0) / span


def weights_svg(frame: pd.DataFrame, *, panel_width: int = 230, panel_height: int = 170) -> str:
    """Draw the case study as an inline SVG: one panel per metric, one line per pair.

    Args:
        frame: from :func:`case_study`.
        panel_width: pixels per panel.
        panel_height: pixels per panel (without the legend).

    Returns:
        An `<svg>` element (text, escaped), or a short note when empty.
    """
    esc = html.escape
    if frame.empty:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="30"><text x="4" y="20" font-size="12">no weight case study: no scores</text></svg>'
    pairs = list(dict.fromkeys(frame["pair"]))
    margin_left, margin_right, margin_top, margin_bottom = 46, 10, 22, 32
    legend = 18 * len(pairs) + 8
    width = panel_width * len(METRICS)
    height = panel_height + legend
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img" '
            f'aria-label="d_p, d_t and z across the weight pairs">'
        )
    ]
    x_values = sorted(frame["w_p"].unique())
    labels = {
        float(w_p): f"{_fmt(w_p)}:{_fmt(w_t)}"
        for w_p, w_t in frame[["w_p", "w_t"]].drop_duplicates().itertuples(index=False)
    }
    for p_index, metric in enumerate(METRICS):
        part = frame[frame["metric"] == metric]
        x0 = p_index * panel_width + margin_left
        x1 = (p_index + 1) * panel_width - margin_right
        y0, y1 = margin_top, panel_height - margin_bottom
        low, high = float(part["value"].min()), float(part["value"].max())
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        pad = 0.08 * (high - low)
        low, high = low - pad, high + pad

        sx = _linear(x_values[0], x_values[-1], x0, x1)
        sy = _linear(low, high, y1, y0)  # SVG y grows downwards

        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="14" text-anchor="middle" font-weight="bold">{esc(METRIC_TITLES[metric])}</text>'
        )
        parts.append(
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fafafa" stroke="#bbb"/>'
        )
        for v in (low + pad, (low + high) / 2, high - pad):
            parts.append(f'<line x1="{x0 - 3}" x2="{x0}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#888"/>')
            parts.append(f'<text x="{x0 - 5}" y="{sy(v) + 4:.1f}" text-anchor="end">{esc(_fmt(v))}</text>')
        for w in x_values:
            parts.append(f'<line x1="{sx(w):.1f}" x2="{sx(w):.1f}" y1="{y1}" y2="{y1 + 3}" stroke="#888"/>')
            parts.append(
                f'<text x="{sx(w):.1f}" y="{y1 + 15}" text-anchor="middle">{esc(labels.get(float(w), _fmt(w)))}</text>'
            )
        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{y1 + 28}" text-anchor="middle" fill="#555">w_p : w_t</text>'
        )
        for k, pair in enumerate(pairs):
            colour = PALETTE[k % len(PALETTE)]
            line = part[part["pair"] == pair].sort_values("w_p")
            points = " ".join(f"{sx(w):.1f},{sy(v):.1f}" for w, v in zip(line["w_p"], line["value"]))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            for w, v, chosen in zip(line["w_p"], line["value"], line["chosen"]):
                parts.append(f'<circle cx="{sx(w):.1f}" cy="{sy(v):.1f}" r="2.6" fill="{colour}"/>')
                if chosen:
                    parts.append(
                        f'<circle cx="{sx(w):.1f}" cy="{sy(v):.1f}" r="6" fill="none" stroke="{colour}" stroke-width="1.5">'
                        f"<title>{esc(pair)}: chosen</title></circle>"
                    )
    for k, pair in enumerate(pairs):
        y = panel_height + 12 + 18 * k
        colour = PALETTE[k % len(PALETTE)]
        parts.append(
            f'<line x1="{margin_left}" x2="{margin_left + 24}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{margin_left + 30}" y="{y + 4}">{esc(pair)} (ring = chosen candidate)</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def case_study_csv(frame: pd.DataFrame) -> str:
    """The long table as CSV text (the columns `LONG_COLUMNS`, no index)."""
    return frame[LONG_COLUMNS].to_csv(index=False)


def parse_case_study(text: str) -> pd.DataFrame:
    """A case-study CSV (`case_study_csv`) back as a frame (ids kept as strings)."""
    if not text.strip():
        return pd.DataFrame(columns=LONG_COLUMNS)
    return pd.read_csv(io.StringIO(text), dtype={"user_id": str, "target_item": str, "pair": str})


__all__: Sequence[str] = ["case_study", "case_study_csv", "parse_case_study", "weights_svg"]
