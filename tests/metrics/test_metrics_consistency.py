import numpy as np
import pytest
import torch
from _metrics_brute import best, hungarian, pwmcc, shared
from hypothesis import given, settings
from hypothesis import strategies as st

from husai.errors import HusaiError
from husai.metrics import best_match, hungarian_mcc, pairwise, random_dictionaries
from husai.metrics import pwmcc as m_pwmcc
from husai.metrics import shared_fraction as m_shared

TOL = 1e-5


def rand(rng: np.random.Generator, n: int, d: int, zero_rows: int = 0) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[rng.choice(n, size=min(zero_rows, n), replace=False)] = 0.0
    return x


@st.composite
def pair(draw, max_n: int = 6, square: bool = False):
    """Two small dictionaries (with optional zero rows) sharing a width d."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d = draw(st.integers(1, 5))
    n_a = draw(st.integers(1, max_n))
    n_b = n_a if square else draw(st.integers(1, max_n))
    z = draw(st.integers(0, 1))
    a, b = rand(rng, n_a, d, z), rand(rng, n_b, d, z)
    if draw(st.booleans()):  # plant near-copies so scores span the whole [0, 1] range
        k = min(n_a, n_b)
        b[:k] = a[:k] * rng.choice([-3.0, 0.5], size=(k, 1)) + 0.05 * rng.standard_normal((k, d))
    return a, b


@settings(max_examples=60, deadline=None)
@given(pair(max_n=8))
def test_best_match_pwmcc_shared_match_brute_force(ab):
    a, b = ab
    ba, bb = best_match(a, b)
    ra, rb = best(a, b)
    np.testing.assert_allclose(ba.numpy(), ra, atol=TOL)
    np.testing.assert_allclose(bb.numpy(), rb, atol=TOL)
    assert m_pwmcc(a, b) == pytest.approx(pwmcc(a, b), abs=TOL)
    for t in (0.0, 0.3, 0.7, 0.95):
        # skip thresholds within float error of an actual value (strict ">" is ill-posed there)
        if any(abs(x - t) < 1e-4 for x in ra + rb):
            continue
        assert m_shared(a, b, t) == pytest.approx(shared(a, b, t), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(pair(max_n=6))
def test_hungarian_matches_permutation_brute_force_incl_rectangular(ab):
    a, b = ab
    assert hungarian_mcc(a, b) == pytest.approx(hungarian(a, b), abs=TOL)


@settings(max_examples=60, deadline=None)
@given(pair(max_n=10, square=True))
def test_square_properties(ab):
    a, b = ab
    p, h = m_pwmcc(a, b), hungarian_mcc(a, b)
    assert 0.0 <= h <= p + 1e-6
    assert p <= 1.0 and h >= 0.0
    assert m_pwmcc(b, a) == pytest.approx(p, abs=1e-6)
    assert hungarian_mcc(b, a) == pytest.approx(h, abs=1e-6)
    assert m_shared(b, a, 0.5) == pytest.approx(m_shared(a, b, 0.5))


@settings(max_examples=40, deadline=None)
@given(pair(max_n=10))
def test_rectangular_hungarian_bounded_by_smaller_side(ab):
    """Rectangular: hungarian <= mean best match of the smaller dictionary (not of pwmcc)."""
    a, b = ab
    ba, bb = best_match(a, b)
    small = ba if len(a) <= len(b) else bb
    assert hungarian_mcc(a, b) <= small.double().mean().item() + 1e-6


def test_identity_and_invariances():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rand(rng, 50, 16))
    assert m_pwmcc(a, a) == pytest.approx(1.0, abs=1e-6)
    assert hungarian_mcc(a, a) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(50, generator=g)
    signs = torch.where(torch.rand(50, 1, generator=g) < 0.5, -1.0, 1.0)
    scale = torch.rand(50, 1, generator=g) * 100 + 1e-3
    b = a[perm] * signs * scale
    assert m_pwmcc(a, b) == pytest.approx(1.0, abs=1e-6)
    assert hungarian_mcc(a, b) == pytest.approx(1.0, abs=1e-6)
    assert m_shared(a, b, 0.99) == 1.0
    # float64 input, numpy input and huge/tiny scales give the same answer
    assert m_pwmcc(a.double() * 1e30, b.numpy() * 1e-30) == pytest.approx(1.0, abs=1e-6)
    assert m_pwmcc(a * 1e30, b * 1e-30) == pytest.approx(1.0, abs=1e-6)  # float32 over/underflow
    assert m_pwmcc(a.half(), b.to(torch.bfloat16)) == pytest.approx(1.0, abs=1e-2)


def test_zero_rows_have_cosine_zero():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    ba, bb = best_match(a, a)
    assert ba.tolist() == [1.0, 0.0] and bb.tolist() == [1.0, 0.0]
    assert m_pwmcc(a, a) == 0.5


@pytest.mark.parametrize("block_size", [1, 3, 7, 64, 10_000])
def test_block_size_invariance(block_size):
    rng = np.random.default_rng(3)
    a, b = rand(rng, 61, 12, zero_rows=2), rand(rng, 37, 12)
    full_a, full_b = best_match(a, b, block_size=10**9)
    ba, bb = best_match(a, b, block_size=block_size)
    torch.testing.assert_close(ba, full_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(bb, full_b, rtol=0, atol=1e-6)
    assert m_pwmcc(a, b, block_size) == pytest.approx(m_pwmcc(a, b), abs=1e-6)
    assert m_shared(a, b, 0.4, block_size) == m_shared(a, b, 0.4)


def test_pairwise_layout_and_consistency_with_single_pair_calls():
    rng = np.random.default_rng(5)
    base = rand(rng, 20, 8)
    dicts = [base + 0.3 * rand(rng, 20, 8) for _ in range(4)]
    for hung in (True, False):
        r = pairwise(dicts, thresholds=(0.5, 0.9), block_size=3, hungarian=hung)
        assert r["n"] == 4 and r["thresholds"] == [0.5, 0.9]
        assert r["pairs"] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
        metrics = [("pwmcc", r["pwmcc"], m_pwmcc)]
        metrics += [
            (f"sf{t}", r["shared_fraction"][t], lambda a, b, t=t: m_shared(a, b, t))
            for t in (0.5, 0.9)
        ]
        if hung:
            metrics.append(("hung", r["hungarian_mcc"], hungarian_mcc))
        else:
            assert r["hungarian_mcc"] is None
        for _, entry, fn in metrics:
            m = entry["matrix"]
            assert m.shape == (4, 4)
            np.testing.assert_array_equal(m, m.T)
            np.testing.assert_array_equal(np.diag(m), 1.0)
            for (i, j), v in zip(r["pairs"], entry["values"], strict=True):
                assert isinstance(v, float) and v == m[i, j]
                assert v == pytest.approx(fn(dicts[i], dicts[j]), abs=1e-6)


def test_pairwise_computes_one_best_match_per_pair(monkeypatch):
    import husai.metrics.consistency as c

    calls = []
    orig = c.best_match_scaled
    monkeypatch.setattr(c, "best_match_scaled", lambda *a: calls.append(1) or orig(*a))
    pairwise(random_dictionaries(4, 16, 8, seed=0), thresholds=(0.1, 0.2, 0.3), hungarian=False)
    assert len(calls) == 6


def test_errors():
    a, b = torch.randn(5, 4), torch.randn(6, 3)
    with pytest.raises(HusaiError, match=r"\(5, 4\).*\(6, 3\)"):
        m_pwmcc(a, b)
    with pytest.raises(HusaiError, match=r"\(5, 4\).*\(6, 3\)"):
        hungarian_mcc(a, b)
    bad = a.clone()
    bad[2, 1] = float("nan")
    for fn in (m_pwmcc, hungarian_mcc, best_match):
        with pytest.raises(HusaiError, match="NaN"):
            fn(bad, a)
        with pytest.raises(HusaiError, match="NaN"):
            fn(a, bad * float("inf"))
    with pytest.raises(HusaiError, match="2-D"):
        m_pwmcc(torch.randn(4), a)
    with pytest.raises(HusaiError, match="empty"):
        m_pwmcc(torch.randn(0, 4), a)
    with pytest.raises(HusaiError, match="block_size"):
        m_pwmcc(a, a, block_size=0)
    with pytest.raises(HusaiError, match="threshold"):
        m_shared(a, a, 1.5)
    with pytest.raises(HusaiError, match="at least 2"):
        pairwise([a])
    with pytest.raises(HusaiError, match="dictionaries 0 and 2"):
        pairwise([a, a, b])
