"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2025): BatchTopK codes, nested prefixes.

Codes are BatchTopK's (training: top k·B per seed's batch; inference: JumpReLU with the
learned global threshold, saved like BatchTopK as sae-lens "jumprelu"). The dictionary has
nested prefixes, the first m_1 < m_2 < … < m_L = F latents (`prefix_sizes`, fractions of
d_sae, rounded, at least 1; the full dictionary is always the last). Each prefix
reconstructs x from its own latents' codes alone (b_dec + Σ_{f < m_l} c_f W_dec[f]), and
the loss is the SUM of the L prefix MSEs (as sae-lens's MatryoshkaBatchTopK, whose outer
level is the plain BatchTopK loss); `mse` reports the full dictionary's. AuxK uses the full
reconstruction's residual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field, field_validator
from torch import Tensor

from husai.sae.architectures.batchtopk import BatchTopKSAE
from husai.sae.architectures.topk import TopKParams
from husai.sae.registry import register

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig


class MatryoshkaParams(TopKParams):
    """BatchTopK's hyperparameters plus the nested prefixes."""

    prefix_sizes: tuple[float, ...] = Field(
        (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0),
        min_length=1,
        description="Matryoshka: nested dictionary prefixes as fractions of d_sae in (0, 1]; "
        "the full dictionary is always one of them",
    )

    @field_validator("prefix_sizes")
    @classmethod
    def _in_unit_interval(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError(f"prefix_sizes must lie in (0, 1] (got {list(v)})")
        return v


@register
class MatryoshkaSAE(BatchTopKSAE):
    architecture = "matryoshka"
    saelens_architecture = "jumprelu"
    Params = MatryoshkaParams
    params: MatryoshkaParams

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        F = self.d_sae
        self.prefixes = sorted(
            {min(F, max(1, round(f * F))) for f in self.params.prefix_sizes} | {F}
        )

    def prefix_reconstructions(self, vals: Tensor, lat: Tensor, smp: Tensor, B: int) -> Tensor:
        """[L, S, B, O]: reconstruction by each prefix of the dictionary."""
        S, L, F = self.n_seeds, len(self.prefixes), self.d_sae
        ends = torch.tensor(self.prefixes, device=lat.device)
        level = torch.bucketize(lat.reshape(-1) % F, ends, right=True)  # first prefix holding f
        # bag (sample, level): non-decreasing, as the codes come in (sample, latent) order
        out = self.bag_sum(vals, lat, smp.reshape(-1) * L + level, S * B * L)
        out = out.view(S, B, L, self.d_out).cumsum(2).permute(2, 0, 1, 3)
        return out + self.b_dec.unsqueeze(1)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y_SBO = self.target(x_SBD, y_SBO)
        vals, lat, smp = self.batch_encode(x_SBD)
        recon_LSBO = self.prefix_reconstructions(vals, lat, smp, x_SBD.shape[1])
        mse_LS = (recon_LSBO - y_SBO).pow(2).sum(-1).mean(-1)
        aux = self.auxk_loss(x_SBD, recon_LSBO[-1], y_SBO)
        parts = self._parts(mse_LS[-1], aux, vals, lat)
        parts["prefix_mse"] = mse_LS.detach()
        return mse_LS.sum(0) + self.params.auxk_coefficient * aux, parts

    def extra_cfg(self) -> dict[str, object]:
        return {}
