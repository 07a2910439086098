"""Run-level aggregation: the numbers that need more than one job's result.

Called on the assembled metrics before metrics.json is written (and by `husai calibrate` for
its selection), so that the report only formats what metrics.json holds:
- `multiple_testing`: Holm-adjusted permutation p-values over every data set × SAE
  configuration × metric (pwmcc, hungarian_mcc) of the run;
- `lambda_selection` (a sweep over `consistency_lambda`): per combination of the other swept
  fields, the λ chosen by `best_lower_bound` and its paired gain over λ = 0;
- `pareto`: per data set, the configurations on the EV-vs-PWMCC Pareto front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from husai import results as R
from husai.config import MetricsConfig
from husai.metrics import holm, seed_bootstrap_ci
from husai.results import sweep_groups

T = TypeVar("T")
HOLM_METRICS = ("pwmcc", "hungarian_mcc")
EV_DROP = 0.05  # the λ selection rule's largest allowed explained-variance drop vs λ = 0


def best_lower_bound(
    items: Sequence[T],
    lower: Callable[[T], float],
    feasible: Callable[[T], bool],
    tie: Callable[[T], Any] = lambda _: 0,
) -> T | None:
    """The feasible item with the highest lower CI bound (`lower`), ties broken by the
    largest `tie` key; None when no item is feasible. The selection rule of `husai calibrate`
    (k) and of a λ sweep."""
    ok = [i for i in items if feasible(i)]
    return max(ok, key=lambda i: (lower(i), tie(i))) if ok else None


def paired_gain(matrix_a: Any, matrix_b: Any, m: MetricsConfig) -> dict[str, Any]:
    """Mean over seed pairs of A − B on the same seeds, with a paired seed-bootstrap BCa CI
    (resample seeds; the two pairwise matrices must share their seeds)."""
    return seed_bootstrap_ci(
        np.asarray(matrix_a, dtype=np.float64) - np.asarray(matrix_b, dtype=np.float64),
        level=m.ci_level,
        n_resamples=m.n_bootstrap,
        seed=m.baseline_seed,
        method="bca",
    )


def verdict(interval: dict[str, Any]) -> str:
    """`above` / `below` (the CI excludes 0 on that side) or `unresolved`."""
    if interval["ci_low"] > 0:
        return "above"
    return "below" if interval["ci_high"] < 0 else "unresolved"


def multiple_testing(datasets: dict[str, Any]) -> dict[str, Any]:
    """Holm over the run's permutation tests of trained > random, keyed data/SAE/metric."""
    ps = {
        f"{name}/{label}/{key}": d["permutation"]["p_value"]
        for name, ds in datasets.items()
        for label, a in ds["architectures"].items()
        for key in HOLM_METRICS
        if "permutation" in (d := R.minus(a, key))
    }
    return {
        "method": "holm",
        "family": "permutation tests of trained > random (one-sided) over every data set × SAE "
        f"configuration × metric ({', '.join(HOLM_METRICS)}) of the run",
        "p_adjusted": holm(ps)["p_adjusted"] if ps else {},
    }


def _ev(arch: dict[str, Any]) -> float:
    return R.quality(arch)["explained_variance"]


def lambda_selection(
    datasets: dict[str, Any], sweep: dict[str, Any], m: MetricsConfig
) -> dict[str, Any]:
    """Per data set and per combination of the other swept fields: the λ maximising the lower
    CI bound of trained − random PWMCC among those with EV(λ = 0) − EV(λ) ≤ EV_DROP, and its
    PWMCC gain over λ = 0 on the same seed pairs (`paired_gain`)."""
    out: dict[str, Any] = {
        "metric": "pwmcc (max-|cos|, symmetrised; higher = more consistent)",
        "ev_drop_max": EV_DROP,
        "level": m.ci_level,
        "datasets": {},
    }
    for name, ds in datasets.items():
        groups = sweep_groups(sweep, "consistency_lambda")
        out["datasets"][name] = [
            _select_lambda(ds["architectures"], g, pts, m) for g, pts in groups.items()
        ]
    return out


def _select_lambda(
    archs: dict[str, Any], group: str, pts: list[tuple[float, str]], m: MetricsConfig
) -> dict[str, Any]:
    """One group of a λ sweep: (λ, label) points; λ = 0 is the control."""
    zero = [label for lam, label in pts if lam == 0]
    if not zero:
        return {"group": group, "control": None}
    ctl = archs[zero[0]]

    def lower(p: tuple[float, str]) -> float:
        return R.minus(archs[p[1]])["ci_low"]

    def feasible(p: tuple[float, str]) -> bool:
        return _ev(ctl) - _ev(archs[p[1]]) <= EV_DROP

    best = best_lower_bound(pts, lower, feasible, tie=lambda p: p)
    assert best is not None  # λ = 0 is always feasible
    lam, label = best
    gain = paired_gain(R.matrix(archs[label]), R.matrix(ctl), m)
    return {
        "group": group,
        "control": zero[0],
        "selected": label,
        "lambda": lam,
        "lower_bound": lower(best),
        "ev_drop": _ev(ctl) - _ev(archs[label]),
        "gain_over_control": gain,
        "verdict": "control" if lam == 0 else verdict(gain),
    }


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher = better),
    sorted by the first coordinate."""
    keep = [
        i
        for i, (a, b) in enumerate(points)
        if not any(c >= a and d >= b and (c, d) != (a, b) for c, d in points)
    ]
    return sorted(keep, key=lambda i: points[i][0])


def pareto(datasets: dict[str, Any], order: list[str]) -> dict[str, list[str]]:
    """Per data set: the SAE labels on the Pareto front of (mean EV, mean PWMCC), by EV."""
    out = {}
    for name, ds in datasets.items():
        archs = ds["architectures"]
        labels = [s for s in order if s in archs]
        pts = [(_ev(archs[s]), R.trained(archs[s])["mean"]) for s in labels]
        out[name] = [labels[i] for i in pareto_front(pts)]
    return out


def aggregate(metrics: dict[str, Any], m: MetricsConfig) -> dict[str, Any]:
    """The run-level blocks metrics.json gains (see the module docstring)."""
    datasets = metrics["datasets"]
    out = {
        "multiple_testing": multiple_testing(datasets),
        "pareto": pareto(datasets, metrics["sae_order"]),
    }
    sweep = metrics.get("sweep")
    if sweep is not None and "consistency_lambda" in sweep["fields"]:
        out["lambda_selection"] = lambda_selection(datasets, sweep, m)
    return out
