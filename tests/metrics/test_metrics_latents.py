import numpy as np
import pytest
import torch
from _metrics_brute import best, pearson, shared_latents, subspace
from hypothesis import given, settings
from hypothesis import strategies as st

from husai.errors import HusaiError
from husai.metrics import (
    MatchedCorrelation,
    matched_correlation,
    per_latent_best,
    shared_latent_rate,
    subspace_similarity,
)


def test_per_latent_best_matches_brute_force():
    rng = np.random.default_rng(0)
    dicts = [rng.standard_normal((n, 4)) for n in (5, 7, 3)]
    out = per_latent_best(dicts, block_size=2)
    for i in range(3):
        assert out[i].shape == (len(dicts[i]), 3) and np.isnan(out[i][:, i]).all()
        for j in range(3):
            if i != j:
                ref, _ = best(dicts[i], dicts[j])
                np.testing.assert_allclose(out[i][:, j], ref, atol=1e-5)


def test_matched_correlation_matches_loops_and_streams():
    rng = np.random.default_rng(1)
    xa = np.maximum(rng.standard_normal((50, 6)), 0)
    xb = np.maximum(rng.standard_normal((50, 4)), 0)
    xa[:, 2] = 0.0  # dead latent: correlation defined as 0
    rows, cols = np.array([0, 2, 5, 3]), np.array([1, 0, 3, 2])
    ref = [pearson(list(xa[:, i]), list(xb[:, j])) for i, j in zip(rows, cols, strict=True)]
    np.testing.assert_allclose(matched_correlation(xa, xb, rows, cols), ref, atol=1e-10)
    acc = MatchedCorrelation(rows, cols)
    for s in range(0, 50, 7):
        acc.update(torch.tensor(xa[s : s + 7]), torch.tensor(xb[s : s + 7]))
    np.testing.assert_allclose(acc.result(), ref, atol=1e-10)
    assert matched_correlation(xa, xa, np.arange(6), np.arange(6))[0] == pytest.approx(1.0)
    with pytest.raises(HusaiError, match="same B"):
        acc.update(xa[:3], xb[:4])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.sampled_from([0.0, 0.3, 0.7]))
def test_shared_latent_rate_matches_brute_force(seed, n, t):
    rng = np.random.default_rng(seed)
    ea, da = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
    eb = ea[::-1] + 0.3 * rng.standard_normal((n, 3))
    db = da[::-1] + 0.3 * rng.standard_normal((n, 3))
    res = shared_latent_rate(ea, da, eb, db, threshold=t)
    assert res["n_shared"] == shared_latents(ea, da, eb, db, t)
    assert res["rate"] == pytest.approx(res["n_shared"] / n)
    assert res["shared_a"].sum() == res["shared_b"].sum() == res["n_shared"]


def test_shared_latent_rate_of_a_copy_is_one():
    e, d = torch.randn(20, 8), torch.randn(20, 8)
    perm = torch.randperm(20)
    assert shared_latent_rate(e, d, -e[perm], 3 * d[perm])["rate"] == 1.0


def test_subspace_matches_numpy_svd():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((12, 6)), rng.standard_normal((9, 6))
    for r in (1, 3, 6):
        assert subspace_similarity(a, b, r) == pytest.approx(subspace(a, b, r), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(2, 6))
def test_subspace_properties(seed, n, d):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=g), torch.randn(n + 1, d, generator=g)
    perm = torch.randperm(n, generator=g)
    copy = a[perm] * (torch.rand(n, 1, generator=g) + 0.5) * torch.sign(torch.randn(n, 1))
    assert subspace_similarity(a, copy) == pytest.approx(1.0, abs=1e-5)
    s_ab = subspace_similarity(a, b)
    assert 0.0 <= s_ab <= 1.0
    assert s_ab == pytest.approx(subspace_similarity(b, a), abs=1e-6)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    assert subspace_similarity(a @ q, b @ q) == pytest.approx(s_ab, abs=1e-4)
