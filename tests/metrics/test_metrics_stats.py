import json
import warnings

import numpy as np
import pytest
from scipy import stats

from husai.errors import HusaiError
from husai.metrics import bootstrap_ci, compare_to_baseline


def test_bootstrap_matches_manual_numpy_percentile_bootstrap():
    x = np.random.default_rng(0).normal(0.6, 0.05, size=12)
    r = bootstrap_ci(x, level=0.9, n_resamples=4000, seed=3)
    idx = np.random.default_rng(99).integers(0, x.size, size=(20_000, x.size))
    lo, hi = np.percentile(x[idx].mean(axis=1), [5, 95])
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert r["mean"] == pytest.approx(x.mean())
    assert r["ci_low"] == pytest.approx(lo, abs=0.1 * se)
    assert r["ci_high"] == pytest.approx(hi, abs=0.1 * se)
    assert r["ci_low"] < r["mean"] < r["ci_high"]
    assert r["n"] == 12 and r["method"] == "percentile bootstrap"


def test_bootstrap_is_seeded_and_equals_direct_scipy_call():
    x = [0.31, 0.29, 0.35, 0.30, 0.28]
    r = bootstrap_ci(x, n_resamples=500, seed=4)
    assert r == bootstrap_ci(x, n_resamples=500, seed=4)
    assert r != bootstrap_ci(x, n_resamples=500, seed=5)
    ref = stats.bootstrap(
        (np.array(x),),
        np.mean,
        n_resamples=500,
        method="percentile",
        rng=np.random.default_rng(4),
    ).confidence_interval
    assert (r["ci_low"], r["ci_high"]) == (ref.low, ref.high)


@pytest.mark.parametrize("x", [[0.4], [0.7, 0.7, 0.7]])
def test_bootstrap_degenerate_is_quiet(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = bootstrap_ci(x)
    assert r["ci_low"] == r["ci_high"] == r["mean"] == x[0]
    json.dumps(r, allow_nan=False)


def test_compare_separated_and_reversed():
    rng = np.random.default_rng(1)
    trained, base = rng.normal(0.8, 0.02, 10), rng.normal(0.3, 0.02, 10)
    r = compare_to_baseline(trained, base, n_resamples=2000)
    assert r["mann_whitney"]["p_value"] < 1e-3 and r["welch_t"]["p_value"] < 1e-3
    assert 0 < r["ci_low"] < r["mean"] < r["ci_high"]
    assert r["note"] is None
    rev = compare_to_baseline(base, trained, n_resamples=2000)
    assert rev["mann_whitney"]["p_value"] > 0.99 and rev["welch_t"]["p_value"] > 0.99
    assert rev["ci_high"] < 0


def test_compare_equals_direct_scipy_and_is_deterministic():
    t = [0.52, 0.55, 0.49, 0.58, 0.51, 0.50]
    b = [0.30, 0.33, 0.29, 0.31]
    r = compare_to_baseline(t, b, level=0.9, n_resamples=1000, seed=7)
    assert r == compare_to_baseline(t, b, level=0.9, n_resamples=1000, seed=7)
    mw = stats.mannwhitneyu(t, b, alternative="greater")
    wt = stats.ttest_ind(t, b, equal_var=False, alternative="greater")
    assert r["mann_whitney"]["statistic"] == mw.statistic
    assert r["mann_whitney"]["p_value"] == mw.pvalue
    assert r["welch_t"]["statistic"] == pytest.approx(wt.statistic)
    assert r["welch_t"]["p_value"] == pytest.approx(wt.pvalue)
    assert "Mann-Whitney" in r["mann_whitney"]["name"] and "Welch" in r["welch_t"]["name"]
    ci = stats.bootstrap(
        (np.array(t), np.array(b)),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        n_resamples=1000,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert r["mean"] == pytest.approx(np.mean(t) - np.mean(b))
    assert r["n_trained"] == 6 and r["n_baseline"] == 4
    json.dumps(r, allow_nan=False)


@pytest.mark.parametrize(
    "t,b", [([0.5, 0.5, 0.5], [0.5, 0.5]), ([0.9], [0.3]), ([0.9], [0.3, 0.32, 0.31])]
)
def test_compare_degenerate_gives_none_with_note_not_nan(t, b):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare_to_baseline(t, b, n_resamples=200)
    json.dumps(r, allow_nan=False)
    assert r["welch_t"]["statistic"] is None and r["welch_t"]["p_value"] is None
    assert "Welch" in r["note"]
    assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    assert all(isinstance(r[k], float) for k in ("mean", "ci_low", "ci_high"))


def test_compare_one_constant_group_still_runs_welch():
    r = compare_to_baseline([0.8, 0.81, 0.83], [0.3, 0.3, 0.3], n_resamples=200)
    assert r["welch_t"]["p_value"] < 0.01
    assert r["ci_low"] < r["mean"] < r["ci_high"] and "resampled" in r["note"]


def test_stats_errors():
    with pytest.raises(HusaiError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(HusaiError, match="NaN"):
        compare_to_baseline([0.1, float("nan")], [0.2])
    with pytest.raises(HusaiError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(HusaiError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
