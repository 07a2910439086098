"""Figure and report.md of `husai calibrate` (from calibration.json's content)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from husai.io import write_text
from husai.report.figures import _save
from husai.report.format import interval, level


def calibration_figure(result: dict[str, Any], path: Path) -> Path:
    rows = result["search"]
    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    d = [r["trained_minus_random"]["mean"] for r in rows]
    err = [
        [r["trained_minus_random"]["mean"] - r["trained_minus_random"]["ci_low"] for r in rows],
        [r["trained_minus_random"]["ci_high"] - r["trained_minus_random"]["mean"] for r in rows],
    ]
    ax.errorbar(
        ks,
        d,
        yerr=err,
        fmt="o-",
        capsize=3,
        label=f"PWMCC trained − random ({level(result['level'])} CI)",
    )
    ax.axvline(
        result["selected_k"],
        color="C2",
        ls="--",
        lw=1,
        label=f"selected k = {result['selected_k']}",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (active latents per input)")
    ax.set_ylabel("Δ PWMCC (max-|cos|; higher = more consistent)")
    ev = ax.twinx()
    ev.plot(ks, [r["ev"] for r in rows], "s:", color="C1", label="explained variance")
    ev.set_ylabel("explained variance", color="C1")
    lines = ax.get_legend_handles_labels()
    more = ev.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
    return _save(fig, path)


VERDICTS = {
    "same": "the selected k is the control k: nothing to compare",
    "above": "resolved: the selected k is more consistent",
    "below": "resolved: the control is more consistent",
    "unresolved": "not resolved",
}


def render_calibration(out: Path, result: dict[str, Any]) -> Path:
    calibration_figure(result, out / "figures" / "calibration.png")
    imp = result["improvement_selected_minus_control"]
    sel, ctl = result["selected_k"], result["control_k"]
    verdict = VERDICTS[result["verdict"]]
    lines = [
        "# husai calibrate report",
        "",
        f"Metric: {result['metric']}. Rule: {result['rule']}. Search seeds "
        f"{result['seeds']['search']}; confirmation seeds {result['seeds']['confirm']}. CIs are "
        "seed-bootstrap BCa (resample seeds, not pairs).",
        "",
        "## Search (`calibration.json` → `search`)",
        "",
        "| k | PWMCC trained | random | Δ trained − random [CI] | EV | L0 |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["search"]:
        mark = " **(selected)**" if r["k"] == sel else ""
        lines.append(
            f"| {r['k']}{mark} | {interval(r['pwmcc'])} | {r['random']:.3f} | "
            f"{interval(r['trained_minus_random'], '+')} | {r['ev']:.3f} | {r['l0']:.1f} |"
        )
    lines += ["", "![calibration](figures/calibration.png)", "", "## Confirmation", ""]
    for label, c in result["confirm"].items():
        d = c["trained_minus_random"]
        lines.append(
            f"- {label}: PWMCC {interval(c['pwmcc'])}, trained − random {interval(d)}, EV "
            f"{c['ev']:.3f}. Source: `{c['source']}`."
        )
    lines += [
        "",
        f"Improvement of the selected k = {sel} over k = {ctl} (PWMCC, same seed pairs): "
        f"{interval(imp)} ({imp['method']}); {verdict}. Source: `calibration.json` → "
        "`improvement_selected_minus_control`.",
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
