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

import torch
from torch import Tensor

from husai.config import SAEConfig
from husai.sae.batchtopk import BatchTopKSAE
from husai.sae.registry import register


@register
class MatryoshkaSAE(BatchTopKSAE):
    architecture = "matryoshka"
    saelens_architecture = "jumprelu"
    uses_k = True

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        F = self.d_sae
        self.prefixes = sorted({min(F, max(1, round(f * F))) for f in self.cfg.prefix_sizes} | {F})

    def prefix_reconstructions(self, vals: Tensor, lat: Tensor, smp: Tensor, B: int) -> Tensor:
        """[L, S, B, O]: reconstruction by each prefix of the dictionary."""
        S, L, F = self.n_seeds, len(self.prefixes), self.d_sae
        ends = torch.tensor(self.prefixes, device=lat.device)
        level = torch.bucketize(lat.reshape(-1) % F, ends, right=True)  # first prefix holding f
        out = vals.new_zeros(L * S * B, self.d_out).index_add(
            0, level * (S * B) + smp.reshape(-1), self.batch_contributions(vals, lat)
        )
        return out.view(L, S, B, self.d_out).cumsum(0) + self.b_dec.unsqueeze(1)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y_SBO = self.target(x_SBD, y_SBO)
        vals, lat, smp = self.batch_encode(x_SBD)
        recon_LSBO = self.prefix_reconstructions(vals, lat, smp, x_SBD.shape[1])
        mse_LS = (recon_LSBO - y_SBO).pow(2).sum(-1).mean(-1)
        aux = self.auxk_loss(x_SBD, recon_LSBO[-1], y_SBO)
        parts = self._parts(mse_LS[-1], aux, vals, lat)
        parts["prefix_mse"] = mse_LS.detach()
        return mse_LS.sum(0) + self.cfg.auxk_coefficient * aux, parts

    def extra_cfg(self) -> dict[str, object]:
        return {}
