"""HierarchicalTopK SAE (Balagansky et al. 2025, "Train One Sparse Autoencoder Across Multiple
Sparsity Budgets"): TopK codes, trained so that every prefix of them reconstructs.

With the k codes of an input sorted by value (c_(1) ≥ … ≥ c_(k)), x̂_j = b_dec + Σ_{i ≤ j}
c_(i) W_dec[(i)] is the reconstruction from its j largest codes; the loss is the mean over
j = 1 … k of ‖x − x̂_j‖² (summed over d_out, mean over the batch), so the model can be used
at any L0 ≤ k. `mse` reports the full (j = k) reconstruction's. Inference, save/load and
AuxK are TopK's (sae-lens loads it as a "topk" SAE).
"""

from __future__ import annotations

import torch
from torch import Tensor

from husai.sae.architectures.topk import TopKSAE
from husai.sae.registry import register


@register
class HierarchicalTopKSAE(TopKSAE):
    architecture = "hierarchical_topk"
    saelens_architecture = "topk"
    supports_multi_topk = False  # its loss is not TopK's sparse_loss

    def prefix_reconstructions(self, vals_SBK: Tensor, flat_SBK: Tensor) -> Tensor:
        """[S, B, K, O]: x̂_j for j = 1 … K (codes in descending order, as topk returns)."""
        rows = self.W_dec.reshape(-1, self.d_out)[flat_SBK]  # [S, B, K, O]
        return (vals_SBK.unsqueeze(-1) * rows).cumsum(2) + self.b_dec[:, None, None, :]

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y = self.target(x_SBD, y_SBO)
        vals, flat = self.sparse_encode(x_SBD)
        recon_SBKO = self.prefix_reconstructions(vals, flat)
        mse_SK = (recon_SBKO - y.unsqueeze(2)).pow(2).sum(-1).mean(1)
        mse = mse_SK[:, -1]
        aux = self.auxk_loss(x_SBD, recon_SBKO[:, :, -1], y)
        parts = {
            "mse": mse.detach(),
            "penalty": torch.zeros_like(mse),
            "auxk": aux.detach(),
            "fired": self.fired(vals, flat),
        }
        self.balance_parts(parts, vals, flat)
        return mse_SK.mean(1) + self.params.auxk_coefficient * aux, parts
