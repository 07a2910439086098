from itertools import permutations

import numpy as np
import pytest
import torch
from _metrics_brute import abs_cos
from hypothesis import given, settings
from hypothesis import strategies as st

from husai.errors import HusaiError
from husai.metrics.recovery import recovery

TOL = 1e-5


def brute_recovery(true: np.ndarray, w: np.ndarray, t: float) -> tuple[float, float, float]:
    """Loops: best one-to-one assignment over all injections, averaged over true features."""
    n_t, n_w = len(true), len(w)
    sim = [[abs_cos(u, v) for v in w] for u in true]
    if n_t <= n_w:
        hung = max(sum(sim[i][p[i]] for i in range(n_t)) for p in permutations(range(n_w), n_t))
    else:  # each latent gets one distinct true feature; the rest count 0
        hung = max(sum(sim[p[j]][j] for j in range(n_w)) for p in permutations(range(n_t), n_w))
    best = [max(row) for row in sim]
    return hung / n_t, sum(best) / n_t, sum(b > t for b in best) / n_t


@st.composite
def pair(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d = draw(st.integers(1, 5))
    n_t, n_w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    true = rng.standard_normal((n_t, d)).astype(np.float32)
    w = rng.standard_normal((n_w, d)).astype(np.float32)
    if draw(st.booleans()):  # plant noisy, rescaled, sign-flipped copies
        k = min(n_t, n_w)
        w[:k] = true[:k] * rng.choice([-2.0, 0.5], size=(k, 1)) + 0.1 * rng.standard_normal((k, d))
    if draw(st.booleans()):
        w[rng.integers(n_w)] = 0.0
    return true, w


@settings(max_examples=80, deadline=None)
@given(pair())
def test_recovery_matches_brute_force(tw):
    true, w = tw
    r = recovery(true, w, threshold=0.8)
    hung, mmcs, frac = brute_recovery(true, w, 0.8)
    assert r["hungarian_mcc"] == pytest.approx(hung, abs=TOL)
    assert r["mean_max_cos"] == pytest.approx(mmcs, abs=TOL)
    sim = [max(abs_cos(u, v) for v in w) for u in true]
    if all(abs(s - 0.8) > 1e-4 for s in sim):  # strict ">" is ill-posed within float error
        assert r["fraction_recovered"] == pytest.approx(frac, abs=1e-12)
    assert (r["n_true"], r["n_latents"], r["threshold"]) == (len(true), len(w), 0.8)
    assert 0 <= r["hungarian_mcc"] <= r["mean_max_cos"] + TOL <= 1 + 2 * TOL


def test_exact_copy_permuted_scaled_and_extra_latents():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(10, 6, generator=g)
    w = torch.cat([-3 * true[torch.randperm(10, generator=g)], torch.randn(5, 6, generator=g)])
    r = recovery(true, w)
    assert r["hungarian_mcc"] == pytest.approx(1.0, abs=1e-6)
    assert r["fraction_recovered"] == 1.0 and r["mean_max_cos"] == pytest.approx(1.0, abs=1e-6)


def test_fewer_latents_than_true_features_counts_unmatched_as_zero():
    true = torch.eye(4)
    r = recovery(true, torch.eye(4)[:2])
    assert r["hungarian_mcc"] == pytest.approx(0.5)
    assert r["fraction_recovered"] == 0.5 and r["n_latents"] == 2


def test_errors():
    with pytest.raises(HusaiError, match="widths"):
        recovery(torch.eye(3), torch.eye(4))
    with pytest.raises(HusaiError, match="threshold"):
        recovery(torch.eye(3), torch.eye(3), threshold=1.5)
    with pytest.raises(HusaiError):
        recovery(torch.eye(3), torch.tensor([[float("nan"), 0.0, 0.0]]))
