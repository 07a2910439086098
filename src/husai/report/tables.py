"""The results table: one catalogue of columns (header, cell) over an SAE configuration's
metrics.json entry, from which report.md's tables and the CLI's summary pick their columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from husai import results as R
from husai.report.format import interval

Cell = Callable[[str, dict[str, Any]], str]
Column = tuple[str, Cell]


def _num(key: str, fmt: str) -> Cell:
    return lambda _, a: format(R.quality(a)[key], fmt)


def _dead_range(_: str, a: dict[str, Any]) -> str:
    """Dead fraction: seed mean (min–max over seeds)."""
    per = R.per_seed(a, "dead_fraction")
    return f"{R.quality(a)['dead_fraction']:.3f} ({min(per):.2f}–{max(per):.2f})"


COLUMNS: dict[str, Column] = {
    "sae": ("SAE", lambda label, _: label),
    "d_sae": ("d_sae", lambda _, a: str(a["config"]["d_sae"])),
    "pwmcc": ("PWMCC trained", lambda _, a: interval(R.trained(a))),
    "pwmcc_random": ("PWMCC random", lambda _, a: f"{R.metric(a, 'pwmcc')['random']['mean']:.3f}"),
    "pwmcc_random_ci": ("PWMCC random", lambda _, a: interval(R.metric(a, "pwmcc")["random"])),
    "pwmcc_init": ("PWMCC init", lambda _, a: f"{R.metric(a, 'pwmcc')['init']['mean']:.3f}"),
    "delta": ("Δ trained−random", lambda _, a: interval(R.minus(a), "+")),
    "hungarian": ("Hungarian MCC trained", lambda _, a: interval(R.trained(a, "hungarian_mcc"))),
    "hungarian_random": (
        "Hungarian random",
        lambda _, a: f"{R.metric(a, 'hungarian_mcc')['random']['mean']:.3f}",
    ),
    "ev": ("EV", _num("explained_variance", ".3f")),
    "ev_ci": ("EV", lambda _, a: interval(R.ev(a))),
    "mse": ("MSE", _num("mse", ".4g")),
    "l0": ("L0", _num("l0", ".1f")),
    "dead": ("dead frac", _num("dead_fraction", ".3f")),
    "dead_range": ("dead frac (seed min–max)", _dead_range),
    "downstream_accuracy": ("test acc (spliced)", _num("downstream_accuracy", ".4f")),
    "downstream_loss_recovered": (
        "loss recovered (vs zero)",
        _num("downstream_loss_recovered_vs_zero", ".3f"),
    ),
    "recovery": ("recovery MCC", _num("recovery_hungarian_mcc", ".3f")),
    "recovered": ("recovered @0.9", _num("recovery_fraction_recovered", ".3f")),
}


def shared(t: str) -> Column:
    return f"shared@{t}", lambda _, a: f"{R.trained(a, f'shared_fraction@{t}')['mean']:.3f}"


def structure(name: str) -> Column:
    def cell(_: str, a: dict[str, Any]) -> str:
        s = a["structure"][name]
        return f"{s['hungarian_mcc']:.3f} ({s['fraction_recovered']:.2f})"

    return f"{name} recovery MCC (@0.9)", cell


def columns(*names: str) -> list[Column]:
    return [COLUMNS[n] for n in names]


def known_extras(first: dict[str, Any]) -> list[str]:
    """Catalogue columns that a data set's entries have: downstream (toy) or recovery
    (ground truth)."""
    q = R.quality(first)
    out = []
    if "downstream_accuracy" in q:
        out += ["downstream_accuracy", "downstream_loss_recovered"]
    if "recovery_hungarian_mcc" in q:
        out += ["recovery", "recovered"]
    return out


def results_columns(first: dict[str, Any]) -> list[Column]:
    """report.md's per-data-set results table."""
    return [
        *columns(
            "sae",
            "d_sae",
            "pwmcc",
            "pwmcc_random",
            "pwmcc_init",
            "delta",
            "hungarian",
            "hungarian_random",
        ),
        *[shared(t) for t in R.thresholds(first)],
        *columns("ev", "mse", "l0", "dead_range", *known_extras(first)),
        *[structure(s) for s in first.get("structure", {})],
    ]


def rows(archs: dict[str, Any], cols: list[Column]) -> tuple[list[str], list[list[str]]]:
    """(header, one row of cells per SAE configuration)."""
    return [h for h, _ in cols], [
        [cell(label, a) for _, cell in cols] for label, a in archs.items()
    ]
