"""husai.metrics.probing against SAEBench's own sparse-probing code (sae-bench 0.6.0's
`evals/sparse_probing/probe_training.py`): the same top-k mean-difference selection and,
on those columns, the same test accuracy as its scikit-learn probe. Skipped where sae-bench
is not installed — CI leaves it out: it pins numpy < 2 and datasets < 4 (the `saebench`
extra installs it beside husai's other extras)."""

from __future__ import annotations

import pytest
import torch

from husai.metrics.probing import balanced_split, logistic_regression, top_k_mean_diff

pt = pytest.importorskip(
    "sae_bench.evals.sparse_probing.probe_training",
    reason="sae-bench not installed (pip install -e '.[saebench]'; CI leaves it out: it pins "
    "numpy < 2 and datasets < 4)",
)


def test_selection_and_probe_match_saebench() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g).clamp(min=0) * torch.rand(16, generator=g) * 4
    y = ((x[:, 3] - x[:, 7] + 0.5 * torch.randn(600, generator=g)) > 0).int()
    train, test = balanced_split(y, seed=1)
    for k in (1, 2, 5):
        mask = pt.get_top_k_mean_diff_mask(x[train], y[train], k)  # True = dropped
        ours = top_k_mean_diff(x[train], y[train], k)
        assert set((~mask).nonzero().flatten().tolist()) == set(ours.tolist())
        cols = ours.sort().values
        xa, xb = x[train][:, cols], x[test][:, cols]
        _, acc = pt.train_sklearn_probe(xa, y[train], xb, y[test])
        theta = logistic_regression(xa, y[train])
        mine = float(
            (((xb.double() @ theta[:-1] + theta[-1]) > 0).int() == y[test]).double().mean()
        )
        assert mine == pytest.approx(acc, abs=1.5 / len(test))  # solver tolerance: ≤ 1 row
