"""Reconstruction and sparsity quality of one SAE (or of S seeds at once).

Inputs are torch tensors (numpy arrays are accepted too): activations/reconstructions are
[n, d] and codes are [n, n_latents]. Every function also takes a leading seeds axis
([S, n, d] / [S, n, n_latents]) and then returns one value per seed (a list, or for
``firing_counts`` an [S, n_latents] tensor). ``x`` may stay [n, d] when ``x_hat`` is [S, n, d].
Sums are accumulated in float64; results are Python floats.

``x`` is the reference the reconstruction is scored against: an SAE's input, or a
transcoder's target y (the activations at its output hook; ``x_hat`` is then its [n, d_out]
prediction, and explained variance is relative to y's variance).
``reconstruction_quality`` gathers MSE, explained variance, L0 and dead fraction in one dict.
"""

from __future__ import annotations

import numpy as np
import torch

from husai.errors import HusaiError
from husai.metrics._validate import ArrayLike, as_tensor, check_finite


def _tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    if t.ndim not in (2, 3):
        raise HusaiError(f"{name} must be [n, d] or [S, n, d], got shape {tuple(t.shape)}")
    if t.shape[-2] == 0:
        raise HusaiError(f"{name} has no rows (shape {tuple(t.shape)})")
    check_finite(t, name)
    return t


def _pair(x: ArrayLike, x_hat: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    xt, ht = _tensor(x, "x"), _tensor(x_hat, "x_hat")
    if xt.shape != ht.shape and not (xt.ndim == 2 and ht.ndim == 3 and ht.shape[1:] == xt.shape):
        raise HusaiError(f"x and x_hat shapes differ: {tuple(xt.shape)} vs {tuple(ht.shape)}")
    return xt, ht.to(xt.device)


def _out(v: torch.Tensor) -> float | list[float]:
    return v.item() if v.ndim == 0 else v.tolist()


def _total(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last two axes in an order that does not depend on torch's thread count
    (a full torch reduction splits its input by thread): each row is summed by one thread,
    the row sums by numpy's pairwise summation."""
    rows = t.sum(dim=-1).cpu().numpy()
    return torch.from_numpy(np.asarray(rows.sum(axis=-1)))


def _sse(xt: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    return _total((ht.double() - xt.double()).pow(2))


def mse(x: ArrayLike, x_hat: ArrayLike) -> float | list[float]:
    """Mean squared reconstruction error over all elements; lower = better."""
    xt, ht = _pair(x, x_hat)
    return _out(_sse(xt, ht) / (ht.shape[-2] * ht.shape[-1]))


def explained_variance(x: ArrayLike, x_hat: ArrayLike) -> float | list[float]:
    """Fraction of variance explained, ``1 - SSE/SST``; higher = better (1 = perfect).

    SST is taken around the per-dimension mean of ``x`` (so reconstructing every row as that
    mean scores 0; worse reconstructions go negative). Constant ``x`` raises ``HusaiError``.
    """
    xt, ht = _pair(x, x_hat)
    xd = xt.double()
    sst = _total((xd - xd.mean(dim=-2, keepdim=True)).pow(2))
    if bool((sst == 0).any()):
        raise HusaiError("x has zero variance; explained variance is undefined")
    return _out(1.0 - _sse(xt, ht) / sst)


def _codes(codes: ArrayLike) -> torch.Tensor:
    return _tensor(codes, "codes") != 0


def mean_l0(codes: ArrayLike) -> float | list[float]:
    """Mean number of nonzero latents per row (L0 sparsity); lower = sparser."""
    return _out(_codes(codes).sum(dim=-1).double().mean(dim=-1))


def firing_counts(codes: ArrayLike) -> torch.Tensor:
    """Number of rows on which each latent is nonzero: int64 [n_latents] (or [S, n_latents])."""
    return _codes(codes).sum(dim=-2)


def dead_fraction(codes: ArrayLike) -> float | list[float]:
    """Fraction of latents that never fire on the given rows; lower = better."""
    return _out((firing_counts(codes) == 0).double().mean(dim=-1))


def reconstruction_quality(
    target: ArrayLike, recon: ArrayLike, codes: ArrayLike
) -> dict[str, float] | list[dict[str, float]]:
    """{"mse", "explained_variance", "l0", "dead_fraction"} of a reconstruction of `target`
    (an SAE's input, a transcoder's target y) from `codes`; one dict per seed when `recon`
    and `codes` have a seeds axis."""
    n_codes, n_recon = _tensor(codes, "codes").shape[-2], _tensor(recon, "x_hat").shape[-2]
    if n_codes != n_recon:
        raise HusaiError(f"codes and x_hat have different row counts ({n_codes} vs {n_recon})")
    values = {
        "mse": mse(target, recon),
        "explained_variance": explained_variance(target, recon),
        "l0": mean_l0(codes),
        "dead_fraction": dead_fraction(codes),
    }
    if isinstance(values["mse"], list):
        return [dict(zip(values, v, strict=True)) for v in zip(*values.values(), strict=True)]
    return values  # type: ignore[return-value]


def loss_recovered(clean_loss: float, spliced_loss: float, ablated_loss: float) -> float:
    """Fraction of the LM loss recovered when splicing in the SAE; higher = better.

    ``(ablated - spliced) / (ablated - clean)``: 1 = as good as the clean model, 0 = as bad as
    ablating the activation (zero- or mean-ablation, whichever the caller measured).
    """
    vals = {"clean_loss": clean_loss, "spliced_loss": spliced_loss, "ablated_loss": ablated_loss}
    for name, v in vals.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise HusaiError(f"{name} must be a number, got {v!r}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise HusaiError(f"{name} is not finite: {v!r}")
    clean, spliced, ablated = (float(v) for v in vals.values())
    if ablated == clean:
        raise HusaiError(f"ablated_loss equals clean_loss ({clean}); loss recovered is undefined")
    return (ablated - spliced) / (ablated - clean)
