"""JumpReLU SAE (Rajamanoharan et al. 2024), inference only: codes = ReLU(pre) · 1[pre > θ].

Matches SAELens's `JumpReLUSAE.encode` (ReLU, then the per-latent threshold mask); for
θ ≥ 0 that is pre · 1[pre > θ]. Extra parameter: `threshold` [S, F].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from husai.config import SAEConfig
from husai.sae.base import SAE
from husai.sae.inference_only import InferenceOnly
from husai.sae.registry import register


@register
class JumpReLUSAE(InferenceOnly, SAE):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"

    def __init__(self, cfg: SAEConfig, d_in: int, seeds: list[int] | tuple[int, ...]) -> None:
        super().__init__(cfg, d_in, seeds)
        self.threshold = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae))

    def activation(self, pre_SBF: Tensor) -> Tensor:
        return torch.relu(pre_SBF) * (pre_SBF > self.threshold.unsqueeze(1))
