"""The shared SAE base: an ensemble of S seeds with stacked weights (S = 1 is one SAE).

Shapes: S seeds, B batch, D d_in, O d_out, F d_sae (latents), K active latents.
Parameters: `W_enc` [S, F, D] (encoder rows; SAELens stores its transpose), `b_enc` [S, F],
`W_dec` [S, F, O] (unit-norm decoder rows), `b_dec` [S, O].

An SAE (`d_out=None`) reconstructs its input: O = D, and b_dec is also subtracted from the
input before encoding (SAELens's `apply_b_dec_to_input`). A transcoder (`d_out` given, even
if equal to d_in) maps the input x to a target y read at another hook: `loss(x, y)` scores
decode(encode(x)) against y, b_dec is only the output's bias, and the input is not centred
(as SAELens's transcoders; `fit_init` starts b_enc at −W_enc·mean(x) instead). Every
architecture is both: they share this forward and differ only in the activation and loss.
Each seed's initial weights come from its own `torch.Generator`, and the loss is a sum
of per-seed losses, so seed s of an ensemble follows the same trajectory it would alone.

Hyperparameters: the shared ones (d_sae, lr, ...) are `self.cfg` (husai.sae.config.SAEConfig),
the architecture's own are `self.params` (`cfg.params`, an instance of the class's `Params`).
`saelens_weights()` shows one seed's weights in SAELens's names and shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.sae.data import Rows, as_rows, spaced_indices

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig


def spaced_rows(x_ND: Tensor, n: int) -> Tensor:
    """At most n rows of x, evenly spaced (deterministic, covers the whole set)."""
    return x_ND[spaced_indices(len(x_ND), n)]


def cross_covariance(x_ND: Tensor, y_NO: Tensor) -> Tensor:
    """[D, O] float64 cross-covariance of x and y (rows aligned), a chunk at a time."""
    mx, my = x_ND.double().mean(0), y_NO.double().mean(0)
    cov_DO = torch.zeros(x_ND.shape[1], y_NO.shape[1], dtype=torch.float64, device=x_ND.device)
    for i in range(0, len(x_ND), 65536):
        xc, yc = x_ND[i : i + 65536].double() - mx, y_NO[i : i + 65536].double() - my
        cov_DO += xc.T @ yc
    return cov_DO / len(x_ND)


class ArchParams(BaseModel):
    """An architecture's own hyperparameters (subclassed beside each architecture); the
    field descriptions are the `husai run --help` / `husai train-sae --help` text."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SAE(nn.Module):
    """Base class: architectures override `activation` and, if needed, `loss`.

    Traits (class data): `architecture` (the registry and cfg.json name),
    `saelens_architecture` (the SAELens name it is saved as), `Params` (its hyperparameter
    model), `uses_k` (TopK family: `Params` has k, which must be ≤ d_sae and which
    target_l0 sets), `coefficient_field` (the `Params` field of the sparsity-penalty weight
    that target_l0 adapts, or None), `saelens_renames` (husai → SAELens tensor names) and
    `own_tensors` (stacked parameters or buffers that SAELens's file has no place for: left out
    of `saelens_weights`, saved beside it by `own_weights`, read back by `load`).
    """

    architecture: ClassVar[str]
    saelens_architecture: ClassVar[str]
    Params: ClassVar[type[ArchParams]] = ArchParams
    uses_k: ClassVar[bool] = False
    balances: ClassVar[bool] = False  # supports balance_rate (husai.sae.balance)
    data_anchored: ClassVar[bool] = False  # decoder starts from data (husai.sae.coupling)
    supports_multi_topk: ClassVar[bool] = False  # its loss adds MultiTopK's term (multi_topk)
    coefficient_field: ClassVar[str | None] = None
    saelens_renames: ClassVar[dict[str, str]] = {}
    own_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg.resolve(d_in)
        self.cfg, self.d_in, self.d_sae = cfg, d_in, int(cfg.d_sae)  # type: ignore[arg-type]
        self.params = cfg.params
        self.transcoder = d_out is not None
        self.d_out = d_in if d_out is None else int(d_out)
        # hook points (input, and a transcoder's target), written to cfg.json when known
        self.hook_name: str | None = None
        self.hook_name_out: str | None = None
        # a language-model SAE's cfg.json keys (husai.sae.formats.lm); None for a toy SAE
        self.lm_metadata: dict[str, Any] | None = None
        self.seeds = [int(s) for s in seeds]
        S, F, D = len(self.seeds), self.d_sae, d_in
        self.W_enc = nn.Parameter(torch.empty(S, F, D))
        self.b_enc = nn.Parameter(torch.zeros(S, F))
        self.W_dec = nn.Parameter(torch.empty(S, F, self.d_out))
        self.b_dec = nn.Parameter(torch.zeros(S, self.d_out))
        self.reset_parameters()
        if self.coefficient_field:  # per-seed penalty weight (target_l0 adapts it)
            value = float(getattr(self.params, self.coefficient_field))
            self.register_buffer("coefficient", torch.full((S,), value), persistent=False)

    @classmethod
    def input_width(cls, weights: dict[str, Tensor]) -> int:
        """d_in of a one-seed SAE holding `weights` (husai layout, e.g. W_enc [F, D]): the
        width of its encoder rows (routesae: × its number of layers)."""
        return int(weights["W_enc"].shape[1])

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Per seed: random unit decoder rows; an SAE's encoder is tied to its decoder at
        init, a transcoder's gets its own random unit rows (next draws of the same seed)."""
        for s, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed)
            w_FO = torch.randn(self.d_sae, self.d_out, generator=g)
            w_FO /= w_FO.norm(dim=-1, keepdim=True)
            self.W_dec[s] = w_FO
            w_FD = w_FO
            if self.transcoder:
                w_FD = torch.randn(self.d_sae, self.d_in, generator=g)
                w_FD /= w_FD.norm(dim=-1, keepdim=True)
            self.W_enc[s] = w_FD
        self.b_enc.zero_()
        self.b_dec.zero_()

    # -- forward ---------------------------------------------------------------------
    def _stack(self, x: Tensor, d: int | None = None) -> Tensor:
        """[B, d] (same batch for every seed) or [S, B, d] → [S, B, d]; d defaults to d_in."""
        d = self.d_in if d is None else d
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_seeds, -1, -1)
        if x.dim() != 3 or x.shape[0] != self.n_seeds or x.shape[-1] != d:
            raise ValueError(f"expected [B, {d}] or [{self.n_seeds}, B, {d}]")
        return x

    def target(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """What the reconstruction is scored against: y as [S, B, d_out], or (an SAE only,
        y None) x itself, unchanged."""
        if y is None:
            if self.transcoder:
                raise ValueError("a transcoder's loss needs its target y")
            return x
        y_SBO = self._stack(y, self.d_out)
        if y_SBO.shape[1] != x.shape[-2]:
            raise ValueError(f"x and y have different batch sizes ({x.shape[-2]} vs {y.shape[-2]})")
        return y_SBO

    def input_bias(self) -> Tensor:
        """[S, D] subtracted from the input before encoding: b_dec for an SAE, zeros for a
        transcoder (its b_dec is the output's bias)."""
        if self.transcoder:
            return self.b_enc.new_zeros(self.n_seeds, self.d_in)
        return self.b_dec

    def pre_acts(self, x: Tensor) -> Tensor:
        x_SBD = self._stack(x)
        return torch.baddbmm(
            self.b_enc.unsqueeze(1),
            x_SBD - self.input_bias().unsqueeze(1),
            self.W_enc.transpose(1, 2),
        )

    def activation(self, pre_SBF: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes [S, B, F]."""
        return self.activation(self.pre_acts(x))

    def decode(self, codes_SBF: Tensor) -> Tensor:
        return torch.baddbmm(self.b_dec.unsqueeze(1), codes_SBF, self.W_dec)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # -- training --------------------------------------------------------------------
    def sparsity_penalty(self, codes_SBF: Tensor) -> Tensor:
        """Per-seed penalty [S]; zero unless the architecture has one."""
        return codes_SBF.new_zeros(self.n_seeds)

    def loss(self, x_SBD: Tensor, y_SBO: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-seed loss [S] = MSE against the target (y, default x; summed over its width,
        mean over B) + sparsity penalty."""
        y_SBO = self.target(x_SBD, y_SBO)
        codes = self.encode(x_SBD)
        mse = (self.decode(codes) - y_SBO).pow(2).sum(-1).mean(-1)
        penalty = self.sparsity_penalty(codes)
        return mse + penalty, {"mse": mse.detach(), "penalty": penalty.detach()}

    def start_training(self, n_train: int, total_steps: int = 1) -> None:
        """Called by the trainer once before the first step with the training-set size
        and the number of steps to come (e.g. the TopK family's dead-latent window and
        balancing schedule). Default: nothing."""

    @torch.no_grad()
    def after_step(self, parts: dict[str, Tensor], n_tokens: int) -> None:
        """Called by the trainer after each optimiser step with that step's loss parts and
        batch size, to update training statistics that are not learned by gradient (dead
        latent counters, BatchTopK's threshold). Default: nothing."""

    @torch.no_grad()
    def finish_training(self, x_ND: Tensor | Rows) -> None:
        """Called by the trainer once after the last step with the training activations
        (a tensor or `husai.sae.data.Rows`; e.g. BatchTopK's inference threshold).
        Default: nothing."""

    @torch.no_grad()
    def init_b_dec(self, mean_O: Tensor) -> None:
        """b_dec ← the mean target (an SAE's: the mean input)."""
        self.b_dec.copy_(mean_O.expand_as(self.b_dec))

    @torch.no_grad()
    def init_b_enc(self, mean_D: Tensor) -> None:
        """b_enc ← −W_enc·mean_D: a transcoder's encoder starts on centred inputs."""
        self.b_enc.copy_(-(self.W_enc @ mean_D.to(self.W_enc)))

    @torch.no_grad()
    def fit_init(self, x_ND: Tensor | Rows, y_NO: Tensor | None = None) -> None:
        """Data-dependent init, applied by the trainer before the first step, from the
        training inputs x and (a transcoder) targets y. An SAE: b_dec ← mean(x) (x a tensor
        or `husai.sae.data.Rows`, e.g. a store; a transcoder's x and y are tensors). A transcoder:
        b_dec ← mean(y), b_enc ← −W_enc·mean(x), and each decoder row ← the unit direction
        of W_enc[f] Σ_xy (Σ_xy the x–y cross-covariance [D, O]): the direction of the first
        gradient step of a zero decoder row for the linear code W_enc[f]·(x − mean x),
        i.e. the target that the latent's input direction predicts (for y = x, Σ_xx rather
        than an SAE's tied init). Rows where that is ~0 keep their random init."""
        if not self.transcoder:
            self.init_b_dec(as_rows(x_ND).mean())
            return
        if y_NO is None or not isinstance(x_ND, Tensor):
            raise ValueError("a transcoder's init needs its inputs x and targets y as tensors")
        w_SFO = self.W_enc.double() @ cross_covariance(x_ND, y_NO)
        norm = w_SFO.norm(dim=-1, keepdim=True)
        ok = norm > 1e-12 * norm.amax(dim=1, keepdim=True)
        self.W_dec.copy_(torch.where(ok, w_SFO / norm.clamp_min(1e-300), self.W_dec.double()))
        self.init_b_dec(y_NO.mean(0))
        self.init_b_enc(x_ND.mean(0))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Drop the gradient component along each decoder row (keeps rows on the sphere)."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(-1), w, value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # -- seeds -----------------------------------------------------------------------
    def select(self, s: int) -> SAE:
        """Seed s of the ensemble as a one-seed SAE (a copy)."""
        one = type(self)(
            self.cfg, self.d_in, [self.seeds[s]], self.d_out if self.transcoder else None
        )
        one.hook_name, one.hook_name_out = self.hook_name, self.hook_name_out
        one.lm_metadata = dict(self.lm_metadata) if self.lm_metadata is not None else None
        with torch.no_grad():
            for name, p in one.named_parameters():
                p.copy_(getattr(self, name)[s : s + 1])
            for name in self.own_tensors:  # buffers among them (parameters: copied above)
                getattr(one, name).copy_(getattr(self, name)[s : s + 1])
        return one

    def extra_cfg(self) -> dict[str, object]:
        """Architecture-specific fields written to cfg.json (e.g. k)."""
        return {}

    @torch.no_grad()
    def saelens_weights(self, index: int | None = None) -> dict[str, Tensor]:
        """One SAE's weights in SAELens's names and shapes (copies): `W_enc` [d_in, d_sae],
        `W_dec` [d_sae, d_out], `b_enc` [d_sae] (gated: `b_gate`), `b_dec` [d_out], and the
        architecture's others (`threshold` [d_sae]; gated: `b_mag`, `r_mag`), not its
        `own_tensors` (see `own_weights`). What `save` writes to sae_weights.safetensors.
        `index`: which seed of an ensemble (required when it holds more than one;
        `husai.sae.load` gives one-seed SAEs)."""
        index = self._index(index)
        return {
            self.saelens_renames.get(n, n): (p[index].T if n == "W_enc" else p[index]).clone(
                memory_format=torch.contiguous_format
            )
            for n, p in self.named_parameters()
            if n not in self.own_tensors
        }

    @torch.no_grad()
    def own_weights(self, index: int | None = None) -> dict[str, Tensor]:
        """One SAE's `own_tensors` (copies, husai's names and per-seed shapes): what `save`
        writes beside the SAELens file (`husai.sae.formats.files.OWN_WEIGHTS_FILE`); empty
        for an architecture whose weights SAELens's file holds."""
        index = self._index(index)
        return {
            n: getattr(self, n)[index].clone(memory_format=torch.contiguous_format)
            for n in self.own_tensors
        }

    def _index(self, index: int | None) -> int:
        if index is None:
            if self.n_seeds != 1:
                raise HusaiError(
                    f"an ensemble of {self.n_seeds} seeds ({self.seeds}): pass the index of "
                    "one (saelens_weights(index=s)) or select it (select(s))"
                )
            index = 0
        if not -self.n_seeds <= index < self.n_seeds:
            raise HusaiError(f"seed index {index} out of range for {self.n_seeds} seeds")
        return index
