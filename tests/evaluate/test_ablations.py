"""Ablations: every variant on the same pairs and seeds, shared runs, skipped variants, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from eval_helpers import behaviour, build_world, catalogue, keywords_frame, make_params

from pmg.evaluate.ablations import ablation_markdown, variant, variants
from pmg.io import read_table
from pmg.schemas import Candidates, PairMetrics

ALL = ["none", "keywords", "soft", "soft+keywords", "no_prefix", "L0", "L4", "L8"]


def test_variants_describe_what_each_needs(tmp_path: Path) -> None:
    params = make_params(tmp_path)
    by_name = {v.name: v for v in variants(params)}
    assert list(by_name) == ALL
    assert (by_name["none"].soft, by_name["none"].use_keywords) == (False, False)
    assert by_name["keywords"].adapter_key is None
    assert by_name["soft"].adapter_key == "L4-prefix" and not by_name["soft"].use_keywords
    assert by_name["no_prefix"].adapter_key == "L4-noprefix"
    assert by_name["L8"].adapter_key == "L8-prefix"
    # Identical conditioning shares one run.
    assert by_name["L0"].generation_key == by_name["keywords"].generation_key
    assert by_name["L4"].generation_key == by_name["soft+keywords"].generation_key
    assert by_name["soft+keywords"].generate_config(params.generate).use_soft
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant("L", params)


@pytest.mark.slow  # the session's tiny pipeline run: several generator runs, ~1-2 min on 2 busy cores
def test_every_variant_runs_on_the_same_pairs_and_seeds(pipeline_run) -> None:
    out = Path(pipeline_run.params.evaluate.ablations_out) / "clothing"
    nested = json.loads(catalogue(pipeline_run.params, pipeline_run.root).ablation_metrics("clothing").read_text())
    assert nested == pipeline_run.ablations
    assert sorted(nested["clothing"]) == sorted(ALL)
    pairs = read_table(out / "results" / "pairs.parquet", PairMetrics)
    keys = {
        v: set(map(tuple, g[["user_id", "target_item"]].drop_duplicates().to_numpy()))
        for v, g in pairs.groupby("variant")
    }
    assert (
        len({frozenset(k) for k in keys.values()}) == 1 and len(next(iter(keys.values()))) == 3
    )  # ablation_max_users
    for name, metrics in nested["clothing"].items():
        assert metrics["n_pairs"] == 3 and metrics["n_skipped"] == 0, name
        for key in ("lpips_alex_history", "ssim_history", "lpips_alex_target", "ssim_target"):
            assert isinstance(metrics[key], float), (name, key)
    assert nested["clothing"]["none"]["lpips_history_change_vs_none"] == 0.0
    # The protocol's statistics (issue 11) for every variant that ran.
    clothing = nested["clothing"]
    for name, metrics in clothing.items():
        assert metrics["n_users_control"] == 3 and 0 < metrics["gap_lpips_alex_p"] <= 1, name
        assert isinstance(metrics["personalises_lpips_alex"], bool), name
    assert "lpips_alex_history_diff_vs_none" not in clothing["none"]
    # L0 shares the keywords run: paired on the same outputs, the difference is exactly 0.
    shared = [clothing["L0"][f"lpips_alex_history_diff_vs_keywords{end}"] for end in ("", "_lo", "_hi")]
    assert shared == [0, 0, 0]
    pmg, none = clothing["soft+keywords"], clothing["none"]
    diff = pmg["lpips_alex_history"] - none["lpips_alex_history"]
    assert pmg["lpips_alex_history_diff_vs_none"] == pytest.approx(diff, abs=2e-6)
    assert pmg["lpips_alex_history_diff_vs_none_lo"] <= pmg["lpips_alex_history_diff_vs_none_hi"]

    report = json.loads((out / "results" / "report.json").read_text())
    assert report["skipped"] == {}
    assert "seconds" not in json.dumps(report)  # a DVC output: a rerun writes the same bytes
    runs = report["runs"]
    assert runs["L0"] == runs["keywords"] and runs["L4"] == runs["soft+keywords"]
    assert len(set(runs.values())) == 6
    # Candidate k of a pair has the same seed in every run; the conditioning differs.
    seeds = {}
    for run in set(runs.values()):
        frame = read_table(out / "runs" / run / "clothing" / "candidates.parquet", Candidates)
        for row in frame.itertuples():
            seeds.setdefault((row.user_id, row.candidate), set()).add(row.seed)
    assert all(len(s) == 1 for s in seeds.values())
    # Shared runs report identical numbers.
    assert (
        nested["clothing"]["L0"]["lpips_alex_history"] == nested["clothing"]["keywords"]["lpips_alex_history"]
    )


@pytest.mark.slow  # the session's tiny pipeline run: several generator runs, ~1-2 min on 2 busy cores
def test_markdown_has_the_paper_layout(pipeline_run) -> None:
    out = Path(pipeline_run.params.evaluate.ablations_out) / "clothing"
    text = (out / "results" / "ablations.md").read_text()
    assert "paper Table 2" in text and "paper Table 3" in text
    assert "| Variant | n | History LPIPS-Alex ↓" in text
    assert "No personalisation (target keywords)" in text and "PMG, L=8" in text
    where = catalogue(pipeline_run.params, pipeline_run.root)
    gt = json.loads(where.ablation_ground_truth("clothing").read_text())["clothing"]
    assert {"none", "soft+keywords", "target_image"} <= set(gt)
    assert 0.0 <= gt["none"]["colour"] <= 1.0 and gt["none"]["n_colour"] == 3


def test_missing_adapters_skip_their_variants(tmp_path: Path, metric_models) -> None:
    """Soft variants without an adapter are skipped with the reason; the others run (fake generator)."""
    from PIL import Image

    from pmg.stages.ablations import AblationModels, run_variants

    params = make_params(tmp_path, evaluate={"ablations": ["none", "keywords", "soft", "L8"]})
    prepared = build_world(tmp_path / "prepared")
    calls: list[tuple[bool, bool, int]] = []

    def fake_generate(folder, cfg, scenario, pairs, behaviour, items, *, finish, **_):
        calls.append((cfg.use_soft, cfg.use_keywords, len(pairs)))
        rows = []
        for row in pairs.itertuples():
            relative = f"{row.user_id}/cand_0.png"
            (Path(folder) / row.user_id).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (200, 30, 30)).save(Path(folder) / relative)
            rows.append(
                {
                    "user_id": row.user_id,
                    "scenario": scenario,
                    "target_item": row.target_item,
                    "candidate": 0,
                    "w_p": 0.0,
                    "w_t": 4.0,
                    "seed": 1,
                    "mode": "weighted_embeddings",
                    "variant": "none",
                    "preference_text": "",
                    "target_text": "x",
                    "keyword_fallback": "",
                    "image_path": relative,
                }
            )
        finish(Path(folder), pd.DataFrame(rows))
        return pd.DataFrame(rows), None

    def fake_select(folder, cfg, scenario, candidates, *, scorer):
        scores = candidates[["user_id", "scenario", "target_item", "candidate", "w_p", "w_t"]].assign(
            d_p=0.2, d_t=0.3, z=-1.4, floored=False, chosen=True
        )
        return scores, None

    result = run_variants(
        params,
        "clothing",
        variants(params),
        catalogue=catalogue(params, tmp_path),
        models=AblationModels(generator=None, scorer=None, metric_models=metric_models, soft_base=None),
        keywords=keywords_frame(),
        behaviour=behaviour(),
        adapters={"L8-prefix": tmp_path / "nowhere"},
        prepared=prepared,
        generate=fake_generate,
        select=fake_select,
    )
    assert calls == [(False, False, 3), (False, True, 3)]  # the first 3 users, same pairs for both
    assert "no soft adapter L4-prefix" in result.skipped["soft"]
    assert "no base LLM" in result.skipped["L8"]  # an adapter, but no LLM to load it onto
    assert set(result.metrics) == {"none", "keywords"}
    assert (
        result.metrics["none"]["n_pairs"] == 3
        and result.metrics["none"]["lpips_history_change_vs_none"] == 0.0
    )


def test_no_usable_pair_skips_every_variant(tmp_path: Path, metric_models) -> None:
    from pmg.stages.ablations import AblationModels, run_variants

    params = make_params(tmp_path, evaluate={"ablations": ["none", "keywords"]})
    result = run_variants(
        params,
        "clothing",
        variants(params),
        catalogue=catalogue(params, tmp_path),
        models=AblationModels(generator=None, scorer=None, metric_models=metric_models),
        keywords=keywords_frame(),
        behaviour={},  # nobody has behaviour lines
        adapters={},
        prepared=build_world(tmp_path / "prepared"),
        generate=lambda *a, **k: pytest.fail("nothing should run"),
    )
    assert set(result.skipped) == {"none", "keywords"} and "no pair" in result.skipped["none"]
    assert result.metrics == {}


@pytest.mark.slow  # the session's tiny pipeline run: several generator runs, ~1-2 min on 2 busy cores
def test_adapters_are_found_by_their_config(pipeline_run) -> None:
    from pmg.stages.ablations import find_adapters

    found = find_adapters(catalogue(pipeline_run.params, pipeline_run.root), "clothing")
    assert set(found) == {"L4-prefix", "L4-noprefix", "L8-prefix"}
    assert found["L4-prefix"] == Path(pipeline_run.params.train_soft.out) / "clothing"


def test_skipped_variants_show_in_the_markdown(tmp_path: Path) -> None:
    params = make_params(tmp_path)
    text = ablation_markdown(
        "emoji",
        {"none": {"n_pairs": 2, "lpips_alex_history": 0.5}},
        variants(params),
        {"soft": "no soft adapter L4-prefix"},
    )
    assert "skipped: no soft adapter L4-prefix" in text
    assert "0.5000" in text


def test_the_control_separates_own_history_from_a_user_blind_output(tmp_path: Path, metric_models) -> None:
    """`keywords` draws each user's first history image, `none` one red image for all users.

    Only the first personalises: the control must tell the two apart.
    """
    import numpy as np
    from PIL import Image

    from pmg.evaluate.metrics import per_pair_means
    from pmg.stages.ablations import AblationModels, run_variants

    params = make_params(tmp_path, evaluate={"ablations": ["none", "keywords"], "ablation_max_users": 4})
    prepared = build_world(tmp_path / "prepared")
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }

    def fake_generate(folder, cfg, scenario, pairs, behaviour, items, *, finish, **_):
        rows = []
        for row in pairs.itertuples():
            (Path(folder) / row.user_id).mkdir(parents=True, exist_ok=True)
            for k in range(3):  # the selection keeps candidate 0; without selection, candidate 1 (the middle)
                relative = f"{row.user_id}/cand_{k}.png"
                if cfg.use_keywords and k == 0:  # "personalised": the user's own first history image
                    Image.open(prepared.image_file(history_of[row.user_id][0])).convert("RGB").save(
                        Path(folder) / relative
                    )
                else:
                    Image.new("RGB", (16, 16), (200, 30, 30)).save(Path(folder) / relative)
                rows.append(
                    {
                        **{"user_id": row.user_id, "scenario": scenario, "target_item": row.target_item},
                        **{"candidate": k, "w_p": 0.0, "w_t": 4.0, "seed": 1 + k, "mode": "weighted_embeddings"},
                        **{"variant": "none", "preference_text": "", "target_text": "x", "keyword_fallback": ""},
                        "image_path": relative,
                    }
                )
        finish(Path(folder), pd.DataFrame(rows))
        return pd.DataFrame(rows), None

    def fake_select(folder, cfg, scenario, candidates, *, scorer):
        scores = candidates[["user_id", "scenario", "target_item", "candidate", "w_p", "w_t"]].assign(
            d_p=0.2, d_t=0.3, z=-1.4, floored=False
        )
        return scores.assign(chosen=scores["candidate"] == 0), None

    result = run_variants(
        params,
        "clothing",
        variants(params),
        catalogue=catalogue(params, tmp_path),
        models=AblationModels(generator=None, scorer=None, metric_models=metric_models),
        keywords=keywords_frame(),
        behaviour=behaviour(),
        adapters={},
        prepared=prepared,
        generate=fake_generate,
        select=fake_select,
    )
    none, keywords = result.metrics["none"], result.metrics["keywords"]
    assert none["n_users_control"] == keywords["n_users_control"] == 4
    # One image for every user: each row of the matrix is the same, so the gap is exactly 0 and p = 1.
    assert none["gap_lpips_alex"] == pytest.approx(0.0, abs=1e-6) and none["gap_lpips_alex_p"] == 1.0
    assert none["gap_ssim"] == pytest.approx(0.0, abs=1e-6) and none["personalises_lpips_alex"] is False
    # Own history holds the output itself (distance 0 to one of its images): closer than another's.
    assert keywords["gap_lpips_alex"] > 0 and keywords["gap_ssim"] > 0
    assert keywords["gap_lpips_alex_own"] < keywords["gap_lpips_alex_other"]
    assert keywords["gap_lpips_alex_diff_vs_none"] == pytest.approx(keywords["gap_lpips_alex"], abs=1e-6)
    low, high = keywords["gap_lpips_alex_diff_vs_none_lo"], keywords["gap_lpips_alex_diff_vs_none_hi"]
    assert low <= keywords["gap_lpips_alex_diff_vs_none"] <= high and low < high  # 4 users: a wide interval
    # The diagonal of the control is the main evaluation's own-history value, per user.
    means = per_pair_means(result.evaluation.pairs)
    own = means[(means["variant"] == "keywords") & (means["reference"] == "history")]["lpips_alex"].mean()
    assert keywords["gap_lpips_alex_own"] == pytest.approx(own, abs=1e-5)
    assert keywords["lpips_alex_history"] == pytest.approx(own, abs=1e-5)
    # The paired difference vs none is the difference of the two means (same users).
    diff = keywords["lpips_alex_history"] - none["lpips_alex_history"]
    assert keywords["lpips_alex_history_diff_vs_none"] == pytest.approx(diff, abs=1e-5)
    low, high = keywords["lpips_alex_history_diff_vs_none_lo"], keywords["lpips_alex_history_diff_vs_none_hi"]
    assert low <= diff <= high
    assert np.isfinite(keywords["ssim_history_diff_vs_none"])
    # Without selection keywords would show its middle candidate, the red image `none` shows: the
    # selection, not the conditioning, made it personal here; `none` gains nothing from its selection.
    assert keywords["lpips_alex_history_no_selection"] == pytest.approx(none["lpips_alex_history"], abs=1e-5)
    effect = keywords["lpips_alex_history"] - keywords["lpips_alex_history_no_selection"]
    assert keywords["lpips_alex_history_selection_effect"] == pytest.approx(effect, abs=1e-5) and effect < 0
    assert none["lpips_alex_history_selection_effect"] == pytest.approx(0.0, abs=1e-6)
    assert "statistics" in result.seconds
