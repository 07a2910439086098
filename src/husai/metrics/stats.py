"""Uncertainty and significance for per-pair consistency scores (thin wrappers on scipy.stats).

Every output is a plain ``float``/``int``/``str``/``None`` so results are JSON-able; no NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from husai.errors import HusaiError

PERCENTILE = "percentile bootstrap"
DEGENERATE = "none (fewer than 2 values or zero variance: CI collapses to the mean)"


def _values(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise HusaiError(f"{name} must be a sequence of numbers: {e}") from None
    if arr.size == 0:
        raise HusaiError(f"{name} is empty; need at least one value")
    if not np.isfinite(arr).all():
        raise HusaiError(f"{name} contains NaN or Inf values")
    return arr


def _check(level: float, n_resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise HusaiError(f"level must lie strictly between 0 and 1, got {level!r}")
    if (
        isinstance(n_resamples, bool)
        or not isinstance(n_resamples, int | np.integer)
        or n_resamples < 1
    ):
        raise HusaiError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def _degenerate(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.ptp(x) == 0)


def _mean(x: np.ndarray) -> float:
    """Mean, exact for constant samples (np.mean of [0.7] * 3 is 0.6999999999999998)."""
    return float(x[0]) if np.ptp(x) == 0 else float(x.mean())


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _interval(data: tuple[np.ndarray, ...], stat, level: float, n: int, seed: int):
    res = stats.bootstrap(
        data,
        stat,
        n_resamples=n,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile-bootstrap CI of the mean (``scipy.stats.bootstrap``, seeded, deterministic).

    Returns ``{"mean", "ci_low", "ci_high", "n", "method"}``. With fewer than 2 values or zero
    variance the CI collapses to the mean (``method`` says so) instead of warning or giving NaN.
    """
    _check(level, n_resamples)
    x = _values(values, "values")
    mean = _mean(x)
    if _degenerate(x):
        return {
            "mean": mean,
            "ci_low": mean,
            "ci_high": mean,
            "n": int(x.size),
            "method": DEGENERATE,
        }
    lo, hi = _interval((x,), np.mean, level, n_resamples, seed)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": int(x.size), "method": PERCENTILE}


def _test(name: str, fn, notes: list[str]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fn()
    stat, p = float(res.statistic), float(res.pvalue)
    if not (np.isfinite(stat) and np.isfinite(p)):
        notes.append(f"{name}: undefined for these samples")
        stat = p = None
    return {"name": name, "statistic": stat, "p_value": p}


def compare_to_baseline(
    trained: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Is ``trained`` consistency above the ``baseline`` (e.g. random-dictionary) scores?

    One-sided, alternative "trained > baseline" (higher = more consistent). Returns
    ``{"delta", "ci_low", "ci_high", "level", "ci_method", "mean_trained", "mean_baseline",
    "n_trained", "n_baseline", "mann_whitney", "welch_t", "note"}`` where ``delta`` is
    mean(trained) - mean(baseline) with a percentile-bootstrap CI (each group resampled
    independently), and ``mann_whitney`` / ``welch_t`` are ``{"name", "statistic", "p_value"}``
    from ``scipy.stats.mannwhitneyu`` and ``scipy.stats.ttest_ind(equal_var=False)``. A
    statistic that is undefined (e.g. Welch with n < 2 or zero variance in both groups) is
    ``None`` and ``note`` explains; otherwise ``note`` is ``None``.
    """
    _check(level, n_resamples)
    t, b = _values(trained, "trained"), _values(baseline, "baseline")
    mt, mb = _mean(t), _mean(b)
    delta = mt - mb
    notes: list[str] = []
    dt, db = _degenerate(t), _degenerate(b)
    if dt and db:
        lo = hi = delta
        ci_method = DEGENERATE
    elif dt:  # only the baseline varies: delta = const - mean(b*)
        blo, bhi = _interval((b,), np.mean, level, n_resamples, seed)
        lo, hi, ci_method = mt - bhi, mt - blo, PERCENTILE
    elif db:
        tlo, thi = _interval((t,), np.mean, level, n_resamples, seed)
        lo, hi, ci_method = tlo - mb, thi - mb, PERCENTILE
    else:
        lo, hi = _interval((t, b), _mean_diff, level, n_resamples, seed)
        ci_method = PERCENTILE
    if ci_method == PERCENTILE and (dt or db):
        notes.append(
            "one group has fewer than 2 values or zero variance; only the other "
            "group was resampled for the CI"
        )

    mw = _test(
        "Mann-Whitney U (one-sided, trained > baseline)",
        lambda: stats.mannwhitneyu(t, b, alternative="greater"),
        notes,
    )
    welch_name = "Welch's t-test (one-sided, trained > baseline)"
    if t.size < 2 or b.size < 2 or (dt and db):
        notes.append(f"{welch_name}: undefined (needs >= 2 values per group and some variance)")
        welch = {"name": welch_name, "statistic": None, "p_value": None}
    else:
        welch = _test(
            welch_name,
            lambda: stats.ttest_ind(t, b, equal_var=False, alternative="greater"),
            notes,
        )
    return {
        "delta": delta,
        "ci_low": lo,
        "ci_high": hi,
        "level": float(level),
        "ci_method": ci_method,
        "mean_trained": mt,
        "mean_baseline": mb,
        "n_trained": int(t.size),
        "n_baseline": int(b.size),
        "mann_whitney": mw,
        "welch_t": welch,
        "note": "; ".join(notes) or None,
    }
