"""Ablation statistics: mismatched-user gaps, permutation p-values and paired intervals (issue 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from eval_helpers import make_params

from pmg.errors import DataError
from pmg.evaluate.ablations import ablation_markdown, ablation_statistics, variants
from pmg.evaluate.metrics import PAIR_COLUMNS, Evaluation
from pmg.evaluate.report import headline_row

USERS = [f"u{i}" for i in range(8)]
KW = dict(permutations=1000, resamples=1000, control_seed=0, seed=0)


def fake_evaluation(history: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> Evaluation:
    """PairMetrics rows: per variant and user two history rows (averaging to the value) and one target row."""
    rows = []
    for variant, values in history.items():
        for i, user in enumerate(USERS):
            base = {"scenario": "clothing", "variant": variant, "user_id": user, "target_item": f"t{i}"}
            for position, delta in enumerate((-0.01, 0.01)):
                value = values[i] + delta
                rows.append(
                    {
                        **base,
                        **{"reference": "history", "position": position, "reference_item": f"h{position}"},
                        **{"lpips_alex": value, "lpips_vgg": value, "ssim": 1 - value, "output_image": "x.png"},
                    }
                )
            value = target[variant][i]
            rows.append(
                {
                    **base,
                    **{"reference": "target", "position": 0, "reference_item": f"t{i}"},
                    **{"lpips_alex": value, "lpips_vgg": value, "ssim": 1 - value, "output_image": "x.png"},
                }
            )
    requests = [(v, u, f"t{i}") for v in history for i, u in enumerate(USERS)]
    return Evaluation(pairs=pd.DataFrame(rows, columns=list(PAIR_COLUMNS)), requests=requests)


def personalised_matrix(rng: np.random.Generator, own: float, other: float) -> np.ndarray:
    """Outputs equal to (close to) their own user's history: `own` on the diagonal, `other` elsewhere."""
    n = len(USERS)
    return np.where(np.eye(n, dtype=bool), own, other) + rng.normal(0, 0.005, (n, n))


def user_blind_matrix(rng: np.random.Generator) -> np.ndarray:
    """Outputs independent of whose they are: a row effect (the output) plus a column effect (the history)."""
    n = len(USERS)
    return rng.uniform(0.3, 0.7, (n, 1)) + rng.uniform(0.0, 0.2, (1, n))


@pytest.fixture
def statistics() -> dict:
    rng = np.random.default_rng(1)
    none_history = rng.uniform(0.4, 0.6, len(USERS))
    keywords_shift = rng.normal(0, 0.02, len(USERS))
    history = {
        "none": none_history,
        "keywords": none_history + keywords_shift,
        "soft+keywords": none_history - 0.05,  # every user exactly 0.05 closer than with none
    }
    target = {name: np.full(len(USERS), 0.3) for name in history}
    target["soft+keywords"] = target["none"] + 0.02
    control = {
        "none": {"lpips_alex": user_blind_matrix(rng), "ssim": 1 - user_blind_matrix(rng)},
        "keywords": {"lpips_alex": user_blind_matrix(rng), "ssim": 1 - user_blind_matrix(rng)},
        "soft+keywords": {
            "lpips_alex": personalised_matrix(rng, 0.2, 0.6),
            "ssim": personalised_matrix(rng, 0.8, 0.3),
        },
    }
    stats = ablation_statistics(
        "clothing", fake_evaluation(history, target), control, USERS, list(history), **KW
    )
    return {"stats": stats, "keywords_shift": keywords_shift}


def test_outputs_of_their_own_user_have_a_positive_significant_gap(statistics) -> None:
    pmg = statistics["stats"]["soft+keywords"]
    assert pmg["gap_lpips_alex"] == pytest.approx(0.4, abs=0.01)
    assert pmg["gap_lpips_alex_own"] == pytest.approx(0.2, abs=0.01)
    assert pmg["gap_lpips_alex_other"] == pytest.approx(0.6, abs=0.01)
    assert pmg["gap_lpips_alex_p"] < 0.01  # only near-identity assignments reach the observed gap
    assert pmg["gap_ssim"] == pytest.approx(0.5, abs=0.01)  # a similarity: own - other, still positive
    assert pmg["gap_ssim_p"] < 0.01
    # Larger than none's (~0), paired per user:
    assert pmg["gap_lpips_alex_diff_vs_none_lo"] > 0.3
    assert pmg["personalises_lpips_alex"] is True and pmg["personalises_ssim"] is True
    assert pmg["n_users_control"] == len(USERS)


