"""Behaviour to text: lines per history item, turn, target and supervision item."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from method_helpers import ScriptedLLM, TokenizedScriptedLLM  # tests/method/ is on sys.path
from PIL import Image

from pmg.config import DescribeConfig, parse_params
from pmg.data.store import PreparedScenario
from pmg.errors import DataError
from pmg.io import read_table, validate, write_table
from pmg.method.describe import clean_summary, describe, select_users
from pmg.method.llm_cache import CachedCaptioner, CachedLLM, ContentCache
from pmg.schemas import Descriptions


class ColourCaptioner:
    """Captions an image by its first pixel; records calls; can take a vocabulary."""

    def __init__(self, vocabulary: list[str] | None = None) -> None:
        self.calls: list[int] = []
        self.vocabulary = vocabulary or []
        self.top_k = 3

    def caption(self, images: list[Image.Image]) -> list[str]:
        self.calls.append(len(images))
        return [f"pixel {im.getpixel((0, 0))[0]}" for im in images]

    def with_vocabulary(self, vocabulary: list[str], *, top_k: int | None = None) -> ColourCaptioner:
        new = ColourCaptioner(vocabulary)
        new.calls = self.calls
        self.given = (vocabulary, top_k)
        return new


def test_users_are_the_first_by_natural_id(prepared: PreparedScenario) -> None:
    assert select_users(prepared.splits, None) == ["u1", "u2", "u3", "u10"]
    assert select_users(prepared.splits, 2) == ["u1", "u2"]


def test_lines_of_every_kind_in_order(prepared: PreparedScenario, describe_cfg: DescribeConfig) -> None:
    llm = ScriptedLLM()
    frame, report = describe(prepared, ["u1", "u2"], llm=llm, captioner=None, cfg=describe_cfg)
    validate(frame, Descriptions, "test")
    u1 = frame[frame["user_id"] == "u1"]
    assert list(u1["kind"]) == ["history"] * 4 + ["conversation"] * 2 + ["target", "supervision"]
    assert list(u1["ref"]) == ["g1", "g2", "g3", "g4", "0", "1", "g5", "g6"]
    assert list(u1["position"]) == [0, 1, 2, 3, 0, 1, 0, 0]
    # Short texts are kept as they are; g4's long text is summarised by the LLM.
    g1 = u1[u1["ref"] == "g1"].iloc[0]
    assert g1["line"] == prepared.items.set_index("item_id").at["g1", "text"] and g1["source"] == "text"
    g4 = u1[u1["ref"] == "g4"].iloc[0]
    assert g4["line"] == "A short summary." and g4["source"] == "summary"
    assert u1[u1["kind"] == "conversation"]["line"].tolist() == [
        "I need something warm for the winter.",
        "Red is my favourite colour.",
    ]
    assert (
        len(llm.prompts) == 1 and "Sentence:" in llm.prompts[0] and "very long description" in llm.prompts[0]
    )
    assert "u2" in set(frame["user_id"]) and not len(
        frame[(frame["user_id"] == "u2") & (frame["kind"] == "conversation")]
    )


def test_captions_are_appended_and_each_item_described_once(
    prepared: PreparedScenario, describe_cfg: DescribeConfig
) -> None:
    captioner = ColourCaptioner()
    llm = ScriptedLLM()
    frame, report = describe(prepared, ["u1", "u2", "u3", "u10"], llm=llm, captioner=captioner, cfg=describe_cfg)
    assert sum(captioner.calls) == 8  # 8 distinct items, though users share them
    assert all(n <= describe_cfg.batch_size for n in captioner.calls)
    assert len(llm.prompts) == 1  # g4 is summarised once for u1 (history) and u3 (supervision)
    sources = dict(zip(frame["ref"], frame["source"]))
    assert sources["g1"] == "text+caption" and sources["g4"] == "summary+caption"
    g1 = frame[frame["ref"] == "g1"]["line"].iloc[0]
    assert g1.endswith("Image: pixel 0.")


def test_unusable_summary_falls_back_to_cut_text(
    prepared: PreparedScenario, describe_cfg: DescribeConfig
) -> None:
    llm = ScriptedLLM(lambda prompt: "  \n Sentence: ...")
    frame, report = describe(prepared, ["u1"], llm=llm, captioner=None, cfg=describe_cfg)
    g4 = frame[frame["ref"] == "g4"].iloc[0]
    assert g4["source"] == "text" and g4["line"].startswith("A red dress in silk") and len(g4["line"]) <= 121
    assert clean_summary('Summary: "A red silk dress."\nmore', 100) == "A red silk dress."


def test_summary_prompt_is_cut_to_the_context(
    prepared: PreparedScenario, describe_cfg: DescribeConfig
) -> None:
    llm = TokenizedScriptedLLM(context_length=250)  # one token per character
    describe(prepared, ["u1"], llm=llm, captioner=None, cfg=describe_cfg)
    assert llm.prompts and all(len(p) <= 250 - describe_cfg.summary_max_new_tokens for p in llm.prompts)


def test_unknown_user_is_skipped_and_reported(
    prepared: PreparedScenario, describe_cfg: DescribeConfig
) -> None:
    frame, report = describe(prepared, ["u1", "nobody"], llm=None, captioner=None, cfg=describe_cfg)
    assert set(frame["user_id"]) == {"u1"}
    assert report.skipped_users == {"unknown user": ["nobody"]}
    # Without an LLM, long texts are cut rather than summarised.
    assert frame[frame["ref"] == "g4"]["source"].iloc[0] == "text"


def test_rerun_with_caches_calls_no_model(
    prepared: PreparedScenario, describe_cfg: DescribeConfig, tmp_path: Path
) -> None:
    llm, captioner = ScriptedLLM(), ColourCaptioner()
    cache = ContentCache(tmp_path / "cache")

    def run():
        return describe(
            prepared,
            ["u1", "u2"],
            llm=CachedLLM(llm, "s", cache),
            captioner=CachedCaptioner(captioner, "c", cache),
            cfg=describe_cfg,
        )

    first, _ = run()
    calls = (len(llm.calls), len(captioner.calls))
    second, report = run()
    assert (len(llm.calls), len(captioner.calls)) == calls
    assert report.caption_cache["calls"] == 0 and report.llm_cache["calls"] == 0
    pd.testing.assert_frame_equal(first, second)


def test_table_round_trips_and_bad_rows_are_named(
    prepared: PreparedScenario, describe_cfg: DescribeConfig, tmp_path: Path
) -> None:
    frame, report = describe(prepared, ["u1"], llm=None, captioner=None, cfg=describe_cfg)
    path = tmp_path / "describe" / "clothing.parquet"
    write_table(frame, path, Descriptions)
    pd.testing.assert_frame_equal(read_table(path, Descriptions), frame, check_dtype=False)
    bad = frame.copy()
    bad.loc[2, "kind"] = "wishlist"
    with pytest.raises(DataError, match="kind"):
        write_table(bad, path, Descriptions)


def test_describe_stage_caches_the_models_and_gives_the_captioner_a_vocabulary(
    prepared: PreparedScenario, tmp_path: Path
) -> None:
    """`describe_users`, the sequence the describe stage and `pmg personalize` share."""
    from pmg.stages.describe import describe_users

    spec = {"kind": "x", "path": str(tmp_path / "missing")}
    params = parse_params(
        {
            "profiles": {
                "mini": {
                    "device": "cpu",
                    "llm": spec,
                    "captioner": spec,
                    "generator": spec,
                    "scorer": spec,
                    "lpips": spec,
                }
            },
            "prepare": {"out": str(prepared.folder.parent)},
            "describe": {"max_users": 3, "llm_cache": str(tmp_path / "cache")},
        }
    )
    captioner = ColourCaptioner()
    users = select_users(prepared.splits, params.describe.max_users)
    frame, report = describe_users(params, prepared, users, llm=ScriptedLLM(), captioner=captioner)
    assert sorted(set(frame["user_id"])) == ["u1", "u2", "u3"]
    assert report.caption_cache["misses"] == 8 and report.users_described == 3
    # The scenario's attribute values (caption_fields: colour, material, elements, category).
    vocabulary, top_k = captioner.given
    assert vocabulary[:3] == ["red", "wool", "striped"] and "coat" in vocabulary and top_k == 3
    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    assert sorted(e["kind"] for e in entries) == ["caption"] * 8 + ["llm"]  # g4's long text summarised
