"""Sparse probing (husai.metrics.probing) against brute-force computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from husai.errors import HusaiError
from husai.metrics.probing import (
    balanced_split,
    logistic_regression,
    probe_task,
    roc_auc,
    sparse_probes,
    sparse_probing,
    top_k_mean_diff,
)


def _data(n: int = 60, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.8 * torch.randn(n, generator=g) > 0).long()
    return x, y


def test_logistic_regression_matches_a_loop_objective_minimised_without_gradients() -> None:
    x, y = _data()

    def objective(theta: np.ndarray) -> float:  # ½‖w‖² + Σ log(1 + exp(−s·(w·x + b))), loops
        w, b = theta[:-1], theta[-1]
        total = 0.5 * sum(v * v for v in w)
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            z = sum(a * c for a, c in zip(row, w, strict=True)) + b
            total += math.log1p(math.exp(-(1 if label else -1) * z))
        return total

    ref = minimize(
        objective,
        np.zeros(5),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000, "maxfev": 20000},
    ).x
    np.testing.assert_allclose(logistic_regression(x, y).numpy(), ref, atol=2e-4)


def test_logistic_regression_matches_scikit_learn_when_installed() -> None:
    lm = pytest.importorskip("sklearn.linear_model", reason="scikit-learn not installed")
    x, y = _data(n=200, d=6, seed=3)
    ref = lm.LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x.numpy(), y.numpy())
    theta = logistic_regression(x, y).numpy()
    np.testing.assert_allclose(theta[:-1], ref.coef_[0], atol=1e-4)
    assert theta[-1] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_batched_padded_problems_equal_their_one_by_one_fits_and_scipy() -> None:
    x, y = _data(n=80, d=3, seed=5)
    sep = x.clone()
    sep[:, 0] = torch.where(y.bool(), 3.0, -3.0)  # separable: the penalty keeps θ finite
    parts = [x[:, :1], x, sep]
    batch = torch.stack([torch.nn.functional.pad(p, (0, 3 - p.shape[1])) for p in parts])
    theta = logistic_regression(batch, y.expand(3, -1))
    for i, p in enumerate(parts):
        k = p.shape[1]
        one = logistic_regression(p, y)
        torch.testing.assert_close(theta[i, :k], one[:k], atol=1e-8, rtol=0)
        assert theta[i, -1] == pytest.approx(float(one[-1]), abs=1e-8)
        assert float(theta[i, k:-1].abs().sum()) == 0.0  # padding gets weight 0
        s = (2 * y - 1).double().numpy()
        a = p.double().numpy()

        def f(t, a=a, s=s):
            z = s * (a @ t[:-1] + t[-1])
            return 0.5 * t[:-1] @ t[:-1] + np.logaddexp(0, -z).sum()

        ref = minimize(f, np.zeros(k + 1), method="BFGS", options={"gtol": 1e-9}).x
        np.testing.assert_allclose(one.numpy(), ref, atol=1e-4)


def test_roc_auc_counts_every_positive_negative_pair() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 30).astype(float)  # many ties
    labels = rng.random(30) > 0.4
    pairs = [
        1.0 if p > q else 0.5 if p == q else 0.0
        for p, q in itertools.product(scores[labels], scores[~labels])
    ]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    with pytest.raises(HusaiError, match="positives and negatives"):
        roc_auc(scores, np.ones(30, dtype=bool))


def test_top_k_mean_diff_matches_a_loop_and_breaks_ties_by_index() -> None:
    x, y = _data(n=40, d=7, seed=1)
    x[:, 5] = x[:, 2]  # an exact tie: the lower index comes first
    diffs = []
    for j in range(7):
        pos = [x[i, j].item() for i in range(40) if y[i]]
        neg = [x[i, j].item() for i in range(40) if not y[i]]
        diffs.append(abs(sum(pos) / len(pos) - sum(neg) / len(neg)))
    order = sorted(range(7), key=lambda j: (-round(diffs[j], 9), j))
    assert top_k_mean_diff(x, y, 7).tolist() == order
    assert top_k_mean_diff(x, y, 3).tolist() == order[:3]
    assert order.index(2) < order.index(5)


def test_balanced_split_is_balanced_stratified_disjoint_and_seeded() -> None:
    y = torch.zeros(100, dtype=torch.bool)
    y[:30] = True
    train, test = balanced_split(y, seed=4, max_per_class=25)
    assert not set(train.tolist()) & set(test.tolist())
    assert int(y[test].sum()) == int((~y[test]).sum()) == 5  # 20% of 25 per class
    assert int(y[train].sum()) == int((~y[train]).sum()) == 20
    again = balanced_split(y, seed=4, max_per_class=25)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(balanced_split(y, seed=5, max_per_class=25)[0], train)


def test_probe_task_finds_a_planted_latent_and_skips_rare_labels() -> None:
    x, y = _data(n=200, d=5, seed=2)
    label = y.bool()

    def planted(rows: torch.Tensor) -> torch.Tensor:  # latent 3 is a noisy copy of x[:, 0]
        z = torch.zeros(len(rows), 8)
        z[:, 3] = rows[:, 0].clamp(min=0) * 5
        z[:, 6] = rows[:, 1].abs()
        return z

    r = probe_task(x, label, {"trained": [planted, planted]}, [1, 2], min_positives=10)
    assert r["trained"]["1"]["columns"] == [[3], [3]]
    assert r["raw_top_k"]["1"]["columns"] == [0]
    assert r["trained"]["1"]["auc"][0] > 0.8 and r["raw_full"]["auc"] > 0.8
    rare = torch.zeros(200, dtype=torch.bool)
    rare[:5] = True
    assert "skipped" in probe_task(x, rare, {"trained": [planted]}, [1], min_positives=10)


def test_sparse_probing_tallies_wins_losses_and_ties() -> None:
    x, y = _data(n=200, d=5, seed=2)
    labels = {"x0": y.bool(), "x1": x[:, 1] > 0, "rare": torch.arange(200) < 3}

    def copy_x0(rows: torch.Tensor) -> torch.Tensor:
        return rows[:, :1].clamp(min=0)

    block = sparse_probing(
        x, labels, {"trained": [copy_x0] * 3}, [1], min_positives=10, boot={"n_resamples": 200}
    )
    assert block["n_tasks"] == 3 and block["n_probed"] == 2
    t = block["tasks"]
    # the one latent is x0's positive part: it ties with raw x0 on task x0, loses on x1
    assert t["x1"]["trained"]["1"]["vs_raw_top_k"] == "loss"
    calls = [t[n]["trained"]["1"]["vs_raw_top_k"] for n in ("x0", "x1")]
    tally = block["tally"]["trained"]["vs_raw_top_k"]["1"]
    assert tally == {
        c + "s" if c != "loss" else "losses": calls.count(c) for c in ("win", "loss", "tie")
    }
    assert tally["wins"] + tally["losses"] + tally["ties"] == 2
    with pytest.raises(HusaiError, match="≥ 1"):
        sparse_probing(x, labels, {}, [0])


def test_sources_narrower_than_k_use_all_their_columns_and_match_their_own_fit() -> None:
    """A source with fewer columns than k (a 16-latent SAE beside 20 raw dimensions; found by
    the sweep tests) is probed on all of them, as it would be alone."""
    g = torch.Generator().manual_seed(3)
    y = torch.rand(80, generator=g) < 0.5
    wide, narrow = torch.randn(80, 20, generator=g), torch.randn(80, 16, generator=g)
    narrow[:, 4] += 2.0 * y
    ya, yb = y[:60], y[60:]
    both = sparse_probes([(wide[:60], wide[60:]), (narrow[:60], narrow[60:])], ya, yb, [5, 20])
    alone = sparse_probes([(narrow[:60], narrow[60:])], ya, yb, [5, 20])[0]
    assert len(both[1]["20"]["columns"]) == 16 and len(both[0]["20"]["columns"]) == 20
    for k in ("5", "20"):
        assert both[1][k]["columns"] == alone[k]["columns"]
        assert both[1][k]["auc"] == pytest.approx(alone[k]["auc"], abs=1e-9)
