"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations (ReLU'd), zero the rest.

Training exploits the k-sparsity. The one dense matmul is the forward selection of the
k latents; everything else touches only the k chosen rows: the reconstruction sums k
gathered decoder rows (`embedding_bag`), and the encoder's backward scatters into the k
chosen encoder rows (`_TopKEncode`) instead of a dense [B, F] × [F, D] product.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as fn
from torch import Tensor

from husai.sae.base import SAE
from husai.sae.registry import register


class _TopKEncode(torch.autograd.Function):
    """(x [S,B,D], b_dec [S,D], W_enc [S,F,D], b_enc [S,F], k) → (ReLU'd top-k values,
    flat indices into the S·F stacked latents), with a backward that touches only the
    chosen encoder rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, k: int):  # type: ignore[override]
        S, F, D = W_enc.shape
        x_c = x - b_dec.unsqueeze(1)
        pre_SBF = torch.bmm(x_c, W_enc.transpose(1, 2)).add_(b_enc.unsqueeze(1))
        vals_SBK, idx_SBK = pre_SBF.topk(k, dim=-1)
        vals_SBK = vals_SBK.clamp_min_(0)
        flat_SBK = idx_SBK + (torch.arange(S, device=x.device) * F).view(S, 1, 1)
        ctx.save_for_backward(x_c, W_enc, flat_SBK, vals_SBK)
        ctx.mark_non_differentiable(flat_SBK)
        return vals_SBK, flat_SBK

    @staticmethod
    def backward(ctx: Any, grad_SBK: Tensor, _grad_idx: Tensor | None):  # type: ignore[override]
        x_c, W_enc, flat_SBK, vals_SBK = ctx.saved_tensors
        S, F, D = W_enc.shape
        B, K = flat_SBK.shape[1:]
        g_SBK = grad_SBK * (vals_SBK > 0)
        flat = flat_SBK.reshape(-1)
        # per-latent sum of upstream gradients = grad of b_enc; b_dec's follows from it
        g_SF = W_enc.new_zeros(S * F).index_add_(0, flat, g_SBK.reshape(-1)).view(S, F)
        grad_x = grad_b_dec = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_x = fn.embedding_bag(
                flat_SBK.reshape(S * B, K),
                W_enc.reshape(S * F, D),
                per_sample_weights=g_SBK.reshape(S * B, K),
                mode="sum",
            ).view(S, B, D)
        if ctx.needs_input_grad[1]:
            grad_b_dec = -torch.bmm(g_SF.unsqueeze(1), W_enc).squeeze(1)
        if ctx.needs_input_grad[2]:
            contrib = (g_SBK.unsqueeze(-1) * x_c.unsqueeze(2)).reshape(-1, D)
            grad_W = W_enc.new_zeros(S * F, D).index_add_(0, flat, contrib).view(S, F, D)
        grad_b_enc = g_SF if ctx.needs_input_grad[3] else None
        return grad_x, grad_b_dec, grad_W, grad_b_enc, None


@register
class TopKSAE(SAE):
    architecture = "topk"
    saelens_architecture = "topk"
    uses_k = True

    def activation(self, pre_SBF: Tensor) -> Tensor:
        vals, idx = pre_SBF.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre_SBF).scatter_(-1, idx, torch.relu(vals))

    def sparse_encode(self, x_SBD: Tensor) -> tuple[Tensor, Tensor]:
        """(values [S, B, K], flat latent indices into the S·F stacked rows [S, B, K])."""
        x = self._stack(x_SBD)
        return _TopKEncode.apply(x, self.b_dec, self.W_enc, self.b_enc, self.cfg.k)

    def sparse_decode(self, vals_SBK: Tensor, flat_SBK: Tensor) -> Tensor:
        """Sum of the K chosen decoder rows (embedding_bag; its backward touches only them)."""
        S, B, K = vals_SBK.shape
        out = fn.embedding_bag(
            flat_SBK.reshape(S * B, K),
            self.W_dec.reshape(S * self.d_sae, self.d_in),
            per_sample_weights=vals_SBK.reshape(S * B, K),
            mode="sum",
        )
        return out.view(S, B, self.d_in) + self.b_dec.unsqueeze(1)

    def loss(self, x_SBD: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        vals, flat = self.sparse_encode(x_SBD)
        mse = (self.sparse_decode(vals, flat) - x_SBD).pow(2).sum(-1).mean(-1)
        return mse, {"mse": mse.detach(), "penalty": torch.zeros_like(mse)}

    def extra_cfg(self) -> dict[str, object]:
        return {"k": self.cfg.k}
