"""Functional-correspondence scores against loops over small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from husai.errors import HusaiError
from husai.metrics.functional import (
    ablated,
    by_cos,
    compare_pairs,
    random_partners,
    row_correlations,
    sample_latents,
    steered,
    top_k_overlap,
)


def test_ablated_and_steered_match_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.relu(torch.randn(5, 7, generator=g, dtype=torch.float64))
    W = torch.randn(7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    recon = codes @ W + b
    lat = torch.tensor([4, 0, 4])
    got = ablated(recon, codes, W, lat)
    for t, i in enumerate(lat.tolist()):
        zeroed = codes.clone()
        zeroed[:, i] = 0
        assert torch.allclose(got[t], zeroed @ W + b)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = steered(x, W, lat, 2.5)
    for t, i in enumerate(lat.tolist()):
        for n in range(5):
            want = [x[n, d] + 2.5 * W[i, d] / np.sqrt(float((W[i] ** 2).sum())) for d in range(3)]
            assert np.allclose(got[t, n].numpy(), want)


def test_row_correlations_match_numpy_and_flag_constant_rows() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 2, 6, generator=g)
    b = torch.randn(4, 2, 6, generator=g)
    b[1] = 0.3 * a[1] + 0.01  # r = 1
    a[3] = 0.0  # a latent with no effect
    r = row_correlations(a, b)
    for k in range(3):
        want = np.corrcoef(a[k].flatten().double().numpy(), b[k].flatten().double().numpy())[0, 1]
        assert r[k] == pytest.approx(want, abs=1e-12)
    assert r[1] == pytest.approx(1.0)
    assert np.isnan(r[3])
    with pytest.raises(HusaiError, match="differ in shape"):
        row_correlations(a, b[:, :1])


def test_top_k_overlap_matches_sets() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 4, 9, generator=g), torch.randn(3, 4, 9, generator=g)
    b[0] = a[0] * 2  # same ranking: overlap 1
    for k in (1, 3):
        got = top_k_overlap(a, b, k)
        for ell in range(3):
            per = []
            for n in range(4):
                sa = set(np.argsort(-a[ell, n].numpy())[:k])
                sb = set(np.argsort(-b[ell, n].numpy())[:k])
                per.append(len(sa & sb) / k)
            assert got[ell] == pytest.approx(np.mean(per))
        assert got[0] == 1.0
    with pytest.raises(HusaiError, match="k must be"):
        top_k_overlap(a, b, 10)


def test_sample_latents_spreads_over_cos_ranks_of_eligible_latents() -> None:
    cos = [np.array([0.9, 0.1, 0.5, 0.95]), np.array([0.2, 0.8, 0.3, 0.0])]
    ok = [np.array([True, True, True, False]), np.array([True, True, False, True])]
    pool = sorted(
        [
            (float(c[i]), k, i)
            for k, (c, e) in enumerate(zip(cos, ok, strict=True))
            for i in range(4)
            if e[i]
        ],
        key=lambda t: (-t[0], t[1], t[2]),
    )
    assert sample_latents(cos, ok, 100) == [p[1:] for p in pool]
    three = sample_latents(cos, ok, 3)  # ranks 0, 2.5 → 2 (half to even), 5 of 6
    assert three == [pool[0][1:], pool[2][1:], pool[5][1:]]
    assert sample_latents(cos, [np.zeros(4, bool)] * 2, 3) == []


def test_random_partners_are_seeded_candidates_never_the_match() -> None:
    cands = np.array([2, 5, 7])
    draw = [random_partners([5, 2, 9, 7], cands, torch.Generator().manual_seed(3)) for _ in "ab"]
    assert draw[0] == draw[1]
    assert all(r in cands and r != j for r, j in zip(draw[0], [5, 2, 9, 7], strict=True))
    assert random_partners([4], np.array([4]), torch.Generator()) == [None]


def test_compare_pairs_orients_the_difference_and_drops_undefined() -> None:
    m, r = [0.9, np.nan, 0.7, 0.8], [0.1, 0.2, 0.0, np.nan]
    out = compare_pairs(m, r, n_resamples=200)
    assert out["n_undefined"] == {"matched": 1, "random": 1}
    assert out["matched"]["mean"] == pytest.approx(0.8) and out["matched"]["n"] == 3
    assert out["difference"]["mean"] == pytest.approx(0.8 - 0.1)
    low = compare_pairs([1.0, 2.0], [3.0, 5.0], higher_is_alike=False, n_resamples=200)
    assert low["difference"]["mean"] == pytest.approx(4.0 - 1.5)
    assert low["difference_is"] == "random − matched"
    assert compare_pairs([np.nan], [1.0], n_resamples=200)["difference"] is None


def test_by_cos_bins_like_a_loop() -> None:
    cos = [0.1, 0.55, 0.7, 0.95, 1.0, 0.69]
    vals = [1.0, 2.0, np.nan, 4.0, 6.0, 3.0]
    got = by_cos(cos, vals, n_resamples=200)
    assert [b["count"] for b in got] == [1, 2, 0, 2]
    assert got[1]["score"]["mean"] == pytest.approx(2.5)
    assert got[2]["score"] is None and got[3]["score"]["mean"] == pytest.approx(5.0)
