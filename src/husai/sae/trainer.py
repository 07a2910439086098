"""One trainer for every architecture: Adam on the stacked seeds, one batched step each.

With targets `y_ND` (rows aligned with `x_ND`, e.g. another hook of the same tokens) it
trains transcoders: d_out = y's width, with a data-dependent init (`SAE.fit_init`).
Seed s initialises from its own generator (seed s) and shuffles the data with another
(seed s + DATA_SEED_OFFSET); the loss is a sum of per-seed losses. An ensemble of seeds
therefore reproduces, up to float rounding, what each seed gives when trained alone. The
learning rate follows `lr_schedule` (husai.sae.schedule; a function of the step, the same
for every seed) and the config's weight penalties (husai.sae.penalties) join each seed's
own loss, so both keep that property.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.runtime import deterministic, resolve_device
from husai.sae.base import SAE
from husai.sae.config import SAEConfig
from husai.sae.data import Rows, ShuffleStream, TensorRows, as_rows
from husai.sae.l0_target import adapt_coefficient, adapting
from husai.sae.penalties import weight_penalties
from husai.sae.registry import REGISTRY
from husai.sae.regularise import ConsistencyRegulariser, make_regulariser
from husai.sae.resample import init_from_data, resample_dead, resample_due
from husai.sae.schedule import lr_scheduler

DATA_SEED_OFFSET = 1_000_003
# Bump when training computes different weights for the same config and data (saved seeds of
# another version are retrained, not reused). 2: sparse_ops top-k and gradients, fused Adam.
# 3: weight gradients as embedding_bag sums over latent-grouped codes, BatchTopK/Matryoshka
# decoded by embedding_bag with their batch-wide ties to the lower index (float rounding).
# 4: JumpReLU's threshold gradient summed by the native kernel (float rounding).
TRAINER_VERSION = 4


def build_sae(cfg: SAEConfig, d_in: int, seeds: Sequence[int], d_out: int | None = None) -> SAE:
    """An untrained ensemble: an SAE, or with `d_out` a transcoder."""
    return REGISTRY[cfg.architecture](cfg, d_in, list(seeds), d_out)


def check_finite(x: Tensor, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = int(bad.reshape(len(x), -1).any(-1).sum())
        raise HusaiError(f"{what} contain NaN/Inf ({rows} of {len(x)} rows)")


def train_step(
    sae: SAE,
    opt: torch.optim.Optimizer,
    x_SBD: Tensor,
    step: int,
    y_SBO: Tensor | None = None,
    consistency: ConsistencyRegulariser | None = None,
    precision: str = "fp32",
) -> dict[str, Tensor]:
    """One Adam step on all seeds; returns the per-seed loss parts ("mse", ...; detached).
    Raises on a non-finite loss. The config's weight penalties (husai.sae.penalties) add
    theirs (parts "weight_decay", "align"), an active `consistency` regulariser its
    per-seed penalty (parts "consistency", and "consistency_mcc" the mean matched |cos|).
    `precision` "bf16": the forward and loss under bfloat16 autocast (parts in float32)."""
    with _autocast(precision, x_SBD.device):
        loss_S, parts = sae.loss(x_SBD, y_SBO)
    if precision != "fp32":
        loss_S = loss_S.float()
        parts = {k: v.float() if v.is_floating_point() else v for k, v in parts.items()}
    weights_S, weight_parts = weight_penalties(sae)
    if weights_S is not None:
        loss_S = loss_S + weights_S
        parts.update(weight_parts)
    if consistency is not None and consistency.active:
        penalty_S, parts["consistency_mcc"] = consistency(sae.W_dec, step)
        loss_S = loss_S + penalty_S
        parts["consistency"] = penalty_S.detach()
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
    return parts


def _matrix(x: Tensor, what: str) -> Tensor:
    if x.dim() != 2 or len(x) == 0:
        raise HusaiError(f"{what} must be a non-empty [n, d] matrix, got {tuple(x.shape)}")
    x = x.float()
    check_finite(x, what)
    return x


Data = Tensor | Rows | Any  # a tensor, husai.sae.data.Rows or a husai.store.ActivationStore


def _inputs(cfg: SAEConfig, x: Data, y_ND: Tensor | None) -> tuple[Rows, Tensor | None]:
    """Validated float activations as `Rows` (and targets) for training."""
    if not isinstance(x, Tensor):
        if y_ND is not None:
            raise HusaiError("targets (transcoders) need the activations as an in-memory tensor")
        return as_rows(x), None
    x_ND = _matrix(x, "activations")
    if y_ND is None:
        return TensorRows(x_ND), None
    y_ND = _matrix(y_ND, "targets")
    if len(y_ND) != len(x_ND):
        raise HusaiError(
            f"activations and targets have different row counts ({len(x_ND)} vs {len(y_ND)})"
        )
    if cfg.init == "data" or cfg.resample_every_epochs:
        raise HusaiError("init: data and resampling are for SAEs, not transcoders")
    if cfg.align_coefficient > 0:
        raise HusaiError("align_coefficient is for SAEs, not transcoders")
    return TensorRows(x_ND), y_ND


def _initial(cfg: SAEConfig, data: Rows, seeds: Sequence[int], y_ND: Tensor | None) -> SAE:
    d_out = None if y_ND is None else y_ND.shape[1]
    sae = build_sae(cfg, data.d, seeds, d_out=d_out)
    if cfg.init == "data":
        init_from_data(sae, data)
    if y_ND is None:
        sae.fit_init(data)
    else:
        sae.fit_init(data.x, y_ND)  # type: ignore[attr-defined]  # _inputs: TensorRows
    return sae


def initial_sae(
    cfg: SAEConfig, x_ND: Data, seeds: Sequence[int], y_ND: Tensor | None = None
) -> SAE:
    """The ensemble `train_sae` starts from on the same inputs, before its first step: the
    architecture's seeded random init, then (`init: data`) decoder rows from the data, then
    the data-dependent `SAE.fit_init` (with targets y: a transcoder). The at-init baseline.
    Always built on the CPU, so it is the same whatever device training then uses."""
    data, y_ND = _inputs(cfg, x_ND, y_ND)
    return _initial(cfg, data, seeds, y_ND)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_sae(
    cfg: SAEConfig,
    x_ND: Data,
    seeds: Sequence[int],
    *,
    y_ND: Tensor | None = None,
    reference: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[int, SAE], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SAE, dict[str, list[float]]]:
    """Train one SAE per seed on activations [N, D] (or, given targets y [N, O], one
    transcoder x → y), starting from `initial_sae`; returns the ensemble and final losses
    (MSE against the target). `reference` [G, O]: the frozen decoder that
    consistency_penalty "reference" and "assignment" pull towards (husai.sae.regularise);
    not given, it is `train_reference`'s default (this config without the penalty, trained
    for `reference_seed`).

    The activations may be a tensor, a `husai.sae.data.Rows` or an activation store
    (husai.store.ActivationStore, streamed shard by shard through each seed's
    `ShuffleStream` of `cfg.shuffle_buffer` rows; SAEs only, not transcoders). `device`:
    "cpu", "cuda" or "auto" (husai.runtime.resolve_device); the ensemble trains there
    (`on_epoch` sees it there), batches are moved to it, data orders are drawn on the CPU
    (the same on every device), and the returned ensemble is on the CPU."""
    data, y_ND = _inputs(cfg, x_ND, y_ND)
    dev = resolve_device(device)
    N = data.n
    if reference is None and cfg.consistency_penalty in ("reference", "assignment"):
        from husai.sae.regularise import train_reference

        reference = train_reference(cfg, data, seeds, y_ND=y_ND, device=dev)
    sae = _initial(cfg, data, seeds, y_ND).to(dev)
    ref = None if reference is None else reference.to(dev)
    consistency = make_regulariser(cfg, len(seeds), sae.d_out, ref)
    B = min(cfg.batch_size, N)
    per_epoch = N // B
    total = cfg.epochs * per_epoch
    sae.start_training(N, total)
    # fused: one pass over each weight per step (~20× the per-parameter loop on the CPU;
    # the same update up to float rounding)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=dev.type in ("cpu", "cuda"))
    schedule = lr_scheduler(opt, cfg, total)  # constant, no warm-up: lr × 1.0 throughout
    streams = [
        ShuffleStream(
            data, torch.Generator().manual_seed(s + DATA_SEED_OFFSET), B, cfg.shuffle_buffer
        )
        for s in seeds
    ]
    mse = torch.zeros(len(seeds))
    resampled = [0] * len(seeds)
    with deterministic(warn_only=dev.type != "cpu"):
        for epoch in range(cfg.epochs):
            batches = zip(*(stream.epoch() for stream in streams), strict=True)
            for i, per_seed in enumerate(batches):
                step = epoch * per_epoch + i
                x_SBD = torch.stack([rows for _, rows in per_seed]).to(dev)
                y_SBO = None
                if y_ND is not None:
                    y_SBO = y_ND[torch.stack([ids for ids, _ in per_seed])].to(dev)
                parts = train_step(sae, opt, x_SBD, step, y_SBO, consistency, cfg.precision)
                schedule.step()
                mse = parts["mse"]
                if cfg.target_l0 is not None and sae.coefficient_field and adapting(step, total):
                    adapt_coefficient(sae, x_SBD, cfg.target_l0)
                if progress is not None:
                    progress(step + 1, total)
            if resample_due(cfg.epochs, cfg.resample_every_epochs, epoch):
                n = resample_dead(sae, opt, data, (epoch + 1) * per_epoch)
                resampled = [a + b for a, b in zip(resampled, n, strict=True)]
            if on_epoch is not None:
                on_epoch(epoch + 1, sae)  # e.g. a consistency trajectory checkpoint
        sae.finish_training(data)
    final: dict[str, list[float]] = {}
    if consistency is not None:  # on the final decoder, with fresh matchings
        with torch.no_grad():
            penalty, mcc = consistency(sae.W_dec, None)
        final = {"consistency_penalty": penalty.tolist(), "consistency_mcc": mcc.tolist()}
    sae = sae.cpu()
    return sae, {
        "final_train_mse": [float(v) for v in mse],
        "steps": [total] * len(seeds),
        "resampled_latents": resampled,
        **({"sparsity_coefficient": sae.coefficient.tolist()} if sae.coefficient_field else {}),
        **final,
    }
