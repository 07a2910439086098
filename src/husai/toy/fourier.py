"""Fourier validation of a grokked model, computed from its weights (Nanda et al. 2023).

For add/sub the Fourier basis is over Z_p. For mul, numbers 1..p-1 are relabelled by their
discrete log x = log_g(a) (g the smallest generator of Z_p^*), turning a*b into x + y over
Z_{p-1}; the number 0 (and inputs/outputs involving it) are left out of the check. Either way
there are (p-1)//2 frequencies, numbered k = 1..(p-1)//2.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.toy.data import make_dataset


def fourier_basis(n: int) -> Tensor:
    """Orthonormal rows [n, n] over Z_n: constant, then cos(2πkx/n), sin(2πkx/n) for k = 1, 2, ...

    For even n the last row is the Nyquist cos(πx) alone. Labels: `fourier_labels(n)`.
    """
    x = torch.arange(n, dtype=torch.float64)
    rows = [torch.ones(n, dtype=torch.float64)]
    for k in range(1, n // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / n))
        if 2 * k != n:
            rows.append(torch.sin(2 * math.pi * k * x / n))
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def fourier_labels(n: int) -> list[str]:
    """Row labels of `fourier_basis(n)`: "const", "cos 1", "sin 1", ..."""
    labels = ["const"]
    for k in range(1, n // 2 + 1):
        labels.append(f"cos {k}")
        if 2 * k != n:
            labels.append(f"sin {k}")
    return labels


def _frequency_of_rows(n: int) -> Tensor:
    """Frequency k of each basis row (0 for the constant)."""
    return torch.tensor([0] + [int(s.split()[1]) for s in fourier_labels(n)[1:]])


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group Z_p^* (p prime)."""
    n = p - 1
    factors = {q for q in range(2, n + 1) if n % q == 0 and all(q % r for r in range(2, q))}
    for g in range(2, p):
        if all(pow(g, n // q, p) != 1 for q in factors):
            return g
    return 1  # p == 2


def discrete_log_order(p: int) -> Tensor:
    """Numbers 1..p-1 ordered by discrete log: entry x is g**x mod p."""
    g = primitive_root(p)
    return torch.tensor([pow(g, x, p) for x in range(p - 1)])


def embedding_frequency_norms(W_E: Tensor, p: int | None = None, op: str = "add") -> Tensor:
    """Share of the number embeddings' squared Frobenius norm in each frequency k (cos + sin).

    Only the rows for numbers 0..p-1 are used (`p` defaults to W_E.shape[0]; the `=` row is
    ignored). The constant component counts in the total but is not a frequency, so the
    shares sum to 1 minus the constant's share. For op="mul" the rows 1..p-1 are taken in
    discrete-log order and row 0 is left out entirely. Returns [(p-1)//2] shares.
    """
    p = W_E.shape[0] if p is None else p
    W = W_E[:p].detach().to(torch.float64)
    if op == "mul":
        W = W[discrete_log_order(p)]
    n = W.shape[0]
    energy = ((fourier_basis(n) @ W) ** 2).sum(dim=1)
    total = energy.sum()
    per_freq = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(
        0, _frequency_of_rows(n), energy
    )[1:]
    if total == 0:
        return torch.zeros_like(per_freq)
    return per_freq / total


def key_frequencies(fracs: Tensor, mass: float = 0.9) -> list[int]:
    """Smallest set of frequencies (1-based, ascending) whose shares sum to ≥ mass.

    If all frequencies together hold less than `mass`, all are returned.
    """
    order = sorted(range(len(fracs)), key=lambda i: (-float(fracs[i]), i))
    chosen, acc = [], 0.0
    for i in order:
        if acc >= mass - 1e-12:
            break
        chosen.append(i + 1)
        acc += float(fracs[i])
    return sorted(chosen)


def _grid_logits(model: torch.nn.Module) -> tuple[Tensor, Tensor, int]:
    """Centred logits on the check grid and the phase index s of each cell (mod n).

    add: s = a+b-c over Z_p; sub: s = a-b-c; mul: s = x+y-z in discrete-log coordinates
    over Z_{p-1}, with a, b, c = 0 excluded.
    """
    p, op = model.cfg.p, model.cfg.op
    tokens, _ = make_dataset(p, op)
    with torch.no_grad():
        logits = model(tokens).to(torch.float64).view(p, p, p)  # [a, b, c]
    if op == "mul":
        order = discrete_log_order(p)
        logits = logits[order][:, order][:, :, order]
        n = p - 1
        sign_b = 1
    else:
        n = p
        sign_b = 1 if op == "add" else -1
    idx = torch.arange(n)
    s = (idx.view(n, 1, 1) + sign_b * idx.view(1, n, 1) - idx.view(1, 1, n)) % n
    logits = logits - logits.mean(dim=-1, keepdim=True)
    return logits, s, n


def logit_r2(model: torch.nn.Module, key_freqs: list[int]) -> float:
    """Fraction of (per-input centred) logit variance explained by the key frequencies.

    Projects L[a, b, c] onto span{cos(w_k s), sin(w_k s)}, w_k = 2πk/n, s as in `_grid_logits`;
    these functions are orthogonal over the grid, so the projection is a sum of coefficients.
    """
    logits, s, n = _grid_logits(model)
    total = float((logits**2).sum())
    if total == 0:
        return 0.0
    # <L, f(s)> = sum_s f(s) g(s), with g(s) the sum of L over cells of phase s.
    g = torch.zeros(n, dtype=torch.float64).index_add_(0, s.reshape(-1), logits.reshape(-1))
    count = torch.bincount(s.reshape(-1), minlength=n).to(torch.float64)
    x = torch.arange(n, dtype=torch.float64)
    explained = 0.0
    for k in sorted(set(key_freqs)):
        if not 1 <= k <= n // 2:
            raise HusaiError(f"frequency {k} out of range 1..{n // 2}")
        for f in (torch.cos(2 * math.pi * k * x / n), torch.sin(2 * math.pi * k * x / n)):
            norm2 = float((count * f**2).sum())
            if norm2 > 1e-9 * count.sum():  # the Nyquist sin is identically zero
                explained += float((f * g).sum()) ** 2 / norm2
    return explained / total


def fourier_summary(
    model: torch.nn.Module, mass: float = 0.9, max_key_freqs: int = 8
) -> dict[str, Any]:
    """JSON-able Fourier check: frequency shares, key frequencies, their mass, logit R², passed."""
    cfg = model.cfg
    fracs = embedding_frequency_norms(model.W_E, cfg.p, cfg.op)
    key = key_frequencies(fracs, mass)
    return {
        "basis": "discrete_log" if cfg.op == "mul" else "additive",
        "frequency_fractions": [float(f) for f in fracs],
        "key_frequencies": key,
        "n_key_freqs": len(key),
        "key_mass": float(sum(float(fracs[k - 1]) for k in key)),
        "logit_r2": logit_r2(model, key),
        "mass": mass,
        "max_key_freqs": max_key_freqs,
        "passed": len(key) <= max_key_freqs,
    }
