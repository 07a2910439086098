"""Null baselines: what consistency do unrelated dictionaries score by chance?"""

from __future__ import annotations

import torch

from husai.errors import HusaiError


def random_dictionaries(n: int, n_latents: int, d: int, seed: int) -> list[torch.Tensor]:
    """``n`` random dictionaries [n_latents, d] of unit Gaussian directions (float32).

    Rows are i.i.d. N(0, I_d) draws normalised to unit length, i.e. uniform on the sphere.
    Drawn from a private ``torch.Generator`` seeded with ``seed`` (global RNG untouched), so the
    output is a deterministic function of the arguments. Scoring them with ``pairwise`` gives
    the chance level that trained dictionaries must beat (higher = more consistent).
    """
    for name, v in (("n", n), ("n_latents", n_latents), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise HusaiError(f"random_dictionaries: {name} must be a positive integer, got {v!r}")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(n):
        x = torch.randn(n_latents, d, generator=gen, dtype=torch.float32)
        out.append(x / torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return out
