"""Run-level aggregation (husai.experiments.aggregate) against brute force on small input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from husai.config import MetricsConfig
from husai.experiments.aggregate import (
    aggregate,
    best_lower_bound,
    multiple_testing,
    paired_gain,
)
from husai.metrics import seed_bootstrap_ci


def test_best_lower_bound_picks_max_feasible_with_tie_break() -> None:
    items = [(0.3, 1), (0.5, 2), (0.5, 3), (0.9, 4)]
    feasible = lambda i: i[1] != 4  # noqa: E731
    assert best_lower_bound(items, lambda i: i[0], feasible) == (0.5, 2)  # first max
    assert best_lower_bound(items, lambda i: i[0], feasible, tie=lambda i: i[1]) == (0.5, 3)
    assert best_lower_bound(items, lambda i: i[0], feasible, tie=lambda i: -i[1]) == (0.5, 2)
    assert best_lower_bound(items, lambda i: i[0], lambda _: False) is None


def _matrix(rng: np.random.Generator, n: int, shift: float) -> list[list[float]]:
    m = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        m[i, j] = m[j, i] = 0.3 + shift + 0.02 * rng.standard_normal()
    return m.tolist()


def _arch(rng: np.random.Generator, low: float, ev: float, shift: float, p: float) -> dict:
    return {
        "consistency": {
            key: {
                "matrix": _matrix(rng, 4, shift),
                "trained": {"mean": 0.3 + shift, "ci_low": 0.0, "ci_high": 1.0},
                "trained_minus_random": {"mean": low, "ci_low": low, "permutation": {"p_value": p}},
            }
            for key in ("pwmcc", "hungarian_mcc")
        },
        "quality": {"mean": {"explained_variance": ev}},
    }


def test_lambda_selection_and_holm_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    m = MetricsConfig(n_bootstrap=300)
    lams = [0, 1, 10, 100]
    # λ = 100 has the best bound but loses too much EV; λ = 1 and 10 tie → larger λ wins
    spec = {0: (0.01, 0.99, 0.0, 0.2), 1: (0.05, 0.97, 0.1, 0.01)}
    spec |= {10: (0.05, 0.95, 0.2, 0.03), 100: (0.3, 0.90, 0.3, 0.001)}
    archs = {f"lam{lam}": _arch(rng, *spec[lam]) for lam in lams}
    sweep = {
        "fields": ["consistency_lambda"],
        "grid": {"consistency_lambda": lams},
        "points": [{"label": f"lam{lam}", "values": {"consistency_lambda": lam}} for lam in lams],
    }
    metrics = {"datasets": {"toy": {"architectures": archs}}, "sae_order": list(archs)}
    metrics["sweep"] = sweep
    out = aggregate(metrics, m)
    (row,) = out["lambda_selection"]["datasets"]["toy"]
    ok = [lam for lam in lams if 0.99 - spec[lam][1] <= 0.05]
    best = max(ok, key=lambda lam: (spec[lam][0], lam))
    assert (row["lambda"], row["selected"], row["control"]) == (best, "lam10", "lam0")
    assert row["ev_drop"] == pytest.approx(0.04)
    want = seed_bootstrap_ci(
        np.array(archs["lam10"]["consistency"]["pwmcc"]["matrix"])
        - np.array(archs["lam0"]["consistency"]["pwmcc"]["matrix"]),
        n_resamples=300,
        method="bca",
    )
    assert row["gain_over_control"] == want
    assert row["verdict"] == ("above" if want["ci_low"] > 0 else "unresolved")
    # Holm over 4 configurations × 2 metrics, by hand
    ps = {f"toy/lam{lam}/{k}": spec[lam][3] for lam in lams for k in ("pwmcc", "hungarian_mcc")}
    order = sorted(ps, key=ps.get)
    running, brute = 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(ps) - i) * ps[key]))
        brute[key] = running
    got = multiple_testing(metrics["datasets"])["p_adjusted"]
    assert got == pytest.approx(brute, rel=1e-12)
    # the Pareto front of (EV, PWMCC): every point trades EV for PWMCC here
    assert out["pareto"]["toy"] == ["lam100", "lam10", "lam1", "lam0"]


def test_no_control_in_a_group_selects_nothing() -> None:
    sweep = {
        "fields": ["consistency_lambda"],
        "grid": {"consistency_lambda": [1, 2]},
        "points": [{"label": f"l{v}", "values": {"consistency_lambda": v}} for v in (1, 2)],
    }
    rng = np.random.default_rng(1)
    archs = {f"l{v}": _arch(rng, 0.1, 0.9, 0.1, 0.5) for v in (1, 2)}
    metrics = {"datasets": {"d": {"architectures": archs}}, "sae_order": list(archs)}
    out = aggregate({**metrics, "sweep": sweep}, MetricsConfig(n_bootstrap=100))
    assert out["lambda_selection"]["datasets"]["d"] == [{"group": "", "control": None}]


def test_paired_gain_uses_the_configured_level() -> None:
    rng = np.random.default_rng(2)
    a, b = _matrix(rng, 5, 0.2), _matrix(rng, 5, 0.0)
    g90 = paired_gain(a, b, MetricsConfig(n_bootstrap=200, ci_level=0.9))
    g99 = paired_gain(a, b, MetricsConfig(n_bootstrap=200, ci_level=0.99))
    assert g99["ci_low"] < g90["ci_low"] <= g90["ci_high"] < g99["ci_high"]
