"""One trainer for every architecture: Adam on the stacked seeds, one batched step each.

Seed s initialises from its own generator (seed s) and shuffles the data with another
(seed s + DATA_SEED_OFFSET); the loss is a sum of per-seed losses. An ensemble of seeds
therefore reproduces, up to float rounding, what each seed gives when trained alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.runtime import deterministic
from husai.sae.base import SAE
from husai.sae.registry import REGISTRY
from husai.sae.resample import init_from_data, resample_dead, resample_due

DATA_SEED_OFFSET = 1_000_003


def build_sae(cfg: SAEConfig, d_in: int, seeds: Sequence[int]) -> SAE:
    return REGISTRY[cfg.architecture](cfg, d_in, list(seeds))


def check_finite(x: Tensor, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = int(bad.reshape(len(x), -1).any(-1).sum())
        raise HusaiError(f"{what} contain NaN/Inf ({rows} of {len(x)} rows)")


def train_step(sae: SAE, opt: torch.optim.Optimizer, x_SBD: Tensor, step: int) -> Tensor:
    """One Adam step on all seeds; returns the per-seed MSE. Raises on a non-finite loss."""
    loss_S, parts = sae.loss(x_SBD)
    bad = ~torch.isfinite(loss_S)
    if bad.any():
        seed = sae.seeds[int(bad.nonzero()[0])]
        raise HusaiError(
            f"SAE {sae.cfg.label} seed {seed}: loss became NaN/Inf at step {step} (diverged)"
        )
    opt.zero_grad(set_to_none=True)
    loss_S.sum().backward()
    sae.remove_parallel_grads()
    opt.step()
    sae.normalize_decoder()
    sae.after_step(parts, x_SBD.shape[-2])
    return parts["mse"]


def train_sae(
    cfg: SAEConfig,
    x_ND: Tensor,
    seeds: Sequence[int],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SAE, dict[str, list[float]]]:
    """Train one SAE per seed on activations [N, D]; returns the ensemble and final losses."""
    if x_ND.dim() != 2 or len(x_ND) == 0:
        raise HusaiError(f"activations must be a non-empty [n, d] matrix, got {tuple(x_ND.shape)}")
    x_ND = x_ND.float()
    check_finite(x_ND, "activations")
    N, D = x_ND.shape
    sae = build_sae(cfg, D, seeds)
    if cfg.init == "data":
        init_from_data(sae, x_ND)
    sae.init_b_dec(x_ND.mean(0))
    sae.start_training(N)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    gens = [torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in seeds]
    B = min(cfg.batch_size, N)
    per_epoch = N // B
    total = cfg.epochs * per_epoch
    mse = torch.zeros(len(seeds))
    resampled = [0] * len(seeds)
    with deterministic():
        for epoch in range(cfg.epochs):
            order_SN = torch.stack([torch.randperm(N, generator=g) for g in gens])
            for i in range(per_epoch):
                step = epoch * per_epoch + i
                mse = train_step(sae, opt, x_ND[order_SN[:, i * B : (i + 1) * B]], step)
                if progress is not None:
                    progress(step + 1, total)
            if resample_due(cfg.epochs, cfg.resample_every_epochs, epoch):
                n = resample_dead(sae, opt, x_ND, (epoch + 1) * per_epoch)
                resampled = [a + b for a, b in zip(resampled, n, strict=True)]
        sae.finish_training(x_ND)
    return sae, {
        "final_train_mse": [float(v) for v in mse],
        "steps": [total] * len(seeds),
        "resampled_latents": resampled,
    }
