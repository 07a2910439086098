"""BatchTopK SAE (Bussmann et al. 2024): top k·B codes over the whole batch, per seed.

Training: of the B·F ReLU'd pre-activations of a batch, the k·B largest are kept (per seed,
so seeds stay independent), so inputs get k active latents on average. Like TopK's path,
only the kept entries are touched after the one dense forward matmul (`_BatchTopKEncode`).
A global threshold θ per seed tracks the smallest kept positive activation: θ ← θ +
r·(m − θ) after each step, with r = max(1/t, 0.01) (a running mean for the first 100 steps,
then an EMA with sae-lens's `topk_threshold_lr` 0.01). That running estimate lags the
shrinking activations of early training (on the toy model it left inference L0 at 23 for
k = 32 and 78% of latents dead), so after the last step θ is recalibrated on the training
rows (at most CALIBRATION_ROWS, evenly spaced): θ = the (k·n + 1)-th largest pre-activation
of the n rows, so that inference L0 averages k on them (BatchTopK over the whole set).
The batch-wide selection is `topk_rows` over each seed's B·F pre-activations (ties to the
lower index), its codes listed in (input, latent) order, so that decoding is one
embedding_bag per input (`BagDecode`) and both weight gradients are embedding_bag sums over
the codes grouped by latent (`bag_t_matmul`; one grouping shared by encoder and decoder).
Inference is JumpReLU with that threshold, codes = ReLU(pre) · 1[pre > θ], which is how
sae-lens saves BatchTopK SAEs: architecture "jumprelu" with `threshold` = θ for every
latent (so sae-lens loads husai's directory as a JumpReLU SAE). The threshold is stored
as an [S, F] parameter that gets no gradient. AuxK (`auxk_coefficient`) works as for TopK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from husai.sae.architectures.topk import TopKSAE
from husai.sae.data import Rows, as_rows
from husai.sae.registry import register
from husai.sae.sparse_ops import BagDecode, ColumnGroups, bag_t_matmul, topk_rows

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig

THRESHOLD_LR = 0.01  # sae-lens's topk_threshold_lr
CALIBRATION_ROWS = 16_384


class _BatchTopKEncode(torch.autograd.Function):
    """(x [S,B,D], b_dec, W_enc [S,F,D], b_enc, n, groups) → (the n largest ReLU'd
    pre-activations of each seed's batch [S, n], their flat latent index into the S·F
    stacked latents, their flat sample index into the S·B stacked inputs), in (sample,
    latent) order; the backward touches only those. `groups` (a `ColumnGroups`, optional)
    is given the latent indices, for the decoder's backward to share."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        b_dec: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        n: int,
        groups: ColumnGroups | None = None,
    ):
        S, F, D = W_enc.shape
        B = x.shape[1]
        x_c = x - b_dec.unsqueeze(1)
        pre_SBF = torch.baddbmm(b_enc.unsqueeze(1), x_c, W_enc.transpose(1, 2))
        vals_SN, idx_SN = topk_rows(pre_SBF.reshape(S, B * F), n, by_index=True)
        vals_SN = vals_SN.clamp_min_(0)
        s = torch.arange(S, device=x.device).view(S, 1)
        latent_SN = idx_SN % F + s * F
        sample_SN = idx_SN // F + s * B
        ctx.save_for_backward(x_c, W_enc, latent_SN, sample_SN, vals_SN)
        ctx.mark_non_differentiable(latent_SN, sample_SN)
        ctx.groups = (groups or ColumnGroups(S * F)).set(latent_SN)
        return vals_SN, latent_SN, sample_SN

    @staticmethod
    def backward(ctx: Any, grad_SN: Tensor, _g1: Tensor | None, _g2: Tensor | None):  # type: ignore[override]
        x_c, W_enc, latent_SN, sample_SN, vals_SN = ctx.saved_tensors
        S, F, D = W_enc.shape
        B = x_c.shape[1]
        g = (grad_SN.to(W_enc.dtype) * (vals_SN > 0)).reshape(-1)  # float32 under bf16 too
        lat, smp = latent_SN.reshape(-1), sample_SN.reshape(-1)
        g_SF = W_enc.new_zeros(S * F).index_add_(0, lat, g).view(S, F)
        W_flat = W_enc.reshape(S * F, D)
        grad_x = grad_b_dec = grad_W = None
        if ctx.needs_input_grad[0]:
            rows = g.unsqueeze(-1) * W_flat[lat]
            grad_x = x_c.new_zeros(S * B, D).index_add_(0, smp, rows).view(S, B, D)
        if ctx.needs_input_grad[1]:
            grad_b_dec = -torch.bmm(g_SF.unsqueeze(1), W_enc).squeeze(1)
        if ctx.needs_input_grad[2]:
            x_flat = x_c.reshape(S * B, D)
            grad_W = bag_t_matmul(lat, smp, g, x_flat, S * F, ctx.groups).view(S, F, D)
        grad_b_enc = g_SF if ctx.needs_input_grad[3] else None
        return grad_x, grad_b_dec, grad_W, grad_b_enc, None, None


