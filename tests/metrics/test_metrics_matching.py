import numpy as np
import pytest
import torch
from _metrics_brute import abs_cos, best_permutation, hungarian
from hypothesis import given, settings
from hypothesis import strategies as st

from husai.errors import HusaiError
from husai.metrics import EXACT_MAX, assignment, hungarian_mcc, pairwise, random_dictionaries


def _rand(seed: int, n_a: int, n_b: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_a, d)), rng.standard_normal((n_b, d))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 6), st.integers(1, 5))
def test_exact_and_full_sparse_match_brute_force(seed, n_a, n_b, d):
    a, b = _rand(seed, n_a, n_b, d)
    ref = hungarian(a, b)
    ex = assignment(a, b, method="exact")
    sp = assignment(a, b, method="sparse", top_m=max(n_a, n_b))  # m = n: every edge is there
    assert ex.mean == pytest.approx(ref, abs=1e-5)
    assert sp.mean == pytest.approx(ref, abs=1e-5)
    assert sp.n_fallback == 0 and len(sp.rows) == min(n_a, n_b)
    for mt in (ex, sp):  # one-to-one, scores are the pairs' |cos|
        assert len(set(mt.cols.tolist())) == len(mt.cols)
        for i, j, s in zip(mt.rows, mt.cols, mt.scores, strict=True):
            assert s == pytest.approx(abs_cos(a[i], b[j]), abs=1e-5)


def test_sparse_equals_exact_pairs_on_random_instances():
    for seed in range(5):
        a, b = _rand(seed, 40, 40, 8)
        ex = assignment(a, b, method="exact")
        sp = assignment(a, b, method="sparse", top_m=40)
        np.testing.assert_array_equal(ex.partner_of_rows(40), sp.partner_of_rows(40))


def test_sparse_with_few_candidates_uses_fallback_and_stays_one_to_one():
    # every row of a is closest to the same b row: top-1 candidates cannot cover a full matching
    a = np.ones((6, 3)) + 0.01 * np.random.default_rng(0).standard_normal((6, 3))
    b = np.vstack([np.ones((1, 3)), np.eye(3), -np.eye(3)[:2]])
    sp = assignment(a, b, method="sparse", top_m=1)
    assert len(sp.rows) == 6 and len(set(sp.cols.tolist())) == 6
    assert sp.n_fallback > 0
    assert sp.mean <= assignment(a, b, method="exact").mean + 1e-9


def test_assignment_on_a_score_matrix():
    sim = np.random.default_rng(3).random((5, 7))
    ref = best_permutation(sim.tolist())
    for method in ("exact", "sparse"):
        mt = assignment(sim, method=method, top_m=7)
        assert mt.cols.tolist() == list(ref)
        assert mt.mean == pytest.approx(np.mean([sim[i, ref[i]] for i in range(5)]))


def test_auto_method_and_pairwise_sparse():
    d = random_dictionaries(3, 30, 6, seed=1)
    assert "exact" in pairwise(d)["hungarian_mcc"]["methods"][0]
    sp = pairwise(d, hungarian="sparse", top_m=30)
    ex = pairwise(d, hungarian="exact")
    np.testing.assert_allclose(sp["hungarian_mcc"]["values"], ex["hungarian_mcc"]["values"])
    np.testing.assert_allclose(sp["pwmcc"]["values"], ex["pwmcc"]["values"], atol=1e-6)
    assert hungarian_mcc(d[0], d[1], method="auto") == pytest.approx(
        ex["hungarian_mcc"]["values"][0]
    )
    assert EXACT_MAX == 8192


def test_matching_errors():
    a = torch.randn(4, 3)
    with pytest.raises(HusaiError, match="method"):
        assignment(a, a, method="greedy")
    with pytest.raises(HusaiError, match="top_m"):
        assignment(a, a, method="sparse", top_m=0)
    with pytest.raises(HusaiError, match="different widths"):
        assignment(a, torch.randn(4, 2))
