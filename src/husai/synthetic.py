"""Synthetic activations with a known ground-truth dictionary.

A sample is ``x = c @ F_true + noise``: ``F_true`` [n_features, d] has unit rows (the true
feature directions) and ``c`` [n_features] is the sample's code.

- ``regime="sparse"``: feature i is active with probability p_i (independently, unless
  ``correlated``), with ``sum_i p_i = k_active`` (mean number active per sample); an active
  feature's coefficient is a non-negative ``magnitude`` draw. ``frequency="uniform"`` gives
  p_i = k_active / n_features; ``"zipf"`` gives p_i ∝ (i + 1)^-zipf_exponent, capped at 1
  (the excess is handed to the other features so the mean stays k_active).
- ``correlated=True``: features are split into consecutive groups of ``group_size``; a group
  switches on with probability q = min(1, 2 max_{i in group} p_i), and inside an on group
  feature i fires with probability p_i / q. Marginal frequencies are unchanged, but features
  of a group co-fire (uniform frequencies: each fires in half of its group's on-samples).
- ``regime="dense"``: every feature is active in every sample with a signed N(0, 1)
  coefficient, so x is Gaussian with covariance F_true^T F_true (+ noise): no sparse
  structure, nothing identifiable beyond the covariance. ``k_active``, ``magnitude``,
  ``frequency`` and ``correlated`` are ignored. This is the null regime.
- ``coherence``: None = i.i.d. uniform random unit rows. A number = the rows' maximum
  pairwise |cos| is made equal to it: rows are first spread apart (projected gradient
  descent on the hinge Σ_{i<j} relu(|cos_ij| - target)^2; for n_features <= d, orthonormal
  rows), then pulled towards one shared random direction, u, (row ← normalise((1-t) row + t u),
  t found by bisection) until the maximum |cos| is exactly the target. Targets below the
  Welch bound sqrt((n - d) / (d (n - 1))), or that the spreading does not reach, are errors.
- ``noise_std``: i.i.d. N(0, noise_std²) added to every coordinate (absolute, not relative).

Everything is drawn from private ``torch.Generator``s (the global RNG is never touched), one
stream each for the dictionary, the codes and the noise (seeded ``3 seed``, ``3 seed + 1``,
``3 seed + 2``), samples in chunks of ``CHUNK`` rows: so changing ``noise_std`` or
``coherence`` leaves the codes as they were.

File format (``write_synthetic``): one safetensors file readable by
``husai.activations.load_activations``: tensor ``activations`` [n_samples, d] float32 and
tensor ``features`` [n_features, d] float32 (the ground truth, unit rows), with the
activation metadata (``n``, ``d``, ``dtype``) plus ``source="synthetic"``,
``config`` (the SyntheticConfig as JSON), ``features_key="features"``, ``n_features``,
``coherence`` (achieved max |cos| between true rows). ``load_ground_truth`` reads it back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from husai.activations import KEY as ACTIVATIONS_KEY
from husai.config import Strict
from husai.errors import HusaiError
from husai.io import load_tensors, save_tensors
from husai.metrics.spectrum import effective_rank

__all__ = [
    "FEATURES_KEY",
    "SyntheticConfig",
    "effective_rank",
    "generate",
    "load_ground_truth",
    "max_coherence",
    "welch_bound",
    "write_synthetic",
]

FEATURES_KEY = "features"
CHUNK = 8192  # rows generated per step (part of the definition of the stream: keep fixed)
GROUP_ON_SHARE = 0.5  # correlated: a feature fires in this share of its group's on-samples
_SPREAD_STEPS = 3000
_COHERENCE_TOL = 1e-4


class SyntheticConfig(Strict):
    """Synthetic activations x = codes @ F_true + noise with known unit-norm features F_true."""

    n_features: int = Field(64, gt=0, description="number of true features (rows of F_true)")
    d: int = Field(32, gt=0, description="activation width")
    n_samples: int = Field(20_000, ge=2, description="number of activation vectors")
    k_active: float = Field(
        3.0, gt=0, description="sparse: mean number of active features per sample"
    )
    magnitude: Literal["half_normal", "exponential", "uniform", "constant"] = Field(
        "half_normal",
        description="sparse: coefficient of an active feature: |N(0,1)|, Exp(1), U(0,1) or 1",
    )
    frequency: Literal["uniform", "zipf"] = Field(
        "uniform", description="sparse: firing probabilities equal, or ∝ (i+1)^-zipf_exponent"
    )
    zipf_exponent: float = Field(1.0, gt=0, description="exponent of the zipf frequencies")
    correlated: bool = Field(
        False,
        description="sparse: features co-fire in consecutive groups of group_size "
        "(marginal frequencies unchanged)",
    )
    group_size: int = Field(4, ge=2, description="features per co-firing group (correlated)")
    coherence: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="max |cos| between true feature rows (null: random unit rows)",
    )
    noise_std: float = Field(0.01, ge=0, description="std of i.i.d. Gaussian noise per coordinate")
    regime: Literal["sparse", "dense"] = Field(
        "sparse",
        description="sparse: k_active non-negative codes; dense: every feature active with an "
        "N(0,1) code (Gaussian data, the null regime)",
    )
    seed: int = Field(0, description="seed of the torch.Generator that draws everything")

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.regime == "sparse" and self.k_active > self.n_features:
            raise ValueError(
                f"k_active ({self.k_active:g}) must be ≤ n_features ({self.n_features})"
            )
        if self.coherence is not None and self.coherence < welch_bound(self.n_features, self.d):
            raise ValueError(
                f"coherence {self.coherence:g} is below the Welch bound "
                f"{welch_bound(self.n_features, self.d):.4f} for {self.n_features} rows in "
                f"d = {self.d}: no such dictionary exists"
            )
        return self


# -- the dictionary ----------------------------------------------------------------------


def welch_bound(n: int, d: int) -> float:
    """Smallest possible max |cos| of n unit vectors in R^d (0 when n <= d)."""
    return 0.0 if n <= d else math.sqrt((n - d) / (d * (n - 1)))


def max_coherence(F: Tensor) -> float:
    """Largest |cos| between two distinct rows of F (0 for a single row)."""
    if F.shape[0] < 2:
        return 0.0
    u = F.double() / F.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    g = (u @ u.T).abs_()
    g.fill_diagonal_(0)
    return float(g.max())


def _unit(F: Tensor) -> Tensor:
    return F / F.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _spread(F: Tensor, target: float) -> Tensor:
    """Projected gradient descent on Σ_{i<j} relu(|cos_ij| - target)^2 (deterministic)."""
    tau = max(target - 0.01, 0.0)  # aim a bit below the target so the max gets under it
    lr = 0.5
    for _ in range(_SPREAD_STEPS):
        G = F @ F.T
        G.fill_diagonal_(0)
        if float(G.abs().max()) <= target:
            break
        R = (G.abs() - tau).clamp_min_(0) * G.sign()
        grad = R @ F
        grad -= (grad * F).sum(1, keepdim=True) * F
        F = _unit(F - lr * grad)
    return F


def _mix_towards(F: Tensor, u: Tensor, target: float) -> Tensor:
    """Pull rows towards the shared direction u until max |cos| equals target (bisection)."""
    if max_coherence(F) >= target - _COHERENCE_TOL:
        return F
    lo, hi = 0.0, 1.0
    for _ in range(60):
        t = 0.5 * (lo + hi)
        if max_coherence(_unit((1 - t) * F + t * u)) > target:
            hi = t
        else:
            lo = t
    return _unit((1 - lo) * F + lo * u)


def _dictionary(cfg: SyntheticConfig, g: torch.Generator) -> Tensor:
    n, d = cfg.n_features, cfg.d
    F = _unit(torch.randn(n, d, generator=g, dtype=torch.float64))
    if cfg.coherence is None:
        return F
    u = _unit(torch.randn(1, d, generator=g, dtype=torch.float64))
    if n <= d:
        q, _ = torch.linalg.qr(F.T)  # orthonormal rows spanning the random ones
        F = q.T.contiguous()
    else:
        F = _spread(F, cfg.coherence)
    reached = max_coherence(F)
    if reached > cfg.coherence + _COHERENCE_TOL:
        raise HusaiError(
            f"synthetic: could not make {n} rows in d = {d} reach coherence {cfg.coherence:g} "
            f"(got {reached:.4f}; Welch bound {welch_bound(n, d):.4f}); ask for a larger value"
        )
    return _mix_towards(F, u, cfg.coherence)


# -- the codes ---------------------------------------------------------------------------


def firing_probabilities(cfg: SyntheticConfig) -> Tensor:
    """Per-feature firing probability p [n_features] (sparse regime), summing to k_active."""
    n, k = cfg.n_features, cfg.k_active
    if cfg.frequency == "uniform":
        return torch.full((n,), k / n, dtype=torch.float64)
    w = (torch.arange(n, dtype=torch.float64) + 1) ** -cfg.zipf_exponent
    p = torch.zeros(n, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    while True:  # water-filling: cap at 1, hand the excess to the others proportionally
        free = ~capped
        budget = k - float(capped.sum())
        p[free] = budget * w[free] / w[free].sum()
        p[capped] = 1.0
        over = free & (p > 1.0)
        if not over.any():
            return p.clamp_(max=1.0)
        capped |= over


def _magnitudes(cfg: SyntheticConfig, shape: tuple[int, int], g: torch.Generator) -> Tensor:
    if cfg.magnitude == "half_normal":
        return torch.randn(shape, generator=g).abs_()
    if cfg.magnitude == "exponential":
        return torch.empty(shape).exponential_(1.0, generator=g)
    if cfg.magnitude == "uniform":
        return torch.rand(shape, generator=g)
    return torch.ones(shape)


def _codes(cfg: SyntheticConfig, rows: int, p: Tensor, g: torch.Generator) -> Tensor:
    n = cfg.n_features
    if cfg.regime == "dense":
        return torch.randn(rows, n, generator=g)
    if cfg.correlated:
        group = torch.arange(n) // cfg.group_size
        n_groups = int(group[-1]) + 1
        pmax = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce(0, group, p, reduce="amax")
        q = (pmax / GROUP_ON_SHARE).clamp_(max=1.0)
        on = torch.rand(rows, n_groups, generator=g, dtype=torch.float64) < q
        inside = torch.rand(rows, n, generator=g, dtype=torch.float64) < p / q[group]
        active = on[:, group] & inside
    else:
        active = torch.rand(rows, n, generator=g, dtype=torch.float64) < p
    return _magnitudes(cfg, (rows, n), g) * active


def generate(
    cfg: SyntheticConfig, return_codes: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Draw (x [n_samples, d], F_true [n_features, d] unit rows, codes [n_samples, n_features]
    or None), all float32, deterministically from ``cfg.seed``."""
    g_dict, g_codes, g_noise = (torch.Generator().manual_seed(3 * cfg.seed + i) for i in range(3))
    F = _dictionary(cfg, g_dict).float()
    p = firing_probabilities(cfg)
    xs, cs = [], []
    for start in range(0, cfg.n_samples, CHUNK):
        rows = min(CHUNK, cfg.n_samples - start)
        c = _codes(cfg, rows, p, g_codes)
        x = c @ F
        if cfg.noise_std > 0:
            x += cfg.noise_std * torch.randn(rows, cfg.d, generator=g_noise)
        xs.append(x)
        if return_codes:
            cs.append(c)
    return torch.cat(xs), F, (torch.cat(cs) if return_codes else None)


