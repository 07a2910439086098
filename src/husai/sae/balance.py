"""Frequency balancing for the TopK family: a selection-only bias, annealed to zero.

Plain TopK from a random init leaves most latents dead on clustered data (the toy model's
resid_post: 78% dead at d_sae 113, k 1), and which latents live is decided by the init, so
independent seeds do not agree. With `balance_rate` γ > 0 each seed keeps a bias β [F] that
is added to the pre-activations *for choosing* the k latents only (the chosen latents'
values stay the unbiased pre-activations, so the reconstruction and its gradients are
TopK's). After every step

    β_f ← β_f + γ · v̄ · (k/F − r_f) / (k/F)

with r_f the fraction of the batch's rows latent f fired on and v̄ the mean chosen value of
that seed's batch (so γ is unit-free): rarely chosen latents are pulled into use,
over-used ones pushed out, until every latent fires on ≈ k/F of the rows (the bias-based
load balancing of mixture-of-experts routers, Wang et al. 2024, "Auxiliary-loss-free load
balancing"). Over the last `balance_anneal` fraction of the steps β decays linearly to
exactly 0 (and is no longer updated), so the trained SAE is a plain TopK SAE: its saved
weights, inference encoder and SAELens file are unchanged in kind. β is a training
statistic, never saved. Each seed's β starts at 0 and sees only that seed's batches: the
seeds stay independent.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def firing_counts(vals_SBK: Tensor, flat_SBK: Tensor, S: int, F: int) -> Tensor:
    """[S, F] float: rows of the batch each latent fired on (flat indices into S·F)."""
    out = vals_SBK.new_zeros(S * F, dtype=torch.float32)
    out.index_add_(0, flat_SBK.reshape(-1), (vals_SBK.reshape(-1) > 0).float())
    return out.view(S, F)


def anneal_start(total_steps: int, anneal: float) -> int:
    """The first step whose update decays β instead of balancing."""
    return max(0, total_steps - max(1, round(anneal * total_steps)))


@torch.no_grad()
def update_bias(
    bias_SF: Tensor,
    counts_SF: Tensor,
    mean_value_S: Tensor,
    n_rows: int,
    k: int,
    rate: float,
    step: int,
    total_steps: int,
    anneal: float,
) -> None:
    """One balancing update of β in place after step `step` (0-based) of `total_steps`.
    Before the anneal: the balancing step. In it: β ← β · (left − 1) / left, left being
    the steps that remain, so β is exactly 0 after the last step."""
    start = anneal_start(total_steps, anneal)
    if step >= start:
        left = total_steps - step
        bias_SF.mul_(max(0.0, (left - 1) / left) if left > 0 else 0.0)
        return
    target = k / bias_SF.shape[1]
    rel_SF = (target - counts_SF / n_rows) / target
    bias_SF.add_(rate * mean_value_S.to(bias_SF).unsqueeze(1) * rel_SF)
