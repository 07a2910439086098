"""Sweep curves and the sweep section of report.md, from metrics.json's `sweep` block (the
grid and each label's grid values) and the per-configuration entries it points at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from husai.report.figures import GROUP_COLOURS, _save  # noqa: E402

RANK_LINES = (  # effective-rank key, label, line style
    ("participation_ratio", "participation ratio", "-"),
    ("n_components_0.9", "90% variance", ":"),
    ("n_components_0.95", "95% variance", "--"),
    ("n_components_0.99", "99% variance", "-."),
)


def swept_axes(sweep: dict[str, Any]) -> list[str]:
    """Grid fields drawn as an x axis: numeric, with at least two values."""
    numeric = (int, float)
    return [
        f
        for f in sweep["fields"]
        if len(set(map(str, sweep["grid"][f]))) > 1
        and all(isinstance(v, numeric) and not isinstance(v, bool) for v in sweep["grid"][f])
    ]


def _groups(sweep: dict[str, Any], x: str) -> dict[str, list[tuple[float, str]]]:
    """Lines of a figure against `x`: one per combination of the other grid fields."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for p in sweep["points"]:
        name = ", ".join(f"{f}={p['values'][f]}" for f in sweep["fields"] if f != x)
        groups.setdefault(name, []).append((float(p["values"][x]), p["label"]))
    return {g: sorted(pts) for g, pts in groups.items()}


def _ci(b: dict[str, Any]) -> tuple[float, float, float]:
    return b["mean"], b["mean"] - b["ci_low"], b["ci_high"] - b["mean"]


def _ev(arch: dict[str, Any]) -> dict[str, Any]:
    q = arch["quality"]
    ev = q["mean"]["explained_variance"]
    return q.get("ci", {}).get("explained_variance", {"mean": ev, "ci_low": ev, "ci_high": ev})


def _errorbar(ax: plt.Axes, xs: list[float], blocks: list[dict[str, Any]], **kw: Any) -> None:
    m, lo, hi = np.array([_ci(b) for b in blocks]).T
    ax.errorbar(xs, m, yerr=[lo, hi], capsize=3, **kw)


def _vline(ax: plt.Axes, x: float, text: str, **kw: Any) -> None:
    ax.axvline(x, **kw)
    where = ax.get_xaxis_transform()
    ax.text(x, 0.02, f" {text}", rotation=90, fontsize=6, va="bottom", transform=where)


def _mark_rank(ax: plt.Axes, ds: dict[str, Any]) -> None:
    """Vertical lines at the data set's effective rank (and its number of true features)."""
    er = ds["effective_rank"]
    for key, name, style in RANK_LINES:
        if er.get(key, 0) > 0:
            _vline(ax, er[key], f"{name} {er[key]:.3g}", color="black", ls=style, lw=0.9)
    if "n_true_features" in ds:
        n = ds["n_true_features"]
        _vline(ax, n, f"true features {n}", color="#2ca02c", lw=1.2)


