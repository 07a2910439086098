"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): codes = ReLU(pre) · 1[pre > θ].

Forward as SAELens's `JumpReLUSAE.encode` (ReLU, then the per-latent threshold mask); for
θ ≥ 0 that is pre · H(pre − θ). Extra parameter: `threshold` [S, F] (θ itself, saved as
SAELens's `threshold`; trained directly, not as log θ, so that save/load stay a plain copy,
and clamped to ≥ 0 after every step).

Training (the paper's recipe, pseudo-derivatives with a rectangle kernel K(u) = 1[|u| < ½]):
- codes: ∂/∂pre = H(pre − θ); ∂/∂θ = −(θ/ε) K((pre − θ)/ε);
- sparsity: λ · L0 with L0 = Σ_F H(pre − θ) per input (mean over the batch),
  ∂L0/∂θ = −(1/ε) K((pre − θ)/ε), no gradient into pre (as in the paper);
- loss per seed = MSE (summed over d_in, mean over the batch) + `l0_coefficient` · L0.
The paper's ε = 0.001 is for activations normalised to unit mean squared norm; ours are not
normalised, so ε = `jumprelu_bandwidth` × the batch's RMS norm of x − b_dec (per seed,
no gradient; default 0.05: with 0.001 and runs of ~10³ steps the thresholds barely move).
θ starts at `jumprelu_init_threshold` (absolute; Adam moves θ by about lr per step, so set
it near the code scale of the data). Decoder rows stay unit norm (the base's projection
and renormalisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import Tensor, nn

from husai.sae import native
from husai.sae.base import SAE, ArchParams
from husai.sae.registry import register

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig


class JumpReLUParams(ArchParams):
    l0_coefficient: float = Field(
        1.0,
        ge=0,
        description="JumpReLU: weight of the L0 penalty (active latents per input, with a "
        "straight-through gradient for the thresholds); MSE is summed over d_in",
    )
    jumprelu_bandwidth: float = Field(
        0.05,
        gt=0,
        description="JumpReLU: width of the rectangle kernel of the threshold's "
        "straight-through gradient, as a fraction of the batch's RMS norm of x - b_dec "
        "(the paper's 0.001 is too narrow for short runs: thresholds barely move)",
    )
    jumprelu_init_threshold: float = Field(
        0.001, ge=0, description="JumpReLU: initial threshold of every latent (absolute)"
    )


class _JumpReLU(torch.autograd.Function):
    """(pre, θ, ε) → (codes ReLU(pre) · H(pre − θ), L0 per input Σ_F H(pre − θ)) with the
    straight-through gradients for θ: ∂codes/∂θ = −(θ/ε) K, ∂L0/∂θ = −(1/ε) K, K the
    rectangle kernel 1[|pre − θ| < ε/2] — one kernel evaluation serves both; none into pre
    from L0."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, theta: Tensor, eps: Tensor):  # type: ignore[override]
        ctx.save_for_backward(pre, theta, eps)
        fused = native.jumprelu_forward(pre, theta)  # one pass on the CPU (same values)
        if fused is not None:
            return fused
        on = pre > theta
        return torch.relu(pre) * on, on.sum(-1, dtype=pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad_codes: Tensor, grad_l0: Tensor):  # type: ignore[override]
        pre, theta, eps = ctx.saved_tensors
        fused = native.jumprelu_backward(pre, theta, eps, grad_codes, grad_l0)
        if fused is not None:  # one pass; θ's gradient summed in another order
            grad_pre, grad_theta = fused
            return grad_pre, grad_theta.view_as(theta), None
        grad_pre = grad_codes * ((pre > theta) & (pre > 0))
        near = (pre - theta).abs() < eps / 2
        per_entry = torch.addcmul(grad_l0.unsqueeze(-1), theta, grad_codes)  # θ·g + g_L0
        grad_theta = -(per_entry * near).sum(1, keepdim=True) / eps
        return grad_pre, grad_theta, None


@register
class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    Params = JumpReLUParams
    coefficient_field = "l0_coefficient"
    params: JumpReLUParams

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__(cfg, d_in, seeds, d_out)
        init = float(self.params.jumprelu_init_threshold)
        self.threshold = nn.Parameter(torch.full((self.n_seeds, self.d_sae), init))

    def activation(self, pre_SBF: Tensor) -> Tensor:
        return torch.relu(pre_SBF) * (pre_SBF > self.threshold.unsqueeze(1))

    def bandwidth(self, x_SBD: Tensor) -> Tensor:
        """Per-seed kernel width ε [S, 1, 1] = jumprelu_bandwidth × RMS‖x − b_dec‖ (detached;
        a transcoder, whose input is not centred by b_dec, uses x − the batch mean)."""
        with torch.no_grad():
            if self.transcoder:
                x_c = x_SBD - x_SBD.mean(1, keepdim=True)
            else:
                x_c = x_SBD - self.b_dec.unsqueeze(1)
            rms = x_c.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-8)
        return (self.params.jumprelu_bandwidth * rms).view(-1, 1, 1)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBD = self._stack(x_SBD)
        y_SBO = self.target(x_SBD, y_SBO)
        pre = self.pre_acts(x_SBD)
        theta, eps = self.threshold.unsqueeze(1), self.bandwidth(x_SBD)
        codes, l0_SB = _JumpReLU.apply(pre, theta, eps)
        mse = (self.decode(codes) - y_SBO).pow(2).sum(-1).mean(-1)
        l0 = l0_SB.mean(-1)
        penalty = self.coefficient * l0
        parts = {"mse": mse.detach(), "penalty": penalty.detach(), "l0": l0.detach()}
        return mse + penalty, parts

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """The trainer's post-step projection: unit decoder rows, and θ ≥ 0."""
        super().normalize_decoder()
        self.threshold.clamp_(min=0.0)