@register
class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"
    saelens_architecture = "jumprelu"
    balances = False  # its batch-wide selection has no per-row top-k to bias
    supports_multi_topk = False  # its loss is not TopK's sparse_loss

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        self.threshold = nn.Parameter(torch.zeros(self.n_seeds, self.d_sae), requires_grad=False)
        self.register_buffer(
            "threshold_updates", torch.zeros(self.n_seeds, dtype=torch.long), persistent=False
        )

    def activation(self, pre_SBF: Tensor) -> Tensor:
        """Inference: JumpReLU with the learned global threshold."""
        return torch.relu(pre_SBF) * (pre_SBF > self.threshold.unsqueeze(1))

    def batch_encode(self, x_SBD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training codes: (values [S, N], flat latent [S, N], flat sample [S, N]), N = k·B."""
        x = self._stack(x_SBD)
        n = min(self.params.k * x.shape[1], x.shape[1] * self.d_sae)
        groups = ColumnGroups(self.n_seeds * self.d_sae)
        out = _BatchTopKEncode.apply(x, self.input_bias(), self.W_enc, self.b_enc, n, groups)
        if torch.is_grad_enabled():  # training: shared with the decoder's backward (bag_sum)
            self._groups = (out[1], groups)
        return out

    def batch_encode_dense(self, x_SBD: Tensor) -> Tensor:
        """Training codes as a dense [S, B, F] tensor (for inspection and tests)."""
        x = self._stack(x_SBD)
        vals, lat, smp = self.batch_encode(x)
        S, B = x.shape[:2]
        out = vals.new_zeros(S * B, self.d_sae)
        out[smp.reshape(-1), lat.reshape(-1) % self.d_sae] = vals.reshape(-1)
        return out.view(S, B, self.d_sae)

    def batch_contributions(self, vals: Tensor, lat: Tensor) -> Tensor:
        """[S·N, D]: each kept code times its decoder row."""
        W = self.W_dec.reshape(-1, self.d_out)
        return vals.reshape(-1, 1) * W[lat.reshape(-1)]

    def bag_sum(self, vals: Tensor, lat: Tensor, bags: Tensor, n_bags: int) -> Tensor:
        """[n_bags, O]: bag i sums each kept code in it (bags non-decreasing along the
        codes, as batch_encode lists them) times its decoder row."""
        if self.W_dec.device.type != "cpu":  # off the CPU: index_add (untested there)
            rows = self.batch_contributions(vals, lat)  # float32 under bf16 autocast too
            return rows.new_zeros(n_bags, self.d_out).index_add(0, bags.reshape(-1), rows)
        shared = self._groups  # the encoder's grouping, if these are its latents
        groups = shared[1] if shared is not None and shared[0] is lat else None
        W = self.W_dec.reshape(-1, self.d_out)
        v = vals.reshape(-1).to(W.dtype)  # float32 under bf16 autocast too
        return BagDecode.apply(v, lat.reshape(-1), bags.reshape(-1), n_bags, W, groups)

    def batch_decode(self, vals: Tensor, lat: Tensor, smp: Tensor, B: int) -> Tensor:
        out = self.bag_sum(vals, lat, smp, self.n_seeds * B)
        return out.view(self.n_seeds, B, self.d_out) + self.b_dec.unsqueeze(1)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y_SBO = self.target(x_SBD, y_SBO)
        vals, lat, smp = self.batch_encode(x_SBD)
        recon = self.batch_decode(vals, lat, smp, x_SBD.shape[1])
        mse = (recon - y_SBO).pow(2).sum(-1).mean(-1)
        aux = self.auxk_loss(x_SBD, recon, y_SBO)
        parts = self._parts(mse, aux, vals, lat)
        return mse + self.params.auxk_coefficient * aux, parts

    def _parts(self, mse: Tensor, aux: Tensor, vals: Tensor, lat: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            min_kept = torch.where(vals > 0, vals, torch.inf).amin(-1)
        return {
            "mse": mse.detach(),
            "penalty": torch.zeros_like(mse),
            "auxk": aux.detach(),
            "fired": self.fired(vals, lat),
            "min_kept": min_kept.detach(),
        }

    @torch.no_grad()
    def after_step(self, parts: dict[str, Tensor], n_tokens: int) -> None:
        super().after_step(parts, n_tokens)
        m_S = parts["min_kept"]
        ok = torch.isfinite(m_S)
        self.threshold_updates.add_(ok.long())
        rate = (1.0 / self.threshold_updates.clamp_min(1).double()).clamp_min(THRESHOLD_LR)
        theta = self.threshold[:, 0].double()
        new = torch.where(ok, theta + rate * (m_S.double() - theta), theta)
        self.threshold.copy_(new.float().unsqueeze(1).expand_as(self.threshold))

    def start_training(self, n_train: int, total_steps: int = 1) -> None:
        super().start_training(n_train, total_steps)
        self.threshold_updates.zero_()

    @torch.no_grad()
    def finish_training(self, x_ND: Tensor | Rows) -> None:
        """Set θ so that mean inference L0 = k on (up to CALIBRATION_ROWS of) the training rows."""
        rows = as_rows(x_ND).spaced(CALIBRATION_ROWS).to(self.W_enc.device)
        n_keep = min(self.params.k * len(rows), len(rows) * self.d_sae - 1)
        for s in range(self.n_seeds):  # one seed at a time bounds memory at n × F floats
            pre = torch.addmm(self.b_enc[s], rows - self.input_bias()[s], self.W_enc[s].T).view(-1)
            theta = pre.kthvalue(pre.numel() - n_keep).values.clamp_min(0)
            self.threshold[s] = theta

    def extra_cfg(self) -> dict[str, object]:
        return {}
