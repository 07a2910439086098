"""Seed bootstrap (percentile, BCa), permutation test and Holm against scipy.stats and naive
python-loop references."""

import json
import math
import warnings
from itertools import combinations, product
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from husai.errors import HusaiError
from husai.metrics import bootstrap_ci, holm, permutation_test, seed_bootstrap_ci
from husai.metrics.stats import _bca, _seed_jackknife, _seed_resamples, _seed_stat

ND = NormalDist()


def sym(s: int, seed: int = 0, seed_sd: float = 0.05, pair_sd: float = 0.02) -> np.ndarray:
    """Pair scores with a per-seed effect plus per-pair noise; diagonal 1.0 like `pairwise`."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, seed_sd, s)
    e = np.triu(rng.normal(0, pair_sd, (s, s)), 1)
    m = 0.5 + a[:, None] + a[None, :] + e + e.T
    np.fill_diagonal(m, 1.0)
    return m


# --- naive references ------------------------------------------------------------------------


def brute_draws(s: int, n: int, seed: int) -> list[list[int]]:
    """The documented draw protocol: n x s seeds, then rows hitting one seed redrawn together."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, s, size=(n, s)).tolist()
    while bad := [i for i, row in enumerate(draws) if len(set(row)) == 1]:
        new = rng.integers(0, s, size=(len(bad), s)).tolist()
        for i, row in zip(bad, new, strict=True):
            draws[i] = row
    return draws


def brute_stat(m, draw) -> float:
    tot = cnt = 0
    for a in range(len(draw)):
        for b in range(len(draw)):
            if a != b and draw[a] != draw[b]:
                tot += float(m[draw[a]][draw[b]])
                cnt += 1
    return tot / cnt


def brute_pair_mean(m, seeds) -> float:
    vals = [float(m[i][j]) for i, j in combinations(seeds, 2)]
    return sum(vals) / len(vals)


def brute_quantile(xs: list[float], q: float) -> float:
    """numpy's default (linear, Hyndman-Fan 7) quantile."""
    xs = sorted(xs)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def brute_bca(theta, boot, jack, level, tie=1e-10):
    """Resamples within ``tie`` of the estimate are ties (equal but for rounding)."""
    below = sum(b < theta - tie for b in boot) + sum(b <= theta + tie for b in boot)
    z0 = ND.inv_cdf(below / (2 * len(boot)))
    jm = sum(jack) / len(jack)
    a = sum((jm - j) ** 3 for j in jack) / (6 * sum((jm - j) ** 2 for j in jack) ** 1.5)
    z = ND.inv_cdf((1 - level) / 2)
    qs = [ND.cdf(z0 + (z0 + zz) / (1 - a * (z0 + zz))) for zz in (z, -z)]
    return brute_quantile(boot, qs[0]), brute_quantile(boot, qs[1]), z0, a


def brute_seed_ci(m, level, n, seed, method):
    s = len(m)
    theta = brute_pair_mean(m, range(s))
    boot = [brute_stat(m, d) for d in brute_draws(s, n, seed)]
    if method == "bca":
        jack = [brute_pair_mean(m, [i for i in range(s) if i != k]) for k in range(s)]
        return brute_bca(theta, boot, jack, level)
    alpha = (1 - level) / 2
    return brute_quantile(boot, alpha), brute_quantile(boot, 1 - alpha)


# --- BCa helper vs scipy.stats.bootstrap ------------------------------------------------------


@pytest.mark.parametrize("level", [0.9, 0.95])
@pytest.mark.parametrize("dist", ["exponential", "normal"])
def test_bca_helper_equals_scipy_bca_on_the_same_bootstrap_distribution(dist, level):
    rng = np.random.default_rng(11)
    x = rng.exponential(size=15) if dist == "exponential" else rng.normal(size=20)
    pct = stats.bootstrap(
        (x,), np.mean, n_resamples=3000, method="percentile", rng=np.random.default_rng(2)
    )
    ref = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=0,
        bootstrap_result=pct,
        method="BCa",
        confidence_level=level,
    ).confidence_interval
    jack = (x.sum() - x) / (x.size - 1)
    lo, hi, z0, a = _bca(x.mean(), pct.bootstrap_distribution, jack, level)
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-12)
    blo, bhi, bz0, ba = brute_bca(x.mean(), list(pct.bootstrap_distribution), list(jack), level)
    assert (lo, hi, z0, a) == pytest.approx((blo, bhi, bz0, ba), rel=1e-9)


