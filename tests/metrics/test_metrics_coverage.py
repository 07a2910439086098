"""Coverage curve and stability by firing frequency against explicit loops (python, float64)."""

import itertools
import math

import numpy as np
import pytest
import torch
from _metrics_brute import abs_cos, best_permutation, firing_histogram

from husai.errors import HusaiError
from husai.metrics.coverage import coverage_curve, partner_scores, seed_subsets
from husai.metrics.quality import LOG10_EDGES
from husai.metrics.stability import frequency_bins, latent_stability, stability_by_frequency


def _dicts(n_latents=(5, 5, 5, 5), d=3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((max(n_latents), d))
    return [base[:k] + 0.6 * rng.standard_normal((k, d)) for k in n_latents]


def _partner(dicts, i, j, u, definition):
    """|cos| of latent u of dict i with its partner in dict j, by enumeration."""
    a, b = dicts[i], dicts[j]
    if definition == "max_cos":
        return max(abs_cos(a[u], v) for v in b)
    sim = [[abs_cos(x, y) for y in b] for x in a]
    if len(a) <= len(b):
        return sim[u][best_permutation(sim)[u]]
    perm = best_permutation([list(r) for r in zip(*sim, strict=True)])  # cols → rows
    return next((sim[u][c] for c, r in enumerate(perm) if r == u), 0.0)


def _brute_uncovered(dicts, subsets, definition, t):
    per_subset = []
    for s in subsets:
        fracs = []
        for i in s:
            lonely = [
                all(_partner(dicts, i, j, u, definition) < t for j in s if j != i)
                for u in range(len(dicts[i]))
            ]
            fracs.append(sum(lonely) / len(lonely))
        per_subset.append(sum(fracs) / len(fracs))
    return sum(per_subset) / len(per_subset)


@pytest.mark.parametrize("sizes", [(5, 5, 5, 5), (4, 5, 3)])
def test_coverage_curve_matches_loop_over_subsets(sizes):
    dicts = _dicts(sizes)
    thresholds = (0.5, 0.8)
    curve = coverage_curve(partner_scores(dicts), thresholds)
    assert [p["n"] for p in curve] == list(range(2, len(dicts) + 1))
    for p in curve:
        subsets = list(itertools.combinations(range(len(dicts)), p["n"]))
        assert p["subsets"] == "all" and p["n_subsets"] == len(subsets)
        for definition in ("max_cos", "hungarian"):
            for t in thresholds:
                want = _brute_uncovered(dicts, subsets, definition, t)
                assert p[f"{definition}@{t}"] == pytest.approx(want, abs=1e-6)


def test_coverage_sampled_subsets_match_loop():
    dicts = _dicts((4,) * 6, seed=1)
    curve = coverage_curve(partner_scores(dicts), (0.7,), max_subsets=5, seed=3)
    for p in curve:
        subsets, how = seed_subsets(6, p["n"], 5, 3)
        assert how == ("all" if math.comb(6, p["n"]) <= 5 else "sample") == p["subsets"]
        assert len(set(subsets)) == len(subsets) == p["n_subsets"]
        for definition in ("max_cos", "hungarian"):
            want = _brute_uncovered(dicts, subsets, definition, 0.7)
            assert p[f"{definition}@0.7"] == pytest.approx(want, abs=1e-6)


def test_seed_subsets_deterministic_and_checked():
    assert seed_subsets(8, 4, 10, 0) == seed_subsets(8, 4, 10, 0)
    assert all(list(s) == sorted(s) for s in seed_subsets(8, 4, 10, 0)[0])
    with pytest.raises(HusaiError):
        seed_subsets(3, 4)
    with pytest.raises(HusaiError):
        coverage_curve(partner_scores(_dicts()), (1.5,))


def test_identical_dictionaries_fully_covered():
    d = _dicts((6,))[0]
    curve = coverage_curve(partner_scores([d, d[::-1].copy(), -d]), (0.99,))
    assert all(p["max_cos@0.99"] == 0 and p["hungarian@0.99"] == 0 for p in curve)


def test_stability_by_frequency_matches_loop():
    dicts = _dicts((6, 6, 6), seed=2)
    rng = np.random.default_rng(0)
    n_rows = 1000
    counts = torch.as_tensor(rng.choice([0, 1, 3, 40, 150, 999, 1000], size=(3, 6)))
    scores = partner_scores(dicts)
    stab = {k: latent_stability(v) for k, v in scores.items()}
    # per-latent stability: mean over the other seeds of the partner |cos|
    for definition, vals in stab.items():
        want = [
            np.mean([_partner(dicts, i, j, u, definition) for j in range(3) if j != i])
            for i in range(3)
            for u in range(6)
        ]
        assert vals == pytest.approx(want, abs=1e-6)
    res = stability_by_frequency(stab, counts, n_rows, n_resamples=200)
    inner = [10.0**e for e in LOG10_EDGES[1:-1]]
    want_bins: dict[int, list[int]] = {}
    for k, c in enumerate(counts.reshape(-1).tolist()):
        b = -1 if c == 0 else sum(bound <= c / n_rows for bound in inner)
        want_bins.setdefault(b, []).append(k)
    assert [e["count"] for e in res["bins"]] == [len(want_bins[b]) for b in sorted(want_bins)]
    assert res["bins"][0]["bin"] == "dead" and res["n_latents"] == 18
    for e, b in zip(res["bins"], sorted(want_bins), strict=True):
        assert e["log10_lo"] == (None if b == -1 else LOG10_EDGES[b])
        for definition in ("max_cos", "hungarian"):
            vals = [stab[definition][k] for k in want_bins[b]]
            assert e[definition]["mean"] == pytest.approx(np.mean(vals))
            assert e[definition]["ci_low"] <= e[definition]["mean"] <= e[definition]["ci_high"]


def test_frequency_bins_agree_with_firing_histogram():
    rng = np.random.default_rng(4)
    codes = rng.random((200, 30)) < rng.choice([0, 0.001, 0.02, 0.3, 1.0], 30)
    bins = frequency_bins(torch.as_tensor(codes.sum(0)), 200)
    hist = firing_histogram(codes.astype(float), list(LOG10_EDGES))
    assert int((bins == -1).sum()) == hist["dead"]
    assert np.bincount(bins[bins >= 0], minlength=len(LOG10_EDGES) - 1).tolist() == hist["counts"]
    with pytest.raises(HusaiError):
        frequency_bins(torch.zeros(3), 0)
