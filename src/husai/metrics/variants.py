"""Named consistency variants beyond max-|cos| (all: higher = more consistent).

- ``signed_assignment`` / ``hungarian_signed``: Song et al.'s PW-MCC (xiangchensong/
  sae-feature-consistency, ``examples/evaluate_mcc.py``): a one-to-one Hungarian matching on
  the *signed* cosine of decoder rows (cost −cos), its mean matched cosine. A latent whose
  direction came back negated scores −1 here but 1 under |cos|. In [-1, 1].
- ``shared_rates``: Paulo & Belrose's shared-latent rate (EleutherAI/sae_overlap) at several
  thresholds from one pair of matchings: encoder rows and decoder rows are matched
  separately (Hungarian; signed cosine, or |cos| with ``signed=False``); a latent is shared
  when both matchings pick the same partner and both cosines are ≥ the threshold.

Both use ``matching``'s exact path (scipy on the full matrix) up to ``EXACT_MAX`` latents and
its streamed sparse top-m path beyond, as ``hungarian_mcc`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from husai.errors import HusaiError
from husai.metrics._blocks import (
    DEFAULT_BLOCK_SIZE,
)
from husai.metrics.matching import (
    DEFAULT_TOP_M,
    Matching,
    assignment,
)
from husai.metrics.validate import ArrayLike, as_tensor, check_threshold

SHARED_CURVE_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # 0.5 … 0.95


def signed_assignment(
    a: ArrayLike,
    b: ArrayLike,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Matching:
    """Maximum-total-*signed*-cosine one-to-one matching of the rows of ``a`` and ``b``
    (``Matching.scores``: each pair's signed cosine): ``matching.assignment(signed=True)``,
    "exact" (scipy on the full matrix), "sparse" (each latent's ``top_m`` best partners by
    signed cosine, streamed), "auto" (exact iff both sizes ≤ ``EXACT_MAX``)."""
    return assignment(a, b, method=method, top_m=top_m, block_size=block_size, signed=True)


def hungarian_signed(
    a: ArrayLike,
    b: ArrayLike,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> float:
    """Song et al.'s PW-MCC of two dictionaries: mean signed cosine over the one-to-one
    matching maximising the total signed cosine; in [-1, 1], higher = more consistent."""
    return signed_assignment(a, b, method, top_m, block_size).mean


def matchings_pair(
    enc_a: ArrayLike,
    enc_b: ArrayLike,
    dec_a: ArrayLike,
    dec_b: ArrayLike,
    signed: bool,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[Matching, Matching]:
    """The encoder-row and decoder-row matchings of P&B's shared rate (signed or |cos|)."""
    match = signed_assignment if signed else assignment
    kw = {"method": method, "top_m": top_m, "block_size": block_size}
    return match(enc_a, enc_b, **kw), match(dec_a, dec_b, **kw)


def shared_from_matchings(
    m_enc: Matching, m_dec: Matching, n_a: int, n_b: int, thresholds: Sequence[float]
) -> np.ndarray:
    """P&B shared rate at each threshold, ``0.5 * (n_shared / n_a + n_shared / n_b)``: latent
    i of a is shared iff both matchings pair it with the same j and both scores ≥ t."""
    ths = np.array([check_threshold(t) for t in thresholds], dtype=np.float64)
    part_e, part_d = m_enc.partner_of_rows(n_a), m_dec.partner_of_rows(n_a)
    ce, cd = np.full(n_a, -np.inf), np.full(n_a, -np.inf)
    ce[m_enc.rows], cd[m_dec.rows] = m_enc.scores, m_dec.scores
    same = (part_e >= 0) & (part_e == part_d)
    low = np.where(same, np.minimum(ce, cd), -np.inf)  # shared at t iff low >= t
    k = (low[None, :] >= ths[:, None]).sum(axis=1)
    return 0.5 * (k / n_a + k / n_b)


def shared_rates(
    enc_a: ArrayLike,
    dec_a: ArrayLike,
    enc_b: ArrayLike,
    dec_b: ArrayLike,
    thresholds: Sequence[float] = SHARED_CURVE_THRESHOLDS,
    signed: bool = True,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
    """Paulo & Belrose shared-latent rate of SAEs a and b at each threshold (float64
    [n_thresholds], in [0, 1]; higher = more consistent), from one pair of matchings."""
    ea, eb = as_tensor(enc_a, "enc_a"), as_tensor(enc_b, "enc_b")
    da, db = as_tensor(dec_a, "dec_a"), as_tensor(dec_b, "dec_b")
    if ea.shape[0] != da.shape[0] or eb.shape[0] != db.shape[0]:
        raise HusaiError("encoder and decoder of one SAE must have the same number of latents")
    m_enc, m_dec = matchings_pair(ea, eb, da, db, signed, method, top_m, block_size)
    n_a, n_b = ea.shape[0], eb.shape[0]
    return shared_from_matchings(m_enc, m_dec, n_a, n_b, thresholds)