# -- files -------------------------------------------------------------------------------


def write_synthetic(cfg: SyntheticConfig, path: Path) -> Path:
    """Generate and save an activation file holding the ground truth too (see module doc)."""
    x, F, _ = generate(cfg)
    meta = {
        "source": "synthetic",
        "config": cfg.model_dump_json(),
        "features_key": FEATURES_KEY,
        "n_features": str(cfg.n_features),
        "coherence": f"{max_coherence(F):.6f}",
        # what husai.activations.save_activations writes:
        "n": str(x.shape[0]),
        "d": str(x.shape[1]),
        "dtype": "float32",
    }
    tensors = {ACTIVATIONS_KEY: x, FEATURES_KEY: F}
    return save_tensors(Path(path), tensors, metadata=meta, seal=True)


def load_ground_truth(path: Path) -> Tensor:
    """The true feature directions [n_features, d] (float32) stored in a synthetic file."""
    tensors, _ = load_tensors(Path(path))
    if FEATURES_KEY not in tensors:
        raise HusaiError(f"{path}: no '{FEATURES_KEY}' tensor (not a husai synthetic file?)")
    F = tensors[FEATURES_KEY]
    acts = tensors.get(ACTIVATIONS_KEY)
    if F.dim() != 2 or F.shape[0] == 0 or (acts is not None and F.shape[1] != acts.shape[-1]):
        raise HusaiError(
            f"{path}: '{FEATURES_KEY}' must be [n_features, d] matching the activations' d, "
            f"got {tuple(F.shape)}"
        )
    if not torch.isfinite(F).all():
        raise HusaiError(f"{path}: '{FEATURES_KEY}' contains NaN/Inf")
    return F.float()