def test_outputs_blind_to_their_user_have_no_gap(statistics) -> None:
    for name in ("none", "keywords"):
        entry = statistics["stats"][name]
        assert entry["gap_lpips_alex"] == pytest.approx(0.0, abs=1e-9), name  # row + column effects cancel
        assert entry["gap_lpips_alex_p"] > 0.5, name
        assert entry["personalises_lpips_alex"] is False, name
    assert "gap_lpips_alex_diff_vs_none" not in statistics["stats"]["none"]  # not compared with itself


def test_paired_differences_have_bootstrap_intervals(statistics) -> None:
    pmg = statistics["stats"]["soft+keywords"]
    # Every user 0.05 closer than with none: the interval is the point.
    assert pmg["lpips_alex_history_diff_vs_none"] == pytest.approx(-0.05, abs=1e-6)
    assert pmg["lpips_alex_history_diff_vs_none_lo"] == pytest.approx(-0.05, abs=1e-6)
    assert pmg["lpips_alex_history_diff_vs_none_hi"] == pytest.approx(-0.05, abs=1e-6)
    assert pmg["lpips_alex_target_diff_vs_none"] == pytest.approx(0.02, abs=1e-6)
    assert pmg["ssim_history_diff_vs_none"] == pytest.approx(0.05, abs=1e-6)
    # vs keywords: the mean of the per-user differences, inside a proper interval.
    expected = float(np.mean(-0.05 - statistics["keywords_shift"]))
    assert pmg["lpips_alex_history_diff_vs_keywords"] == pytest.approx(expected, abs=1e-6)
    low, high = pmg["lpips_alex_history_diff_vs_keywords_lo"], pmg["lpips_alex_history_diff_vs_keywords_hi"]
    assert low < expected < high
    keywords = statistics["stats"]["keywords"]
    shift = statistics["keywords_shift"]
    assert keywords["lpips_alex_history_diff_vs_none"] == pytest.approx(float(shift.mean()), abs=1e-6)
    assert keywords["lpips_alex_history_diff_vs_none_lo"] < keywords["lpips_alex_history_diff_vs_none_hi"]
    assert "lpips_alex_history_diff_vs_keywords" not in keywords


def test_headline_and_markdown_show_the_intervals(statistics, tmp_path) -> None:
    metrics = {
        name: {"lpips_alex_history": 0.5, "n_pairs": 8, **entry} for name, entry in statistics["stats"].items()
    }
    row = headline_row("clothing", "soft+keywords", metrics)
    assert row[5] == "-0.0500 [-0.0500, -0.0500]"
    pmg = metrics["soft+keywords"]
    assert row[6] == f"{pmg['gap_lpips_alex']:+.4f} (p={pmg['gap_lpips_alex_p']:.3f})" and "(p=0.00" in row[6]
    gap = [pmg[f"gap_lpips_alex_diff_vs_none{end}"] for end in ("", "_lo", "_hi")]
    assert row[7] == f"{gap[0]:+.4f} [{gap[1]:+.4f}, {gap[2]:+.4f}]" and gap[1] > 0
    params = make_params(tmp_path, evaluate={"ablations": ["none", "keywords", "soft+keywords"]})
    text = ablation_markdown("clothing", metrics, variants(params), {})
    assert "personalisation and paired differences" in text
    assert "| soft+keywords | " + row[6] + " | " + row[7] + " |" in text
    assert "-0.0500 [-0.0500, -0.0500]" in text


