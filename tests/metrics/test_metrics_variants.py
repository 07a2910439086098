"""Named consistency variants (husai.metrics.variants / variant_summary) against independent
full-matrix scipy computations (float64 numpy cosines) on small inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from husai.errors import HusaiError
from husai.metrics import pairwise_groups, random_dictionaries_like
from husai.metrics.variant_summary import summarise_variants, variant_groups
from husai.metrics.variants import (
    SHARED_CURVE_THRESHOLDS,
    hungarian_signed,
    shared_rates,
    signed_assignment,
)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _scipy_signed(a: np.ndarray, b: np.ndarray) -> float:
    c = _cos(a, b)
    r, k = linear_sum_assignment(-c)  # cost = −cos, as Song et al.'s evaluate_mcc.py
    return float(c[r, k].mean())


def _scipy_abs(a: np.ndarray, b: np.ndarray) -> float:
    c = np.abs(_cos(a, b))
    r, k = linear_sum_assignment(-c)
    return float(c[r, k].mean())


def _rng_pair(seed: int, n_a: int, n_b: int, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.standard_normal((n_a, d)).astype(np.float32), g.standard_normal((n_b, d)).astype(
        np.float32
    )


@pytest.mark.parametrize(("seed", "n_a", "n_b"), [(0, 7, 7), (1, 5, 9), (2, 9, 4)])
def test_signed_hungarian_matches_scipy_on_the_full_matrix(seed: int, n_a: int, n_b: int) -> None:
    a, b = _rng_pair(seed, n_a, n_b)
    assert hungarian_signed(a, b, method="exact") == pytest.approx(_scipy_signed(a, b), abs=1e-6)
    full = signed_assignment(a, b, method="sparse", top_m=max(n_a, n_b))
    assert full.n_fallback == 0
    assert full.mean == pytest.approx(_scipy_signed(a, b), abs=1e-6)


def test_negated_rows_separate_signed_from_absolute() -> None:
    g = np.random.default_rng(3)
    a = g.standard_normal((8, 5)).astype(np.float32)
    perm = g.permutation(8)
    b = 2.0 * a[perm]
    b[:4] *= -1  # half the latents came back negated
    signed, absolute = hungarian_signed(a, b), _scipy_abs(a, b)
    assert absolute == pytest.approx(1.0, abs=1e-6)
    assert signed == pytest.approx(_scipy_signed(a, b), abs=1e-6)
    assert signed < absolute - 0.1
    # the signed matching is not the |cos| one: it avoids the negated copies
    m = signed_assignment(a, b)
    partner = dict(zip(m.rows.tolist(), m.cols.tolist(), strict=True))
    true = {int(perm[k]): k for k in range(8)}
    assert any(partner[i] != true[i] for i in perm[:4])
    assert hungarian_signed(a, -a) == pytest.approx(_scipy_signed(a, -a), abs=1e-6)


def test_streamed_sparse_signed_matches_exact_on_near_copies() -> None:
    g = np.random.default_rng(4)
    a = g.standard_normal((40, 12)).astype(np.float32)
    b = (a[g.permutation(40)] + 0.05 * g.standard_normal((40, 12))).astype(np.float32)
    exact = signed_assignment(a, b, method="exact")
    sparse = signed_assignment(a, b, method="sparse", top_m=3, block_size=7)
    assert sparse.n_fallback == 0
    assert sparse.mean == pytest.approx(exact.mean, abs=1e-6)
    assert sparse.mean == pytest.approx(_scipy_signed(a, b), abs=1e-6)
    with pytest.raises(HusaiError):
        signed_assignment(a, b, method="sparse", top_m=0)


def _shared_loop(ea, da, eb, db, t: float, signed: bool) -> float:
    """P&B shared rate at one threshold from scratch: two scipy matchings on full matrices."""
    ce, cd = _cos(ea, eb), _cos(da, db)
    if not signed:
        ce, cd = np.abs(ce), np.abs(cd)
    re, ke = linear_sum_assignment(-ce)
    rd, kd = linear_sum_assignment(-cd)
    pe, pd = dict(zip(re, ke, strict=True)), dict(zip(rd, kd, strict=True))
    k = sum(1 for i in pe if i in pd and pe[i] == pd[i] and ce[i, pe[i]] >= t and cd[i, pd[i]] >= t)
    return 0.5 * (k / len(ea) + k / len(eb))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(("n_a", "n_b"), [(10, 10), (8, 11)])
def test_shared_rate_curve_matches_a_loop_over_thresholds(signed: bool, n_a: int, n_b: int) -> None:
    g = np.random.default_rng(5)
    ea, da = g.standard_normal((n_a, 6)), g.standard_normal((n_a, 6))
    k = min(n_a, n_b)
    eb, db = g.standard_normal((n_b, 6)), g.standard_normal((n_b, 6))
    noise = np.linspace(0.0, 1.5, k)[:, None]  # a range of similarities across the sweep
    sign = np.where(np.arange(k) % 3 == 0, -1.0, 1.0)[:, None]  # some latents negated
    eb[:k] = sign * (ea[:k] + noise * g.standard_normal((k, 6)))
    db[:k] = sign * (da[:k] + noise * g.standard_normal((k, 6)))
    ea, da, eb, db = (x.astype(np.float32) for x in (ea, da, eb, db))
    curve = shared_rates(ea, da, eb, db, signed=signed)
    loop = [_shared_loop(ea, da, eb, db, t, signed) for t in SHARED_CURVE_THRESHOLDS]
    assert curve.tolist() == pytest.approx(loop)
    assert len(set(loop)) > 2  # the sweep is not trivially flat
    assert np.all(np.diff(curve) <= 0)  # a higher threshold shares fewer latents
    sparse = shared_rates(ea, da, eb, db, signed=signed, method="sparse", top_m=max(n_a, n_b))
    assert sparse.tolist() == pytest.approx(loop)


def test_shared_rates_checks_shapes() -> None:
    a = np.ones((3, 4), np.float32)
    with pytest.raises(HusaiError, match="same number of latents"):
        shared_rates(a, a[:2], a, a)


@dataclass(frozen=True)
class Settings:
    ci_level: float = 0.9
    n_bootstrap: int = 200
    baseline_seed: int = 1


def test_summary_blocks_are_made_of_the_per_pair_variants() -> None:
    r = random_dictionaries_like([(9, 5)] * 12, 0)
    base = [x + 0.0 for x in r[:3]]
    dec = {"trained": [base[0], base[0] + 0.3 * r[3], -base[0] + 0.3 * r[4]], "random": r[5:8]}
    enc = {"trained": [d + 0.1 * e for d, e in zip(dec["trained"], r[8:11], strict=True)]}
    enc["random"] = r[9:12]
    groups = pairwise_groups(dec, (0.5,), block_size=4)
    vg = variant_groups(dec, enc, groups, block_size=4, thresholds=(0.5, 0.9))
    out = summarise_variants(vg, Settings(), thresholds=(0.5, 0.9))
    t = out["hungarian_signed"]["trained"]["pairs"]
    for (i, j), v in zip(groups["trained"]["pairs"], t, strict=True):
        assert v == pytest.approx(_scipy_signed(dec["trained"][i], dec["trained"][j]), abs=1e-6)
    # seed 2 is a negated noisy copy of seed 0: |cos| matches it, the signed matching cannot
    assert t[1] < groups["trained"]["hungarian_mcc"]["values"][1] - 0.3
    gap = out["hungarian_minus_pwmcc"]["random"]["pairs"]
    pw, hu = groups["random"]["pwmcc"]["values"], groups["random"]["hungarian_mcc"]["values"]
    assert gap == pytest.approx([h - p for h, p in zip(hu, pw, strict=True)])
    assert all(g <= 1e-9 for g in gap)
    curve = out["shared_latent_curve"]
    assert curve["thresholds"] == [0.5, 0.9]
    for kind, signed in (("signed", True), ("absolute", False)):
        for k, point in enumerate(curve[kind]):
            th = curve["thresholds"][k]
            loop = [
                _shared_loop(enc["trained"][i], dec["trained"][i], enc["trained"][j],
                             dec["trained"][j], th, signed)
                for i, j in groups["trained"]["pairs"]
            ]  # fmt: skip
            assert point["trained"]["pairs"] == pytest.approx(loop)
            assert point["trained"]["mean"] == pytest.approx(np.mean(loop))
            assert set(point) == {"threshold", "trained", "random", "trained_minus_random"}
    assert curve["absolute"][0]["trained"]["mean"] > curve["signed"][0]["trained"]["mean"]
