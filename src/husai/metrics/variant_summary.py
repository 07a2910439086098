"""The variant blocks of a run's consistency summary, next to `summary`'s pwmcc / hungarian_mcc
blocks and scored on the same groups (trained and its random / init baselines):

- ``hungarian_signed``: Song et al.'s PW-MCC (a `summarise_values` block);
- ``hungarian_minus_pwmcc``: per pair, hungarian_mcc − pwmcc (a `summarise_values` block);
- ``shared_latent_curve``: Paulo & Belrose's shared-latent rate at every threshold of
  ``SHARED_CURVE_THRESHOLDS``, signed and |cos| (per threshold: each group's mean and CI,
  and trained − baseline with its CI, from `summarise_values`); left out when no encoders
  are given (its two encoder matchings per pair are the dearest part).

Each number is computed once per pair: the |cos| decoder matchings are `pairwise`'s, the
signed decoder matching serves both PW-MCC and the signed shared rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from husai.metrics.matching import assignment
from husai.metrics.summary import HUNGARIAN, SummarySettings, pair_matrix, summarise_values
from husai.metrics.validate import ArrayLike
from husai.metrics.variants import (
    SHARED_CURVE_THRESHOLDS,
    shared_from_matchings,
    signed_assignment,
)

VARIANT_TEXT = {
    "hungarian_signed": "Song et al.'s PW-MCC: mean *signed* cos of decoder rows over the "
    "one-to-one matching maximising the total signed cos (scipy linear_sum_assignment on "
    "−cos); in [-1, 1]; a latent that came back negated cannot pair with its copy (cos −1); "
    "higher = more consistent",
    "hungarian_minus_pwmcc": "per seed pair hungarian_mcc − pwmcc (≤ 0 for equal sizes): how "
    "much max-|cos| gains by letting several latents share one partner, a feature-splitting "
    "diagnostic; closer to 0 = more one-to-one (matrix diagonal 1.0 by convention)",
    "shared_latent_curve": "Paulo & Belrose shared-latent rate: encoder rows and decoder rows "
    "matched one-to-one separately (Hungarian); a latent is shared when both matchings pick "
    "the same partner with both cosines ≥ the threshold; 0.5·(shared/n_a + shared/n_b); "
    "signed: on the signed cos (as EleutherAI/sae_overlap), absolute: on |cos|; higher = "
    "more consistent",
}
_POINT_KEYS = ("mean", "ci_low", "ci_high", "method")


def _group(
    decs: Sequence[ArrayLike],
    encs: Sequence[ArrayLike] | None,
    pw: dict[str, Any],
    thresholds: Sequence[float],
    block_size: int,
) -> dict[str, Any]:
    """One group's per-pair variant scores (see `variant_groups`; no curve without `encs`)."""
    kw = {"method": HUNGARIAN, "block_size": block_size}
    hs, curve = [], {"signed": [], "absolute": []}
    methods = []
    for i, j in pw["pairs"]:
        n_a, n_b = len(decs[i]), len(decs[j])
        dec_s = signed_assignment(decs[i], decs[j], **kw)
        hs.append(dec_s.mean)
        methods.append(dec_s.describe())
        if encs is None:
            continue
        enc_s = signed_assignment(encs[i], encs[j], **kw)
        curve["signed"].append(shared_from_matchings(enc_s, dec_s, n_a, n_b, thresholds))
        enc_a = assignment(encs[i], encs[j], **kw)
        dec_a = pw["matchings"][(i, j)]
        curve["absolute"].append(shared_from_matchings(enc_a, dec_a, n_a, n_b, thresholds))
    gap = [h - p for h, p in zip(pw["hungarian_mcc"]["values"], pw["pwmcc"]["values"], strict=True)]
    out = {
        "pairs": pw["pairs"],
        "n": pw["n"],
        "hungarian_signed": {"values": hs, "methods": methods},
        "hungarian_minus_pwmcc": {"values": gap},
    }
    if encs is not None:
        out["curve"] = {k: np.asarray(v, dtype=np.float64) for k, v in curve.items()}
    return out


def variant_groups(
    decoders: Mapping[str, Sequence[ArrayLike]],
    encoders: Mapping[str, Sequence[ArrayLike]] | None,
    pairwise_results: Mapping[str, dict[str, Any]],
    block_size: int,
    thresholds: Sequence[float] = SHARED_CURVE_THRESHOLDS,
) -> dict[str, dict[str, Any]]:
    """Per group: per-pair PW-MCC (signed Hungarian) of the decoders, hungarian_mcc − pwmcc
    (from `pairwise_results`, `summary.pairwise_groups`' output for the same decoders) and the
    P&B shared rate [pairs, thresholds] signed and absolute (encoder rows: `encoders`;
    None: no encoder matchings and no curve, the cheap `variants: decoder` setting)."""
    return {
        g: _group(
            decoders[g],
            None if encoders is None else encoders[g],
            pairwise_results[g],
            thresholds,
            block_size,
        )
        for g in decoders
    }


def _block(vg: Mapping[str, dict[str, Any]], values: dict[str, list[float]], text: str, s: Any):
    t = vg["trained"]
    return summarise_values(values, pair_matrix(t["n"], t["pairs"], values["trained"]), text, s)


def _point(block: dict[str, Any], threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {"threshold": threshold}
    for k, v in block.items():
        if isinstance(v, dict) and "mean" in v:
            out[k] = {x: v[x] for x in _POINT_KEYS}
            if "pairs" in v:
                out[k]["pairs"] = v["pairs"]
    return out


def summarise_variants(
    vg: Mapping[str, dict[str, Any]],
    settings: SummarySettings,
    thresholds: Sequence[float] = SHARED_CURVE_THRESHOLDS,
) -> dict[str, Any]:
    """The variant blocks of the module docstring from `variant_groups` results."""
    out: dict[str, Any] = {}
    for key in ("hungarian_signed", "hungarian_minus_pwmcc"):
        values = {g: r[key]["values"] for g, r in vg.items()}
        out[key] = _block(vg, values, VARIANT_TEXT[key], settings)
    out["hungarian_signed"]["methods"] = vg["trained"]["hungarian_signed"]["methods"]
    if "curve" not in vg["trained"]:  # `variant_groups` without encoders
        return out
    curve: dict[str, Any] = {
        "variant": VARIANT_TEXT["shared_latent_curve"],
        "thresholds": [float(t) for t in thresholds],
    }
    for kind in ("signed", "absolute"):
        points = []
        for k, t in enumerate(thresholds):
            values = {g: r["curve"][kind][:, k].tolist() for g, r in vg.items()}
            points.append(_point(_block(vg, values, kind, settings), float(t)))
        curve[kind] = points
    out["shared_latent_curve"] = curve
    return out
