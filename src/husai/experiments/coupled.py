"""Coupled configurations validated against independent ones (issue 13's protocol).

The seeds of a coupled configuration (husai.sae.coupling: a shared reference decoder, a
joint penalty) agree because training pulls them together, so their agreement says nothing
about whether the features come back. It is validated against an independent
configuration of the same run and data set, of the same width, whose own agreement counts
(`protocol.counts`), the one of highest Hungarian MCC among them: every coupled seed is
matched to every independent seed, and the mean of those cross-pair Hungarian MCCs (|cos|,
higher = more alike) is set beside the independent seeds' agreement among themselves and
the random baseline. A coupled result
that independent training also finds matches the independent seeds about as well as they
match each other; one that training imposed sits nearer random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from husai.config import MetricsConfig
from husai.metrics import hungarian_mcc
from husai.sae import load as load_sae

VARIANT = (
    "Hungarian MCC (|cos| one-to-one matching of decoder rows) between every coupled seed and "
    "every independent seed; CI: two-sample seed bootstrap (coupled and independent seeds "
    "resampled separately), percentile; higher = more alike"
)


def _decoders(run_dir: Path, arch: dict[str, Any]) -> list[Any]:
    return [load_sae(run_dir / rel).W_dec[0].detach() for rel in arch["saes"].values()]


def _seed_bootstrap(matrix: np.ndarray, m: MetricsConfig) -> tuple[float, float]:
    """Percentile CI of the mean of a [S_c, S_i] cross matrix, rows and columns resampled."""
    rng = np.random.default_rng(m.baseline_seed)
    a, b = matrix.shape
    means = np.empty(m.n_bootstrap)
    for k in range(m.n_bootstrap):
        means[k] = matrix[np.ix_(rng.integers(a, size=a), rng.integers(b, size=b))].mean()
    tail = (1 - m.ci_level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def coupled_validation(
    archs: dict[str, Any], run_dir: Path, m: MetricsConfig
) -> dict[str, dict[str, Any]]:
    """{coupled label: {independent label: block}} for one data set's entries (each with
    its `protocol` and `saes` paths relative to `run_dir`): each coupled configuration
    against the best-agreeing counting one of its width; empty when there is no pair."""
    coupled = [k for k, a in archs.items() if "protocol" in a and not a["protocol"]["independent"]]
    counting = [k for k, a in archs.items() if a.get("protocol", {}).get("counts")]
    out: dict[str, dict[str, Any]] = {}

    def agreement(label: str) -> float:
        return archs[label]["consistency"]["hungarian_mcc"]["trained"]["mean"]

    for c in coupled:
        width = archs[c]["config"]["d_sae"]
        same = [i for i in counting if archs[i]["config"]["d_sae"] == width]
        for i in sorted(same, key=agreement, reverse=True)[:1]:
            dc, di = _decoders(run_dir, archs[c]), _decoders(run_dir, archs[i])
            if dc[0].shape != di[0].shape:
                continue
            cross = np.array(
                [[hungarian_mcc(a, b, block_size=m.block_size) for b in di] for a in dc]
            )
            low, high = _seed_bootstrap(cross, m)
            h = archs[i]["consistency"]["hungarian_mcc"]
            out.setdefault(c, {})[i] = {
                "variant": VARIANT,
                "cross": {"mean": float(cross.mean()), "ci_low": low, "ci_high": high},
                "matrix": cross.tolist(),
                "independent_within": h["trained"]["mean"],
                "coupled_within": archs[c]["consistency"]["hungarian_mcc"]["trained"]["mean"],
                "random": h["random"]["mean"],
            }
    return out
