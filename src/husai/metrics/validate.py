"""Input checks shared by the metrics: turn user mistakes into one-line `HusaiError`s."""

from __future__ import annotations

import numpy as np
import torch

from husai.errors import HusaiError

ArrayLike = torch.Tensor | np.ndarray
_TINY = 1e-15  # row norms below this are rescaled first to avoid float underflow


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """Detached tensor view of `x` (numpy arrays are wrapped, not copied where possible)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise HusaiError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def check_finite(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise HusaiError(f"{name} contains NaN or Inf values (shape {tuple(x.shape)})")


def unit_rows(x: ArrayLike, name: str) -> torch.Tensor:
    """Validated [n, d] dictionary with rows scaled to unit norm in float32 (zero rows stay 0)."""
    t = as_tensor(x, name)
    if t.ndim != 2:
        raise HusaiError(f"{name} must be a 2-D [n_latents, d] matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise HusaiError(f"{name} is empty (shape {tuple(t.shape)})")
    check_finite(t, name)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if bool((~torch.isfinite(norm) | (norm < _TINY)).any()):
        # Zero, tiny or overflowing rows: divide by each row's max |entry| first, then renormalise.
        scale = t.abs().amax(dim=1, keepdim=True)
        t = torch.where(scale > 0, t / torch.where(scale > 0, scale, 1), 0)
        norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    return torch.where(norm > 0, t / torch.where(norm > 0, norm, 1), 0).to(torch.float32)


def check_block_size(block_size: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise HusaiError(f"block_size must be a positive integer, got {block_size!r}")
    return block_size


def check_threshold(threshold: float) -> float:
    if not 0.0 <= float(threshold) <= 1.0:
        raise HusaiError(f"threshold must lie in [0, 1], got {threshold!r}")
    return float(threshold)