def sweep_figure(name: str, ds: dict[str, Any], sweep: dict[str, Any], x: str, path: Path) -> Path:
    """PWMCC (trained vs random, with recovery if known) and explained variance against one
    swept field; on the d_sae axis the data set's effective rank is marked."""
    archs = ds["architectures"]
    fig, (ax_c, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (group, pts) in enumerate(_groups(sweep, x).items()):
        xs, labels = [p[0] for p in pts], [p[1] for p in pts]
        colour = colours[i % len(colours)] if group else GROUP_COLOURS["trained"]
        tag = f"{group}: " if group else ""
        pw = [archs[lab]["consistency"]["pwmcc"] for lab in labels]
        _errorbar(
            ax_c, xs, [b["trained"] for b in pw], marker="o", color=colour, label=f"{tag}trained"
        )
        rnd_colour = colour if group else GROUP_COLOURS["random"]
        rnd = [b["random"] for b in pw]
        _errorbar(ax_c, xs, rnd, marker="x", ls="--", color=rnd_colour, label=f"{tag}random")
        if "recovery_hungarian_mcc" in archs[labels[0]]["quality"]["mean"]:
            rec = [archs[lab]["quality"]["mean"]["recovery_hungarian_mcc"] for lab in labels]
            ax_c.plot(xs, rec, "s:", color=colour, label=f"{tag}recovery MCC (truth)")
        evs = [_ev(archs[lab]) for lab in labels]
        _errorbar(ax_q, xs, evs, marker="o", color=colour, label=group)
    values = sorted({float(v) for v in sweep["grid"][x]})
    for ax in (ax_c, ax_q):
        if min(values) > 0 and max(values) / min(values) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_xlabel(x)
        if x == "d_sae":
            _mark_rank(ax, ds)
    ax_c.set_ylabel("PWMCC (max-|cos|, symmetrised)\nhigher = more consistent")
    ax_c.set_title(f"{name}: cross-seed consistency (mean over pairs, 95% CI)", fontsize=9)
    ax_c.legend(fontsize=7)
    ax_q.set_ylabel("explained variance\nhigher = better reconstruction")
    ax_q.set_title(f"{name}: explained variance (seed mean, 95% CI over seeds)", fontsize=9)
    if len(_groups(sweep, x)) > 1:
        ax_q.legend(fontsize=7)
    if x == "d_sae" and ds["effective_rank"]["participation_ratio"] > 0:
        pr = ds["effective_rank"]["participation_ratio"]
        top = ax_c.secondary_xaxis("top", functions=(lambda d: d / pr, lambda r: r * pr))
        top.set_xlabel("d_sae / participation ratio", fontsize=8)
        ratios = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
        lo, hi = ax_c.get_xlim()
        ticks = [r for r in ratios if lo <= r * pr <= hi]
        top.set_xticks(ticks, [str(r) for r in ticks], fontsize=7)
        top.minorticks_off()
    fig.tight_layout()
    return _save(fig, path)


def sweep_figures(metrics: dict[str, Any], fig_dir: Path) -> list[Path]:
    sweep = metrics["sweep"]
    return [
        sweep_figure(name, ds, sweep, x, fig_dir / f"sweep_{x}_{name}.png")
        for name, ds in metrics["datasets"].items()
        for x in swept_axes(sweep)
    ]


def _b(b: dict[str, Any], sign: str = "") -> str:
    return f"{b['mean']:{sign}.3f} [{b['ci_low']:{sign}.3f}, {b['ci_high']:{sign}.3f}]"


def _table(ds: dict[str, Any], sweep: dict[str, Any]) -> list[str]:
    fields = [f for f in sweep["fields"] if f != "d_sae"]
    pr = ds["effective_rank"]["participation_ratio"]
    cols = ["SAE", *fields, "d_sae", "d_sae / PR", "PWMCC trained", "PWMCC random"]
    cols += ["Δ trained−random", "EV", "L0", "dead frac"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for p in sweep["points"]:
        label, point = p["label"], p["values"]
        a = ds["architectures"][label]
        pw, q, d_sae = a["consistency"]["pwmcc"], a["quality"]["mean"], a["config"]["d_sae"]
        cells = [label, *(str(point[f]) for f in fields), str(d_sae)]
        cells += [f"{d_sae / pr:.0f}" if pr > 0 else "—", _b(pw["trained"]), _b(pw["random"])]
        cells += [
            _b(pw["trained_minus_random"] | {"mean": pw["trained_minus_random"]["delta"]}, "+")
        ]
        cells += [_b(_ev(a)), f"{q['l0']:.1f}", f"{q['dead_fraction']:.3f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def sweep_section(metrics: dict[str, Any]) -> list[str]:
    """report.md: the grid, then per data set its effective rank, a table and the curves."""
    sweep = metrics["sweep"]
    grid = "; ".join(f"{f} ∈ {sweep['grid'][f]}" for f in sweep["fields"])
    fixed = ", ".join(f"{k} = {v}" for k, v in sweep["base"].items()) or "defaults"
    lines = [
        f"## Sweep over {' × '.join(sweep['fields'])}",
        "",
        f"Grid: {grid}; fixed: {fixed} (`metrics.json` → `sweep`). {len(sweep['points'])} SAE "
        f"configurations × {len(metrics['seeds'])} seeds per data set, each configuration one "
        "job of the experiment engine (`saes/<set>/<label>/job.json`). PWMCC: max-|cos|, "
        "symmetrised, higher = more consistent, mean over seed pairs [95% CI, as above]; EV: "
        "explained variance, seed mean [95% bootstrap CI over seeds]; PR: the data set's "
        "participation ratio.",
        "",
    ]
    for name, ds in metrics["datasets"].items():
        er = ds["effective_rank"]
        levels = sorted(k for k in er if k.startswith("n_components_"))
        shares = "/".join(f"{float(k.split('_')[-1]):.0%}" for k in levels)
        counts = f"{shares} of the variance in {'/'.join(str(int(er[k])) for k in levels)}"
        lines += [
            f"### `{name}`",
            "",
            f"Effective rank of `{name}` (d_in {ds['d']}): participation ratio "
            f"{er['participation_ratio']:.1f}; {counts} principal components "
            f"(`metrics.json` → `datasets.{name}.effective_rank`). Rows: "
            f"`metrics.json` → `datasets.{name}.architectures.<SAE>`.",
            "",
            *_table(ds, sweep),
            "",
            *lambda_selection(name, ds, metrics),
            *[
                f"![{name}: PWMCC and EV vs {x}](figures/sweep_{x}_{name}.png)"
                for x in swept_axes(sweep)
            ],
            "",
        ]
    return lines


EV_DROP = 0.05  # the λ selection rule's largest allowed explained-variance drop vs λ = 0


def lambda_selection(name: str, ds: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """For a sweep over consistency_lambda: per combination of the other fields, select the λ
    maximising the lower CI bound of trained − random PWMCC subject to EV(λ=0) − EV(λ) ≤
    EV_DROP, and give its PWMCC gain over λ = 0 on the same seed pairs (paired seed
    bootstrap, BCa, of the two pairwise matrices' difference)."""
    import numpy as np

    from husai.metrics.stats import seed_bootstrap_ci

    sweep = metrics["sweep"]
    if "consistency_lambda" not in sweep["fields"]:
        return []
    archs, m = ds["architectures"], metrics.get("metrics_config", {})
    lines = [
        f"Selection rule: the λ with the highest lower 95% CI bound of trained − random PWMCC "
        f"among those losing at most {EV_DROP} explained variance against λ = 0; its gain over "
        "λ = 0 is the mean over the same seed pairs of PWMCC(λ) − PWMCC(0) [95% paired seed-"
        "bootstrap BCa CI, computed from the two `matrix` entries in metrics.json].",
        "",
    ]
    for group, pts in _groups(sweep, "consistency_lambda").items():
        zero = [label for lam, label in pts if lam == 0]
        if not zero:
            lines.append(f"- {group or 'all'}: no λ = 0 control in the grid; nothing selected.")
            continue
        ctl = archs[zero[0]]
        ev0 = ctl["quality"]["mean"]["explained_variance"]
        ok = [
            (archs[label]["consistency"]["pwmcc"]["trained_minus_random"]["ci_low"], lam, label)
            for lam, label in pts
            if ev0 - archs[label]["quality"]["mean"]["explained_variance"] <= EV_DROP
        ]
        lb, lam, label = max(ok)
        gain = seed_bootstrap_ci(
            np.array(archs[label]["consistency"]["pwmcc"]["matrix"])
            - np.array(ctl["consistency"]["pwmcc"]["matrix"]),
            n_resamples=m.get("n_bootstrap", 10_000),
            seed=m.get("baseline_seed", 0),
            method="bca",
        )
        verdict = (
            "λ = 0 itself: no regularisation passes the rule"
            if lam == 0
            else "resolved (CI above 0)"
            if gain["ci_low"] > 0
            else "resolved, negative (CI below 0)"
            if gain["ci_high"] < 0
            else "NOT resolved (CI contains 0)"
        )
        drop = ev0 - archs[label]["quality"]["mean"]["explained_variance"]
        lines.append(
            f"- {group or 'all'}: selected λ = {lam:g} (`{label}`; lower bound {lb:+.3f}, EV drop "
            f"{drop:+.4f}); PWMCC gain over λ = 0: {gain['mean']:+.3f} [{gain['ci_low']:+.3f}, "
            f"{gain['ci_high']:+.3f}]: {verdict}."
        )
    return [*lines, ""]
