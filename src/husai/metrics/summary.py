"""Consistency summaries: the per-metric blocks of `husai run`'s metrics.json and of
`husai compare`, made here once (higher = more consistent throughout).

Groups of dictionaries: "trained" and its baselines (e.g. "random", "init"), each scored
with ``pairwise`` (``pairwise_groups``). One metric's block (``summarise_values``):
- per group: mean over pairs with a percentile pair-bootstrap CI, and the pairs' values;
- ``trained_minus_<baseline>``: ``compare_to_baseline`` (difference of means, CI, one-sided
  tests), plus a permutation test when the baseline has more than one pair;
- the trained mean's CI and each difference's CI then become seed-bootstrap BCa CIs
  (resample seeds, not pairs: pairs share seeds, so a pair bootstrap is too narrow; the
  baseline's mean is held fixed, its spread being far smaller than the trained seeds'); the
  pair-bootstrap CIs stay under ``pair_bootstrap``;
- ``matrix``: the trained pairwise matrix; ``seed_means``: each trained seed's mean score
  against the other seeds (its matrix row without the diagonal); ``variant``: what the
  number is.
Every bootstrap and test is seeded with ``settings.baseline_seed``, so a summary is a
deterministic function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from husai.metrics.consistency import pairwise
from husai.metrics.stats import (
    bootstrap_ci,
    compare_to_baseline,
    permutation_test,
    seed_bootstrap_ci,
)
from husai.metrics.validate import ArrayLike

HUNGARIAN = "auto"  # the one-to-one matching of every summary: exact up to EXACT_MAX latents

VARIANTS = {
    "pwmcc": "mean over latents of max |cos| to the other dictionary, symmetrised "
    "(HUSAI's PWMCC); higher = more consistent",
    "hungarian_mcc": "mean |cos| over the optimal one-to-one matching (scipy "
    "linear_sum_assignment); higher = more consistent",
    "shared_fraction": "fraction of latents (both dictionaries) whose best-match |cos| "
    "exceeds the threshold; higher = more consistent",
}


class SummarySettings(Protocol):
    """What a summary needs from the metrics config (`husai.config.MetricsConfig` is one)."""

    @property
    def ci_level(self) -> float: ...

    @property
    def n_bootstrap(self) -> int: ...

    @property
    def baseline_seed(self) -> int: ...


def metric_keys(thresholds: Sequence[float]) -> list[str]:
    """The summarised metrics of a `pairwise` result, e.g. "shared_fraction@0.5"."""
    return ["pwmcc", "hungarian_mcc"] + [f"shared_fraction@{float(t)}" for t in thresholds]


def metric_entry(pw: dict[str, Any], key: str) -> dict[str, Any]:
    """{"matrix", "values"} of one metric (a `metric_keys` key) in a `pairwise` result."""
    if key.startswith("shared_fraction@"):
        return pw["shared_fraction"][float(key.split("@")[1])]
    return pw[key]


def pair_matrix(n: int, pairs: Sequence[tuple[int, int]], values: Sequence[float]) -> np.ndarray:
    """Symmetric n x n matrix of per-pair values, diagonal 1.0 (as `pairwise`'s matrices)."""
    out = np.eye(n)
    for (i, j), v in zip(pairs, values, strict=True):
        out[i, j] = out[j, i] = v
    return out


def pairwise_groups(
    dicts: Mapping[str, Sequence[ArrayLike]], thresholds: Sequence[float], block_size: int
) -> dict[str, dict[str, Any]]:
    """`pairwise` of each group's dictionaries, all with the same matching (`HUNGARIAN`)."""
    return {
        g: pairwise(d, thresholds=thresholds, block_size=block_size, hungarian=HUNGARIAN)
        for g, d in dicts.items()
    }


def summarise_values(
    values: Mapping[str, Sequence[float]],
    matrix: ArrayLike,
    variant: str,
    settings: SummarySettings,
) -> dict[str, Any]:
    """One metric's block (see the module docstring): `values` holds the per-pair scores of
    "trained" and of each baseline, `matrix` the trained S x S pairwise matrix."""
    kw = {"level": settings.ci_level, "n_resamples": settings.n_bootstrap}
    seed = settings.baseline_seed
    block: dict[str, Any] = {"variant": variant}
    for g, vals in values.items():
        vals = [float(v) for v in vals]
        block[g] = {**bootstrap_ci(vals, seed=seed, **kw), "pairs": vals}
    trained = block["trained"]["pairs"]
    bases = [g for g in values if g != "trained"]
    for base in bases:
        block[f"trained_minus_{base}"] = compare_to_baseline(
            trained, block[base]["pairs"], seed=seed, **kw
        )
    for base in bases:
        if len(values[base]) > 1:
            block[f"trained_minus_{base}"]["permutation"] = permutation_test(
                trained, block[base]["pairs"], n_resamples=settings.n_bootstrap, seed=seed
            )
    m = np.asarray(matrix, dtype=np.float64)
    _seed_level(block, m, bases, settings)
    block["matrix"] = np.asarray(matrix).tolist()
    block["seed_means"] = ((m.sum(1) - 1) / (len(m) - 1)).tolist()  # vs the other seeds
    return block


def _seed_level(
    block: dict[str, Any], matrix: np.ndarray, bases: list[str], settings: SummarySettings
) -> None:
    """Replace the trained mean's CI and each difference's CI by seed-bootstrap BCa CIs."""
    kw = {
        "level": settings.ci_level,
        "n_resamples": settings.n_bootstrap,
        "seed": settings.baseline_seed,
        "method": "bca",
    }
    t = block["trained"]
    sb = seed_bootstrap_ci(matrix, **kw)
    t["pair_bootstrap"] = {k: t[k] for k in ("ci_low", "ci_high", "method")}
    t.update(ci_low=sb["ci_low"], ci_high=sb["ci_high"], method=sb["method"], se=sb["se"])
    for base in bases:
        d = block[f"trained_minus_{base}"]
        sb = seed_bootstrap_ci(matrix - block[base]["mean"], **kw)
        d["pair_bootstrap"] = {k: d[k] for k in ("ci_low", "ci_high", "method")}
        d.update(
            ci_low=sb["ci_low"],
            ci_high=sb["ci_high"],
            method=f"{sb['method']}, baseline mean held fixed",
        )


def summarise_pairwise(
    groups: Mapping[str, dict[str, Any]],
    settings: SummarySettings,
    variants: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every metric of `pairwise_groups` results ("trained" and its baselines): {"pairs":
    the trained pairs, metric key: `summarise_values` block}. `variants`: the text of each
    metric key; by default `VARIANTS` of the key's name (before "@")."""
    trained = groups["trained"]
    out: dict[str, Any] = {"pairs": [list(p) for p in trained["pairs"]]}
    for key in metric_keys(trained["thresholds"]):
        variant = VARIANTS[key.split("@")[0]] if variants is None else variants[key]
        values = {g: metric_entry(pw, key)["values"] for g, pw in groups.items()}
        out[key] = summarise_values(values, metric_entry(trained, key)["matrix"], variant, settings)
    return out
