"""One trainer for every architecture: Adam on the stacked seeds, one batched step each.

Seed s shuffles the data with its own generator (seeded from s), so an ensemble of seeds
reproduces, up to float rounding, what each seed gives when trained alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.sae.base import SAE
from husai.sae.registry import REGISTRY

DATA_SEED_OFFSET = 1_000_003  # data order uses seed + offset, init uses seed


def build_sae(cfg: SAEConfig, d_in: int, seeds: Sequence[int]) -> SAE:
    return REGISTRY[cfg.architecture](cfg, d_in, list(seeds))


def check_finite(x: Tensor, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = int(bad.reshape(len(x), -1).any(-1).sum()) if x.dim() > 1 else int(bad.sum())
        raise HusaiError(f"{what} contain NaN/Inf ({rows} of {len(x)} rows)")


def train_sae(
    cfg: SAEConfig,
    x_ND: Tensor,
    seeds: Sequence[int],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SAE, dict[str, list[float]]]:
    """Train one SAE per seed on activations [N, D]; returns the ensemble and final losses.

    Raises HusaiError naming the seed and step if a loss becomes NaN/Inf.
    """
    if x_ND.dim() != 2 or len(x_ND) == 0:
        raise HusaiError(f"activations must be a non-empty [n, d] matrix, got {tuple(x_ND.shape)}")
    x_ND = x_ND.float()
    check_finite(x_ND, "activations")
    N, D = x_ND.shape
    sae = build_sae(cfg, D, seeds)
    sae.init_b_dec(x_ND.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    gens = [torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in seeds]
    B = min(cfg.batch_size, N)
    steps_per_epoch = N // B
    total, step = cfg.epochs * steps_per_epoch, 0
    last_mse = torch.zeros(len(seeds))
    for _ in range(cfg.epochs):
        order_SN = torch.stack([torch.randperm(N, generator=g) for g in gens])
        for i in range(steps_per_epoch):
            x_SBD = x_ND[order_SN[:, i * B : (i + 1) * B]]
            loss_S, parts = sae.loss(x_SBD)
            bad = ~torch.isfinite(loss_S)
            if bad.any():
                seed = sae.seeds[int(bad.nonzero()[0])]
                raise HusaiError(
                    f"SAE {cfg.label} seed {seed}: loss became NaN/Inf at step {step} (diverged)"
                )
            opt.zero_grad(set_to_none=True)
            loss_S.sum().backward()
            sae.remove_parallel_grads()
            opt.step()
            sae.normalize_decoder()
            last_mse = parts["mse"]
            step += 1
            if progress is not None:
                progress(step, total)
    return sae, {"final_train_mse": [float(v) for v in last_mse], "steps": [step] * len(seeds)}