def test_bca_helper_with_own_resamples_agrees_with_scipy_bca_within_monte_carlo():
    x = np.random.default_rng(5).exponential(size=12)
    n = 4000
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=n, method="BCa", rng=np.random.default_rng(0)
    ).confidence_interval
    idx = np.random.default_rng(1).integers(0, x.size, size=(n, x.size))
    lo, hi, _, a = _bca(x.mean(), x[idx].mean(axis=1), (x.sum() - x) / (x.size - 1), 0.95)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(ref.low, abs=0.25 * se)
    assert hi == pytest.approx(ref.high, abs=0.25 * se)
    assert a > 0  # right-skewed data: positive acceleration
    pct = bootstrap_ci(x, n_resamples=n, seed=0)
    assert lo > pct["ci_low"] and hi > pct["ci_high"]  # BCa shifts right for right skew


# --- seed bootstrap -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("s,n,seed", [(3, 200, 4), (5, 300, 3)])
def test_seed_bootstrap_equals_brute_force_loops(s, n, seed, method):
    m = sym(s, seed=seed)
    r = seed_bootstrap_ci(m, level=0.9, n_resamples=n, seed=seed, method=method)
    ref = brute_seed_ci(m.tolist(), 0.9, n, seed, method)
    assert r["mean"] == pytest.approx(brute_pair_mean(m, range(s)), rel=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(ref[:2], rel=1e-9)
    if method == "bca":
        assert (r["z0"], r["acceleration"]) == pytest.approx(ref[2:], rel=1e-9, abs=1e-12)
        assert r["method"] == "seed bootstrap (resample seeds), BCa"
    else:
        assert r["z0"] is None and r["acceleration"] is None
        assert r["method"] == "seed bootstrap (resample seeds), percentile"
    assert r["n_seeds"] == s and r["n_pairs"] == s * (s - 1) // 2 and r["n_resamples"] == n
    assert r["note"] is None
    json.dumps(r, allow_nan=False)


def test_seed_bootstrap_draws_match_exact_enumeration():
    """All 4^4 draws (less the 4 single-seed ones) give the exact bootstrap distribution."""
    m = sym(4, seed=8).tolist()
    exact = np.array([brute_stat(m, d) for d in product(range(4), repeat=4) if len(set(d)) > 1])
    boot = _seed_resamples(np.array(m) - np.eye(4), 20_000, np.random.default_rng(0))
    grid = np.unique(np.round(exact, 9))  # values equal but for rounding count once
    cdf_exact = (exact[:, None] <= grid + 1e-9).mean(axis=0)
    cdf_boot = (boot[:, None] <= grid + 1e-9).mean(axis=0)
    assert np.abs(cdf_exact - cdf_boot).max() < 0.015  # DKW: P(> 0.015) < 2e-3
    r = seed_bootstrap_ci(m, n_resamples=20_000)
    assert r["se"] == pytest.approx(np.std(exact, ddof=0), rel=0.03)


def test_seed_bootstrap_is_wider_than_pair_bootstrap_under_seed_effects():
    m = sym(8, seed=1, seed_sd=0.05, pair_sd=0.005)
    r = seed_bootstrap_ci(m, n_resamples=2000)
    p = bootstrap_ci(m[np.triu_indices(8, 1)], n_resamples=2000)
    assert r["mean"] == pytest.approx(p["mean"])
    assert r["ci_high"] - r["ci_low"] > 1.5 * (p["ci_high"] - p["ci_low"])


def test_seed_bootstrap_dict_input_and_ignored_diagonal():
    m = sym(4, seed=2)
    labels = [10, 20, 30, 40]
    d = {(labels[i], labels[j]): m[i, j] for i, j in combinations(range(4), 2)}
    ref = seed_bootstrap_ci(m, n_resamples=500, method="bca")
    assert seed_bootstrap_ci(d, n_resamples=500, method="BCa") == ref
    flipped = {(j, i): v for (i, j), v in d.items()} | {(10, 10): float("nan")}
    assert seed_bootstrap_ci(flipped, n_resamples=500, method="bca") == ref
    both = d | {(j, i): v for (i, j), v in d.items()}
    assert seed_bootstrap_ci(both, n_resamples=500, method="bca") == ref
    m2 = m.copy()
    np.fill_diagonal(m2, np.nan)
    assert seed_bootstrap_ci(m2.tolist(), n_resamples=500, method="bca") == ref


def test_seed_bootstrap_seeded_and_affine_equivariant():
    m = sym(6, seed=4)
    r = seed_bootstrap_ci(m, n_resamples=400, seed=1, method="bca")
    assert r == seed_bootstrap_ci(m, n_resamples=400, seed=1, method="bca")
    assert r != seed_bootstrap_ci(m, n_resamples=400, seed=2, method="bca")
    t = seed_bootstrap_ci(2 * m - 0.3, n_resamples=400, seed=1, method="bca")
    assert (t["mean"], t["ci_low"], t["ci_high"], t["se"]) == pytest.approx(
        (2 * r["mean"] - 0.3, 2 * r["ci_low"] - 0.3, 2 * r["ci_high"] - 0.3, 2 * r["se"])
    )


def test_seed_bootstrap_relabelled_seeds_give_the_same_ci_up_to_monte_carlo():
    """Same distribution, other draws: endpoints differ by Monte-Carlo noise (BCa ~0.13 se)."""
    m = sym(7, seed=6)
    perm = np.random.default_rng(0).permutation(7)
    for method in ("percentile", "bca"):
        r = seed_bootstrap_ci(m, n_resamples=8000, method=method)
        q = seed_bootstrap_ci(m[np.ix_(perm, perm)], n_resamples=8000, method=method)
        assert q["mean"] == pytest.approx(r["mean"], rel=1e-12)
        assert q["ci_low"] == pytest.approx(r["ci_low"], abs=0.25 * r["se"])
        assert q["ci_high"] == pytest.approx(r["ci_high"], abs=0.25 * r["se"])
        assert q["se"] == pytest.approx(r["se"], rel=0.05)


@pytest.mark.parametrize("m", [[[1, 0.4], [0.4, 1]], np.full((5, 5), 0.3)])
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_seed_bootstrap_degenerate_collapses_quietly(m, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = seed_bootstrap_ci(m, method=method)
    v = float(np.asarray(m)[0, 1])
    assert r["mean"] == r["ci_low"] == r["ci_high"] == v
    assert r["se"] == 0.0 and r["n_resamples"] == 0 and r["method"].startswith("none")
    json.dumps(r, allow_nan=False)


def test_seed_bootstrap_bca_falls_back_to_percentile_when_undefined():
    r = seed_bootstrap_ci(sym(5), n_resamples=1, method="bca")  # one resample != estimate
    assert r["method"] == "seed bootstrap (resample seeds), percentile"
    assert "BCa undefined" in r["note"] and r["z0"] is None
    json.dumps(r, allow_nan=False)


def test_seed_bootstrap_constant_jackknife_gives_zero_acceleration():
    x, y, z = 0.2, 0.5, 0.9  # every leave-one-seed-out mean is (x + y + z) / 3
    m = [[1, x, y, z], [x, 1, z, y], [y, z, 1, x], [z, y, x, 1]]
    r = seed_bootstrap_ci(m, n_resamples=500, method="bca")
    assert r["acceleration"] == 0.0 and r["method"].endswith("BCa")


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[1.0]], "at least 2 seeds"),
        ([0.1, 0.2, 0.3], "square"),
        ([[1, 0.2, 0.3], [0.2, 1, 0.4]], "square"),
        ([[1, float("nan")], [float("nan"), 1]], "NaN"),
        ([[1, 0.2], [0.3, 1]], "not symmetric"),
        ([["a", "b"], ["c", "d"]], "numbers"),
        ({(0, 1): 0.5, (0, 2): 0.4}, "lacks 1 pair"),
        ({(0, 1): 0.5, (1, 0): 0.6}, "twice"),
        ({(0, 1): float("inf")}, "NaN"),
        ({(0, 0): 1.0}, "at least 2 seeds"),
        ({0: 0.5}, "tuples"),
    ],
)
def test_seed_bootstrap_errors(bad, match):
    with pytest.raises(HusaiError, match=match):
        seed_bootstrap_ci(bad)


