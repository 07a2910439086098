"""Coverage curve: how many of a seed's latents have no counterpart in any other of n seeds.

For N dictionaries (seeds) and every n = 2 … N: over subsets of n seeds and each seed i of
a subset, the fraction of i's latents with no partner of |cos| ≥ threshold in any of the
other n − 1 seeds of the subset; averaged with equal weight over (subset, seed). Two
definitions of *partner* (``partner_scores``):

- ``max_cos``: any latent of the other seed (the latent's best-match |cos| ≥ threshold);
- ``hungarian``: its partner in the one-to-one |cos| matching of the two seeds
  (``matching.assignment``) has |cos| ≥ threshold (an unmatched latent has none).

Subsets: all C(N, n) when there are at most ``max_subsets``, else ``max_subsets`` distinct
subsets drawn without replacement by a generator seeded with ``seed`` (``seed_subsets``;
each curve point says which). Lower = more consistent (fewer latents found in only one
seed); the fraction can only fall or stay as n grows within one subset.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from husai.errors import HusaiError
from husai.metrics._blocks import DEFAULT_BLOCK_SIZE
from husai.metrics.latents import per_latent_best
from husai.metrics.matching import assignment
from husai.metrics.validate import ArrayLike, check_threshold

MAX_SUBSETS = 64
DEFINITIONS = {
    "max_cos": "no latent of any other seed in the subset at |cos| ≥ threshold",
    "hungarian": "the latent's one-to-one (Hungarian, |cos|) partner in every other seed of "
    "the subset has |cos| < threshold",
}


def partner_scores(
    dicts: Sequence[ArrayLike], method: str = "auto", block_size: int = DEFAULT_BLOCK_SIZE
) -> dict[str, list[np.ndarray]]:
    """Per definition, per dictionary i a float64 [n_i, N] array: column j is each latent's
    partner |cos| in dictionary j (best match, or its Hungarian partner's; 0 if unmatched);
    column i is NaN."""
    best = per_latent_best(dicts, block_size)
    n = len(dicts)
    matched = [np.where(np.isnan(b), np.nan, 0.0) for b in best]
    for i in range(n):
        for j in range(i + 1, n):
            m = assignment(dicts[i], dicts[j], method=method, block_size=block_size)
            matched[i][m.rows, j] = m.scores
            matched[j][m.cols, i] = m.scores
    return {"max_cos": best, "hungarian": matched}


def seed_subsets(
    n_seeds: int, n: int, max_subsets: int = MAX_SUBSETS, seed: int = 0
) -> tuple[list[tuple[int, ...]], str]:
    """The subsets of n of ``range(n_seeds)`` scored, and "all" or "sample" (seeded draw)."""
    if not 2 <= n <= n_seeds:
        raise HusaiError(f"subset size must be in 2..{n_seeds}, got {n}")
    if isinstance(max_subsets, bool) or not isinstance(max_subsets, int) or max_subsets < 1:
        raise HusaiError(f"max_subsets must be a positive integer, got {max_subsets!r}")
    total = math.comb(n_seeds, n)
    if total <= max_subsets:
        return list(itertools.combinations(range(n_seeds), n)), "all"
    rng = np.random.default_rng(seed)
    picked: set[tuple[int, ...]] = set()
    while len(picked) < max_subsets:  # max_subsets < total: terminates
        picked.add(tuple(sorted(rng.choice(n_seeds, n, replace=False).tolist())))
    return sorted(picked), "sample"


def uncovered(scores: list[np.ndarray], subset: Sequence[int], threshold: float) -> float:
    """Mean over seeds i of ``subset`` of the fraction of i's latents whose partner score is
    below ``threshold`` in every other seed of the subset."""
    fracs = []
    for i in subset:
        others = [j for j in subset if j != i]
        covered = (scores[i][:, others] >= threshold).any(axis=1)
        fracs.append(float((~covered).mean()))
    return float(np.mean(fracs))


def coverage_curve(
    scores: dict[str, list[np.ndarray]],
    thresholds: Sequence[float],
    max_subsets: int = MAX_SUBSETS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One point per n = 2 … N: ``{"n", "n_subsets", "subsets", "<definition>@<t>": fraction
    of latents with no partner}`` for each definition of ``partner_scores`` and threshold."""
    ts = [check_threshold(t) for t in thresholds]
    n_seeds = len(next(iter(scores.values())))
    out = []
    for n in range(2, n_seeds + 1):
        subsets, how = seed_subsets(n_seeds, n, max_subsets, seed)
        point: dict[str, Any] = {"n": n, "n_subsets": len(subsets), "subsets": how}
        for name, sc in scores.items():
            for t in ts:
                vals = [uncovered(sc, s, t) for s in subsets]
                point[f"{name}@{float(t)}"] = float(np.mean(vals))
        out.append(point)
    return out
