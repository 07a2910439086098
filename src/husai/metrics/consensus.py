"""Consensus grouping: latents that match across N seeds' dictionaries, with a stability score.

Procedure (reference-free: no seed is privileged, and permuting the seeds permutes nothing
but the labels, up to exact ties):

1. for every pair of seeds (i, j), the one-to-one matching of their unit rows maximising total
   |cos| (``husai.metrics.matching.assignment``, "auto": exact up to 8192 latents);
2. the matched pairs with |cos| >= ``threshold`` are candidate edges between (seed, latent)
   nodes, taken in decreasing |cos| (ties: by seed, then latent index);
3. an edge merges the two nodes' groups unless that would put two latents of one seed in one
   group (single linkage with a one-latent-per-seed constraint, Kruskal's order).

Why not connected components of the matched edges: a chain a₀–b₁–a₀' can put two latents of
one seed in a component, and then "found in n seeds" is ambiguous. Why not matching to a
reference or to a running centroid: the result depends on the reference / the seed order.

Per group: its members (seed, latent), ``n_seeds``, ``mean_abs_cos`` (mean |cos| over all
member pairs, not only the merging edges; None for a singleton), ``stability`` = Σ over
member pairs of |cos| / (N(N−1)/2), i.e. the fraction of all seed pairs in which the latent
is found, weighted by how closely: in [0, 1], 1 = the same direction in every seed; higher =
more stable), and ``centroid``: the sign-aligned mean of the members' unit rows, normalised
(signs: each member's sign against the members' top singular vector, itself signed so that
the members' summed projections on it are >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from husai.errors import HusaiError
from husai.metrics.matching import assignment
from husai.metrics.validate import ArrayLike, check_threshold, unit_rows

STABILITY_VARIANT = (
    "stability = sum over member pairs of |cos| of unit decoder rows / (N(N-1)/2): the "
    "fraction of seed pairs in which the latent is found, weighted by |cos|; in [0, 1]; "
    "higher = more stable"
)


@dataclass(frozen=True)
class Group:
    """One consensus latent: members ((seed index, latent index), sorted by seed)."""

    members: tuple[tuple[int, int], ...]
    mean_abs_cos: float | None  # mean |cos| over member pairs; None for a singleton
    stability: float
    signs: tuple[int, ...]  # +1/-1 per member: its alignment to the centroid
    centroid: np.ndarray  # float64 [d], unit

    @property
    def n_seeds(self) -> int:
        return len(self.members)


class _Groups:
    """Union-find over (seed, latent) nodes whose groups keep a set of seeds."""

    def __init__(self, offsets: np.ndarray, n_nodes: int) -> None:
        self.parent = np.arange(n_nodes)
        self.seeds: dict[int, set[int]] = {}
        for s in range(len(offsets) - 1):
            for node in range(offsets[s], offsets[s + 1]):
                self.seeds[node] = {s}

    def root(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = int(self.parent[a])
        return a

    def merge(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb or self.seeds[ra] & self.seeds[rb]:
            return
        ra, rb = min(ra, rb), max(ra, rb)
        self.parent[rb] = ra
        self.seeds[ra] |= self.seeds.pop(rb)


def _edges(units: list[torch.Tensor], threshold: float) -> np.ndarray:
    """[E, 5] (−|cos|, seed i, latent a, seed j, latent b) of the matched pairs >= threshold."""
    rows = []
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            m = assignment(units[i], units[j], method="auto")
            keep = m.scores >= threshold
            k = int(keep.sum())
            rows.append(
                np.stack(
                    [
                        -m.scores[keep],
                        np.full(k, i),
                        m.rows[keep],
                        np.full(k, j),
                        m.cols[keep],
                    ],
                    axis=1,
                )
            )
    edges = np.concatenate(rows) if rows else np.zeros((0, 5))
    return edges[np.lexsort(edges.T[::-1])]


def _centroid(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signs [n], unit centroid [d]) of unit rows u [n, d] (see the module docstring)."""
    if len(u) == 1:
        return np.ones(1), u[0] / np.linalg.norm(u[0])
    v = np.linalg.svd(u, full_matrices=False)[2][0]
    proj = u @ v
    if proj.sum() < 0 or (proj.sum() == 0 and proj[0] < 0):
        v, proj = -v, -proj
    signs = np.where(proj < 0, -1.0, 1.0)
    c = (signs[:, None] * u).sum(0)
    return signs, c / np.linalg.norm(c)


def consensus_groups(dicts: list[ArrayLike], threshold: float = 0.7) -> list[Group]:
    """Group the latents of N >= 2 dictionaries ([F_s, d] rows, e.g. decoder rows).

    Every latent is in exactly one group (singletons included). Groups are ordered by
    stability (descending), then by their first member. ``threshold``: the |cos| a matched
    pair needs to join two groups.
    """
    threshold = check_threshold(threshold)
    if len(dicts) < 2:
        raise HusaiError(f"consensus needs at least two dictionaries, got {len(dicts)}")
    units = [unit_rows(d, f"dictionary {s}").double().cpu() for s, d in enumerate(dicts)]
    if len({u.shape[1] for u in units}) > 1:
        widths = ", ".join(str(u.shape[1]) for u in units)
        raise HusaiError(f"dictionaries have different widths d ({widths})")
    sizes = np.array([len(u) for u in units])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    uf = _Groups(offsets, int(offsets[-1]))
    for _, i, a, j, b in _edges(units, threshold):
        uf.merge(int(offsets[int(i)] + a), int(offsets[int(j)] + b))
    members: dict[int, list[tuple[int, int]]] = {}
    for s in range(len(units)):
        for f in range(sizes[s]):
            members.setdefault(uf.root(int(offsets[s] + f)), []).append((s, f))
    n_pairs = len(units) * (len(units) - 1) / 2
    out = []
    for mem in members.values():
        u = np.stack([units[s][f].numpy() for s, f in mem])
        cos = np.abs(u @ u.T)[np.triu_indices(len(mem), 1)]
        signs, centroid = _centroid(u)
        out.append(
            Group(
                tuple(mem),
                float(cos.mean()) if len(cos) else None,
                float(cos.sum() / n_pairs),
                tuple(int(s) for s in signs),
                centroid,
            )
        )
    out.sort(key=lambda g: (-g.stability, g.members[0]))
    return out
