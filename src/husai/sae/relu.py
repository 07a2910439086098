"""ReLU SAE with an L1 penalty on codes weighted by decoder-row norms (Bricken et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from husai.sae.base import SAE
from husai.sae.registry import register


@register
class ReLUSAE(SAE):
    architecture = "relu"
    saelens_architecture = "standard"
    coefficient_field = "l1_coefficient"

    def activation(self, pre_SBF: Tensor) -> Tensor:
        return torch.relu(pre_SBF)

    def sparsity_penalty(self, codes_SBF: Tensor) -> Tensor:
        norms_SF = self.W_dec.norm(dim=-1)
        return self.coefficient * (codes_SBF * norms_SF.unsqueeze(1)).sum(-1).mean(-1)

    def extra_cfg(self) -> dict[str, object]:
        return {"l1_coefficient": self.cfg.l1_coefficient}
