"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations (ReLU'd), zero the rest.

Training exploits the k-sparsity. The one dense matmul is the forward selection of the
k latents (`husai.sae.sparse_ops.topk_rows`: threshold, then select; ties to the lower
index); everything else touches only the k chosen rows: the reconstruction sums k gathered
decoder rows (`embedding_bag`), and both weight gradients are one sparse product over the
k chosen rows (`_TopKEncode`, `SparseDecode`) instead of a dense [B, F] × [F, D] product.

AuxK (Gao et al. 2024, appendix A.2), for the whole TopK family, off unless
`auxk_coefficient` > 0: a buffer counts, per seed and latent, the training tokens since the
latent last fired; latents past `dead_tokens_threshold` (default: one epoch) are dead. The
top `aux_k` (default d_out // 2, as sae-lens/sparsify; d_out = d_in for an SAE) ReLU'd
pre-activations among the dead latents reconstruct the detached residual e = x − x̂ (a
transcoder's: y − ŷ; no b_dec); the per-seed AuxK loss is
min(1, n_dead / aux_k) · ‖e − ê‖² (summed over D, mean over B: the MSE's units, as sae-lens;
sparsify divides both terms by the input variance, which leaves their ratio unchanged), and
it is added × `auxk_coefficient` (Gao et al.: 1/32). Only the pre-activations of latents that
are dead in some seed are computed, densely.

Measured on the default toy model (d_sae 1024, k 32): AuxK as published RAISES the dead
fraction (0.11 → 0.15–0.56, whatever aux_k, coefficient or dead window): the dead latents'
auxiliary reconstruction starts worse than reconstructing nothing (AuxK loss > ‖e‖²), so the
gradient mostly shrinks their codes, and Adam moves the dead-only parameters at full speed
whatever the coefficient. It stays off by default. (Resampling, `resample_every_epochs`,
works for every architecture; see husai.sae.resample for its measured effect.)

MultiTopK (Gao et al. 2024, "Multi-TopK"), for topk and routesae, off unless `multi_topk`
w > 0: the loss is L(k) + w · L(k'), k' = min(k × `multi_topk_factor`, d_sae), L(j) the
MSE of the reconstruction from the top j latents, so the SAE also reconstructs at the larger
L0 k' (Gao et al.: w = 1/8, factor 4). One selection of k' latents gives both: the codes
come in descending order (ties to the lower index), so the top k are its first k. The
dead-latent counters, AuxK and the reported `mse` are the top k's; part `multi_topk_mse`
is L(k'). Inference, saving and the trained SAE's k are TopK's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as fn
from pydantic import Field
from torch import Tensor

from husai.sae.balance import firing_counts, update_bias
from husai.sae.base import SAE, ArchParams
from husai.sae.data import Rows
from husai.sae.registry import register
from husai.sae.sparse_ops import (
    ColumnGroups,
    SparseDecode,
    sparse_t_matmul,
    topk_rows,
)

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig


class TopKParams(ArchParams):
    """The TopK family's hyperparameters (topk, hierarchical_topk, batchtopk; matryoshka's
    extend them)."""

    k: int = Field(32, gt=0, description="active latents per input (TopK family)")
    auxk_coefficient: float = Field(
        0.0,
        ge=0,
        description="TopK family: weight of the AuxK dead-latent loss (Gao et al. 2024, who use "
        "1/32); 0 = off. The top aux_k dead latents reconstruct the residual x - x̂ (same units "
        "as the MSE, scaled by min(1, n_dead / aux_k) as sae-lens/sparsify)",
    )
    aux_k: int | None = Field(
        None,
        gt=0,
        description="TopK family: dead latents used by AuxK (null = d_out // 2; d_out = d_in "
        "unless a transcoder)",
    )
    dead_tokens_threshold: int | None = Field(
        None,
        gt=0,
        description="TopK family: a latent is dead after this many training tokens without "
        "firing (null = one epoch, i.e. the training-set size)",
    )
    balance_rate: float = Field(
        0.0,
        ge=0,
        description="topk, hierarchical_topk, routesae, archetypal: frequency balancing "
        "(husai.sae.balance): a selection-only bias pulls every latent towards firing on k / "
        "d_sae of the rows, at this unit-free rate (e.g. 0.003); 0 = off",
    )
    balance_anneal: float = Field(
        0.3,
        gt=0,
        le=1,
        description="frequency balancing: over this last fraction of the training steps the "
        "selection bias decays linearly to exactly 0, so the trained SAE is a plain TopK SAE",
    )
    multi_topk: float = Field(
        0.0,
        ge=0,
        description="topk, routesae: MultiTopK (Gao et al. 2024): add this weight × the MSE of "
        "the reconstruction from the top k × multi_topk_factor latents (capped at d_sae) to "
        "the loss, so the SAE also reconstructs at that larger k (Gao et al.: 1/8); 0 = off",
    )
    multi_topk_factor: int = Field(
        4,
        ge=2,
        description="MultiTopK: the extra reconstruction uses k × this many latents (capped "
        "at d_sae)",
    )


class _TopKEncode(torch.autograd.Function):
    """(x [S,B,D], b_dec [S,D], W_enc [S,F,D], b_enc [S,F], k, select_bias, groups) →
    (ReLU'd top-k values, flat indices into the S·F stacked latents), with a backward that
    touches only the chosen encoder rows. `groups` (a `ColumnGroups`, optional) is given the
    flat indices, so that the decoder's backward can share their grouping by latent."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        b_dec: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        k: int,
        select_bias: Tensor | None = None,
        groups: ColumnGroups | None = None,
    ):
        S, F, D = W_enc.shape
        x_c = x - b_dec.unsqueeze(1)
        pre_SBF = torch.baddbmm(b_enc.unsqueeze(1), x_c, W_enc.transpose(1, 2))
        vals_SBK, idx_SBK = _select(pre_SBF, k, select_bias)
        vals_SBK = vals_SBK.clamp_min_(0)
        flat_SBK = idx_SBK + (torch.arange(S, device=x.device) * F).view(S, 1, 1)
        ctx.save_for_backward(x_c, W_enc, flat_SBK, vals_SBK)
        ctx.mark_non_differentiable(flat_SBK)
        if groups is None:
            groups = ColumnGroups(S * F)
        groups.set(flat_SBK.reshape(-1, k))
        ctx.groups = groups
        return vals_SBK, flat_SBK

    @staticmethod
    def backward(ctx: Any, grad_SBK: Tensor, _grad_idx: Tensor | None):  # type: ignore[override]
        x_c, W_enc, flat_SBK, vals_SBK = ctx.saved_tensors
        S, F, D = W_enc.shape
        B, K = flat_SBK.shape[1:]
        g_SBK = grad_SBK.to(W_enc.dtype) * (vals_SBK > 0)  # float32 under bf16 autocast too
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
        if ctx.needs_input_grad[2]:  # Σ_b g_bf x_b: one sparse product over the K per row
            grad_W = sparse_t_matmul(
                flat_SBK.reshape(S * B, K),
                g_SBK.reshape(S * B, K),
                x_c.reshape(S * B, D),
                S * F,
                ctx.groups,
            ).view(S, F, D)
        grad_b_enc = g_SF if ctx.needs_input_grad[3] else None
        return grad_x, grad_b_dec, grad_W, grad_b_enc, None, None, None


def _select(pre_SBF: Tensor, k: int, select_bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """The top k of pre (values descending); with husai.sae.balance's bias, the top k of
    pre + bias, with pre's values (the bias chooses, the values stay unbiased)."""
    if select_bias is None:
        return topk_rows(pre_SBF, k)
    _, idx_SBK = topk_rows(pre_SBF + select_bias.unsqueeze(1), k)
    vals_SBK, order = pre_SBF.gather(-1, idx_SBK).sort(dim=-1, descending=True, stable=True)
    return vals_SBK, idx_SBK.gather(-1, order)


@register
class TopKSAE(SAE):
    architecture = "topk"
    saelens_architecture = "topk"
    Params = TopKParams
    uses_k = True
    balances = True
    supports_multi_topk = True
    params: TopKParams

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        # training statistic, not saved: tokens since each latent last fired
        self.register_buffer(
            "tokens_since_fired",
            torch.zeros(self.n_seeds, self.d_sae, dtype=torch.long),
            persistent=False,
        )
        self.dead_tokens_threshold = self.params.dead_tokens_threshold or 10_000_000
        self.aux_k = self.params.aux_k or max(1, self.d_out // 2)
        # training statistic, not saved: husai.sae.balance's selection bias (None = off)
        self.select_bias: Tensor | None = None
        self._step, self._total_steps = 0, 1
        # the last training selection's flat indices and their grouping by latent, which
        # the decoder's backward shares with the encoder's (sparse_ops.ColumnGroups)
        self._groups: tuple[Tensor, ColumnGroups] | None = None

    def activation(self, pre_SBF: Tensor) -> Tensor:
        vals, idx = topk_rows(pre_SBF, self.params.k)  # the training path's selection
        return torch.zeros_like(pre_SBF).scatter_(-1, idx, torch.relu(vals))

    def sparse_encode(self, x_SBD: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """(values [S, B, K], flat latent indices into the S·F stacked rows [S, B, K]) of
        the top K = k latents (default: the config's k), values descending."""
        return self._encode_stacked(self._stack(x_SBD), k)

    def _encode_stacked(self, x_SBD: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """`sparse_encode` of x [S, B, D] (the shared encoder's input)."""
        k = self.params.k if k is None else k
        bias = self.select_bias if self.training_balance() else None
        groups = ColumnGroups(self.n_seeds * self.d_sae)
        vals, flat = _TopKEncode.apply(
            x_SBD, self.input_bias(), self.W_enc, self.b_enc, k, bias, groups
        )
        if torch.is_grad_enabled():  # training: the decoder's backward will share it
            self._groups = (flat, groups)
        return vals, flat

    def loss_k(self) -> int:
        """Latents the loss selects per input: k, or with MultiTopK k' = k × factor (≤ F)."""
        p = self.params
        return min(p.k * p.multi_topk_factor, self.d_sae) if p.multi_topk > 0 else p.k

    def training_balance(self) -> bool:
        """Is frequency balancing (husai.sae.balance) on in the training now under way?"""
        return self.select_bias is not None and self.select_bias.device == self.W_enc.device

    def sparse_decode(self, vals_SBK: Tensor, flat_SBK: Tensor) -> Tensor:
        """Sum of the K chosen decoder rows (embedding_bag; its backward touches only them)."""
        return self._sparse_sum(vals_SBK, flat_SBK) + self.b_dec.unsqueeze(1)

    def _sparse_sum(self, vals_SBK: Tensor, flat_SBK: Tensor) -> Tensor:
        """[S, B, O]: Σ_j vals[.., j] · W_dec[flat[.., j]] (no bias)."""
        S, B, K = vals_SBK.shape
        args = (
            vals_SBK.reshape(S * B, K).to(self.W_dec.dtype),  # bf16 autocast
            flat_SBK.reshape(S * B, K),
            self.W_dec.reshape(S * self.d_sae, self.d_out),
        )
        if self.W_dec.device.type == "cpu":
            shared = self._groups  # the encoder's grouping, if these are its indices
            groups = shared[1] if shared is not None and shared[0] is flat_SBK else None
            out = SparseDecode.apply(*args, groups)
        else:
            out = fn.embedding_bag(args[1], args[2], per_sample_weights=args[0], mode="sum")
        return out.view(S, B, self.d_out)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        vals, flat = self.sparse_encode(x_SBD, self.loss_k())
        return self.sparse_loss(x_SBD, vals, flat, self.target(x_SBD, y_SBO))

    def sparse_loss(
        self, x_SBD: Tensor, vals: Tensor, flat: Tensor, y_SBO: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-seed MSE against y of the reconstruction from the TopK codes (vals, flat) of
        the SAE's input x, plus AuxK, plus MultiTopK's term; the loss and its parts. The
        codes are the top `loss_k()` (descending); with MultiTopK the first k are TopK's."""
        k, more = self.params.k, None
        if vals.shape[-1] > k:  # MultiTopK's k' codes: TopK's are the first k
            more = (vals[..., k:], flat[..., k:])
            vals, flat = vals[..., :k], flat[..., :k]
        recon = self.sparse_decode(vals, flat)
        mse = (recon - y_SBO).pow(2).sum(-1).mean(-1)
        aux = self.auxk_loss(x_SBD, recon, y_SBO)
        parts = {
            "mse": mse.detach(),
            "penalty": torch.zeros_like(mse),
            "auxk": aux.detach(),
            "fired": self.fired(vals, flat),
        }
        self.balance_parts(parts, vals, flat)
        loss = mse + self.params.auxk_coefficient * aux
        if self.params.multi_topk > 0:
            recon_more = recon if more is None else recon + self._sparse_sum(*more)
            mse_more = (recon_more - y_SBO).pow(2).sum(-1).mean(-1)
            parts["multi_topk_mse"] = mse_more.detach()
            loss = loss + self.params.multi_topk * mse_more
        return loss, parts

    @torch.no_grad()
    def balance_parts(self, parts: dict[str, Tensor], vals: Tensor, flat: Tensor) -> None:
        """Adds what the balancing update needs ("counts" [S, F], "mean_value" [S])."""
        if self.training_balance():
            parts["counts"] = firing_counts(vals, flat, self.n_seeds, self.d_sae)
            parts["mean_value"] = vals.detach().float().mean((1, 2))

    def extra_cfg(self) -> dict[str, object]:
        return {"k": self.params.k}

    # -- dead latents and AuxK ------------------------------------------------------------
    @torch.no_grad()
    def fired(self, vals: Tensor, flat: Tensor) -> Tensor:
        """[S, F] bool: latents with a positive code somewhere in the batch (`flat` indexes
        the S·F stacked latents)."""
        hit = flat.reshape(-1)[vals.reshape(-1) > 0]
        out = torch.zeros(self.n_seeds * self.d_sae, dtype=torch.bool, device=flat.device)
        return out.index_fill_(0, hit, True).view(self.n_seeds, self.d_sae)

    def start_training(self, n_train: int, total_steps: int = 1) -> None:
        self.dead_tokens_threshold = self.params.dead_tokens_threshold or int(n_train)
        self.tokens_since_fired.zero_()
        self._step, self._total_steps = 0, total_steps
        self.select_bias = None
        if self.params.balance_rate > 0:
            self.select_bias = torch.zeros_like(self.b_enc.detach())

    @torch.no_grad()
    def after_step(self, parts: dict[str, Tensor], n_tokens: int) -> None:
        self._groups = None  # the step's backward has used it
        self.tokens_since_fired.add_(n_tokens).masked_fill_(parts["fired"], 0)
        if self.training_balance() and "counts" in parts:
            p = self.params
            update_bias(
                self.select_bias,  # type: ignore[arg-type]
                parts["counts"],
                parts["mean_value"],
                n_tokens,
                p.k,
                p.balance_rate,
                self._step,
                self._total_steps,
                p.balance_anneal,
            )
        self._step += 1

    @torch.no_grad()
    def finish_training(self, x_ND: Tensor | Rows) -> None:
        self.select_bias = None  # 0 by now (annealed); the trained SAE is plain TopK

    def dead_mask(self) -> Tensor:
        """[S, F] bool: latents that have not fired for more than dead_tokens_threshold."""
        return self.tokens_since_fired > self.dead_tokens_threshold

    def auxk_loss(self, x_SBD: Tensor, recon_SBD: Tensor, y_SBO: Tensor | None = None) -> Tensor:
        """Per-seed AuxK loss [S] (zero when off or nothing is dead); the residual is
        y − recon (y defaults to x)."""
        zero = x_SBD.new_zeros(self.n_seeds)
        if self.params.auxk_coefficient == 0:
            return zero
        dead_SF = self.dead_mask()
        if not dead_SF.any():
            return zero
        cols = dead_SF.any(0).nonzero().squeeze(1)  # latents dead in some seed
        n_dead_S = dead_SF.sum(1)
        k_aux = min(self.aux_k, int(n_dead_S.max()))
        x_c = x_SBD - self.input_bias().unsqueeze(1)
        pre = torch.baddbmm(
            self.b_enc[:, cols].unsqueeze(1), x_c, self.W_enc[:, cols].transpose(1, 2)
        )
        pre = pre.masked_fill(~dead_SF[:, cols].unsqueeze(1), float("-inf"))
        vals, idx = pre.topk(k_aux, dim=-1)  # alive picks (fewer dead than k_aux) are -inf
        vals = torch.relu(vals)
        S, B, K = vals.shape
        flat = cols[idx] + (torch.arange(S, device=x_SBD.device) * self.d_sae).view(S, 1, 1)
        aux_recon = fn.embedding_bag(
            flat.reshape(S * B, K),
            self.W_dec.reshape(S * self.d_sae, self.d_out),
            per_sample_weights=vals.reshape(S * B, K).to(self.W_dec.dtype),
            mode="sum",
        ).view(S, B, self.d_out)
        resid = ((x_SBD if y_SBO is None else y_SBO) - recon_SBD).detach()
        scale = (n_dead_S.float() / self.aux_k).clamp(max=1.0)
        return scale * (aux_recon - resid).pow(2).sum(-1).mean(-1)
