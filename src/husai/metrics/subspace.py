"""Subspace stability: do two dictionaries concentrate on the same directions of R^d?

An SAE with d_sae >= d_in spans all of R^d, so comparing raw spans says nothing. Instead we
compare each dictionary's *top-r principal directions*: the top-r right singular vectors of
the [n, d] matrix of unit-normalised rows (eigenvectors of the d x d Gram matrix, accumulated
in float64 over row blocks). The score is the mean cos² of the r principal angles between
the two r-dimensional subspaces (``scipy.linalg.subspace_angles`` convention): 1 = same
subspace, and two random r-subspaces of R^d score about r / d. Default
``r = max(1, min(d, n_a, n_b) // 2)``. The score is symmetric, lies in [0, 1], is 1 for a
copy of a dictionary whose latents are permuted, sign-flipped and rescaled (rows are
unit-normalised, as in every consistency metric), and is unchanged when both dictionaries are
rotated by the same orthogonal map of R^d. Higher = more consistent.
"""

from __future__ import annotations

import torch

from husai.errors import HusaiError
from husai.metrics._blocks import check_same_d, scaled_rows
from husai.metrics.validate import ArrayLike


def default_rank(d: int, n_a: int, n_b: int) -> int:
    return max(1, min(d, n_a, n_b) // 2)


def top_directions(x: ArrayLike, r: int, block_size: int = 8192) -> torch.Tensor:
    """Orthonormal [d, r] basis of the top-r right singular vectors of the unit-row matrix."""
    x32, inv = scaled_rows(x, "dictionary")
    d = x32.shape[1]
    if not 1 <= r <= d:
        raise HusaiError(f"subspace rank r must lie in [1, d={d}], got {r}")
    gram = torch.zeros(d, d, dtype=torch.float64)
    for s in range(0, x32.shape[0], block_size):
        u = (x32[s : s + block_size] * inv[s : s + block_size, None]).double().cpu()
        gram += u.T @ u
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vecs[:, -r:].flip(1)


def subspace_similarity(a: ArrayLike, b: ArrayLike, r: int | None = None) -> float:
    """Mean cos² of the principal angles between the top-r principal subspaces of a and b.

    See the module docstring; ``r=None`` uses ``default_rank``. In [0, 1]; higher = more
    consistent.
    """
    a32, _ = scaled_rows(a, "a")
    b32, _ = scaled_rows(b, "b")
    check_same_d(a32, b32)
    r = default_rank(a32.shape[1], a32.shape[0], b32.shape[0]) if r is None else int(r)
    va, vb = top_directions(a32, r), top_directions(b32, r)
    cos = torch.linalg.svdvals(va.T @ vb).clamp(0.0, 1.0)
    return float((cos**2).mean())
