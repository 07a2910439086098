"""Sweep curves and the sweep section of report.md, from metrics.json's `sweep` block (the
grid and each label's grid values) and the per-configuration entries it points at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from husai import results as R  # noqa: E402
from husai.report.figures import GROUP_COLOURS, _save  # noqa: E402
from husai.report.format import interval, level, markdown_table  # noqa: E402
from husai.report.tables import COLUMNS, columns, rows  # noqa: E402
from husai.results import sweep_groups, swept_axes  # noqa: E402

RANK_LINES = (  # effective-rank key, label, line style
    ("participation_ratio", "participation ratio", "-"),
    ("n_components_0.9", "90% variance", ":"),
    ("n_components_0.95", "95% variance", "--"),
    ("n_components_0.99", "99% variance", "-."),
)


def _errorbar(ax: plt.Axes, xs: list[float], blocks: list[dict[str, Any]], **kw: Any) -> None:
    m, lo, hi = np.array(
        [(b["mean"], b["mean"] - b["ci_low"], b["ci_high"] - b["mean"]) for b in blocks]
    ).T
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


def sweep_figure(
    name: str, ds: dict[str, Any], sweep: dict[str, Any], x: str, path: Path, ci: str = "95%"
) -> Path:
    """PWMCC (trained vs random, with recovery if known) and explained variance against one
    swept field; on the d_sae axis the data set's effective rank is marked."""
    archs = ds["architectures"]
    fig, (ax_c, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (group, pts) in enumerate(sweep_groups(sweep, x).items()):
        xs, labels = [p[0] for p in pts], [p[1] for p in pts]
        colour = colours[i % len(colours)] if group else GROUP_COLOURS["trained"]
        tag = f"{group}: " if group else ""
        pw = [R.metric(archs[lab], "pwmcc") for lab in labels]
        _errorbar(
            ax_c, xs, [b["trained"] for b in pw], marker="o", color=colour, label=f"{tag}trained"
        )
        rnd_colour = colour if group else GROUP_COLOURS["random"]
        rnd = [b["random"] for b in pw]
        _errorbar(ax_c, xs, rnd, marker="x", ls="--", color=rnd_colour, label=f"{tag}random")
        if "recovery_hungarian_mcc" in R.quality(archs[labels[0]]):
            rec = [R.quality(archs[lab])["recovery_hungarian_mcc"] for lab in labels]
            ax_c.plot(xs, rec, "s:", color=colour, label=f"{tag}recovery MCC (truth)")
        evs = [R.ev(archs[lab]) for lab in labels]
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
    ax_c.set_title(f"{name}: cross-seed consistency (mean over pairs, {ci} CI)", fontsize=9)
    ax_c.legend(fontsize=7)
    ax_q.set_ylabel("explained variance\nhigher = better reconstruction")
    ax_q.set_title(f"{name}: explained variance (seed mean, {ci} CI over seeds)", fontsize=9)
    if len(sweep_groups(sweep, x)) > 1:
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
    sweep, ci = metrics["sweep"], level(metrics["metrics_config"]["ci_level"])
    return [
        sweep_figure(name, ds, sweep, x, fig_dir / f"sweep_{x}_{name}.png", ci)
        for name, ds in metrics["datasets"].items()
        for x in swept_axes(sweep)
    ]


def _table(ds: dict[str, Any], sweep: dict[str, Any]) -> list[str]:
    fields = [f for f in sweep["fields"] if f != "d_sae"]
    pr = ds["effective_rank"]["participation_ratio"]
    values = {p["label"]: p["values"] for p in sweep["points"]}
    archs = {p["label"]: ds["architectures"][p["label"]] for p in sweep["points"]}
    ratio = ("d_sae / PR", lambda _, a: f"{a['config']['d_sae'] / pr:.0f}" if pr > 0 else "—")
    cols = [
        COLUMNS["sae"],
        *[(f, lambda label, _, f=f: str(values[label][f])) for f in fields],
        COLUMNS["d_sae"],
        ratio,
        *columns("pwmcc", "pwmcc_random_ci", "delta", "ev_ci", "l0", "dead"),
    ]
    return markdown_table(*rows(archs, cols))


def sweep_section(metrics: dict[str, Any]) -> list[str]:
    """report.md: the grid, then per data set its effective rank, a table and the curves."""
    sweep = metrics["sweep"]
    ci = level(metrics["metrics_config"]["ci_level"])
    grid = "; ".join(f"{f} ∈ {sweep['grid'][f]}" for f in sweep["fields"])
    fixed = ", ".join(f"{k} = {v}" for k, v in sweep["base"].items()) or "defaults"
    lines = [
        f"## Sweep over {' × '.join(sweep['fields'])}",
        "",
        f"Grid: {grid}; fixed: {fixed} (`metrics.json` → `sweep`). {len(sweep['points'])} SAE "
        f"configurations × {len(metrics['seeds'])} seeds per data set, each configuration one "
        "job of the experiment engine (`saes/<set>/<label>/job.json`). PWMCC: max-|cos|, "
        f"symmetrised, higher = more consistent, mean over seed pairs [{ci} CI, as above]; EV: "
        f"explained variance, seed mean [{ci} bootstrap CI over seeds]; PR: the data set's "
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
            *lambda_selection(name, metrics),
            *[
                f"![{name}: PWMCC and EV vs {x}](figures/sweep_{x}_{name}.png)"
                for x in swept_axes(sweep)
            ],
            "",
        ]
    return lines


_VERDICTS = {
    "control": "λ = 0 itself: no regularisation passes the rule",
    "above": "resolved (CI above 0)",
    "below": "resolved, negative (CI below 0)",
    "unresolved": "NOT resolved (CI contains 0)",
}


def lambda_selection(name: str, metrics: dict[str, Any]) -> list[str]:
    """The λ selection of a sweep over consistency_lambda (`metrics.json` →
    `lambda_selection`, computed by husai.experiments.aggregate)."""
    sel = metrics.get("lambda_selection")
    if sel is None:
        return []
    ci = level(sel["level"])
    lines = [
        f"Selection rule: the λ with the highest lower {ci} CI bound of trained − random PWMCC "
        f"among those losing at most {sel['ev_drop_max']} explained variance against λ = 0; its "
        "gain over λ = 0 is the mean over the same seed pairs of PWMCC(λ) − PWMCC(0) "
        f"[{ci} paired seed-bootstrap BCa CI, computed from the two `matrix` entries in "
        "metrics.json].",
        "",
    ]
    for r in sel["datasets"][name]:
        group = r["group"] or "all"
        if r["control"] is None:
            lines.append(f"- {group}: no λ = 0 control in the grid; nothing selected.")
            continue
        g = r["gain_over_control"]
        lines.append(
            f"- {group}: selected λ = {r['lambda']:g} (`{r['selected']}`; lower bound "
            f"{r['lower_bound']:+.3f}, EV drop {r['ev_drop']:+.4f}); PWMCC gain over λ = 0: "
            f"{interval(g, '+')}: {_VERDICTS[r['verdict']]}."
        )
    return [*lines, ""]
