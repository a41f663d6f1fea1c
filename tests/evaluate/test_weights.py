"""The weight case study: which pairs, the long table, the SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from pmg.evaluate.weights import LONG_COLUMNS, case_study, case_study_csv, parse_case_study, weights_svg


def _scores() -> pd.DataFrame:
    rows = []
    for user in ("u10", "u2", "u1", "u3"):
        for k, (w_p, w_t) in enumerate([(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)]):
            d_p, d_t = 0.1 + 0.04 * k, 0.3 - 0.04 * k
            rows.append(
                {
                    "user_id": user,
                    "scenario": "clothing",
                    "target_item": "g1",
                    "candidate": k,
                    "w_p": w_p,
                    "w_t": w_t,
                    "d_p": d_p,
                    "d_t": d_t,
                    "z": 0.5 * np.log(d_p) + 0.5 * np.log(d_t),
                    "floored": False,
                    "chosen": k == 2,
                }
            )
    rows.append(
        {
            "user_id": "u0",
            "scenario": "clothing",
            "target_item": "g1",
            "candidate": 0,
            "w_p": 0,
            "w_t": 4,
            "d_p": 0.2,
            "d_t": 0.2,
            "z": -1.6,
            "floored": False,
            "chosen": True,
        }
    )  # one candidate: no case to study
    return pd.DataFrame(rows)


def test_case_study_takes_the_first_pairs_in_natural_order(tmp_path: Path) -> None:
    frame = case_study(_scores(), pairs=3)
    assert list(frame.columns) == LONG_COLUMNS
    assert list(dict.fromkeys(frame["user_id"])) == [
        "u1",
        "u2",
        "u3",
    ]  # u0 has one candidate; u10 sorts after u3
    assert len(frame) == 3 * 5 * 3
    one = frame[(frame.user_id == "u1") & (frame.metric == "d_p")]
    assert one["w_p"].tolist() == [0, 1, 2, 3, 4] and one["value"].is_monotonic_increasing
    assert frame.loc[frame.chosen, "w_p"].unique().tolist() == [2]
    back = parse_case_study(case_study_csv(frame))
    assert back["user_id"].tolist() == frame["user_id"].tolist() and back["chosen"].dtype == bool
    assert parse_case_study("").empty and list(parse_case_study("").columns) == LONG_COLUMNS


def test_svg_is_well_formed_with_one_line_per_pair_and_metric() -> None:
    frame = case_study(_scores(), pairs=2)
    frame.loc[frame.user_id == "u1", "pair"] = "u1 → <g1> & co"  # text is escaped
    svg = weights_svg(frame)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 3 * frame["pair"].nunique()
    assert (
        len([c for c in root.findall(f"{ns}circle") if c.get("fill") == "none"])
        == 3 * frame["pair"].nunique()
    )  # chosen rings
    assert "&lt;g1&gt; &amp; co" in svg
    ET.fromstring(weights_svg(frame.iloc[0:0]))  # empty: still a valid SVG
