"""Consensus grouping against a hand-made case and an independent brute-force computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from husai.errors import HusaiError
from husai.metrics.consensus import consensus_groups


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _brute_groups(dicts: list[np.ndarray], threshold: float) -> set[frozenset]:
    """The documented procedure, naively: every pair's best one-to-one matching by trying all
    permutations; matched pairs >= threshold merged in decreasing |cos| unless a seed repeats."""
    u = [_unit(d.astype(np.float64)) for d in dicts]
    edges = []
    for i, j in itertools.combinations(range(len(u)), 2):
        sim = np.abs(u[i] @ u[j].T)
        small, big = (i, j) if len(u[i]) <= len(u[j]) else (j, i)
        s = sim if small == i else sim.T
        best = max(
            itertools.permutations(range(len(u[big])), len(u[small])),
            key=lambda p: sum(s[a, b] for a, b in enumerate(p)),
        )
        for a, b in enumerate(best):
            if s[a, b] >= threshold:
                edges.append((-s[a, b], small, a, big, b))
    group = {(s, f): frozenset({(s, f)}) for s in range(len(u)) for f in range(len(u[s]))}
    for _, i, a, j, b in sorted(edges):
        ga, gb = group[(i, a)], group[(j, b)]
        if ga is gb or {s for s, _ in ga} & {s for s, _ in gb}:
            continue
        merged = ga | gb
        for node in merged:
            group[node] = merged
    return set(group.values())


def _as_sets(groups) -> set[frozenset]:
    return {frozenset(g.members) for g in groups}


def test_hand_made_case() -> None:
    e = np.eye(4)
    a = np.stack([e[0], e[1], e[2]])
    b = np.stack([-e[0], _unit(e[1] + 0.1 * e[3]), _unit(e[2] + 0.5 * e[3])])
    c = np.stack([e[0], e[3]])
    groups = consensus_groups([a, b, c], threshold=0.7)
    # e0 in all three (b's flipped); e1 and e2 in a and b (|cos| 0.995, 0.894); c's e3 alone
    # (|cos(e3, b2)| = 0.447 < 0.7)
    assert _as_sets(groups) == {
        frozenset({(0, 0), (1, 0), (2, 0)}),
        frozenset({(0, 1), (1, 1)}),
        frozenset({(0, 2), (1, 2)}),
        frozenset({(2, 1)}),
    }
    top = groups[0]
    assert top.members == ((0, 0), (1, 0), (2, 0)) and top.n_seeds == 3
    assert top.mean_abs_cos == pytest.approx(1.0) and top.stability == pytest.approx(1.0)
    assert top.signs == (1, -1, 1)
    np.testing.assert_allclose(top.centroid, e[0], atol=1e-12)
    e1 = next(g for g in groups if g.members == ((0, 1), (1, 1)))
    cos = 1 / math.sqrt(1.01)
    assert e1.mean_abs_cos == pytest.approx(cos, abs=1e-6)
    assert e1.stability == pytest.approx(cos / 3, abs=1e-6)  # one of three seed pairs
    lone = next(g for g in groups if g.members == ((2, 1),))
    assert lone.mean_abs_cos is None and lone.stability == 0.0
    assert [g.stability for g in groups] == sorted((g.stability for g in groups), reverse=True)


def test_one_latent_per_seed_even_along_a_chain() -> None:
    # a0 ~ b0 ~ a1 ... a chain: one-to-one matchings plus the merge rule keep seeds unique
    a = _unit(np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0]]))
    b = _unit(np.array([[0.95, 0.3, 0.0], [0.0, 0.0, 1.0]]))
    c = _unit(np.array([[0.8, 0.6, 0.0], [1.0, 0.0, 0.05]]))
    groups = consensus_groups([a, b, c], threshold=0.7)
    for g in groups:
        seeds = [s for s, _ in g.members]
        assert len(seeds) == len(set(seeds))
    assert _as_sets(groups) == _brute_groups([a, b, c], 0.7)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_planted_features(seed: int) -> None:
    g = np.random.default_rng(seed)
    true = _unit(g.normal(size=(5, 6)))
    dicts = []
    for n in (5, 4, 5):
        keep = g.permutation(5)[:n]
        rows = true[keep] * g.choice([-1, 1], size=(n, 1)) + 0.15 * g.normal(size=(n, 6))
        dicts.append(np.concatenate([rows, g.normal(size=(1, 6))]))
    groups = consensus_groups(dicts, threshold=0.6)
    assert _as_sets(groups) == _brute_groups(dicts, 0.6)
    n_pairs = 3
    for grp in groups:  # statistics, by loops
        u = [_unit(dicts[s][f]) for s, f in grp.members]
        cos = [abs(float(x @ y)) for x, y in itertools.combinations(u, 2)]
        assert grp.stability == pytest.approx(sum(cos) / n_pairs, abs=1e-6)
        if cos:
            assert grp.mean_abs_cos == pytest.approx(np.mean(cos), abs=1e-6)
        aligned = sum(s * x for s, x in zip(grp.signs, u, strict=True))
        np.testing.assert_allclose(grp.centroid, _unit(aligned), atol=1e-6)
        assert all(s * float(x @ grp.centroid) > 0 for s, x in zip(grp.signs, u, strict=True))


def test_no_seed_is_privileged() -> None:
    g = np.random.default_rng(7)
    true = _unit(g.normal(size=(6, 8)))
    dicts = [np.concatenate([true + 0.1 * g.normal(size=true.shape), g.normal(size=(2, 8))])]
    dicts += [np.concatenate([true + 0.1 * g.normal(size=true.shape), g.normal(size=(2, 8))])]
    dicts += [np.concatenate([true[:4] + 0.1 * g.normal(size=(4, 8)), g.normal(size=(3, 8))])]
    base = _as_sets(consensus_groups(dicts))
    for perm in itertools.permutations(range(3)):
        got = consensus_groups([dicts[p] for p in perm])
        relabelled = {frozenset((perm[s], f) for s, f in grp.members) for grp in got}
        assert relabelled == base


def test_bad_input() -> None:
    with pytest.raises(HusaiError, match="at least two"):
        consensus_groups([np.eye(3)])
    with pytest.raises(HusaiError, match="different widths"):
        consensus_groups([np.eye(3), np.eye(4)])
    with pytest.raises(HusaiError, match="threshold"):
        consensus_groups([np.eye(3), np.eye(3)], threshold=1.5)
