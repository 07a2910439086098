"""Data initialisation and dead-latent resampling, for every architecture.

Data initialisation (`init: data`): each seed's decoder rows are the unit directions of F
training rows, centred by the data mean, drawn without replacement (with replacement when
F > N) by the seed's own generator; the encoder starts tied to the decoder, then each
seed's encoder is scaled by the least-squares factor that best reconstructs (up to
RESAMPLE_ROWS of) the centred rows (unscaled, TopK's k codes of |x| each overshoot ~500×
on the toy model).

Resampling (`resample_every_epochs`, after Bricken et al. 2023, "Towards Monosemanticity"):
after every n-th epoch in the first half of training, latents that fire on none of (up to)
RESAMPLE_ROWS evenly spaced training rows are dead. Each dead latent of seed s gets a row
drawn with probability ∝ seed s's squared reconstruction error on it: its decoder row
becomes the unit direction of that row minus b_dec, its encoder row that direction × 0.2 ×
the mean norm of the alive encoder rows, its b_enc 0; the architecture's other per-latent
parameters return to their initial values, and Adam's moments of every reset entry are zeroed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from husai.sae.base import SAE
from husai.sae.data import Rows, as_rows

RESAMPLE_ROWS = 16_384
ENCODER_SCALE = 0.2  # Bricken et al.: new encoder rows at 0.2 × the mean alive norm


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def init_from_data(sae: SAE, x_ND: Tensor | Rows) -> None:
    """Decoder (and tied encoder) rows from sampled, centred training rows (x a tensor or
    `husai.sae.data.Rows`, e.g. a store: only the sampled rows are read)."""
    data = as_rows(x_ND)
    dev = sae.W_dec.device
    mean = data.mean()
    N, F = data.n, sae.d_sae
    for s, seed in enumerate(sae.seeds):
        g = torch.Generator().manual_seed(seed)
        rows = torch.randperm(N, generator=g)[:F] if F <= N else torch.randint(N, (F,), generator=g)
        w_FD = _unit((data.take(rows) - mean).to(dev))
        sae.W_dec[s] = w_FD
        sae.W_enc[s] = w_FD
    sample = (data.spaced(RESAMPLE_ROWS) - mean).to(dev)
    sae.b_dec.zero_()
    sae.b_enc.zero_()
    r_SND = sae.decode(sae.encode(sample))  # codes are linear in the encoder's scale
    scale_S = (r_SND * sample).sum((1, 2)) / r_SND.pow(2).sum((1, 2)).clamp_min(1e-12)
    sae.W_enc.mul_(scale_S.clamp_min(1e-6).view(-1, 1, 1))


def resample_due(epochs: int, every: int, epoch: int) -> bool:
    """Resample after epoch `epoch` (0-based)? Every `every` epochs, first half only."""
    return every > 0 and (epoch + 1) % every == 0 and epoch + 1 <= epochs // 2


def _scan(sae: SAE, rows: Tensor) -> tuple[Tensor, Tensor]:
    """One pass over rows: ([S, F] bool latents that fire somewhere, [S, n] squared errors)."""
    fired = torch.zeros(sae.n_seeds, sae.d_sae, dtype=torch.bool, device=sae.W_dec.device)
    errors = []
    for chunk in rows.split(4096):
        codes = sae.encode(chunk)
        fired |= (codes > 0).any(1)
        errors.append((sae.decode(codes) - chunk).pow(2).sum(-1))
    return fired, torch.cat(errors, dim=1)


@torch.no_grad()
def dead_latents(sae: SAE, x_ND: Tensor | Rows) -> Tensor:
    """[S, F] bool: latents firing on none of up to RESAMPLE_ROWS evenly spaced rows."""
    return ~_scan(sae, as_rows(x_ND).spaced(RESAMPLE_ROWS).to(sae.W_dec.device))[0]


@torch.no_grad()
def resample_dead(
    sae: SAE, opt: torch.optim.Optimizer, x_ND: Tensor | Rows, step: int
) -> list[int]:
    """Resample every seed's dead latents in place; returns how many per seed."""
    rows = as_rows(x_ND).spaced(RESAMPLE_ROWS).to(sae.W_dec.device)
    fired_SF, err_SN = _scan(sae, rows)
    dead_SF = ~fired_SF
    if not dead_SF.any():
        return [0] * sae.n_seeds
    fresh = type(sae)(sae.cfg, sae.d_in, sae.seeds).to(sae.W_dec.device)
    for s, seed in enumerate(sae.seeds):
        dead = dead_SF[s].nonzero().squeeze(1)
        if len(dead) == 0:
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        weights = err_SN[s].double().cpu().clamp_min(0) + 1e-12  # drawn on the CPU generator
        picks = torch.multinomial(weights, len(dead), replacement=True, generator=g)
        picks = picks.to(rows.device)
        w = _unit(rows[picks] - sae.b_dec[s])
        alive = ~dead_SF[s]
        norm = (
            sae.W_enc[s, alive].norm(dim=-1).mean()
            if alive.any()
            else torch.tensor(1.0, device=rows.device)
        )
        for name, p in sae.named_parameters():
            if p.dim() >= 2 and p.shape[:2] == (sae.n_seeds, sae.d_sae):
                p[s, dead] = getattr(fresh, name)[s, dead]
        sae.W_dec[s, dead] = w
        sae.W_enc[s, dead] = w * ENCODER_SCALE * norm
        sae.b_enc[s, dead] = 0.0
        _zero_moments(opt, sae, s, dead)
    return [int(n) for n in dead_SF.sum(1)]


def _zero_moments(opt: torch.optim.Optimizer, sae: SAE, s: int, dead: Tensor) -> None:
    for p in sae.parameters():
        state = opt.state.get(p)
        if not state or p.dim() < 2 or p.shape[:2] != (sae.n_seeds, sae.d_sae):
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][s, dead] = 0.0
