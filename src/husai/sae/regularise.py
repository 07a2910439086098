"""Consistency-regularised training (`consistency_penalty`): pull decoders towards agreement.

Every mode gives each latent f of seed s a partner direction p (a unit row) and adds to that
seed's loss λ · (1 − m_s), m_s = the mean over the seed's matched latents of |cos(W_dec[s, f],
p)|; the partner is a constant (no gradient flows into it). The penalty is dimensionless,
in [0, λ], while the MSE is summed over d_in, so useful λ grow with the MSE's scale.

- "reference": p = the best-|cos| row of a frozen reference decoder R [G, d_out] (recomputed
  every step, as the max is part of the loss). m_s is the seed's one-sided PWMCC to R.
- "assignment": p = R's row that a one-to-one maximum-|cos| matching (Hungarian, exact up to
  husai.metrics.matching.EXACT_MAX rows) gives the latent; the matching is recomputed every
  `reassign_every` steps and fixed in between. With G < F only G latents are matched.
- "joint": no reference; every `reassign_every` steps each pair of seeds (s < t) is matched
  (S(S−1)/2 matchings; the (t, s) matching is its inverse) and seed s's partners are the
  matched rows of every other seed, detached; m_s is the mean over the other seeds. All pairs,
  not a star around seed 0: no seed is special and every pair that the cross-seed PWMCC
  averages is pulled together. The detached partners make the summed loss's gradient exactly
  that of λ/(S−1) · Σ_{s<t} (1 − m_st) with both sides live (m_st = m_ts), while each seed's
  loss stays a function of its own weights, at the same scale as "reference". Seeds of a joint
  ensemble no longer train as they would alone, by design.

Where R comes from is the caller's choice: `train_sae(..., reference=R)`. `train_reference`
gives the default, the same config trained without the penalty for `reference_seed` (null:
the run's first seed). A penalised seed equal to the reference seed starts at R (its penalty
starts at 0), so compare the other seeds to R. With λ = 0 the penalty is not computed during
training (bit-identical to no penalty); the final m_s and penalty are still reported.

Each step costs one no-grad pass building sign-aligned partner rows q [S, F, d_out] (the best
match: one blocked [S, F, G] |cos| product; the fixed matchings: gathers) and one
differentiable row-wise product with q: the value and gradient equal those of Σ |cos|, with
O(S·F·d_out) memory for autograd. On one CPU core (S = 5, F = 1024, d_out = 128) the best
match adds ~40 ms a step (the unpenalised TopK step: ~70 ms); a Hungarian matching of
1024 × 1024 takes ~0.05–0.2 s (2048: ~0.5–0.9 s), i.e. ~0.3 s (assignment) and ~0.5 s
(joint, 10 pairs) per recomputation, so `reassign_every` sets their share of the time
(benchmarks/bench_regularise.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.metrics.matching import assignment
from husai.sae.config import SAEConfig

BLOCK_ELEMENTS = 1 << 24  # |cos| entries per block of the best-match search (64 MiB float32)


def unit_rows(w: Tensor) -> Tensor:
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _aligned(wn: Tensor, p: Tensor) -> Tensor:
    """p with each row's sign flipped to agree with wn's (|cos| = wn · aligned p)."""
    return p * torch.sign((wn * p).sum(-1, keepdim=True))


@torch.no_grad()
def best_partners(wn_SFO: Tensor, ref_GO: Tensor) -> Tensor:
    """[S, F] index of each latent's best-|cos| row of ref (unit rows), in blocks of F."""
    S, F, _ = wn_SFO.shape
    block = max(1, BLOCK_ELEMENTS // (S * len(ref_GO)))
    return torch.cat(
        [(wn_SFO[:, i : i + block] @ ref_GO.T).abs_().argmax(-1) for i in range(0, F, block)],
        dim=1,
    )


@torch.no_grad()
def hungarian(a_FO: Tensor, b_GO: Tensor) -> Tensor:
    """[F] index of each row of a's partner in b in a max-total-|cos| matching (−1: none)."""
    m = assignment((a_FO @ b_GO.T).abs_().float().cpu(), method="auto")
    out = torch.full((len(a_FO),), -1, dtype=torch.long)
    out[torch.from_numpy(m.rows)] = torch.from_numpy(m.cols)
    return out.to(a_FO.device)


class ConsistencyRegulariser:
    """The penalty of one training run: call it with the decoder and the step."""

    def __init__(self, mode: str, lam: float, every: int, reference: Tensor | None) -> None:
        self.mode, self.lam, self.every = mode, float(lam), int(every)
        self.ref = None if reference is None else unit_rows(reference.detach())
        self.partner: Tensor | None = None  # fixed matching: [S, F] or, joint, [S, S, F]

    @property
    def active(self) -> bool:
        """Does it enter the loss? (λ = 0: reported only.)"""
        return self.lam > 0

    @torch.no_grad()
    def match(self, wn_SFO: Tensor) -> Tensor:
        """Recompute the fixed matching (assignment: [S, F] into R; joint: [S, S, F])."""
        S, F, _ = wn_SFO.shape
        if self.mode == "assignment":
            ref = self.ref.to(wn_SFO)  # type: ignore[union-attr]
            return torch.stack([hungarian(wn_SFO[s], ref) for s in range(S)])
        perm = torch.arange(F, device=wn_SFO.device).repeat(S, S, 1)
        for s in range(S):
            for t in range(s + 1, S):
                perm[s, t] = hungarian(wn_SFO[s], wn_SFO[t])
                perm[t, s] = torch.argsort(perm[s, t])
        return perm

    @torch.no_grad()
    def targets(self, wn_SFO: Tensor, partner: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sign-aligned partner rows q [S, F, O] (0 where unmatched) and matched counts [S]."""
        S, F, _ = wn_SFO.shape
        if self.mode == "joint":
            q = torch.zeros_like(wn_SFO)
            for s in range(S):
                for t in range(S):
                    if t != s:
                        q[s] += _aligned(wn_SFO[s], wn_SFO[t, partner[s, t]])  # type: ignore[index]
            return q / (S - 1), wn_SFO.new_full((S,), float(F))
        ref = self.ref.to(wn_SFO)  # type: ignore[union-attr]
        idx = best_partners(wn_SFO, ref) if self.mode == "reference" else partner
        matched = idx >= 0  # type: ignore[operator]
        q = _aligned(wn_SFO, ref[idx.clamp_min(0)]) * matched.unsqueeze(-1)  # type: ignore[union-attr]
        return q, matched.sum(-1).to(wn_SFO)

    def mean_abs_cos(self, w_SFO: Tensor, step: int | None) -> Tensor:
        """m [S]: each seed's mean matched |cos|, differentiable in w (the partners are not).
        The fixed matching is recomputed when `step` is a multiple of `reassign_every`
        (or on the first call); `step=None` uses a fresh matching without storing it."""
        wn = unit_rows(w_SFO)
        partner = self.partner
        if self.mode != "reference":
            if step is None or partner is None or step % self.every == 0:
                partner = self.match(wn.detach())
            if step is not None:
                self.partner = partner
        q, n_S = self.targets(wn.detach(), partner)
        return (wn * q).sum((-1, -2)) / n_S.clamp_min(1)

    def __call__(self, w_SFO: Tensor, step: int | None) -> tuple[Tensor, Tensor]:
        """(penalty [S] = λ · (1 − m), m [S]); only the penalty carries a gradient."""
        m = self.mean_abs_cos(w_SFO, step)
        return self.lam * (1 - m), m.detach()


def make_regulariser(
    cfg: SAEConfig, n_seeds: int, d_out: int, reference: Tensor | None
) -> ConsistencyRegulariser | None:
    """The run's regulariser (None for "none"), after checking `reference` against the mode."""
    mode = cfg.consistency_penalty
    if mode == "none" or mode == "joint":
        if reference is not None:
            raise HusaiError(f"consistency_penalty {mode!r} takes no reference decoder")
        if mode == "none":
            return None
        if n_seeds < 2:
            raise HusaiError("consistency_penalty 'joint' needs at least 2 seeds")
        return ConsistencyRegulariser(mode, cfg.consistency_lambda, cfg.reassign_every, None)
    if reference is None:
        raise HusaiError(
            f"consistency_penalty {mode!r} needs a reference decoder (train_sae(..., reference=))"
        )
    if reference.dim() != 2 or len(reference) == 0 or reference.shape[1] != d_out:
        raise HusaiError(
            f"reference decoder must be [n, {d_out}] (the decoder's width), "
            f"got {tuple(reference.shape)}"
        )
    if not torch.isfinite(reference).all() or (reference.norm(dim=-1) == 0).any():
        raise HusaiError("reference decoder has NaN/Inf or all-zero rows")
    return ConsistencyRegulariser(mode, cfg.consistency_lambda, cfg.reassign_every, reference)


def train_reference(
    cfg: SAEConfig,
    x_ND: Any,
    seeds: Sequence[int],
    y_ND: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """The default reference decoder [F, d_out]: `cfg` trained without the penalty for
    `cfg.reference_seed` (null: seeds[0]), on the same data as `train_sae` takes (a tensor,
    `husai.sae.data.Rows` or an activation store), on `device`."""
    from husai.sae.trainer import train_sae

    seed = seeds[0] if cfg.reference_seed is None else cfg.reference_seed
    plain = cfg.model_copy(update={"consistency_penalty": "none", "consistency_lambda": 0.0})
    sae, _ = train_sae(plain, x_ND, [seed], y_ND=y_ND, device=device)
    return sae.W_dec[0].detach().clone()
