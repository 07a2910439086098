"""Null baselines: what consistency do unrelated dictionaries score by chance?

Every random baseline in husai is drawn by ``random_dictionaries_like``: dictionaries of the
given shapes, drawn in order from one generator seeded with the baseline seed. S equal
shapes give exactly ``random_dictionaries(S, n_latents, d, seed)``, so `husai run` (one
shape per seed) and `husai compare` (one per SAE, any sizes) draw the same dictionaries for
the same SAEs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from husai.errors import HusaiError


def _positive(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise HusaiError(f"random dictionaries: {name} must be a positive integer, got {v!r}")


def random_dictionaries_like(shapes: Sequence[tuple[int, int]], seed: int) -> list[torch.Tensor]:
    """One random dictionary per ``(n_latents, d)`` in ``shapes``, of unit Gaussian rows
    (float32), drawn in order from one private ``torch.Generator`` seeded with ``seed``.

    Rows are i.i.d. N(0, I_d) draws normalised to unit length, i.e. uniform on the sphere.
    The global RNG is untouched, so the output is a deterministic function of the arguments.
    Scoring them with ``pairwise`` gives the chance level that trained dictionaries must beat
    (higher = more consistent).
    """
    if len(shapes) == 0:
        raise HusaiError("random dictionaries: no shapes given")
    for n_latents, d in shapes:
        _positive("n_latents", n_latents)
        _positive("d", d)
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for n_latents, d in shapes:
        x = torch.randn(n_latents, d, generator=gen, dtype=torch.float32)
        out.append(x / torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return out


def random_dictionaries(n: int, n_latents: int, d: int, seed: int) -> list[torch.Tensor]:
    """``n`` random dictionaries [n_latents, d]: ``random_dictionaries_like`` of n equal shapes."""
    _positive("n", n)
    return random_dictionaries_like([(n_latents, d)] * n, seed)
