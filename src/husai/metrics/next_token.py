"""A language model's next-token numbers from its logits: cross-entropy, top-1 accuracy and
the KL divergence between two models' next-token distributions (clean ‖ spliced).

Logits are [B, T, V], token ids [B, T]; `mask` (bool or 0/1 [B, T], e.g. the attention
mask; None = all) marks the real tokens. Cross-entropy and accuracy are over predictions:
logits[:, t] predicts ids[:, t + 1], counted when tokens t and t + 1 are both real
(`prediction_mask`, [B, T − 1]). KL is over every real position t (the next-token
distribution exists at the last position too), as SAELens's evals. Log-softmax and the
per-position values are float64 (rows of logits in chunks, so memory stays bounded); means
are sums of float64 values in numpy's pairwise order over the count. The `token_*`
functions give the per-position values (for streaming over batches), the others the mean.
"""

from __future__ import annotations

import numpy as np
import torch

from husai.errors import HusaiError

ROWS = 256  # rows of [*, V] logits converted to float64 at once


def _logits(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise HusaiError(f"{name} must be [batch, tokens, vocab], got {shape}")
    return x


def _mask(mask: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if tuple(mask.shape) != shape:
        raise HusaiError(f"mask must be {shape} like the ids, got {tuple(mask.shape)}")
    return mask.bool().cpu()


def prediction_mask(ids_BT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
    """bool [B, T − 1]: whether the prediction at t (of token t + 1) counts."""
    m = _mask(mask_BT, tuple(ids_BT.shape))
    return m[:, :-1] & m[:, 1:]


def token_cross_entropy(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> torch.Tensor:
    """float64 [B, T − 1]: −log p(ids[:, t + 1] | logits[:, t]) (nats)."""
    logits = _logits(logits_BTV, "logits")
    if ids_BT.shape != logits.shape[:2]:
        raise HusaiError(
            f"ids {tuple(ids_BT.shape)} and logits {tuple(logits.shape)} differ in shape"
        )
    B, T, V = logits.shape
    rows = logits[:, :-1].reshape(-1, V)
    targets = ids_BT[:, 1:].reshape(-1, 1).to(rows.device)
    out = torch.cat(
        [
            -c.double().log_softmax(-1).gather(-1, t).squeeze(-1)
            for c, t in zip(rows.split(ROWS), targets.split(ROWS), strict=True)
        ]
    )
    return out.view(B, T - 1).cpu()


def token_correct(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> torch.Tensor:
    """bool [B, T − 1]: whether the top logit at t is token t + 1."""
    logits = _logits(logits_BTV, "logits")
    return (logits[:, :-1].argmax(-1).cpu() == ids_BT[:, 1:].cpu()).bool()


def token_kl(clean_BTV: torch.Tensor, spliced_BTV: torch.Tensor) -> torch.Tensor:
    """float64 [B, T]: KL(p_clean ‖ p_spliced) of the next-token distributions (nats)."""
    clean, spliced = _logits(clean_BTV, "clean logits"), _logits(spliced_BTV, "spliced logits")
    if clean.shape != spliced.shape:
        raise HusaiError(
            f"clean and spliced logits differ in shape: {tuple(clean.shape)} vs "
            f"{tuple(spliced.shape)}"
        )
    B, T, V = clean.shape
    parts = []
    for c, s in zip(
        clean.reshape(-1, V).split(ROWS), spliced.reshape(-1, V).split(ROWS), strict=True
    ):
        lp, lq = c.double().log_softmax(-1), s.to(c.device).double().log_softmax(-1)
        parts.append((lp.exp() * (lp - lq)).sum(-1))
    return torch.cat(parts).view(B, T).cpu()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of `values` where `mask`: a float64 sum in numpy's pairwise order."""
    picked = values[mask.bool()].double()
    if picked.numel() == 0:
        raise HusaiError("no positions to average over (the mask is empty)")
    return float(np.asarray(picked.numpy()).sum()) / picked.numel()


def cross_entropy(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor | None = None
) -> float:
    """Mean next-token cross-entropy (nats per prediction); lower = better."""
    return masked_mean(token_cross_entropy(logits_BTV, ids_BT), prediction_mask(ids_BT, mask_BT))


def next_token_accuracy(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor | None = None
) -> float:
    """Fraction of counted predictions whose top logit is the next token; higher = better."""
    return masked_mean(token_correct(logits_BTV, ids_BT), prediction_mask(ids_BT, mask_BT))


def kl_divergence(
    clean_BTV: torch.Tensor, spliced_BTV: torch.Tensor, mask_BT: torch.Tensor | None = None
) -> float:
    """Mean KL(clean ‖ spliced) over the real positions (nats); 0 = same predictions."""
    kl = token_kl(clean_BTV, spliced_BTV)
    return masked_mean(kl, _mask(mask_BT, tuple(kl.shape)))
