"""Gated SAE (Rajamanoharan et al. 2024), inference only, as SAELens's `GatedSAE.encode`.

With x_c = x − b_dec and the shared encoder W_enc:
gate = 1[x_c W_encᵀ + b_gate > 0], magnitude = ReLU(x_c (W_enc ⊙ exp(r_mag))ᵀ + b_mag),
codes = gate · magnitude. `b_enc` plays the role of b_gate (so `pre_acts` is the gate
pre-activation); it is saved as SAELens's `b_gate`. Extra parameters: `b_mag`, `r_mag` [S, F].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from husai.config import SAEConfig
from husai.sae.base import SAE
from husai.sae.inference_only import InferenceOnly
from husai.sae.registry import register


@register
class GatedSAE(InferenceOnly, SAE):
    architecture = "gated"
    saelens_architecture = "gated"
    saelens_renames: ClassVar[dict[str, str]] = {"b_enc": "b_gate"}

    def __init__(self, cfg: SAEConfig, d_in: int, seeds: list[int] | tuple[int, ...]) -> None:
        super().__init__(cfg, d_in, seeds)
        self.b_mag = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae))

    def encode(self, x: Tensor) -> Tensor:
        x_c = self._stack(x) - self.b_dec.unsqueeze(1)
        proj_SBF = torch.bmm(x_c, self.W_enc.transpose(1, 2))
        gate = proj_SBF + self.b_enc.unsqueeze(1) > 0
        mag = torch.relu(proj_SBF * self.r_mag.exp().unsqueeze(1) + self.b_mag.unsqueeze(1))
        return mag * gate

    def activation(self, pre_SBF: Tensor) -> Tensor:
        raise NotImplementedError("GatedSAE codes need the input: call encode(x)")
