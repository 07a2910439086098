"""metrics.json's blocks, read and written through one module (torch-free).

Every consistency metric block (`datasets.<set>.architectures.<sae>.consistency.<metric>`)
holds, per group (`trained`, `random`, `init`), an interval `{mean, ci_low, ci_high, method,
...}`, and per baseline a `trained_minus_<baseline>` interval of the difference; an interval
always names its centre `mean` and its CI method `method`. The run-level blocks added by
`husai.experiments.aggregate` are `multiple_testing`, `pareto` and `lambda_selection`.
"""

from __future__ import annotations

from typing import Any, TypedDict

# a run directory's release-gate results (husai.gates writes it, husai.report formats it)
GATE_FILE = "gate.json"


class Interval(TypedDict, total=False):
    """A point estimate with its confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    method: str
    level: float


ALIVE = "alive_hungarian_mcc"  # the protocol block's metric (husai.experiments.evaluate)


def metric(arch: dict[str, Any], key: str) -> dict[str, Any]:
    """One consistency metric block of an SAE configuration (`pwmcc`, `hungarian_mcc`,
    `shared_fraction@0.5`, ..., and `ALIVE`, from its protocol block)."""
    if key == ALIVE:
        return arch["protocol"][ALIVE]
    return arch["consistency"][key]


def group(arch: dict[str, Any], key: str = "pwmcc", name: str = "trained") -> Interval:
    """One group's interval of a metric: `trained`, `random` or `init`."""
    return metric(arch, key)[name]


def trained(arch: dict[str, Any], key: str = "pwmcc") -> Interval:
    return group(arch, key, "trained")


def matrix(arch: dict[str, Any], key: str = "pwmcc") -> list[list[float]]:
    """The trained seeds' pairwise matrix of a metric (seed order of the run; diagonal 1)."""
    return metric(arch, key)["matrix"]


def minus(arch: dict[str, Any], key: str = "pwmcc", baseline: str = "random") -> Interval:
    """trained − baseline (seed-bootstrap CI, baseline mean held fixed)."""
    return metric(arch, key)[f"trained_minus_{baseline}"]


def thresholds(arch: dict[str, Any]) -> list[str]:
    """The shared-fraction thresholds measured, as written in the keys ("0.5", ...)."""
    return [k.split("@")[1] for k in arch["consistency"] if k.startswith("shared_fraction@")]


def quality(arch: dict[str, Any]) -> dict[str, float]:
    """Seed means of the quality numbers (mse, explained_variance, l0, dead_fraction, ...)."""
    return arch["quality"]["mean"]


def ev(arch: dict[str, Any]) -> Interval:
    """Explained variance: seed mean with its bootstrap CI over seeds."""
    q = arch["quality"]
    mean = q["mean"]["explained_variance"]
    return q.get("ci", {}).get(
        "explained_variance", {"mean": mean, "ci_low": mean, "ci_high": mean}
    )


def per_seed(arch: dict[str, Any], key: str) -> list[float]:
    """One quality number of every seed, in seed order of the run."""
    return [q[key] for q in arch["quality"]["per_seed"].values()]


def swept_axes(sweep: dict[str, Any]) -> list[str]:
    """Grid fields drawn as an x axis: numeric, with at least two values."""
    numeric = (int, float)
    return [
        f
        for f in sweep["fields"]
        if len(set(map(str, sweep["grid"][f]))) > 1
        and all(isinstance(v, numeric) and not isinstance(v, bool) for v in sweep["grid"][f])
    ]


def sweep_groups(sweep: dict[str, Any], x: str) -> dict[str, list[tuple[float, str]]]:
    """The sweep's configurations against field `x`: one group per combination of the other
    grid fields (named like "k=8, d_sae=64"), each a sorted list of (x value, label)."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for p in sweep["points"]:
        name = ", ".join(f"{f}={p['values'][f]}" for f in sweep["fields"] if f != x)
        groups.setdefault(name, []).append((float(p["values"][x]), p["label"]))
    return {g: sorted(pts) for g, pts in groups.items()}
