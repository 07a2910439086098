"""Archetypal SAE (Fel et al. 2025, "Archetypal SAE: adaptive and stable dictionary learning
for concept extraction in large vision models"), relaxed (their RA-SAE), on a TopK encoder.

Each decoder atom is a convex combination of fixed candidate points drawn from the data, plus
a small relaxation: per seed, with C [n, O] the candidates (buffer `candidates`, n =
`n_candidates`), W [F, n] = softmax(`logit_scale` × `logits`) row-stochastic and Λ [F, O]
(`relax`) with ‖Λ_f‖ ≤ δ (`relax_delta`),
  atom_f = (W C + Λ)_f / ‖(W C + Λ)_f‖    (husai's decoder rows are unit vectors).
The encoder, the top-k selection, AuxK and frequency balancing are TopK's (a subclass).

Candidates, per seed, from the seed's own generator (`torch.Generator().manual_seed(seed)`),
so that seeds stay independent — Brzozowski & Chung (arXiv 2606.02061) trace the published
stability of archetypal SAEs to every run sharing the same candidates and init. The training
rows (an SAE's inputs; a transcoder's targets) are centred by their mean (b_dec starts there
and is added after decoding, so atoms live in the centred space; uncentred rows did better on
the synthetic ground truth, whose non-negative codes make the true features the data cone's
edges — 0.82 vs 0.79 at logit_scale 1 — but confine every atom to the mean's half-space on data
with a large mean, as a language model's) and drawn n at a time without
replacement (with, if n > N); `candidate_source` "rows" uses them as they are, "kmeans" takes
the seed's min(N, 16 n) rows, starts k-means from the first n and runs KMEANS_ITERS Lloyd steps
(Fel et al. use k-means centroids; empty clusters keep their centre). Each candidate is then
scaled to unit norm: that changes no direction an atom can reach (a non-negative combination
of rescaled points is one of the points), stops large-norm rows from dominating the hull, and
makes δ unit-free — the relaxation's norm relative to the candidates' (unit) norm. Before
`fit_init` sees data (a freshly built SAE) the candidates are random unit vectors.

Init: latent f starts on its "own" candidate a(f) (a seed permutation of the candidates,
cycled if F > n) with logit log(n − 1) there and 0 elsewhere — half its weight on a(f), the
rest spread evenly — and Λ = 0. An SAE's encoder starts tied to the resulting atoms (untied,
recovery on the synthetic ground truth fell from 0.79 to 0.70 at logit_scale 1, 10 epochs);
a transcoder's encoder row f starts as the unit direction of Σ_xy atom_f (Σ_xy the x–y
cross-covariance: the input direction whose centred projection covaries most with the target
along the atom; the base's transcoder init, reversed), b_enc = −W_enc·mean(x). W is a softmax
rather than Fel et al.'s ReLU-and-renormalise projection: with Adam, every entry of a
projected row moves by ~lr per step, so the n entries of a row shift its mass by ~n·lr at
once; Adam on logits makes multiplicative changes (mirror descent on the simplex) and keeps W
exactly on it. Those are slow at logit_scale 1 (an atom moves ≲ lr a step, a TopK row
~lr·√O): `logit_scale` speeds them up (synthetic truth, 10 epochs: recovery 0.79 at 1, 0.84
at 10, 0.87 at 30, 0.85 at 100, 0.84 at 300, where the weights saturate to near one-hot;
TopK 0.86).

Training: the base's `W_dec` parameter holds the materialised atoms, so TopK's sparse kernels,
AuxK, the consistency regulariser and every metric read it unchanged. It is never stepped:
after the backward pass, `remove_parallel_grads` (the hook between backward and the optimiser
step) sends W_dec's gradient through the atoms' formula into `logits` and `relax` (exact: W_dec
equals the formula's value at the forward) and clears it; after the step, `normalize_decoder`
projects each Λ_f back into the ball of radius δ and recomputes W_dec. Cost per step: the
[F, n] × [n, O] product and its backward, whatever the batch size.

Measured on the synthetic ground truth (32 features in 16 dims, k 2, 10 epochs, lr 3e-3, seeds
0–2, independent candidates): pwmcc (max-|cos|, higher = more consistent) 0.89–0.92 at d_sae 32
and 0.92–0.94 at d_sae 64, against TopK's 0.87–0.92 and 0.84–0.85, at the same recovery
(0.86–0.88 and 0.98–1.00). One data set, three seeds; whether atoms duplicate (which raises
a max-|cos| pwmcc too) is not checked.

Saved as a TopK SAE (`saelens_architecture` "topk": SAELens and other tools read the
materialised W_dec); `candidates`, `logits` and `relax` go to husai's own file beside it
(`husai.sae.formats.files.OWN_WEIGHTS_FILE`), which `husai.sae.load` requires. `init: data`
and resampling are refused: both overwrite decoder rows directly, which the hull cannot hold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.sae.architectures.topk import TopKParams, TopKSAE
from husai.sae.base import cross_covariance
from husai.sae.data import Rows, as_rows
from husai.sae.registry import register

if TYPE_CHECKING:
    from husai.sae.config import SAEConfig

PLACEHOLDER_SEED_OFFSET = 104_729  # before data: random candidates and the a(f) assignment
KMEANS_ITERS = 10
KMEANS_ROWS_PER_CANDIDATE = 16


class ArchetypalParams(TopKParams):
    n_candidates: int = Field(
        1024,
        gt=0,
        description="archetypal: candidate points per seed, drawn from the training rows "
        "(an SAE's inputs, a transcoder's targets) by the seed's own generator; decoder atoms "
        "are convex combinations of them",
    )
    relax_delta: float = Field(
        0.01,
        ge=0,
        description="archetypal: the relaxation's bound δ: each atom (before unit "
        "normalisation) lies within δ of the convex hull of the unit-norm candidates (0 = "
        "strictly in it)",
    )
    logit_scale: float = Field(
        30.0,
        gt=0,
        description="archetypal: the convex weights are softmax(logit_scale × logits), so Adam "
        "moves the effective logits ~logit_scale × lr a step (30: the best of 1, 10, 30, 100, "
        "300 on the synthetic ground truth at lr 3e-3)",
    )
    candidate_source: Literal["rows", "kmeans"] = Field(
        "rows",
        description="archetypal: candidates are the seed's random centred training rows, or "
        "k-means centroids (10 Lloyd steps on 16 × n_candidates of the seed's rows, started "
        "from its first n_candidates)",
    )


@register
class ArchetypalSAE(TopKSAE):
    architecture = "archetypal"
    saelens_architecture = "topk"
    Params = ArchetypalParams
    own_tensors = ("candidates", "logits", "relax")
    data_anchored = True  # atoms start half on one of the seed's data candidates
    params: ArchetypalParams

    def __init__(
        self,
        cfg: SAEConfig,
        d_in: int,
        seeds: list[int] | tuple[int, ...],
        d_out: int | None = None,
    ) -> None:
        if cfg.init == "data" or cfg.resample_every_epochs:
            raise HusaiError(
                "archetypal: init: data and resampling are not supported (they set decoder rows "
                "directly; an archetypal atom is a combination of its seed's candidates)"
            )
        super().__init__(cfg, d_in, seeds, d_out)
        S, F, n = self.n_seeds, self.d_sae, self.params.n_candidates
        self.register_buffer("candidates", torch.empty(S, n, self.d_out))
        self.logits = nn.Parameter(torch.empty(S, F, n))
        self.relax = nn.Parameter(torch.zeros(S, F, self.d_out))
        self.reset_archetypes()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "logits"):
            self.reset_archetypes()

    @torch.no_grad()
    def reset_archetypes(self) -> None:
        """Per seed: random unit candidates, each latent on its own candidate, Λ = 0, the
        atoms materialised and (an SAE) the encoder tied to them."""
        F, n = self.d_sae, self.params.n_candidates
        for s, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed + PLACEHOLDER_SEED_OFFSET)
            self.candidates[s] = _unit(torch.randn(n, self.d_out, generator=g))
            own_F = torch.randperm(n, generator=g)[torch.arange(F) % n]
            logits = torch.zeros(F, n)
            logits[torch.arange(F), own_F] = math.log(max(n - 1, 1)) / self.params.logit_scale
            self.logits[s] = logits
        self.relax.zero_()
        self._materialise(tie=True)

    # -- the decoder -----------------------------------------------------------------------
    def simplex_weights(self) -> Tensor:
        """W [S, F, n]: each latent's convex weights over its seed's candidates."""
        return torch.softmax(self.logits * self.params.logit_scale, dim=-1)

    def hull_points(self) -> Tensor:
        """W C [S, F, O]: each latent's point in the convex hull of its candidates."""
        return torch.bmm(self.simplex_weights(), self.candidates)

    def atoms(self) -> Tensor:
        """[S, F, O] unit decoder rows (W C + Λ, normalised); differentiable in the logits
        and Λ."""
        raw = self.hull_points() + self.relax
        return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def _materialise(self, tie: bool = False) -> None:
        self.W_dec.copy_(self.atoms())
        if tie and not self.transcoder:
            self.W_enc.copy_(self.W_dec)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """W_dec's gradient → the logits' and Λ's, through `atoms` (its normalisation drops
        the component along each row); W_dec itself is not stepped."""
        g = self.W_dec.grad
        if g is None:
            return
        self.W_dec.grad = None
        with torch.enable_grad():
            torch.autograd.backward(self.atoms(), g)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Λ_f back into the ball of radius δ, then W_dec ← the atoms."""
        delta = self.params.relax_delta
        norm = self.relax.norm(dim=-1, keepdim=True)
        self.relax.mul_((delta / norm.clamp_min(1e-30)).clamp(max=1.0))
        self._materialise()

    # -- data-dependent init ---------------------------------------------------------------
    @torch.no_grad()
    def fit_init(self, x_ND: Tensor | Rows, y_NO: Tensor | None = None) -> None:
        """The base's init (b_dec; a transcoder's b_enc), then each seed's candidates from
        the rows (an SAE's inputs, a transcoder's targets) and the atoms from them."""
        super().fit_init(x_ND, y_NO)
        rows = as_rows(x_ND if y_NO is None else y_NO)
        mean = rows.mean()
        for s, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed)
            self.candidates[s] = self._draw(rows, mean, g).to(self.candidates)
        self._materialise(tie=True)
        if y_NO is not None and isinstance(x_ND, Tensor):  # the base's check passed
            # encoder row f ← the unit input direction whose centred projection covaries most
            # with the target along atom f: Σ_xy atom_f (the base's transcoder init, reversed)
            w_SFD = self.W_dec.double() @ cross_covariance(x_ND, y_NO).T
            norm = w_SFD.norm(dim=-1, keepdim=True)
            ok = norm > 1e-12 * norm.amax(dim=1, keepdim=True)
            self.W_enc.copy_(torch.where(ok, w_SFD / norm.clamp_min(1e-300), self.W_enc.double()))
            mean_D = x_ND.mean(0).to(self.W_enc)
            for s in range(self.n_seeds):  # seed by seed: the same rounding in any ensemble
                self.b_enc[s] = -(self.W_enc[s] @ mean_D)

    def _draw(self, rows: Rows, mean: Tensor, g: torch.Generator) -> Tensor:
        """One seed's [n, O] unit candidates (see the module docstring)."""
        n, N = self.params.n_candidates, rows.n
        if self.params.candidate_source == "kmeans":
            idx = torch.randperm(N, generator=g)[: KMEANS_ROWS_PER_CANDIDATE * n]
            return _unit(_kmeans(rows.take(idx).double() - mean.double(), n)).float()
        idx = torch.randperm(N, generator=g)[:n] if n <= N else torch.randint(N, (n,), generator=g)
        return _unit(rows.take(idx).double() - mean.double()).float()


def _kmeans(points: Tensor, n: int) -> Tensor:
    """[n, O] centres after KMEANS_ITERS Lloyd steps from the first n points (repeated
    cyclically if there are fewer); an empty cluster keeps its centre."""
    centres = points[torch.arange(n) % len(points)].clone()
    for _ in range(KMEANS_ITERS):
        dist = torch.cdist(points, centres)
        nearest = dist.argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, nearest, points)
        counts = torch.bincount(nearest, minlength=n).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
