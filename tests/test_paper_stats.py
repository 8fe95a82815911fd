"""Aggregation and style of the paper's experiments, checked against hand computations and scipy."""

import re

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks.harness import stats, style


def test_iqm_of_known_arrays():
    # 8 values: the middle half is the 3rd..6th sorted values.
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    # An outlier outside the middle half does not move it.
    assert stats.iqm([0.0, 1.0, 2.0, 1e6]) == pytest.approx(1.5)
    # 5 values: middle half is [1.25, 3.75) -> 0.75*x2 + x3 + 0.75*x4 over 2.5.
    assert stats.iqm([1, 2, 3, 4, 5]) == pytest.approx((0.75 * 2 + 3 + 0.75 * 4) / 2.5)
    assert stats.iqm([7.0]) == 7.0


def test_iqm_matches_scipy_trim_mean_for_multiples_of_four():
    values = np.random.default_rng(3).normal(size=12)
    assert stats.iqm(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_bootstrap_ci_matches_a_direct_percentile_computation():
    values = np.array([1.0, 4.0, 2.5, 3.0, 10.0])
    low, high = stats.bootstrap_ci(values, resamples=2000, seed=5)
    rng = np.random.default_rng(5)
    means = [values[rng.integers(0, 5, size=5)].mean() for _ in range(2000)]
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_bootstrap_ci_close_to_scipy_bootstrap():
    values = np.random.default_rng(1).normal(loc=3.0, size=20)
    low, high = stats.bootstrap_ci(values, resamples=20_000)
    ref = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=20_000, method="percentile", random_state=np.random.default_rng(2)
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.03)
    assert high == pytest.approx(ref.high, abs=0.03)


def test_bootstrap_ci_coverage_near_nominal():
    # Intervals of the mean of 30 normal draws should cover the true mean about 95% of the time
    # (the percentile bootstrap undercovers slightly at small n).
    rng = np.random.default_rng(11)
    hits = 0
    trials = 200
    for k in range(trials):
        low, high = stats.bootstrap_ci(rng.normal(size=30), resamples=1000, seed=k)
        hits += low <= 0.0 <= high
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_is_reproducible_and_degenerate_for_one_seed():
    values = [1.0, 2.0, 7.0]
    assert stats.bootstrap_ci(values) == stats.bootstrap_ci(values)
    assert stats.bootstrap_ci([3.0]) == (3.0, 3.0)


def test_summarize_methods():
    out = stats.summarize_methods({"vanilla": [1.0, 3.0], "regrama": [4.0, 4.0, 4.0]}, resamples=500)
    assert out["vanilla"].mean == 2.0 and out["vanilla"].n == 2
    assert 1.0 <= out["vanilla"].low <= 2.0 <= out["vanilla"].high <= 3.0
    assert (out["regrama"].low, out["regrama"].high, out["regrama"].iqm) == (4.0, 4.0, 4.0)


def test_normalized_scores():
    np.testing.assert_allclose(stats.normalized([50.0, 150.0], reference=100.0), [0.5, 1.5])
    np.testing.assert_allclose(stats.normalized([10.0], reference=20.0, baseline=0.0 + 5.0), [1 / 3])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.iqm([]), "empty"),
        (lambda: stats.iqm([[1.0, 2.0]]), "1-D"),
        (lambda: stats.bootstrap_ci([1.0, float("nan")]), "NaN"),
        (lambda: stats.bootstrap_ci([1.0], confidence=1.5), "confidence"),
        (lambda: stats.bootstrap_ci([1.0], resamples=0), "resamples"),
        (lambda: stats.bootstrap_ci([1.0], statistic="median"), "statistic"),
        (lambda: stats.normalized([1.0], reference=2.0, baseline=2.0), "undefined"),
        (lambda: stats.summarize_methods({"redo": []}), "'redo'"),
    ],
)
def test_bad_input_is_refused_clearly(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_style_has_one_distinct_colour_per_method():
    methods = [
        "vanilla", "redo", "regrama", "fresh", "cbp", "reborn", "snp", "l2init", "prune-grama",
        "prune-redo", "regrama+l2init", "regrama+wd", "regrama+l2init+wd",
    ]  # fmt: skip
    colours = [style.color(m) for m in methods]
    assert len(set(colours)) == len(methods)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    # The paper's colours: vanilla grey, ReDo pink, ReGraMa orange.
    assert (style.color("vanilla"), style.color("redo"), style.color("regrama")) == ("#7f7f7f", "#e377c2", "#ff7f0e")
    assert style.label("snp") == "S&P" and set(style.LABELS) == set(style.COLORS)
    with pytest.raises(KeyError, match=r"style\.py"):
        style.color("unknown-method")