def test_html_report_states_the_protocol_and_shows_the_intervals(statistics, tmp_path) -> None:
    import html
    import re

    from pmg.evaluate.report import ScenarioInputs, render_report, scenario_section

    metrics = {
        name: {"lpips_alex_history": 0.5, "n_pairs": 8, **entry} for name, entry in statistics["stats"].items()
    }
    params = make_params(
        tmp_path,
        evaluate={"ablations": ["none", "keywords", "soft+keywords"], "permutations": 1234},
        select={"alpha": 0.3},
    )
    section = scenario_section(params, ScenarioInputs(name="clothing", ablation_metrics=metrics))
    page = html.unescape(render_report(params, [section], {}))
    assert "1234 permutations" in page and "alpha = 0.3" in page  # the protocol, from params
    # No clock in a DVC output: the same inputs give the same bytes (issue 16).
    from datetime import UTC, datetime

    assert datetime.now(UTC).strftime("%Y-%m-%d") not in page
    rows = {
        table: [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
        for table, body in re.findall(r'<table class="(headline|statistics)">(.*?)</table>', page, re.S)
    }
    pmg = metrics["soft+keywords"]
    headline = [r for r in rows["headline"] if r]
    assert headline == [headline_row("clothing", "soft+keywords", metrics)]
    assert headline[0][5] == "-0.0500 [-0.0500, -0.0500]"
    by_variant = {r[0]: r for r in rows["statistics"] if r}
    assert list(by_variant) == ["none", "keywords", "soft+keywords"]
    assert by_variant["soft+keywords"][1] == f"{pmg['gap_lpips_alex']:+.4f} (p={pmg['gap_lpips_alex_p']:.3f})"
    assert by_variant["soft+keywords"][5] == "-0.0500 [-0.0500, -0.0500]"  # history LPIPS − none


def test_fewer_than_two_users_is_a_reported_skip() -> None:
    evaluation = Evaluation(pairs=pd.DataFrame(columns=list(PAIR_COLUMNS)))
    out = ablation_statistics("emoji", evaluation, {"none": {}}, ["u1"], ["none", "keywords"], **KW)
    assert all("emoji: 1 test user(s)" in entry["statistics_skipped"] for entry in out.values())


def test_a_missing_run_or_value_is_a_data_error_naming_it() -> None:
    rng = np.random.default_rng(2)
    history = {"none": rng.uniform(0.4, 0.6, len(USERS)), "keywords": rng.uniform(0.4, 0.6, len(USERS))}
    target = {name: np.full(len(USERS), 0.3) for name in history}
    evaluation = fake_evaluation(history, target)
    control = {"none": {"lpips_alex": user_blind_matrix(rng)}}
    with pytest.raises(DataError, match=r"ablations of clothing.*variant 'keywords'.*run is missing"):
        ablation_statistics("clothing", evaluation, control, USERS, ["none", "keywords"], **KW)
    broken = user_blind_matrix(rng)
    broken[3, 5] = np.nan
    control["keywords"] = {"lpips_alex": broken}
    with pytest.raises(DataError, match=r"clothing.*variant 'keywords'.*user 'u3'"):
        ablation_statistics("clothing", evaluation, control, USERS, ["none", "keywords"], **KW)
    # A user measured in one variant only: paired_arrays names the variant.
    control["keywords"] = {"lpips_alex": user_blind_matrix(rng)}
    evaluation.pairs = evaluation.pairs[
        ~((evaluation.pairs["variant"] == "keywords") & (evaluation.pairs["user_id"] == "u4"))
    ]
    with pytest.raises(DataError, match=r"clothing.*variant 'keywords' is missing"):
        ablation_statistics("clothing", evaluation, control, USERS, ["none", "keywords"], **KW)


def test_a_reference_that_did_not_run_is_reported() -> None:
    rng = np.random.default_rng(3)
    history = {"none": rng.uniform(0.4, 0.6, len(USERS)), "soft": rng.uniform(0.4, 0.6, len(USERS))}
    target = {name: np.full(len(USERS), 0.3) for name in history}
    control = {name: {"lpips_alex": user_blind_matrix(rng)} for name in history}
    evaluation = fake_evaluation(history, target)
    out = ablation_statistics("clothing", evaluation, control, USERS, list(history), **KW)
    assert "did not run in clothing" in out["soft"]["statistics_skipped_vs_keywords"]
    assert "lpips_alex_history_diff_vs_none" in out["soft"]


def test_selection_effect_reads_selection_apart_from_conditioning() -> None:
    """Selected − fixed candidate, paired per user: the selection's share of a variant's history LPIPS."""
    from pmg.evaluate.ablations import NO_SELECTION, fixed_candidate, selection_effect

    rng = np.random.default_rng(3)
    fixed_values = rng.uniform(0.5, 0.7, len(USERS))
    selected = fake_evaluation(
        {"none": fixed_values - 0.05, "keywords": fixed_values - 0.01},
        {"none": fixed_values, "keywords": fixed_values},
    )
    label = {name: f"{name} ({NO_SELECTION})" for name in ("none", "keywords")}
    fixed = fake_evaluation(
        {label["none"]: fixed_values, label["keywords"]: fixed_values},
        {label["none"]: fixed_values, label["keywords"]: fixed_values + 0.02},
    )
    effect = selection_effect("clothing", selected, fixed, ["none", "keywords"], label, resamples=1000, seed=0)
    none, keywords = effect["none"], effect["keywords"]
    assert none[f"lpips_alex_history_{NO_SELECTION}"] == pytest.approx(fixed_values.mean(), abs=1e-6)
    # `none` selected outputs 0.05 closer to the history than its fixed candidate; keywords 0.01.
    assert none["lpips_alex_history_selection_effect"] == pytest.approx(-0.05, abs=1e-6)
    assert keywords["lpips_alex_history_selection_effect"] == pytest.approx(-0.01, abs=1e-6)
    assert none["lpips_alex_history_selection_effect_hi"] < 0
    assert keywords["lpips_alex_target_selection_effect"] == pytest.approx(-0.02, abs=1e-6)
    assert none["lpips_alex_target_selection_effect"] == pytest.approx(0.0, abs=1e-6)
    assert fixed_candidate(5) == 2  # the 2:2 weight pair of [[0,4],[1,3],[2,2],[3,1],[4,0]]
    only_none = fake_evaluation({label["none"]: fixed_values}, {label["none"]: fixed_values})
    with pytest.raises(DataError, match=r"keywords \(no_selection\).*run is missing"):  # named, not a gap
        selection_effect("clothing", selected, only_none, ["keywords"], label, resamples=1000, seed=0)


def test_selection_effect_over_one_user_is_skipped_with_the_reason() -> None:
    """One test user (`ablation_max_users: 1`, a scenario with one test user): no interval, said, no crash."""
    from pmg.evaluate.ablations import NO_SELECTION, STATISTICS_COLUMNS, selection_effect

    def one_user(evaluation: Evaluation) -> Evaluation:
        return Evaluation(pairs=evaluation.pairs[evaluation.pairs["user_id"] == "u0"].reset_index(drop=True))

    values = np.linspace(0.4, 0.6, len(USERS))
    label = {"none": f"none ({NO_SELECTION})"}
    selected = one_user(fake_evaluation({"none": values - 0.05}, {"none": values}))
    fixed = one_user(fake_evaluation({label["none"]: values}, {label["none"]: values}))
    effect = selection_effect("clothing", selected, fixed, ["none"], label, resamples=1000, seed=0)["none"]
    assert effect["selection_effect_skipped"] == (
        "clothing: 1 test user(s); the paired interval of the selection effect needs at least 2"
    )
    assert effect[f"lpips_alex_history_{NO_SELECTION}"] == pytest.approx(values[0], abs=1e-6)
    assert not [key for key in effect if key.endswith(("_selection_effect", "_selection_effect_lo"))]
    # The report's cell of a skipped interval is a dash.
    cells = {title: cell(effect) for title, cell in STATISTICS_COLUMNS}
    assert cells["History LPIPS-Alex, selected − unselected [95% CI]"] == "—"
    assert cells["History LPIPS-Alex, no selection"] == f"{values[0]:.4f}"
