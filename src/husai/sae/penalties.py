"""Weight penalties added to each seed's loss by the trainer (off by default).

- `weight_decay` λ (an L2 weight penalty, arXiv 2603.04198, which reports more features
  shared across seeds for TopK SAEs on Pythia-70M): λ · ‖W_enc[s]‖², summed over all F × D
  entries (≈ F at an SAE's tied init). In the loss, not decoupled: Adam normalises its
  gradient 2λ·W_enc with the MSE's. The encoder only: the trainer keeps every decoder row
  at unit norm (`normalize_decoder`, and `remove_parallel_grads` drops the radial gradient,
  which is all an L2 penalty's gradient on a row), so ‖W_dec‖² is the constant F.
- `align_coefficient` α (encoder–decoder alignment, arXiv 2605.18629):
  α · mean_f (1 − cos(W_enc[s, f], W_dec[s, f])), dimensionless in [0, 2α] like the
  consistency penalty (husai.sae.regularise); pulls each latent's encoder row towards its
  decoder direction. SAEs only: a transcoder's encoder reads another space than its decoder
  writes.

Each is a function of seed s's own weights, so the seeds stay independent. Computed in
float32 outside any autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

from husai.sae.base import SAE


def weight_penalty(W_enc_SFD: Tensor, coefficient: float) -> Tensor:
    """[S]: coefficient · ‖W_enc[s]‖² (squared Frobenius norm of each seed's encoder)."""
    return coefficient * W_enc_SFD.pow(2).sum((1, 2))


def align_penalty(W_enc_SFD: Tensor, W_dec_SFD: Tensor, coefficient: float) -> Tensor:
    """[S]: coefficient · mean over latents of 1 − cos(encoder row, decoder row)."""
    dot = (W_enc_SFD * W_dec_SFD).sum(-1)
    norms = W_enc_SFD.norm(dim=-1) * W_dec_SFD.norm(dim=-1)
    return coefficient * (1 - dot / norms.clamp_min(1e-12)).mean(-1)


def weight_penalties(sae: SAE) -> tuple[Tensor | None, dict[str, Tensor]]:
    """The active penalties' per-seed sum [S] (None when all are off) and each one's value
    (detached; parts "weight_decay", "align")."""
    cfg = sae.cfg
    terms: dict[str, Tensor] = {}
    if cfg.weight_decay > 0:
        terms["weight_decay"] = weight_penalty(sae.W_enc, cfg.weight_decay)
    if cfg.align_coefficient > 0:
        terms["align"] = align_penalty(sae.W_enc, sae.W_dec, cfg.align_coefficient)
    if not terms:
        return None, {}
    total = torch.stack(list(terms.values())).sum(0)
    return total, {k: v.detach() for k, v in terms.items()}
