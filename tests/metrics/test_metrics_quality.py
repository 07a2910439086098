import pytest
import torch

from husai.errors import HusaiError
from husai.metrics import (
    dead_fraction,
    explained_variance,
    firing_counts,
    loss_recovered,
    mean_l0,
    mse,
    reconstruction_quality,
)

X = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])


def test_mse_by_hand():
    x_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    assert mse(X, x_hat) == pytest.approx((1 + 4) / 6)
    assert mse(X, X) == 0.0


def test_explained_variance_by_hand():
    assert explained_variance(X, X) == 1.0
    assert explained_variance(X, X.mean(0).expand_as(X)) == pytest.approx(0.0, abs=1e-12)
    # per-dim means (3, 4): SST = (4+0+4) + (4+4+0) = 16; SSE = 1 + 4 = 5
    x_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    assert explained_variance(X, x_hat) == pytest.approx(1 - 5 / 16)
    assert explained_variance(X, torch.zeros_like(X)) < 0


def test_sparsity_by_hand():
    codes = torch.tensor([[0.0, 1.5, 0.0, 2.0], [0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    assert mean_l0(codes) == pytest.approx(4 / 3)
    assert firing_counts(codes).tolist() == [0, 2, 0, 2]
    assert dead_fraction(codes) == 0.5


def test_seeds_axis_returns_lists():
    x_hat = torch.stack([X, X.mean(0).expand_as(X)])
    assert explained_variance(X, x_hat) == pytest.approx([1.0, 0.0], abs=1e-12)
    assert mse(torch.stack([X, X]), x_hat) == pytest.approx([0.0, mse(X, x_hat[1])])
    codes = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    assert mean_l0(codes) == [1.0, 1.5]
    assert firing_counts(codes).tolist() == [[2, 0], [1, 2]]
    assert dead_fraction(codes) == [0.5, 0.0]


def test_loss_recovered():
    assert loss_recovered(2.0, 2.0, 6.0) == 1.0
    assert loss_recovered(2.0, 6.0, 6.0) == 0.0
    assert loss_recovered(2.0, 3.0, 6.0) == 0.75


def test_quality_errors():
    with pytest.raises(HusaiError, match="shapes differ"):
        mse(X, X[:2])
    with pytest.raises(HusaiError, match="NaN"):
        mse(X, torch.full_like(X, float("nan")))
    with pytest.raises(HusaiError, match="zero variance"):
        explained_variance(torch.ones(3, 2), torch.ones(3, 2))
    with pytest.raises(HusaiError, match="ablated_loss equals clean_loss"):
        loss_recovered(1.0, 2.0, 1.0)
    with pytest.raises(HusaiError, match="not finite"):
        loss_recovered(1.0, float("nan"), 2.0)
    with pytest.raises(HusaiError, match=r"\[n, d\]"):
        mean_l0(torch.ones(4))


def test_reconstruction_quality_against_a_target():
    """A transcoder's prediction is scored against its target y (here X), not its input."""
    y_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    codes = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0], [3.0, 0.0, 0.0]])
    q = reconstruction_quality(X, y_hat, codes)
    assert q == pytest.approx(
        {"mse": 5 / 6, "explained_variance": 1 - 5 / 16, "l0": 4 / 3, "dead_fraction": 1 / 3}
    )
    per_seed = reconstruction_quality(X, torch.stack([y_hat, X]), torch.stack([codes, codes]))
    assert per_seed[0] == pytest.approx(q) and per_seed[1]["explained_variance"] == 1.0
    with pytest.raises(HusaiError, match="different row counts"):
        reconstruction_quality(X, y_hat, codes[:2])