def test_seed_bootstrap_argument_errors():
    with pytest.raises(HusaiError, match="method"):
        seed_bootstrap_ci(sym(3), method="basic")
    with pytest.raises(HusaiError, match="level"):
        seed_bootstrap_ci(sym(3), level=1.0)
    with pytest.raises(HusaiError, match="n_resamples"):
        seed_bootstrap_ci(sym(3), n_resamples=0)


pair_mats = st.integers(3, 7).flatmap(
    lambda s: st.lists(
        st.floats(0, 1, allow_nan=False), min_size=s * (s - 1) // 2, max_size=s * (s - 1) // 2
    ).map(lambda v, s=s: _from_upper(s, v))
)


def _from_upper(s: int, v: list[float]) -> np.ndarray:
    m = np.eye(s)
    m[np.triu_indices(s, 1)] = v
    return np.triu(m, 1) + np.triu(m, 1).T + np.eye(s)


@settings(max_examples=60, deadline=None)
@given(pair_mats, st.integers(0, 2**32 - 1))
def test_property_percentile_ci_contains_the_estimate(m, seed):
    r = seed_bootstrap_ci(m, n_resamples=200, seed=seed)
    assert r["ci_low"] - 1e-12 <= r["mean"] <= r["ci_high"] + 1e-12
    json.dumps(r, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(pair_mats, st.randoms(use_true_random=False), st.integers(0, 2**32 - 1))
def test_property_relabelling_seeds_is_invariant(m, rnd, seed):
    """A resample depends only on which seeds were drawn how often, not on their labels; the
    estimate and the jackknife values are label-free too."""
    s = m.shape[0]
    perm = np.array(rnd.sample(range(s), s))
    mp = m[np.ix_(perm, perm)]  # new seed a is old seed perm[a]
    m0, mp0 = m - np.diag(np.diag(m)), mp - np.diag(np.diag(mp))
    counts_new = np.random.default_rng(seed).multinomial(s, [1 / s] * s, size=50)
    counts_new = counts_new[(counts_new > 0).sum(axis=1) > 1]
    counts_old = np.zeros_like(counts_new)
    counts_old[:, perm] = counts_new
    np.testing.assert_allclose(
        _seed_stat(mp0, counts_new), _seed_stat(m0, counts_old), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(_seed_jackknife(mp0), _seed_jackknife(m0)[perm], atol=1e-12)
    r, q = seed_bootstrap_ci(m, n_resamples=50), seed_bootstrap_ci(mp, n_resamples=50)
    assert q["mean"] == pytest.approx(r["mean"], abs=1e-12)


# --- permutation test ---------------------------------------------------------------------------


def brute_perm_p(t: list[float], r: list[float], alternative: str) -> float:
    pooled, nt = t + r, len(t)
    obs = sum(t) / nt - sum(r) / len(r)
    null = []
    for idx in combinations(range(len(pooled)), nt):
        a = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        null.append(sum(a) / len(a) - sum(b) / len(b))
    tol = 1e-12
    ge = sum(x >= obs - tol for x in null) / len(null)
    le = sum(x <= obs + tol for x in null) / len(null)
    return {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize(
    "t,r",
    [
        ([0.61, 0.58, 0.66], [0.52, 0.60, 0.49, 0.55]),
        ([0.5, 0.75, 0.25, 1.0], [0.5, 0.25, 0.0]),  # ties, exactly representable
        ([0.9, 0.7], [0.1, 0.2]),
    ],
)
def test_permutation_exact_equals_enumeration(t, r, alternative):
    res = permutation_test(t, r, alternative=alternative)
    assert res["exact"] is True and res["n_permutations"] == math.comb(len(t) + len(r), len(t))
    assert res["p_value"] == pytest.approx(brute_perm_p(t, r, alternative), rel=1e-12)
    assert res["delta"] == pytest.approx(np.mean(t) - np.mean(r))
    assert res["alternative"] == alternative and "exact" in res["method"]
    json.dumps(res, allow_nan=False)


def test_permutation_default_is_one_sided_greater():
    res = permutation_test([0.8, 0.82, 0.85], [0.3, 0.31, 0.29])
    assert res["p_value"] == pytest.approx(1 / 20)  # observed split is the most extreme of 20
    assert "one-sided, trained > random" in res["method"]
    rev = permutation_test([0.3, 0.31, 0.29], [0.8, 0.82, 0.85])
    assert rev["p_value"] == 1.0


def test_permutation_monte_carlo_equals_direct_scipy_and_is_close_to_exact():
    rng = np.random.default_rng(3)
    t, r = rng.normal(0.55, 0.05, 6), rng.normal(0.5, 0.05, 6)  # 924 splits
    res = permutation_test(t, r, n_resamples=600, seed=9)
    assert res["exact"] is False and res["n_permutations"] == 600
    assert "Monte Carlo" in res["method"]
    ref = stats.permutation_test(
        (t, r),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        n_resamples=600,
        alternative="greater",
        rng=np.random.default_rng(9),
    )
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["p_value"] == pytest.approx(brute_perm_p(list(t), list(r), "greater"), abs=0.06)
    assert res == permutation_test(t, r, n_resamples=600, seed=9)


def test_permutation_constant_values_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = permutation_test([0.5, 0.5, 0.5], [0.5, 0.5])
    assert res["delta"] == 0.0 and res["p_value"] == 1.0
    json.dumps(res, allow_nan=False)


def test_permutation_errors():
    with pytest.raises(HusaiError, match="empty"):
        permutation_test([], [0.1])
    with pytest.raises(HusaiError, match="NaN"):
        permutation_test([0.1, float("nan")], [0.2])
    with pytest.raises(HusaiError, match="alternative"):
        permutation_test([0.1, 0.3], [0.2, 0.4], alternative="bigger")
    with pytest.raises(HusaiError, match="n_resamples"):
        permutation_test([0.1, 0.3], [0.2, 0.4], n_resamples=-1)
    with pytest.raises(HusaiError, match="at least 2 values per group"):
        permutation_test([0.9], [0.1, 0.2])


# --- Holm -----------------------------------------------------------------------------------------


def brute_holm_reject(p: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure as written: reject in ascending order while p_(k) <=
    alpha / (m - k + 1), stop at the first failure (compared as (m - k + 1) p_(k) <= alpha so
    that boundary cases round the same way as the adjusted p-values)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rej = [False] * m
    for k, i in enumerate(order):
        if (m - k) * p[i] > alpha:
            break
        rej[i] = True
    return rej


def brute_holm_adjusted(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    for k, i in enumerate(order):
        adj[i] = min(1.0, max((m - j) * p[order[j]] for j in range(k + 1)))
    return adj


def test_holm_textbook_example():
    """Wikipedia's Holm-Bonferroni example: reject H1 and H4 at alpha = 0.05."""
    r = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert r["p_adjusted"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert r["reject"] == [True, False, False, True]
    assert r["n_tests"] == 4 and r["alpha"] == 0.05 and "Holm" in r["method"]
    json.dumps(r, allow_nan=False)


def test_holm_mapping_and_edge_cases():
    r = holm({"pwmcc": 0.001, "hungarian": 0.2, "shared@0.7": 0.02})
    assert r["p_adjusted"] == pytest.approx({"pwmcc": 0.003, "hungarian": 0.2, "shared@0.7": 0.04})
    assert r["reject"] == {"pwmcc": True, "hungarian": False, "shared@0.7": True}
    json.dumps(r, allow_nan=False)
    assert holm([]) == {
        "p_adjusted": [],
        "reject": [],
        "alpha": 0.05,
        "n_tests": 0,
        "method": r["method"],
    }
    assert holm([0.3])["p_adjusted"] == [0.3]
    assert holm(np.array([0.0, 1.0]))["p_adjusted"] == [0.0, 1.0]


@pytest.mark.parametrize(
    "p,alpha,match",
    [
        ([0.1, 1.2], 0.05, r"\[0, 1\]"),
        ([-0.01], 0.05, r"\[0, 1\]"),
        ([float("nan")], 0.05, "NaN"),
        ([0.1, None], 0.05, "None"),
        ({"a": 0.1, "b": None}, 0.05, "None"),
        (["x"], 0.05, "numbers"),
        ([[0.1, 0.2]], 0.05, "flat"),
        ([0.1], 0.0, "alpha"),
        ([0.1], True, "alpha"),
    ],
)
def test_holm_errors(p, alpha, match):
    with pytest.raises(HusaiError, match=match):
        holm(p, alpha=alpha)


p_lists = st.lists(
    st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from([0.0, 0.01, 0.05, 1.0])),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(p_lists, st.floats(0.001, 0.5))
def test_property_holm_equals_brute_force_and_is_monotone(p, alpha):
    r = holm(p, alpha=alpha)
    adj = r["p_adjusted"]
    assert adj == pytest.approx(brute_holm_adjusted(p), rel=1e-12, abs=0)
    assert r["reject"] == brute_holm_reject(p, alpha)
    assert r["reject"] == [a <= alpha for a in adj]
    for i, (pi, ai) in enumerate(zip(p, adj, strict=True)):
        assert pi <= ai <= min(1.0, len(p) * pi) + 1e-15  # between raw and Bonferroni
        for pj, aj in zip(p[i + 1 :], adj[i + 1 :], strict=True):
            if pi < pj:
                assert ai <= aj
            elif pi == pj:
                assert ai == aj
