"""ReLU SAE with an L1 penalty on codes weighted by decoder-row norms (Bricken et al. 2023)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from husai.sae.base import SAE, ArchParams
from husai.sae.registry import register


class ReLUParams(ArchParams):
    """The L1 penalty's weight (also the gated SAE's)."""

    l1_coefficient: float = Field(
        1.0,
        ge=0,
        description="L1 penalty weight (relu: on codes × decoder-row norms; gated: on the gate's "
        "ReLU'd pre-activations × decoder-row norms); MSE is summed over d_in (1.0 gives the "
        "default toy model an EV close to TopK k=32)",
    )


@register
class ReLUSAE(SAE):
    architecture = "relu"
    saelens_architecture = "standard"
    Params = ReLUParams
    coefficient_field = "l1_coefficient"
    params: ReLUParams

    def activation(self, pre_SBF: Tensor) -> Tensor:
        return torch.relu(pre_SBF)

    def sparsity_penalty(self, codes_SBF: Tensor) -> Tensor:
        norms_SF = self.W_dec.norm(dim=-1)
        return self.coefficient * (codes_SBF * norms_SF.unsqueeze(1)).sum(-1).mean(-1)

    def extra_cfg(self) -> dict[str, object]:
        return {"l1_coefficient": self.params.l1_coefficient}
