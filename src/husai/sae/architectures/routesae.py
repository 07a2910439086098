"""RouteSAE (Shi et al. 2025, "Route Sparse Autoencoder to Interpret Large Language Models"):
one shared TopK SAE over the activations of L layers at the same tokens, fed per token the
layer a lightweight router picks.

Input rows are the L layers' activations concatenated, layer-major: x [S, B, L·D] (d_in = L·D,
D the layer width), so the trainer, the store and the ensemble need nothing new. Per seed
and token (as the paper's official code, "sum" aggregation and hard routing):
  v = Σ_l x_l (`aggregation` "mean": the mean),   p = softmax(W_router v)   (W_router [L, D],
  no bias; initialised as torch's nn.Linear: U(±1/√D), from the seed's own generator),
  l* = argmax_l p_l,   u = p_{l*} · x_{l*}   (the SAE's input, D wide).
The shared TopK SAE (W_enc [F, D], W_dec [F, D], b_dec [D]: d_out = D) encodes u and
reconstructs the routed layer's own activation x_{l*}: the reconstruction target is computed
inside `loss`, not taken from the trainer (`reconstruction_target`). The argmax passes no
gradient; the router learns through the scale p_{l*} of the SAE's input. Decoder rows live in
D-space and are shared by all layers, which is what the consistency metrics compare.

Differences from the paper's code, deliberate: its loss is the MSE normalised by the target's
power, against the *scaled* input u; husai's is the family's MSE (summed over D, mean over B)
against the unscaled x_{l*} — against u, a plain MSE would reward the router for shrinking
p_{l*}. The paper routes over layers L/4 … 3L/4 of the model; here the caller chooses the
L layers (the rows' blocks). Soft routing (the paper's training-only variant) is left out.

`n_layers` 1 (the default) is the degenerate case: p = 1 exactly, the router gets no
gradient, and the SAE is a TopK SAE trained step for step like "topk" with the same seeds
(also as a transcoder). With n_layers > 1 the architecture is an SAE only: it cannot be a
transcoder (its target is the routed layer), nor use `init: data` or resampling (they compare
reconstructions with the L·D-wide rows). `route` / `layer_distribution` report the routing.
Dead latents and AuxK work as for TopK (on the routed inputs). Saved as cfg.json
architecture "routesae" with the router as tensor `W_router` [L, D]; only husai reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.sae.architectures.topk import TopKParams, TopKSAE
from husai.sae.registry import register

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig
    from husai.sae.data import Rows

ROUTER_SEED_OFFSET = 7_919  # the router's generator: seed + this (the SAE's: the seed)


class RouteSAEParams(TopKParams):
    n_layers: int = Field(
        1,
        ge=1,
        description="routesae: layers L whose activations make up each input row (concatenated, "
        "layer-major: d_in = L × layer width); 1 = no routing (a TopK SAE)",
    )
    aggregation: Literal["sum", "mean"] = Field(
        "sum",
        description="routesae: the router's input, the sum (Shi et al.'s default) or the mean of "
        "the L layers' activations",
    )


@register
class RouteSAE(TopKSAE):
    architecture = "routesae"
    saelens_architecture = "routesae"
    Params = RouteSAEParams
    params: RouteSAEParams

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        L = int(cfg.params.n_layers)  # type: ignore[attr-defined]
        if d_in % L:
            raise HusaiError(f"routesae: input width {d_in} is not n_layers ({L}) × a layer width")
        if L > 1 and d_out is not None:
            raise HusaiError(
                "routesae with n_layers > 1 reconstructs its routed layer; it is not a transcoder"
            )
        if L > 1 and (cfg.init == "data" or cfg.resample_every_epochs):
            raise HusaiError(
                "routesae with n_layers > 1: init: data and resampling are not supported"
            )
        # the shared SAE is D wide (d_sae from expansion_factor: × the layer width)
        super().__init__(cfg, d_in // L, seeds, d_out)
        self.n_layers, self.d_layer, self.d_in = L, d_in // L, d_in
        self.W_router = nn.Parameter(torch.empty(self.n_seeds, L, self.d_layer))
        self.reset_router()

    @classmethod
    def input_width(cls, weights: dict[str, Tensor]) -> int:
        return int(weights["W_router"].shape[0] * weights["W_enc"].shape[1])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "W_router"):
            self.reset_router()

    @torch.no_grad()
    def reset_router(self) -> None:
        bound = self.d_layer**-0.5  # nn.Linear's default init (kaiming_uniform, a = √5)
        for s, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed + ROUTER_SEED_OFFSET)
            w = torch.rand(self.n_layers, self.d_layer, generator=g) * (2 * bound) - bound
            self.W_router[s] = w

    # -- routing -----------------------------------------------------------------------
    def layers(self, x: Tensor) -> Tensor:
        """[B, L·D] or [S, B, L·D] → [S, B, L, D]."""
        x_SBX = self._stack(x)
        return x_SBX.view(*x_SBX.shape[:2], self.n_layers, self.d_layer)

    def router_probs(self, x: Tensor) -> Tensor:
        """[S, B, L]: softmax of the router's logits."""
        x_SBLD = self.layers(x)
        v_SBD = x_SBLD.sum(2) if self.params.aggregation == "sum" else x_SBLD.mean(2)
        return torch.softmax(torch.bmm(v_SBD, self.W_router.transpose(1, 2)), dim=-1)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(routed layer [S, B] (long), its router weight p_{l*} [S, B], the SAE's input
        u = p_{l*} x_{l*} [S, B, D])."""
        x_SBLD = self.layers(x)
        weight_SB, layer_SB = self.router_probs(x_SBLD.flatten(2)).max(-1)
        chosen_SBD = self._chosen(x_SBLD, layer_SB)
        return layer_SB, weight_SB, weight_SB.unsqueeze(-1) * chosen_SBD

    def _chosen(self, x_SBLD: Tensor, layer_SB: Tensor) -> Tensor:
        index = layer_SB.view(*layer_SB.shape, 1, 1).expand(-1, -1, 1, self.d_layer)
        return x_SBLD.gather(2, index).squeeze(2)

    def reconstruction_target(self, x: Tensor) -> Tensor:
        """[S, B, D]: each token's routed layer's activation x_{l*} (what `forward`
        reconstructs; for n_layers 1, x itself)."""
        x_SBLD = self.layers(x)
        with torch.no_grad():
            layer_SB = self.router_probs(x_SBLD.flatten(2)).argmax(-1)
        return self._chosen(x_SBLD, layer_SB)

    @torch.no_grad()
    def layer_distribution(self, x_ND: Tensor, chunk: int = 4096) -> Tensor:
        """[S, L]: per seed, the fraction of the rows routed to each layer."""
        counts = torch.zeros(self.n_seeds, self.n_layers, dtype=torch.float64)
        for i in range(0, len(x_ND), chunk):
            layer_SB = self.route(x_ND[i : i + chunk])[0]
            counts += nn.functional.one_hot(layer_SB, self.n_layers).sum(1).double()
        return (counts / max(len(x_ND), 1)).float()

    # -- the shared SAE on the routed input ------------------------------------------------
    def input_bias(self) -> Tensor:
        if self.transcoder:
            return self.b_enc.new_zeros(self.n_seeds, self.d_layer)
        return self.b_dec

    def pre_acts(self, x: Tensor) -> Tensor:
        u_SBD = self.route(x)[2]
        return torch.baddbmm(
            self.b_enc.unsqueeze(1),
            u_SBD - self.input_bias().unsqueeze(1),
            self.W_enc.transpose(1, 2),
        )

    def sparse_encode(self, x_SBD: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        return self._encode_routed(self.route(x_SBD)[2], k)

    def _encode_routed(self, u_SBD: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """Top-k codes (default: the config's k) of the router's output u [S, B, D] (the
        shared SAE's input)."""
        return self._encode_stacked(u_SBD, k)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x_SBLD = self.layers(x_SBD)
        layer_SB, _, u_SBD = self.route(x_SBLD.flatten(2))
        if self.transcoder:
            target = self.target(x_SBLD.flatten(2), y_SBO)
        else:
            target = self._chosen(x_SBLD, layer_SB)
        return self.sparse_loss(u_SBD, *self._encode_routed(u_SBD, self.loss_k()), target)

    @torch.no_grad()
    def fit_init(self, x_ND: Tensor | Rows, y_NO: Tensor | None = None) -> None:
        """An SAE: b_dec ← the mean over rows and layers of the per-layer activations. A
        transcoder (n_layers 1): as the base class."""
        if self.transcoder:
            super().fit_init(x_ND, y_NO)
            return
        if isinstance(x_ND, Tensor):
            self.init_b_dec(x_ND.view(len(x_ND), self.n_layers, self.d_layer).mean((0, 1)))
        else:  # Rows (a store, joined stores): the streamed mean row, averaged over layers
            self.init_b_dec(x_ND.mean().view(self.n_layers, self.d_layer).mean(0))

    def extra_cfg(self) -> dict[str, object]:
        return {"k": self.params.k, "n_layers": self.n_layers}
