"""The evaluation's statistics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pmg.errors import DataError
from pmg.evaluate.stats import (
    bootstrap_interval,
    derangement,
    mismatched_users,
    paired_arrays,
    paired_difference,
    personalisation_gap,
    user_gaps,
)

# ---------------------------------------------------------------- derangement


def test_derangement_has_no_fixed_point_and_is_fixed_by_its_seed() -> None:
    for n in (2, 3, 5, 40, 237):
        for seed in range(20):
            p = derangement(n, seed)
            assert sorted(p.tolist()) == list(range(n))  # a permutation
            assert not (p == np.arange(n)).any()  # nobody is their own partner
            assert np.array_equal(p, derangement(n, seed))  # same seed, same partners
    assert not np.array_equal(derangement(40, 0), derangement(40, 1))
    with pytest.raises(ValueError, match="at least 2 test users, got 1"):
        derangement(1, 0)


def test_derangements_are_uniform() -> None:
    # n = 4 has 9 derangements (3 double swaps, 6 four-cycles); Sattolo's algorithm would give only the 6 cycles.
    counts: dict[tuple[int, ...], int] = {}
    for seed in range(3600):
        key = tuple(derangement(4, seed).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 9
    assert all(abs(c - 400) < 80 for c in counts.values())  # binomial sd ~19


def test_mismatched_users_pairs_each_user_with_another_whatever_the_order() -> None:
    users = [f"c{i:04d}" for i in range(30)]
    pairs = mismatched_users(users, seed=3)
    assert set(pairs) == set(users) and set(pairs.values()) == set(users)
    assert all(user != other for user, other in pairs.items())
    assert mismatched_users(list(reversed(users)), seed=3) == pairs
    with pytest.raises(ValueError, match="distinct"):
        mismatched_users(["a", "a", "b"], seed=0)


# ---------------------------------------------------------- personalisation gap


def _matrix(n: int, effect: float, seed: int, *, seeds: int | None = None) -> np.ndarray:
    """LPIPS-like distances: a user effect per output and per history, noise, and `effect` less on the diagonal."""
    rng = np.random.default_rng(seed)
    shape = (n, n) if seeds is None else (seeds, n, n)
    values = 0.5 + rng.normal(0, 0.05, (n, 1)) + rng.normal(0, 0.05, (1, n)) + rng.normal(0, 0.03, shape)
    return values - effect * np.eye(n)


def test_a_planted_personalisation_is_detected_with_the_plus_one_p_value() -> None:
    n = 30
    partner = derangement(n, 0)
    result = personalisation_gap(_matrix(n, 0.05, seed=1), partner, permutations=1000, seed=0)
    # The gap recovers the planted effect (the off-diagonal noise averages out).
    assert result.gap == pytest.approx(0.05, abs=0.02)
    assert result.other - result.own == pytest.approx(result.gap)
    # No permutation reaches it: p is the smallest the +1 correction allows, never 0.
    assert result.p_value == pytest.approx(1 / 1001)
    assert abs(result.null_mean) < 0.01 and result.permutations == 1000 and result.n_users == n


def test_no_personalisation_gives_a_p_value_that_is_not_small() -> None:
    partner = derangement(30, 0)
    result = personalisation_gap(_matrix(30, 0.0, seed=2), partner, permutations=1000, seed=0)
    assert result.p_value > 0.05 and abs(result.gap) < 0.02
    # Over repetitions the null p-values are about uniform: ~5% fall below 0.05.
    p_values = [
        personalisation_gap(_matrix(20, 0.0, seed=s), derangement(20, s), permutations=1000, seed=s).p_value
        for s in range(200)
    ]
    assert 0.01 <= np.mean(np.asarray(p_values) < 0.05) <= 0.10
    assert 0.4 < np.mean(p_values) < 0.6


def test_permutation_p_value_matches_the_exact_one_on_a_small_case() -> None:
    """n = 5: all 120 assignments of histories to outputs can be enumerated by hand."""
    from itertools import permutations

    rng = np.random.default_rng(11)
    values = rng.uniform(0.3, 0.7, (5, 5)) - 0.08 * np.eye(5)
    partner = derangement(5, 2)
    rows = np.arange(5)

    def gap(sigma: np.ndarray) -> float:
        return values[rows, sigma[partner]].mean() - values[rows, sigma].mean()

    observed = gap(rows)
    exact = np.mean([gap(np.array(s)) >= observed - 1e-12 for s in permutations(range(5))])
    assert 0.02 < exact < 0.5  # a case where the distribution matters
    result = personalisation_gap(values, partner, permutations=20000, seed=0)
    assert result.gap == pytest.approx(observed)
    # Monte Carlo estimate of the exact p (sd ~0.003 at 20000 draws), +1-corrected.
    assert result.p_value == pytest.approx((1 + 20000 * exact) / 20001, abs=0.012)


def test_gap_orientation_for_similarities_and_seed_averaging() -> None:
    n = 25
    partner = derangement(n, 4)
    distances = _matrix(n, 0.04, seed=5, seeds=3)  # (S, n, n)
    ssim_like = 1.0 - distances  # a similarity: own history more similar
    by_distance = personalisation_gap(distances, partner, seed=1)
    by_similarity = personalisation_gap(ssim_like, partner, lower_is_closer=False, seed=1)
    assert by_distance.gap > 0.02 and by_similarity.gap == pytest.approx(by_distance.gap)
    assert by_similarity.p_value == by_distance.p_value
    # Seeds are averaged before the test.
    assert personalisation_gap(distances.mean(axis=0), partner, seed=1) == by_distance
    # A similarity read as a distance would say "anti-personalised".
    assert personalisation_gap(ssim_like, partner, seed=1).gap < 0


def test_user_gaps_average_to_the_gap_and_compare_variants_paired() -> None:
    n, partner = 30, derangement(30, 1)
    none = _matrix(n, 0.0, seed=8, seeds=3)
    variant = none - 0.03 * np.eye(n)  # same outputs, each 0.03 closer to its own history
    gaps = user_gaps(variant, partner)
    assert gaps.shape == (n, 3)
    assert gaps.mean() == pytest.approx(personalisation_gap(variant, partner).gap)
    assert user_gaps(1 - variant, partner, lower_is_closer=False) == pytest.approx(gaps)
    difference = paired_difference(gaps, user_gaps(none, partner), seed=0)
    assert difference.mean == pytest.approx(0.03) and difference.low == pytest.approx(0.03)


def test_gap_is_deterministic_and_rejects_bad_input() -> None:
    values, partner = _matrix(10, 0.01, seed=0), derangement(10, 0)
    assert personalisation_gap(values, partner, seed=7) == personalisation_gap(values, partner, seed=7)
    assert personalisation_gap(values, partner, seed=7).p_value != personalisation_gap(values, partner, seed=8).p_value
    with pytest.raises(ValueError, match="derangement"):
        personalisation_gap(values, np.arange(10))
    with pytest.raises(ValueError, match=r"\(n, n\)"):
        personalisation_gap(values[:, :9], partner)
    bad = values.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        personalisation_gap(bad, partner)


# ---------------------------------------------------------- paired bootstrap


def test_paired_interval_covers_the_true_difference_at_about_the_nominal_rate() -> None:
    true_difference, covered = -0.02, 0
    repetitions = 300
    for rep in range(repetitions):
        rng = np.random.default_rng(1000 + rep)
        user = rng.normal(0.6, 0.08, (40, 1))  # shared by both variants: pairing removes it
        reference = user + rng.normal(0, 0.03, (40, 3))
        values = user + true_difference + rng.normal(0, 0.03, (40, 3))
        interval = paired_difference(values, reference, resamples=1000, seed=rep)
        covered += interval.low <= true_difference <= interval.high
    # Percentile bootstrap, 40 users: nominal 95%, a little under in small samples; sd over 300 reps ~1.3%.
    assert 0.90 <= covered / repetitions <= 0.985


def test_pairing_detects_a_small_difference_that_user_spread_would_hide() -> None:
    rng = np.random.default_rng(0)
    user = rng.normal(0.6, 0.1, (30, 1))
    reference = user + rng.normal(0, 0.005, (30, 3))
    values = user - 0.01 + rng.normal(0, 0.005, (30, 3))
    interval = paired_difference(values, reference, seed=0)
    assert interval.high < 0 and interval.excludes_zero
    assert interval.mean == pytest.approx((values - reference).mean())
    assert (interval.n_users, interval.n_seeds, interval.resamples, interval.confidence) == (30, 3, 1000, 0.95)
    # Unpaired, the users' spread (0.1) swamps the 0.01 difference.
    unpaired_width = 2 * 1.96 * np.sqrt(2 * values.mean(axis=1).var(ddof=1) / 30)
    assert unpaired_width > 0.05 > interval.high - interval.low


def test_a_null_difference_gives_an_interval_around_zero() -> None:
    rng = np.random.default_rng(3)
    user = rng.normal(0.5, 0.1, (30, 1))
    interval = paired_difference(user + rng.normal(0, 0.02, (30, 3)), user + rng.normal(0, 0.02, (30, 3)), seed=1)
    assert interval.low < 0 < interval.high and not interval.excludes_zero


def test_seeds_are_averaged_within_users_before_the_bootstrap() -> None:
    rng = np.random.default_rng(4)
    values, reference = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    by_seed = paired_difference(values, reference, seed=5)
    per_user = bootstrap_interval((values - reference).mean(axis=1), n_seeds=3, seed=5)
    assert by_seed == per_user
    assert paired_difference(values, reference, seed=5) == by_seed  # deterministic
    assert paired_difference(values, reference, seed=6) != by_seed
    with pytest.raises(ValueError, match="must share"):
        paired_difference(values, reference[:, :2])
    with pytest.raises(ValueError, match="at least 2 users"):
        bootstrap_interval([0.1])


# ------------------------------------------------------------------ long table


def _long(variants: dict[str, dict[tuple[str, int], float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"variant": v, "user_id": u, "seed": s, "lpips": x} for v, rows in variants.items() for (u, s), x in rows.items()]
    )


def test_paired_arrays_align_users_and_seeds_and_name_a_missing_run() -> None:
    none = {(u, s): 0.5 + s / 10 for u in ("u2", "u1") for s in (0, 1)}
    soft = {(u, s): 0.4 + s / 10 for u in ("u1", "u2") for s in (1, 0)}
    users, a, b = paired_arrays(_long({"soft": soft, "none": none}), "soft", "none", "lpips")
    assert users == ["u1", "u2"] and a.shape == (2, 2) and np.allclose(a - b, -0.1)
    assert np.allclose(a[:, 1], 0.5)  # column order is seed order
    with pytest.raises(DataError, match="variant 'keywords' has no 'lpips' rows"):
        paired_arrays(_long({"soft": soft, "none": none}), "keywords", "none", "lpips")
    partial = dict(none)
    del partial[("u2", 1)]
    with pytest.raises(DataError, match="variant 'none' is missing 1 run.*user 'u2' seed 1"):
        paired_arrays(_long({"soft": soft, "none": partial}), "soft", "none", "lpips", where="metrics.parquet")
    twice = pd.concat([_long({"soft": soft, "none": none}), _long({"soft": {("u1", 0): 0.3}})])
    with pytest.raises(DataError, match="measured twice"):
        paired_arrays(twice, "soft", "none", "lpips")
