"""Per-latent and activation-based consistency (all scores: higher = more consistent).

- ``per_latent_best``: every latent's best-match |cos| in each other dictionary.
- ``MatchedCorrelation`` / ``matched_correlation``: Pearson correlation, over tokens, of the
  activations of matched latent pairs (Paulo & Belrose style activation MCC when the pairs
  come from a one-to-one matching). Streams over token chunks; sums in float64.
- ``shared_latent_rate``: Paulo & Belrose's shared latents: the one-to-one matchings of the
  encoder rows and of the decoder rows must pair the latent with the *same* partner, and both
  |cos| must exceed the threshold (default 0.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from husai.errors import HusaiError
from husai.metrics._blocks import DEFAULT_BLOCK_SIZE, best_match_scaled, check_same_d, scaled_rows
from husai.metrics.matching import DEFAULT_TOP_M, assignment
from husai.metrics.validate import ArrayLike, as_tensor, check_block_size, check_threshold


def per_latent_best(
    dicts: Sequence[ArrayLike], block_size: int = DEFAULT_BLOCK_SIZE
) -> list[np.ndarray]:
    """For dictionary i, a float64 [n_i, n_dicts] array: column j is each latent's best-match
    |cos| (max over latents) in dictionary j; column i is NaN. One streamed pass per pair."""
    block_size = check_block_size(block_size)
    if len(dicts) < 2:
        raise HusaiError(f"per_latent_best needs at least 2 dictionaries, got {len(dicts)}")
    prepped = [scaled_rows(x, f"dictionary {k}") for k, x in enumerate(dicts)]
    for k, (u, _) in enumerate(prepped[1:], start=1):
        check_same_d(prepped[0][0], u, f"dictionaries 0 and {k}")
    n = len(prepped)
    out = [np.full((u.shape[0], n), np.nan) for u, _ in prepped]
    for i in range(n):
        for j in range(i + 1, n):
            (a, ia), (b, ib) = prepped[i], prepped[j]
            best_a, best_b = best_match_scaled(a, ia, b, ib, block_size)
            out[i][:, j], out[j][:, i] = best_a.double().numpy(), best_b.double().numpy()
    return out


class MatchedCorrelation:
    """Streaming Pearson correlation of latent pairs ``(rows[k], cols[k])`` over tokens.

    Feed ``update(codes_a [B, F_a], codes_b [B, F_b])`` chunk by chunk (same tokens in both),
    then ``result()``. A latent that is constant over all tokens (e.g. never fires) has no
    defined correlation; it scores 0 (documented convention, so dead latents pull it down).
    """

    def __init__(self, rows: ArrayLike, cols: ArrayLike) -> None:
        self.rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
        self.cols = torch.as_tensor(np.asarray(cols), dtype=torch.int64)
        if self.rows.shape != self.cols.shape or self.rows.ndim != 1:
            raise HusaiError("rows and cols must be 1-D index arrays of equal length")
        k = len(self.rows)
        self.n = 0
        self.sx, self.sy = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        self.sxx, self.syy = torch.zeros_like(self.sx), torch.zeros_like(self.sx)
        self.sxy = torch.zeros_like(self.sx)

    def update(self, codes_a: ArrayLike, codes_b: ArrayLike) -> None:
        xa, xb = as_tensor(codes_a, "codes_a"), as_tensor(codes_b, "codes_b")
        if xa.ndim != 2 or xb.ndim != 2 or xa.shape[0] != xb.shape[0]:
            raise HusaiError(
                f"codes must be [B, F] with the same B, got {tuple(xa.shape)}, {tuple(xb.shape)}"
            )
        x = xa.index_select(1, self.rows.to(xa.device)).double().cpu()
        y = xb.index_select(1, self.cols.to(xb.device)).double().cpu()
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += (x * x).sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += (x * y).sum(0)

    def result(self) -> np.ndarray:
        """float64 [n_pairs] Pearson correlations in [-1, 1] (0 where a latent is constant)."""
        if self.n == 0:
            raise HusaiError("no tokens were given to the correlation")
        n = float(self.n)
        cov = self.sxy - self.sx * self.sy / n
        vx = (self.sxx - self.sx**2 / n).clamp_min(0)
        vy = (self.syy - self.sy**2 / n).clamp_min(0)
        den = (vx * vy).sqrt()
        ok = (vx > 1e-12 * self.sxx.clamp_min(1e-300)) & (vy > 1e-12 * self.syy.clamp_min(1e-300))
        r = torch.where(ok, cov / torch.where(ok, den, 1.0), 0.0)
        return r.clamp(-1.0, 1.0).numpy()


def matched_correlation(
    codes_a: ArrayLike, codes_b: ArrayLike, rows: ArrayLike, cols: ArrayLike
) -> np.ndarray:
    """Pearson correlation over tokens of each matched pair's activations (see
    ``MatchedCorrelation``): codes [N, F_a], [N, F_b]; pairs (rows[k], cols[k])."""
    acc = MatchedCorrelation(rows, cols)
    acc.update(codes_a, codes_b)
    return acc.result()


def shared_latent_rate(
    enc_a: ArrayLike,
    dec_a: ArrayLike,
    enc_b: ArrayLike,
    dec_b: ArrayLike,
    threshold: float = 0.7,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> dict[str, Any]:
    """Paulo & Belrose shared latents between SAE a and SAE b; higher = more consistent.

    Matches latents one-to-one by |cos| of encoder rows and, separately, of decoder rows
    (``matching.assignment``). Latent i of a is *shared* iff both matchings pair it with the
    same latent j of b and both |cos(enc)| and |cos(dec)| of (i, j) exceed ``threshold``.
    Returns ``{"n_shared", "rate"}`` with ``rate = 0.5 * (n_shared / n_a + n_shared / n_b)``
    (symmetric, in [0, 1]), plus ``"shared_a"`` (bool [n_a]) and ``"shared_b"`` (bool [n_b]).
    """
    threshold = check_threshold(threshold)
    ea, eb, da, db = (
        as_tensor(x, n)
        for x, n in ((enc_a, "enc_a"), (enc_b, "enc_b"), (dec_a, "dec_a"), (dec_b, "dec_b"))
    )
    if ea.shape[0] != da.shape[0] or eb.shape[0] != db.shape[0]:
        raise HusaiError("encoder and decoder of one SAE must have the same number of latents")
    n_a, n_b = ea.shape[0], eb.shape[0]
    m_enc = assignment(ea, eb, method=method, top_m=top_m, block_size=block_size)
    m_dec = assignment(da, db, method=method, top_m=top_m, block_size=block_size)
    part_enc, part_dec = m_enc.partner_of_rows(n_a), m_dec.partner_of_rows(n_a)
    cos_enc, cos_dec = np.zeros(n_a), np.zeros(n_a)
    cos_enc[m_enc.rows], cos_dec[m_dec.rows] = m_enc.scores, m_dec.scores
    shared_a = (part_enc >= 0) & (part_enc == part_dec)
    shared_a &= (cos_enc > threshold) & (cos_dec > threshold)
    shared_b = np.zeros(n_b, dtype=bool)
    shared_b[part_enc[shared_a]] = True
    k = int(shared_a.sum())
    return {
        "n_shared": k,
        "rate": 0.5 * (k / n_a + k / n_b),
        "shared_a": shared_a,
        "shared_b": shared_b,
    }
