"""Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary learning with gated SAEs").

Forward as SAELens's `GatedSAE.encode`. With x_c = x − b_dec and the shared encoder W_enc:
π_gate = x_c W_encᵀ + b_gate, π_mag = x_c (W_enc ⊙ exp(r_mag))ᵀ + b_mag,
codes = 1[π_gate > 0] ⊙ ReLU(π_mag). `b_enc` plays the role of b_gate (so `pre_acts` is the
gate pre-activation); it is saved as SAELens's `b_gate`. Extra parameters: `b_mag`, `r_mag`
[S, F] (both start at 0, so the magnitude path starts equal to the gate path).

Training loss per seed (the paper's, MSE summed over d_in and averaged over the batch):
  ‖x − x̂(codes)‖² + λ ‖ReLU(π_gate) ⊙ ‖W_dec rows‖‖₁ + ‖x − x̂_frozen(ReLU(π_gate))‖²,
λ = `l1_coefficient`; x̂_frozen decodes with detached W_dec and b_dec (the auxiliary term
trains only the gate path). The gate's Heaviside passes no gradient: the gate path learns
from the two auxiliary terms only. As a transcoder: x_c = x, and both squared errors are
taken against the target y instead of x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from husai.sae.architectures.relu import ReLUParams
from husai.sae.base import SAE
from husai.sae.registry import register

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig


@register
class GatedSAE(SAE):
    architecture = "gated"
    saelens_architecture = "gated"
    Params = ReLUParams
    coefficient_field = "l1_coefficient"
    params: ReLUParams
    saelens_renames: ClassVar[dict[str, str]] = {"b_enc": "b_gate"}

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        self.b_mag = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae))

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(π_gate, π_mag), each [S, B, F]."""
        x_c = self._stack(x) - self.input_bias().unsqueeze(1)
        proj_SBF = torch.bmm(x_c, self.W_enc.transpose(1, 2))
        pi_gate = proj_SBF + self.b_enc.unsqueeze(1)
        pi_mag = proj_SBF * self.r_mag.exp().unsqueeze(1) + self.b_mag.unsqueeze(1)
        return pi_gate, pi_mag

    def encode(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self._paths(x)
        return torch.relu(pi_mag) * (pi_gate > 0)

    def activation(self, pre_SBF: Tensor) -> Tensor:
        raise NotImplementedError("GatedSAE codes need the input: call encode(x)")

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y_SBO = self.target(x_SBD, y_SBO)
        pi_gate, pi_mag = self._paths(x_SBD)
        codes = torch.relu(pi_mag) * (pi_gate > 0)
        mse = (self.decode(codes) - y_SBO).pow(2).sum(-1).mean(-1)
        gate_SBF = torch.relu(pi_gate)
        norms_SF = self.W_dec.norm(dim=-1)
        penalty = self.coefficient * (gate_SBF * norms_SF.unsqueeze(1)).sum(-1).mean(-1)
        frozen = torch.baddbmm(self.b_dec.detach().unsqueeze(1), gate_SBF, self.W_dec.detach())
        aux = (frozen - y_SBO).pow(2).sum(-1).mean(-1)
        parts = {"mse": mse.detach(), "penalty": penalty.detach(), "aux": aux.detach()}
        return mse + penalty + aux, parts

    @torch.no_grad()
    def init_b_enc(self, mean_D: Tensor) -> None:
        """Both encoder paths start on centred inputs (b_gate and b_mag)."""
        super().init_b_enc(mean_D)
        self.b_mag.copy_(-((self.W_enc * self.r_mag.exp().unsqueeze(-1)) @ mean_D.to(self.W_enc)))

    def extra_cfg(self) -> dict[str, object]:
        return {"l1_coefficient": self.params.l1_coefficient}
